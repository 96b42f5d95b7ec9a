"""Every setting a service reads is in the README's configuration table, with its default as the
code has it, and every variable the docs, manifests and Compose file name is one a service reads.
"""

from __future__ import annotations

import re
from pathlib import Path

from devtools.settings_table import BEGIN, END, table, variables

ROOT = Path(__file__).resolve().parents[1]
#: The autoscaler's local backend hands CONVEYOR_WORKER_X to the workers it starts as CONVEYOR_X.
WORKER_PREFIX = "CONVEYOR_WORKER_"


def documents() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "docker-compose.yml"]
    for folder in ("docs", "manifests", "deploy", "services"):
        for pattern in ("*.md", "*.yaml", "*.yml"):
            found.extend((ROOT / folder).rglob(pattern))
    return found


def test_the_readme_holds_the_settings_table_the_code_makes() -> None:
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    assert readme[start:end] == table(), "run `python -m devtools.settings_table` into README.md"


def test_every_documented_variable_is_read_by_a_service() -> None:
    known = {name for variable in variables() for name in variable.names}
    unknown = set()
    for path in documents():
        for name in set(re.findall(r"\bCONVEYOR_[A-Z0-9_]+\b", path.read_text())):
            plain = "CONVEYOR_" + name.removeprefix(WORKER_PREFIX)
            if name not in known and plain not in known and name != WORKER_PREFIX:
                unknown.add(f"{path.relative_to(ROOT)}: {name}")
    assert not unknown, sorted(unknown)


def test_every_setting_says_what_it_does() -> None:
    silent = [variable.names[0] for variable in variables() if not variable.meaning]
    assert not silent, silent

"""The chaos suite's short form: a few hundred jobs through every fault, in the test suite.

`make chaos` (scripts/chaos.py) runs the full form with 2,000 jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.harness import SHORT, run_chaos


@pytest.mark.timeout(600)
async def test_no_job_is_lost_or_run_twice_at_once_while_everything_fails(
    fresh_database: Callable[[str], str], tmp_path: Path
) -> None:
    lines: list[str] = []
    report = await run_chaos(SHORT, tmp_path / "chaos", fresh_database("chaos"), say=lines.append)
    text = "\n".join([*lines, report.table(), *report.details[:40]])
    print(text)
    assert report.jobs == SHORT.jobs, text
    assert report.passed, text  # every invariant, and every kind of fault injected

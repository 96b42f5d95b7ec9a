"""Real servers for the tests: Valkey, PostgreSQL and S3 (moto's server), started by the project."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.queue",
    "tests.fixtures.postgres",
    "tests.fixtures.s3",
    "tests.e2e_support",
]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A banner when tests were skipped for want of PostGIS: a green run then does not prove
    the `postgis` index driver, and whoever reads the output (CI's included) should know."""
    from tests.fixtures.postgres import POSTGIS_SKIP_PREFIX

    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if POSTGIS_SKIP_PREFIX in str(getattr(report, "longrepr", ""))
    ]
    if not skipped:
        return
    longrepr = skipped[0].longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    terminalreporter.write_sep(
        "!", f"{len(skipped)} PostGIS test(s) SKIPPED: the postgis index driver went untested",
        red=True, bold=True,
    )  # fmt: skip
    terminalreporter.write_line(reason.removeprefix("Skipped: "), red=True)
    for report in skipped:
        terminalreporter.write_line(f"  {report.nodeid}")

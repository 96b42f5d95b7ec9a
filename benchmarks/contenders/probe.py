"""How a consumer process and the benchmark coordinate: a start gate, and a report of its jobs.

Interpreter and library start-up differ between contenders and between two processes of one
contender; so that they are neither timed nor stagger the two consumers, every consumer process
waits at a start gate once it is ready to consume (`<pid>.ready` in the probe directory) until
the benchmark opens the gate (`go`) for all of them at once.

A consumer then writes one small JSON file per process: at its first job and when it shuts down
(with the number of jobs it handled, to check that every job ran). Recording a job is a counter
increment, so the probe adds no I/O per job.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.contenders.environment import PROBE_DIR_ENV

GATE_FILE = "go"
READY_SUFFIX = ".ready"
GATE_POLL_SECONDS = 0.001


@dataclass
class Probe:
    """Per-process record; the directory comes from `BENCH_PROBE_DIR` unless given."""

    directory: Path | None = None
    handled: int = 0
    first_job_at: float | None = None

    @property
    def path(self) -> Path:
        return self.directory or Path(os.environ[PROBE_DIR_ENV])

    def _announce_ready(self) -> Path:
        (self.path / f"{os.getpid()}{READY_SUFFIX}").touch()
        return self.path / GATE_FILE

    def wait_at_start_gate(self) -> None:
        gate = self._announce_ready()
        while not gate.exists():
            time.sleep(GATE_POLL_SECONDS)

    async def wait_at_start_gate_async(self) -> None:
        # The gate is a file another process creates: poll it off the event loop.
        await asyncio.to_thread(self.wait_at_start_gate)

    def record(self) -> None:
        self.handled += 1
        if self.first_job_at is None:
            # time.monotonic is CLOCK_MONOTONIC: one clock for every process on this host.
            self.first_job_at = time.monotonic()
            self.dump(final=False)

    def dump(self, *, final: bool) -> None:
        if self.first_job_at is None and not final:
            return
        # Named by the process that ran the jobs: a forked worker inherits its parent's probe.
        path = self.path / f"{os.getpid()}.json"
        partial = path.with_suffix(".partial")
        partial.write_text(
            json.dumps({"first_job_at": self.first_job_at, "handled": self.handled, "final": final})
        )
        partial.replace(path)


@dataclass(frozen=True)
class ProbeReport:
    """What the consumer processes of one run reported; `handled` is None if one never finished."""

    first_job_at: float | None
    handled: int | None
    processes_with_jobs: int


def processes_ready(directory: Path) -> int:
    return len(list(directory.glob(f"*{READY_SUFFIX}")))


def open_start_gate(directory: Path) -> None:
    (directory / GATE_FILE).touch()


def read_probes(directory: Path) -> ProbeReport:
    firsts: list[float] = []
    handled = 0
    all_final = True
    for path in sorted(directory.glob("*.json")):
        record = json.loads(path.read_text())
        all_final = all_final and bool(record["final"])
        handled += int(record["handled"])
        if record["first_job_at"] is not None:
            firsts.append(float(record["first_job_at"]))
    return ProbeReport(
        first_job_at=min(firsts, default=None),
        handled=handled if all_final else None,
        processes_with_jobs=len(firsts),
    )

"""The local backend: real worker processes on this host, started and stopped as decided.

Each worker is `command` with `{pool}` replaced (default `python -m services.worker --pool
{pool}`), given the queue and namespace through the environment and a /metrics port of its own
(`metrics_port_base + slot`, or any free port when the base is 0). Scaling down sends SIGTERM
to the most recently started workers (as a ReplicaSet picks pods), which then finish or hand
back what they hold and exit; they are reaped as they go, and killed only when they outlive
`stop_grace_seconds`. `close()` stops every worker the same way and waits for them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from shared.embedded import free_port

log = structlog.get_logger(__name__)

DEFAULT_WORKER_COMMAND = (sys.executable, "-m", "services.worker", "--pool", "{pool}")
WORKER_PREFIX = "CONVEYOR_WORKER_"


def worker_environment(parent: Mapping[str, str]) -> dict[str, str]:
    """The workers' environment: the autoscaler's, with each `CONVEYOR_WORKER_<NAME>` given to
    them as `CONVEYOR_<NAME>`.

    So the workers connect as the queue's worker user (`CONVEYOR_WORKER_REDIS_USERNAME`,
    `CONVEYOR_WORKER_REDIS_PASSWORD_FILE`) rather than as the autoscaler, whose user may only
    read the streams; the autoscaler's own password is not passed on when theirs is given.
    """
    overrides = {
        f"CONVEYOR_{name.removeprefix(WORKER_PREFIX)}": value
        for name, value in parent.items()
        if name.startswith(WORKER_PREFIX)
    }
    environment = {
        name: value for name, value in parent.items() if not name.startswith(WORKER_PREFIX)
    }
    if any(name.startswith("CONVEYOR_REDIS_PASSWORD") for name in overrides):
        environment.pop("CONVEYOR_REDIS_PASSWORD", None)
        environment.pop("CONVEYOR_REDIS_PASSWORD_FILE", None)
    return environment | overrides


@dataclass
class WorkerProcess:
    pool: str
    slot: int
    process: asyncio.subprocess.Process
    started_at: float
    stop_requested_at: float | None = None
    returncode: int | None = field(default=None)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stopping(self) -> bool:
        return self.stop_requested_at is not None

    @property
    def exited(self) -> bool:
        return self.process.returncode is not None


class LocalProcessBackend:
    def __init__(
        self,
        command: Sequence[str] = DEFAULT_WORKER_COMMAND,
        *,
        environment: Mapping[str, str] | None = None,
        metrics_port_base: int = 0,
        stop_grace_seconds: float = 660.0,
    ) -> None:
        if not command:
            raise ValueError("the worker command is empty")
        self.command = list(command)
        self.environment = worker_environment(os.environ if environment is None else environment)
        self.metrics_port_base = metrics_port_base
        self.stop_grace_seconds = stop_grace_seconds
        self.workers: list[WorkerProcess] = []
        self.exited: list[WorkerProcess] = []

    def running(self, pool: str) -> list[WorkerProcess]:
        """Workers of the pool that are not stopping, oldest first."""
        return [w for w in self.workers if w.pool == pool and not w.stopping and not w.exited]

    def stopping(self, pool: str | None = None) -> list[WorkerProcess]:
        return [w for w in self.workers if w.stopping and (pool is None or w.pool == pool)]

    async def current_replicas(self, pool: str) -> int:
        self.reap()
        return len(self.running(pool))

    async def scale(self, pool: str, replicas: int) -> None:
        self.reap()
        running = self.running(pool)
        if replicas > len(running):
            for _ in range(replicas - len(running)):
                await self._start(pool)
        elif replicas < len(running):
            newest_first = sorted(running, key=lambda w: w.started_at, reverse=True)
            for worker in newest_first[: len(running) - replicas]:
                self._stop(worker)

    async def close(self) -> None:
        """SIGTERM every worker, wait for them to drain (killing any past the grace period)."""
        for worker in self.workers:
            if not worker.stopping and not worker.exited:
                self._stop(worker)
        while self.workers:
            self.reap()
            if self.workers:
                await asyncio.sleep(0.1)

    def reap(self) -> list[WorkerProcess]:
        """Forget workers that exited; kill those that outlived the grace period."""
        now = time.monotonic()
        gone = []
        for worker in list(self.workers):
            if worker.exited:
                worker.returncode = worker.process.returncode
                self.workers.remove(worker)
                self.exited.append(worker)
                gone.append(worker)
                log.info("worker exited", pool=worker.pool, pid=worker.pid,
                         returncode=worker.returncode, stopped=worker.stopping)  # fmt: skip
            elif (
                worker.stop_requested_at is not None
                and now - worker.stop_requested_at > self.stop_grace_seconds
            ):
                log.warning("worker did not drain within the grace period; killing it",
                            pool=worker.pool, pid=worker.pid,
                            grace_seconds=self.stop_grace_seconds)  # fmt: skip
                worker.process.kill()
        return gone

    def _free_slot(self) -> int:
        taken = {w.slot for w in self.workers}
        slot = 0
        while slot in taken:
            slot += 1
        return slot

    async def _start(self, pool: str) -> WorkerProcess:
        slot = self._free_slot()
        environment = dict(self.environment)
        environment["CONVEYOR_POOL"] = pool
        environment["CONVEYOR_METRICS_PORT"] = str(
            self.metrics_port_base + slot if self.metrics_port_base else free_port()
        )
        command = [part.replace("{pool}", pool) for part in self.command]
        # A session of its own: a Ctrl-C at the terminal reaches the autoscaler, which then
        # stops its workers in order, rather than every worker at once.
        process = await asyncio.create_subprocess_exec(
            *command, env=environment, start_new_session=True
        )
        worker = WorkerProcess(pool=pool, slot=slot, process=process, started_at=time.monotonic())
        self.workers.append(worker)
        log.info("worker started", pool=pool, pid=process.pid, slot=slot)
        return worker

    def _stop(self, worker: WorkerProcess) -> None:
        worker.stop_requested_at = time.monotonic()
        if worker.exited:
            return
        try:
            worker.process.send_signal(signal.SIGTERM)
        except ProcessLookupError:  # exited between the check and the signal
            return
        log.info("worker stopping (SIGTERM, draining)", pool=worker.pool, pid=worker.pid)

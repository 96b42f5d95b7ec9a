"""What every long-running service does the same way, written once.

- its consumer name (`hostname-pid` unless configured), so a restarted pod joins as a new
  consumer and housekeeping can remove the old one once it holds nothing;
- a stop flag that SIGTERM/SIGINT set, and sleeps that end early when it is set;
- backing off while the queue is unavailable (an outage, see `shared.outages`) and carrying on;
- serving `/metrics` and `/healthz` while it runs;
- `serve(settings, build, role=...)`: open the queue, build the service, install the signal
  handlers, run it until it stops, close what it opened.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis
import structlog
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from shared.config import QueueSettings
from shared.lifecycle import sleep_unless_stopped
from shared.metrics import serve_metrics
from shared.outages import outage_hint

log = structlog.get_logger(__name__)
SettingsT = TypeVar("SettingsT", bound=QueueSettings)


def default_consumer_name() -> str:
    """`hostname-pid`: unique per process, and a pod's hostname says where it ran."""
    return f"{socket.gethostname()}-{os.getpid()}"


def consumer_name(configured: str | None) -> str:
    return configured or default_consumer_name()


class Stoppable:
    """A stop flag and sleeps that end as soon as it is set."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        self.stopping.set()

    async def sleep(self, seconds: float) -> None:
        await sleep_unless_stopped(self.stopping, max(0.0, seconds))


class Backoff:
    """Exponential waits between tries while something is unavailable."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.current = first

    def reset(self) -> None:
        self.current = self.first

    def next(self) -> float:
        wait = self.current
        self.current = min(self.current * 2, self.cap)
        return wait


async def pause_for_outage(
    service: Stoppable, backoff: Backoff, error: BaseException, what: str
) -> None:
    """Log that the queue is unavailable (and why it seems to be), then back off."""
    wait = backoff.next()
    log.warning(
        "queue unavailable; retrying", during=what, error=str(error), hint=outage_hint(error),
        retry_in=round(wait, 3),
    )  # fmt: skip
    await service.sleep(wait)


def install_stop_handlers(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call `stop` (a graceful stop: finish or hand back, then exit 0)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)


@asynccontextmanager
async def metrics_served(
    registry: CollectorRegistry, host: str, port: int, *, enabled: bool = True
) -> AsyncIterator[None]:
    """`/metrics` and `/healthz` while the block runs."""
    runner = await serve_metrics(registry, host, port) if enabled else None
    try:
        yield
    finally:
        if runner is not None:
            await runner.cleanup()


class Service(Protocol):
    def stop(self) -> None: ...

    async def run(self) -> None: ...


async def serve(
    settings: QueueSettings,
    build: Callable[[aioredis.Redis], Service],
    *,
    role: str,
    close: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Open the queue (as `role`'s user, where the embedded queue has one per role), build the
    service, stop it on SIGTERM/SIGINT; close what was opened."""
    from shared.redis_connection import open_queue

    async with open_queue(settings, role) as redis:
        service = build(redis)
        install_stop_handlers(service.stop)
        try:
            await service.run()
        finally:
            if close is not None:
                await close()


class SettingsRefused(SystemExit):
    """Settings that cannot be honoured: the process ends with code 2, having said why."""


def settings_or_exit(model: type[SettingsT], **overrides: Any) -> SettingsT:
    """The environment's settings with `overrides` (None values ignored), or exit saying why.

    Each problem is printed on its own line to stderr, e.g. `invalid setting: CONVEYOR_RETRY_
    BACKOFF_SECONDS (300) is longer than CONVEYOR_LEASE_SECONDS (120): ...`.
    """
    import sys

    try:
        return model(**{name: value for name, value in overrides.items() if value is not None})
    except ValidationError as error:
        for problem in error.errors():
            where = ".".join(str(part) for part in problem["loc"])
            message = str(problem["msg"]).removeprefix("Value error, ")
            print(f"invalid setting{' ' + where if where else ''}: {message}", file=sys.stderr)
        raise SettingsRefused(2) from None

"""`python -m services.worker`: run worker processes for one pool until SIGTERM.

With `--processes N` (as the original ARD pods ran several workers per pod) this process
supervises N worker processes, each its own consumer with its own /metrics port
(`metrics_port + i`), forwards SIGTERM to them so they drain, and exits when they all have.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import typer

from services.worker.settings import WorkerSettings
from shared.catalogue import import_plugin_modules
from shared.logging import configure_logging
from shared.service import consumer_name, settings_or_exit


def build_runners(settings: WorkerSettings, redis: Any) -> dict[str, Any]:
    """The runner of each job kind the pool serves; `redis` is the queue, for runners that add
    jobs (a water classification search adds a job per scene)."""
    import_plugin_modules(settings.plugin_modules)
    if settings.pool == "ard":
        from services.worker.ard.runner import SceneRunner
        from services.worker.water.runner import WaterRunner

        return {"scene": SceneRunner(settings), "water": WaterRunner(settings, redis)}
    from services.worker.product_runner import ProductRunner

    return {"product": ProductRunner(settings)}


async def serve(settings: WorkerSettings) -> None:
    from services.worker.service import Worker
    from shared.service import serve as serve_service

    runners: dict[str, Any] = {}

    def build(redis: Any) -> Worker:
        # Some runners add jobs of their own (a water classification search), so they are
        # made with the queue's client.
        runners.update(build_runners(settings, redis))
        return Worker(redis, settings, runners)

    async def close_runners() -> None:
        for runner in runners.values():
            close = getattr(runner, "close", None)
            if close is not None:
                await close()

    await serve_service(settings, build, role="worker", close=close_runners)


def _die_with_parent() -> None:
    """Linux: a child gets SIGTERM (and drains) if its supervisor is killed outright."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def supervise(settings: WorkerSettings) -> int:
    """Run `settings.processes` single-process workers and relay signals to them."""
    from shared.redis_connection import queue_url

    base_name = consumer_name(settings.consumer_name)
    # One queue for all children: start the embedded server here when none is configured.
    url, started_server = queue_url(settings, "worker")
    children = []
    for index in range(settings.processes):
        env = dict(os.environ)
        env.update(
            CONVEYOR_PROCESSES="1",
            CONVEYOR_POOL=settings.pool,
            CONVEYOR_CONCURRENCY=str(settings.concurrency),
            CONVEYOR_CONSUMER_NAME=f"{base_name}-{index}",
            CONVEYOR_METRICS_PORT=str(settings.metrics_port + index),
            CONVEYOR_REDIS_URL=url,
        )
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "services.worker"], env=env, preexec_fn=_die_with_parent
            )
        )

    def relay(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, relay)
    signal.signal(signal.SIGINT, relay)
    codes = [child.wait() for child in children]
    if started_server is not None:
        started_server.stop()
    return max(codes, default=0)


def main(
    pool: str | None = typer.Option(None, help="Pool to serve: product or ard."),
    concurrency: int | None = typer.Option(None, help="Jobs at once per process."),
    processes: int | None = typer.Option(None, help="Worker processes in this pod."),
    metrics_port: int | None = typer.Option(None, help="Port of /metrics (default 9102)."),
    consumer: str | None = typer.Option(None, help="Consumer name (default hostname-pid)."),
) -> None:
    given = {
        "pool": pool,
        "concurrency": concurrency,
        "processes": processes,
        "metrics_port": metrics_port,
        "consumer_name": consumer,
    }
    settings = settings_or_exit(WorkerSettings, **given)
    configure_logging(settings.log_format, settings.log_level)
    if settings.processes > 1:
        raise typer.Exit(supervise(settings))
    asyncio.run(serve(settings))


if __name__ == "__main__":
    typer.run(main)

"""The local backend with real processes against a real queue: scale up, scale down while jobs
run (SIGTERM drains them), and no entry lost. The worker here is a small stream consumer of the
test's own, passed as the backend's configurable command."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from services.autoscaler.backends.local import LocalProcessBackend
from services.autoscaler.service import Autoscaler
from services.autoscaler.settings import AutoscalerSettings
from shared.keys import Keys
from tests.processes import wait_until

# A consumer that reads one entry at a time, "works" for the entry's `seconds`, acknowledges it,
# and on SIGTERM stops reading but finishes the entry in hand (time.sleep resumes after the
# handler), then exits 0. It records what it did in lists under the test's namespace, `alive`
# once its SIGTERM handler is in place (before that, SIGTERM ends it with -15, holding nothing).
CONSUMER = """
import os, signal, sys, time
stopping = False
def stop(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, stop)
import redis
namespace, pool = os.environ["CONVEYOR_NAMESPACE"], sys.argv[1]
queue = redis.Redis.from_url(os.environ["CONVEYOR_REDIS_URL"], decode_responses=True)
stream, me = f"{namespace}:jobs:{pool}", f"consumer-{os.getpid()}"
queue.rpush(f"{namespace}:test:alive", me)
while not stopping:
    for _stream, entries in queue.xreadgroup("workers", me, {stream: ">"}, count=1, block=100):
        for entry_id, fields in entries:
            queue.rpush(f"{namespace}:test:started", f"{entry_id} {me}")
            time.sleep(float(fields["seconds"]))
            queue.xack(stream, "workers", entry_id)
            state = "draining" if stopping else "running"
            queue.rpush(f"{namespace}:test:done", f"{entry_id} {me} {state}")
queue.rpush(f"{namespace}:test:exited", me)
"""


def consumer_command() -> list[str]:
    return [sys.executable, "-c", CONSUMER, "{pool}"]


def backend_for(redis_url: str, namespace: str, grace: float = 60.0) -> LocalProcessBackend:
    return LocalProcessBackend(
        consumer_command(),
        environment={"CONVEYOR_REDIS_URL": redis_url, "CONVEYOR_NAMESPACE": namespace,
                     "PATH": "/usr/bin:/bin"},
        stop_grace_seconds=grace,
    )  # fmt: skip


async def queue_jobs(
    redis: aioredis.Redis, namespace: str, count: int, seconds: float
) -> list[str]:
    stream = Keys(namespace).jobs("product")
    await redis.xgroup_create(stream, "workers", id="0", mkstream=True)
    return [await redis.xadd(stream, {"seconds": str(seconds)}) for _ in range(count)]


async def test_scaling_down_while_jobs_run_drains_them_and_loses_no_entry(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    entry_ids = await queue_jobs(redis_client, namespace, 8, seconds=0.8)
    started_key, done_key = f"{namespace}:test:started", f"{namespace}:test:done"
    backend = backend_for(redis_url, namespace)
    try:
        await backend.scale("product", 3)
        assert await backend.current_replicas("product") == 3

        async def all_three_busy() -> bool:
            started = [line.split()[1] for line in await redis_client.lrange(started_key, 0, -1)]
            finished = [line.split()[1] for line in await redis_client.lrange(done_key, 0, -1)]
            in_hand = {who for who in started if started.count(who) > finished.count(who)}
            return {f"consumer-{w.pid}" for w in backend.running("product")} <= in_hand

        await wait_until(all_three_busy, interval=0.02)
        stopped = sorted(backend.running("product"), key=lambda w: w.started_at)[1:]
        await backend.scale("product", 1)
        assert await backend.current_replicas("product") == 1, "stopping workers do not count"

        async def stopped_ones_exited() -> bool:
            await backend.current_replicas("product")
            return all(worker.exited for worker in stopped)

        await wait_until(stopped_ones_exited)
        assert [worker.returncode for worker in stopped] == [0, 0]
        done = [line.split() for line in await redis_client.lrange(f"{namespace}:test:done", 0, -1)]
        for worker in stopped:
            finished = [state for _id, who, state in done if who == f"consumer-{worker.pid}"]
            assert finished and finished[-1] == "draining", "finished its job after SIGTERM"

        async def everything_done() -> bool:
            return await redis_client.llen(f"{namespace}:test:done") >= len(entry_ids)

        await wait_until(everything_done)
        await backend.scale("product", 0)
    finally:
        await backend.close()
    done_ids = [
        line.split()[0] for line in await redis_client.lrange(f"{namespace}:test:done", 0, -1)
    ]
    assert sorted(done_ids) == sorted(entry_ids), "every entry processed exactly once"
    summary = await redis_client.xpending(Keys(namespace).jobs("product"), "workers")
    assert summary["pending"] == 0
    assert all(worker.returncode == 0 for worker in backend.exited)
    assert len(backend.exited) == 3


def exists(path: Path) -> bool:
    return path.exists()


async def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace_period(
    tmp_path: Path,
) -> None:
    ignoring = tmp_path / "ignoring-sigterm"
    stubborn = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        "time.sleep(60)"
    )
    backend = LocalProcessBackend(
        [sys.executable, "-c", stubborn, str(ignoring)], environment={"PATH": "/usr/bin:/bin"},
        stop_grace_seconds=0.3,
    )  # fmt: skip
    await backend.scale("product", 1)
    await wait_until(lambda: asyncio.to_thread(exists, ignoring))  # its handler is in place
    await backend.close()
    [worker] = backend.exited
    assert worker.returncode == -9


async def test_the_service_scales_real_workers_up_and_back_to_zero_without_losing_jobs(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    entry_ids = await queue_jobs(redis_client, namespace, 12, seconds=0.3)
    settings = AutoscalerSettings(
        namespace=namespace, pools=["product"], backend="local", instance_id="solo",
        poll_interval_seconds=0.2, max_replicas=4, scale_down_window_seconds=0.5,
        scale_to_zero_cooldown_seconds=0.5, reversal_guard_seconds=0.5,
    )  # fmt: skip
    backend = RecordingBackend(
        consumer_command(),
        environment={"CONVEYOR_REDIS_URL": redis_url, "CONVEYOR_NAMESPACE": namespace,
                     "PATH": "/usr/bin:/bin"},
        stop_grace_seconds=60.0,
    )  # fmt: skip
    autoscaler = Autoscaler(redis_client, settings, backend)
    running = asyncio.create_task(autoscaler.run(serve_http=False))
    try:

        async def scaled_up_then_back_to_zero() -> bool:
            done = await redis_client.llen(f"{namespace}:test:done")
            return done >= len(entry_ids) and await backend.current_replicas("product") == 0

        await wait_until(scaled_up_then_back_to_zero)
    finally:
        autoscaler.stop()
        await running
        await backend.close()
    assert max(backend.requested) == 4, "the backlog of 12 called for max_replicas workers"
    assert backend.requested[-1] == 0
    assert len(backend.exited) >= 4
    done_ids = [
        line.split()[0] for line in await redis_client.lrange(f"{namespace}:test:done", 0, -1)
    ]
    assert sorted(done_ids) == sorted(entry_ids)
    alive = set(await redis_client.lrange(f"{namespace}:test:alive", 0, -1))
    for worker in backend.exited:
        # One stopped before its handler was in place held nothing, and SIGTERM ended it.
        expected = 0 if f"consumer-{worker.pid}" in alive else -signal.SIGTERM
        assert worker.returncode == expected, (worker.pid, worker.returncode)


class RecordingBackend(LocalProcessBackend):
    """The local backend, remembering every replica count the autoscaler asked for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requested: list[int] = []

    async def scale(self, pool: str, replicas: int) -> None:
        self.requested.append(replicas)
        await super().scale(pool, replicas)

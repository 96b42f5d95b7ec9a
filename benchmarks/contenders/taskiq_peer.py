"""taskiq with taskiq-redis's `RedisStreamBroker`: the closest peer (Redis Streams, asyncio).

Consumers are `taskiq worker benchmarks.contenders.taskiq_peer:broker --workers 2`, the library's
own CLI, with its defaults (100 async tasks per process, `XREADGROUP COUNT 100`, ack when the
task is done) and logging at WARNING. Producing is `noop.kiq()`, the library's only way to
enqueue, issued concurrently (taskiq has no batch enqueue).

The broker lives at module level because that is how the taskiq CLI finds it.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from taskiq import TaskiqEvents, TaskiqState
from taskiq_redis import RedisStreamBroker

from benchmarks.contenders.common import chunks, command_line, report_enqueue
from benchmarks.contenders.environment import REDIS_URL_ENV
from benchmarks.contenders.probe import Probe

STREAM = "taskiq"
GROUP = "taskiq"
CONCURRENT_ENQUEUES = 500

# consumer_id "0": the group, created by the producer, also delivers entries added before it.
broker = RedisStreamBroker(
    os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"),
    queue_name=STREAM,
    consumer_group_name=GROUP,
    consumer_id="0",
)
probe = Probe()


@broker.task(task_name="noop")
async def noop() -> None:
    probe.record()


@broker.on_event(TaskiqEvents.WORKER_STARTUP)  # runs in each worker before it listens
async def wait_at_start_gate(state: TaskiqState) -> None:
    await probe.wait_at_start_gate_async()


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def report_jobs_handled(state: TaskiqState) -> None:
    probe.dump(final=True)


async def produce(jobs: int) -> None:
    await broker.startup()
    started = time.monotonic()
    for numbers in chunks(jobs, CONCURRENT_ENQUEUES):
        sent: list[Any] = await asyncio.gather(*(noop.kiq() for _ in numbers))
        assert len(sent) == len(numbers)
    report_enqueue(jobs, time.monotonic() - started)
    await broker.shutdown()


def main() -> None:
    arguments = command_line(__doc__ or "", consumer=False)
    if os.environ.get(REDIS_URL_ENV) != arguments.url:
        raise SystemExit(f"set {REDIS_URL_ENV}={arguments.url}: the broker is built at import")
    asyncio.run(produce(arguments.jobs))


if __name__ == "__main__":
    main()

"""arq: jobs in a sorted set, polled by each worker; run with `arq.worker.run_worker`.

Tuned to its fastest honest settings for no-op jobs: results not kept (no peer stores them),
result logging off, `--max-jobs` jobs at once and `--poll-delay` seconds between polls (the
defaults, 10 and 0.5 s, leave workers idle between polls). Producing is `enqueue_job`, issued
concurrently (arq has no batch enqueue; each is a WATCH/MULTI transaction).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from arq.constants import default_queue_name
from arq.worker import func, run_worker

from benchmarks.contenders.common import chunks, command_line, report_enqueue
from benchmarks.contenders.probe import Probe

QUEUE = default_queue_name
CONCURRENT_ENQUEUES = 200

probe = Probe()


async def noop(ctx: dict[str, Any]) -> None:
    probe.record()


async def wait_at_start_gate(ctx: dict[str, Any]) -> None:
    # arq runs on_startup once connected, before its first poll.
    await probe.wait_at_start_gate_async()


async def report_jobs_handled(ctx: dict[str, Any]) -> None:
    probe.dump(final=True)


async def produce(url: str, jobs: int) -> None:
    pool = await create_pool(RedisSettings.from_dsn(url))
    started = time.monotonic()
    for numbers in chunks(jobs, CONCURRENT_ENQUEUES):
        enqueued = await asyncio.gather(*(pool.enqueue_job("noop") for _ in numbers))
        assert all(job is not None for job in enqueued)
    report_enqueue(jobs, time.monotonic() - started)
    await pool.aclose()


def consume(url: str, max_jobs: int, poll_delay: float) -> None:
    run_worker(
        {
            "functions": [func(noop, name="noop")],
            "redis_settings": RedisSettings.from_dsn(url),
            "max_jobs": max_jobs,
            "poll_delay": poll_delay,
            "keep_result": 0,
            "log_results": False,
            "on_startup": wait_at_start_gate,
            "on_shutdown": report_jobs_handled,
        }
    )


def arq_options(consume: argparse.ArgumentParser) -> None:
    consume.add_argument("--max-jobs", type=int, default=10, help="jobs at once per worker")
    consume.add_argument("--poll-delay", type=float, default=0.5, help="seconds between polls")


def main() -> None:
    arguments = command_line(__doc__ or "", consume_options=arq_options)
    if arguments.command == "produce":
        asyncio.run(produce(arguments.url, arguments.jobs))
    else:
        probe.directory = arguments.probe_dir
        consume(arguments.url, arguments.max_jobs, arguments.poll_delay)


if __name__ == "__main__":
    main()

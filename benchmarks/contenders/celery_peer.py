"""Celery with its Redis broker (kombu), `--pool solo`: one process runs its tasks itself.

The solo pool is Celery's fastest for no-op tasks (prefork adds a pipe round trip to a child per
task). Results are ignored and tasks acknowledged late (after they ran, the same at-least-once
contract as ours), so "done" is visible in Redis: the queue list and kombu's `unacked` hash are
empty. Gossip, mingle and heartbeat are off, rate limits disabled, logging at WARNING.
Producing is `apply_async` with one reused producer (Celery has no batch publish).

The app lives at module level because that is how the celery CLI finds it.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery
from celery.signals import worker_process_shutdown, worker_ready, worker_shutdown

from benchmarks.contenders.common import command_line, report_enqueue
from benchmarks.contenders.environment import CELERY_PREFETCH_ENV, REDIS_URL_ENV
from benchmarks.contenders.probe import Probe

QUEUE = "celery"
UNACKED = "unacked"

app = Celery("bench", broker=os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=int(os.environ.get(CELERY_PREFETCH_ENV, "4")),
    worker_disable_rate_limits=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
probe = Probe()


@app.task(name="noop")
def noop() -> None:
    probe.record()


@worker_ready.connect  # the consumer is connected; its event loop starts after this returns
def wait_at_start_gate(**_: Any) -> None:
    probe.wait_at_start_gate()


@worker_shutdown.connect  # solo pool: tasks ran in this process
@worker_process_shutdown.connect  # prefork pool: in each child
def report_jobs_handled(**_: Any) -> None:
    probe.dump(final=True)


def produce(jobs: int) -> None:
    started = time.monotonic()
    with app.producer_or_acquire() as producer:
        for _ in range(jobs):
            noop.apply_async(producer=producer)
    report_enqueue(jobs, time.monotonic() - started)


def main() -> None:
    arguments = command_line(__doc__ or "", consumer=False)
    if os.environ.get(REDIS_URL_ENV) != arguments.url:
        raise SystemExit(f"set {REDIS_URL_ENV}={arguments.url}: the app is built at import")
    produce(arguments.jobs)


if __name__ == "__main__":
    main()

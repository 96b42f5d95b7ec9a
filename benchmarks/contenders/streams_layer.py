"""Ours: no-op jobs through `shared.streams.ConsumerGroup`, used the way the worker uses it.

Each reader reads a batch with `ConsumerGroup.read` (which reclaims entries idle past the lease
first, then `XREADGROUP`), handles every entry, and acknowledges the batch with
`ConsumerGroup.ack` (one pipelined `MULTI XACK HDEL EXEC`). `--ack-each` acknowledges every entry
on its own instead, as the worker's per-job task does today.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from benchmarks.contenders.common import (
    chunks,
    command_line,
    job_fields,
    report_enqueue,
    run_until_terminated,
)
from benchmarks.contenders.probe import Probe
from shared.keys import WORKER_GROUP, Keys
from shared.logging import configure_logging
from shared.redis_connection import connect
from shared.streams import ConsumerGroup, Delivery

KEYS = Keys("bench")
STREAM = KEYS.jobs("product")
GROUP = WORKER_GROUP


def consumer_group(url: str, consumer: str) -> ConsumerGroup:
    return ConsumerGroup(
        connect(url),
        stream=STREAM,
        group=GROUP,
        consumer=consumer,
        keys=KEYS,
        lease_seconds=60,
        max_attempts=5,
        service="benchmark",
    )


async def produce(url: str, jobs: int) -> None:
    group = consumer_group(url, "producer")
    await group.ensure()
    started = time.monotonic()
    for numbers in chunks(jobs):
        pipe = group.redis.pipeline(transaction=False)
        for number in numbers:
            pipe.xadd(STREAM, job_fields(number))  # type: ignore[arg-type]
        await pipe.execute()
    report_enqueue(jobs, time.monotonic() - started)
    await group.redis.aclose()


async def consume(
    url: str, consumer: str, probe: Probe, readers: int, batch: int, block_ms: int, ack_each: bool
) -> None:
    configure_logging("json", "INFO")  # as the worker does; the read/ack path logs nothing
    group = consumer_group(url, consumer)
    await group.ensure()

    async def handle(delivery: Delivery) -> None:
        probe.record()

    async def handle_then_ack(delivery: Delivery) -> None:
        await handle(delivery)
        await group.ack([delivery.entry_id])

    async def read_handle_ack_batches() -> None:
        while True:
            deliveries = await group.read(batch, block_ms)
            for delivery in deliveries:
                await handle(delivery)
            await group.ack([delivery.entry_id for delivery in deliveries])

    async def read_then_ack_each() -> None:
        while True:
            deliveries = await group.read(batch, block_ms)
            await asyncio.gather(*(handle_then_ack(delivery) for delivery in deliveries))

    reader = read_then_ack_each if ack_each else read_handle_ack_batches
    await probe.wait_at_start_gate_async()
    await run_until_terminated([reader] * readers, probe, group.redis.aclose)


def ack_options(consume: argparse.ArgumentParser) -> None:
    consume.add_argument("--ack-each", action="store_true", help="one XACK per entry")


def main() -> None:
    arguments = command_line(__doc__ or "", consume_options=ack_options)
    if arguments.command == "produce":
        asyncio.run(produce(arguments.url, arguments.jobs))
    else:
        probe = Probe(arguments.probe_dir)
        asyncio.run(
            consume(
                arguments.url, arguments.consumer, probe, arguments.readers, arguments.batch,
                arguments.block_ms, arguments.ack_each,
            )
        )  # fmt: skip


if __name__ == "__main__":
    main()

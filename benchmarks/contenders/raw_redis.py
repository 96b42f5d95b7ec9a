"""The ceiling: a bare redis-py asyncio loop, one round trip per batch.

Producing is pipelined `XADD`. Each reader sends the `XACK` of the batch it just handled in the
same pipeline as the `XREADGROUP` for the next one, with replies left as bytes: nothing a queue
library could do with fewer round trips or less decoding.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from benchmarks.contenders.common import (
    chunks,
    command_line,
    job_fields,
    report_enqueue,
    run_until_terminated,
)
from benchmarks.contenders.probe import Probe

STREAM = "raw:jobs"
GROUP = "workers"


async def ensure_group(redis: aioredis.Redis) -> None:
    try:
        await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except aioredis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


async def produce(url: str, jobs: int) -> None:
    redis = aioredis.Redis.from_url(url)
    await ensure_group(redis)
    started = time.monotonic()
    for numbers in chunks(jobs):
        pipe = redis.pipeline(transaction=False)
        for number in numbers:
            pipe.xadd(STREAM, job_fields(number))  # type: ignore[arg-type]
        await pipe.execute()
    report_enqueue(jobs, time.monotonic() - started)
    await redis.aclose()


async def consume(
    url: str, consumer: str, probe: Probe, readers: int, batch: int, block_ms: int
) -> None:
    redis = aioredis.Redis.from_url(url)
    await ensure_group(redis)

    async def handle(entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        probe.record()

    async def read_and_ack_in_one_round_trip() -> None:
        handled: list[bytes] = []
        while True:
            pipe = redis.pipeline(transaction=False)
            if handled:
                pipe.xack(STREAM, GROUP, *handled)
            pipe.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=batch, block=block_ms)
            replies = await pipe.execute()
            handled = []
            for _stream, entries in replies[-1] or []:
                for entry_id, fields in entries:
                    await handle(entry_id, fields)
                    handled.append(entry_id)

    await probe.wait_at_start_gate_async()
    await run_until_terminated([read_and_ack_in_one_round_trip] * readers, probe, redis.aclose)


def main() -> None:
    arguments = command_line(__doc__ or "")
    if arguments.command == "produce":
        asyncio.run(produce(arguments.url, arguments.jobs))
    else:
        probe = Probe(arguments.probe_dir)
        asyncio.run(
            consume(
                arguments.url, arguments.consumer, probe, arguments.readers, arguments.batch,
                arguments.block_ms,
            )
        )  # fmt: skip


if __name__ == "__main__":
    main()

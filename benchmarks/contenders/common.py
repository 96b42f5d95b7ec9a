"""What the contender modules share: their command line, batching, and running until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from benchmarks.contenders.probe import Probe

# One job's fields for the stream contenders; the peers send their own task message instead.
NOOP_JOB_CODE = "noop"
ENQUEUE_CHUNK = 1000


def job_fields(number: int) -> dict[str, str]:
    return {"job_code": NOOP_JOB_CODE, "n": str(number)}


def chunks(total: int, size: int = ENQUEUE_CHUNK) -> Iterator[range]:
    for start in range(0, total, size):
        yield range(start, min(start + size, total))


def report_enqueue(enqueued: int, seconds: float) -> None:
    """The producer's one line of output, read by the benchmark."""
    print(json.dumps({"enqueued": enqueued, "seconds": seconds}), flush=True)


def command_line(
    description: str,
    *,
    consumer: bool = True,
    consume_options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """`produce --url --jobs`, and (unless the library has its own worker CLI) `consume ...`."""
    parser = argparse.ArgumentParser(description=description)
    commands = parser.add_subparsers(dest="command", required=True)
    produce = commands.add_parser("produce", help="enqueue --jobs no-op jobs, report the time")
    produce.add_argument("--url", required=True)
    produce.add_argument("--jobs", type=int, required=True)
    if consumer:
        consume = commands.add_parser("consume", help="consume until SIGTERM")
        consume.add_argument("--url", required=True)
        consume.add_argument("--consumer", required=True, help="consumer name in the group")
        consume.add_argument("--probe-dir", type=Path, required=True)
        consume.add_argument("--readers", type=int, default=1, help="concurrent readers")
        consume.add_argument("--batch", type=int, default=100, help="entries per read")
        consume.add_argument("--block-ms", type=int, default=1000)
        if consume_options is not None:
            consume_options(consume)
    return parser.parse_args()


async def run_until_terminated(
    readers: list[Callable[[], Coroutine[Any, Any, None]]],
    probe: Probe,
    cleanup: Callable[[], Awaitable[None]],
) -> None:
    """Run the readers until SIGTERM/SIGINT, then write the probe's final report."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    tasks = [asyncio.create_task(reader()) for reader in readers]
    stop = asyncio.create_task(stopping.wait())
    # A reader that fails ends the process (with its traceback) rather than going quiet.
    done, _pending = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
    for task in [*tasks, stop]:
        task.cancel()
    await asyncio.gather(*tasks, stop, return_exceptions=True)
    probe.dump(final=True)
    await cleanup()
    for task in done:
        if task is not stop and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

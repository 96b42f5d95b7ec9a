"""`make fuzz`: generated hostile events through a live dispatcher, the full count.

    .venv/bin/python scripts/fuzz.py --events 10000 [--batch 100] [--redis-url URL]

Starts an embedded valkey-server (unless --redis-url names one) and a dispatcher process with
its default limits and allow-lists, sends `--events` hostile events in batches of `--batch`,
each batch mixed with valid work items, and prints: crashes, the share dead-lettered on their
first delivery, valid events dispatched, and the dispatcher's peak resident memory. Exits 1 if
any figure misses its goal (0 crashes, 100 % first-delivery refusals, every valid event
dispatched, peak RSS under 400 MiB).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared.embedded import EmbeddedValkey  # noqa: E402
from tests.fuzz_events import FuzzRun, fuzz_batches, live_dispatcher  # noqa: E402

RSS_CEILING = 400 * 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="hostile events to send")
    parser.add_argument("--batch", type=int, default=100, help="hostile events per batch")
    parser.add_argument("--valid-per-batch", type=int, default=4, help="valid events per batch")
    parser.add_argument("--redis-url", default=None, help="a server to use instead of one here")
    options = parser.parse_args()

    batches = -(-options.events // options.batch)
    with tempfile.TemporaryDirectory(prefix="conveyor-fuzz-") as scratch:
        server = None
        url = options.redis_url
        if url is None:
            server = EmbeddedValkey(Path(scratch) / "valkey")
            url = server.start()
        try:
            namespace = f"fuzz{uuid.uuid4().hex[:8]}"
            with live_dispatcher(url, namespace, Path(scratch) / "dispatcher.log") as (
                service, client, keys,
            ):  # fmt: skip
                run = FuzzRun(service, client, keys, run=namespace, rss_ceiling=RSS_CEILING)
                print(
                    f"sending {batches * options.batch:,} hostile events in {batches} batches "
                    f"of {options.batch} (+{options.valid_per_batch} valid each) to dispatcher "
                    f"pid {service.process.pid}",
                    flush=True,
                )
                with run.sampler:
                    fuzz_batches(run, batches, options.batch, options.valid_per_batch)()
                tally = run.tally
        finally:
            if server is not None:
                server.stop()
    print()
    for line in tally.lines():
        print(line)
    for problem in tally.problems[:20]:
        print(f"problem: {problem}")
    failed = bool(
        tally.problems
        or tally.crashes
        or tally.refused_first_delivery != tally.hostile
        or tally.valid_dispatched != tally.valid
        or tally.peak_rss >= RSS_CEILING
        or tally.batches != batches
    )
    print("\nFAILED" if failed else "\nall goals met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

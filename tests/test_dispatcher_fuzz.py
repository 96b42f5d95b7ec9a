"""Generated hostile events through a live dispatcher process on a real server, mixed with valid
ones: no crash, every hostile event dead-lettered on its first delivery with a reason, every
valid one dispatched, and the dispatcher's memory bounded throughout.

This is the short form (1,000 hostile events); `make fuzz` runs the full count (`scripts/fuzz.py`).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.fuzz_events import FuzzRun, fuzz_batches, live_dispatcher

BATCHES = 20
BATCH_SIZE = 50  # x BATCHES = 1,000 hostile events
RSS_CEILING = 400 * 2**20


def test_hostile_events_are_all_refused_on_first_delivery_while_valid_work_flows(
    redis_url: str, tmp_path: Path
) -> None:
    namespace = f"fuzz{uuid.uuid4().hex[:8]}"
    with live_dispatcher(redis_url, namespace, tmp_path / "dispatcher.log") as (
        service, client, keys,
    ):  # fmt: skip
        run = FuzzRun(service, client, keys, run=namespace, rss_ceiling=RSS_CEILING)
        with run.sampler:
            fuzz_batches(run, batches=BATCHES, batch_size=BATCH_SIZE)()
        tally = run.tally
        report = "\n".join(tally.lines())
    assert tally.problems == [], report + "\n" + "\n".join(tally.problems[:20])
    assert tally.batches == BATCHES, report
    assert tally.crashes == 0, report
    assert tally.hostile == BATCHES * BATCH_SIZE
    assert tally.refused_first_delivery == tally.hostile, report
    assert tally.valid_dispatched == tally.valid, report
    assert 0 < tally.peak_rss < RSS_CEILING, report
    assert set(tally.by_reason) <= {"invalid_request", "over_limit", "not_allowed"}, report

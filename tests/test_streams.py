"""The streams layer against a real server: leases, reclaim, retries, dead letters, trimming.

Time passes in these tests only where a lease or a backoff must run out; what a test waits
for is always something the server shows (an entry's idle time, a holder, a dead letter).
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import stream_scripts
from shared.jobstate import JobStates, job_ref
from shared.keys import Keys
from shared.redis_connection import connect
from shared.streams import ConsumerGroup, Settlement, group_stats, trim
from tests.queue_support import (
    ReplyDroppingProxy,
    dispatch_request,
    eventually,
    holder,
    idle_ms,
    worker_group,
)


def consumer(
    redis: aioredis.Redis, namespace: str, name: str, *, lease: float = 0.3, attempts: int = 3
) -> ConsumerGroup:
    keys = Keys(namespace)
    return ConsumerGroup(
        redis, stream=keys.jobs("product"), group="workers", consumer=name, keys=keys,
        lease_seconds=lease, max_attempts=attempts,
    )  # fmt: skip


async def idle_at_least(
    redis: aioredis.Redis, group: ConsumerGroup, entry_id: str, milliseconds: int
) -> None:
    async def idle_enough() -> bool:
        idle = await idle_ms(redis, group.stream, group.group, entry_id)
        return idle is not None and idle >= milliseconds

    await eventually(idle_enough)


async def test_a_renewed_lease_keeps_the_entry_and_a_lapsed_one_is_reclaimed(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    first, second = consumer(redis_client, namespace, "a"), consumer(redis_client, namespace, "b")
    await first.ensure()
    await redis_client.xadd(first.stream, {"n": "1"})
    [delivery] = await first.read(10, 10)
    for _ in range(4):  # well past the 0.3 s lease in total, renewed within it
        await idle_at_least(redis_client, first, delivery.entry_id, 150)
        assert await first.renew([delivery.entry_id]) == [delivery.entry_id]
        assert await second.reclaim(10) == []
    await idle_at_least(redis_client, first, delivery.entry_id, 300)
    [reclaimed] = await second.reclaim(10)
    assert reclaimed.entry_id == delivery.entry_id and reclaimed.attempt == 2
    assert await first.renew([delivery.entry_id]) == [], "a lapsed owner cannot steal it back"
    assert await holder(redis_client, first.stream, "workers", delivery.entry_id) == "b"


async def test_a_failed_entry_is_retried_after_its_backoff_then_dead_lettered_with_its_error(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    worker = consumer(redis_client, namespace, "a", lease=5.0, attempts=2)
    await worker.ensure()
    await redis_client.xadd(worker.stream, {"n": "1"})
    [delivery] = await worker.read(10, 10)
    assert await worker.retry_later(delivery, "disk full", backoff_seconds=2.0) is Settlement.OK
    # The backoff is the idle time still missing to the lease.
    idle = await idle_ms(redis_client, worker.stream, "workers", delivery.entry_id)
    assert idle is not None and 3000 <= idle < 5000
    assert await worker.reclaim(10) == [], "not before the backoff"
    await idle_at_least(redis_client, worker, delivery.entry_id, 5000)
    [retry] = await worker.reclaim(10)
    assert retry.attempt == 2
    await worker.retry_later(retry, "disk still full", backoff_seconds=0.1)
    [(_id, dead)] = await redis_client.xrange(Keys(namespace).dead)
    assert dead["reason"] == "max_attempts"
    assert dead["error"].startswith("gave up after 2 attempts; last error: disk still full")
    assert dead["attempts"] == "2"
    stats = await group_stats(redis_client, worker.stream, "workers")
    assert stats.pending == 0
    assert not await redis_client.exists(worker.errors_key), "the recorded error is cleaned up"


async def test_an_entry_of_a_killed_consumer_past_max_attempts_goes_to_dead_letters(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    worker = consumer(redis_client, namespace, "a", lease=0.1, attempts=2)
    await worker.ensure()
    await redis_client.xadd(worker.stream, {"n": "1"})
    [first] = await worker.read(10, 10)
    await idle_at_least(redis_client, worker, first.entry_id, 100)
    assert len(await worker.reclaim(10)) == 1  # second delivery
    await idle_at_least(redis_client, worker, first.entry_id, 100)
    assert await worker.reclaim(10) == []  # a third would exceed max_attempts
    [(_id, dead)] = await redis_client.xrange(Keys(namespace).dead)
    assert "none recorded (the consumer stopped or was killed)" in dead["error"]
    # Two deliveries were worked on: the dead letter's numbers say so, both of them.
    assert dead["attempts"] == "2" and dead["error"].startswith("gave up after 2 attempts")


async def test_an_orphan_behind_many_live_entries_is_reclaimed_within_one_lease(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """XAUTOCLAIM looks at COUNT x 10 pending entries a call: the walk must go on past them."""
    live = consumer(redis_client, namespace, "live", lease=1.0)
    dead = consumer(redis_client, namespace, "dead", lease=1.0)
    rescuer = consumer(redis_client, namespace, "rescuer", lease=1.0)
    await live.ensure()
    for number in range(121):
        await redis_client.xadd(live.stream, {"n": str(number)})
    held = await live.read_new(120, None)
    [orphan] = await dead.read_new(1, None)
    assert len(held) == 120
    assert await rescuer.reclaim(1) == []

    async def orphan_lapsed_while_live_entries_renewed() -> bool:
        await live.renew([delivery.entry_id for delivery in held])
        idle = await idle_ms(redis_client, live.stream, "workers", orphan.entry_id)
        return idle is not None and idle >= 1000

    await eventually(orphan_lapsed_while_live_entries_renewed)
    # One reclaim, with one free slot, after the orphan's lease lapsed finds it.
    [found] = await rescuer.reclaim(1)
    assert found.entry_id == orphan.entry_id and found.attempt == 2
    assert await holder(redis_client, live.stream, "workers", held[-1].entry_id) == "live"


async def test_a_lapsed_owner_changes_nothing_and_its_late_result_is_dropped(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    [job] = await dispatch_request(redis_client, redis_url, namespace, jobs=1)
    slow = worker_group(redis_client, namespace, "slow", lease_seconds=0.3)
    fast = worker_group(redis_client, namespace, "fast", lease_seconds=0.3)
    states = JobStates(redis_client, keys)
    [mine] = await slow.read(1, 10)
    await idle_at_least(redis_client, slow, mine.entry_id, 300)
    [theirs] = await fast.reclaim(1)

    # Everything the lapsed owner tries leaves the entry with its new holder, untouched.
    assert await slow.ack([mine]) == []
    assert await slow.retry_later(mine, "disk full", backoff_seconds=0.1) is Settlement.LOST
    assert await slow.hand_back([mine]) == []
    assert await slow.dead_letter(mine, reason="oops", error="x") is Settlement.LOST
    assert await slow.renew([mine.entry_id]) == []
    assert await holder(redis_client, slow.stream, "workers", mine.entry_id) == "fast"
    assert await redis_client.xlen(keys.dead) == 0

    # The new holder finishes; the old one's late failure does not overwrite `done`.
    ref = job_ref(job)
    assert (await fast.settle(theirs, job=ref, state="done"))[0] is Settlement.OK
    late = await slow.settle(mine, job=ref, state="done")
    assert late[0] is Settlement.LOST
    assert await slow.retry_later(mine, "late failure", job=ref) is Settlement.LOST
    record = await states.get(job.job_id)
    assert record is not None and record["state"] == "done"
    request = await states.request(job.request_id)
    assert request is not None
    assert (request["jobs_finished"], request["jobs_done"], request["state"]) == (
        "1",
        "1",
        "finished",
    )


async def test_an_entry_deleted_while_pending_becomes_a_dead_letter_and_its_job_follows(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    jobs = await dispatch_request(redis_client, redis_url, namespace, jobs=2)
    worker = worker_group(redis_client, namespace, "w", lease_seconds=0.3)
    states = JobStates(redis_client, keys)
    deliveries = await worker.read(2, 10)
    doomed = deliveries[0]
    job = next(job for job in jobs if job.job_id == worker.job_of(doomed.fields).job_id)  # type: ignore[union-attr]
    await states.started(
        job, stream=worker.stream, group=worker.group, consumer="w", entry_id=doomed.entry_id,
        attempt=1,
    )  # fmt: skip
    await worker.retry_later(doomed, "disk full", backoff_seconds=0.0, job=job_ref(job))
    await redis_client.xdel(worker.stream, doomed.entry_id)  # an operator's XDEL

    async def reclaimed() -> bool:
        await worker.reclaim(2)
        return await redis_client.xlen(keys.dead) == 1

    await eventually(reclaimed)
    [(_id, dead)] = await redis_client.xrange(keys.dead)
    assert dead["reason"] == "entry_deleted" and dead["entry_id"] == doomed.entry_id
    assert dead["job_id"] == job.job_id and job.job_id in dead["error"]
    record = await states.get(job.job_id)
    assert record is not None and record["state"] == "dead"
    assert not await redis_client.hexists(worker.errors_key, doomed.entry_id), "no leaked error"
    assert not await redis_client.hexists(keys.entry_jobs(worker.stream), doomed.entry_id)
    request = await states.request(job.request_id)
    assert request is not None and (request["jobs_dead"], request["jobs_finished"]) == ("1", "1")
    pending = await redis_client.xpending(worker.stream, "workers")
    assert pending["pending"] == 1, "only the other job is still pending"


async def test_hand_backs_use_no_attempts_and_a_dead_letter_states_consistent_numbers(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    worker = consumer(redis_client, namespace, "a", lease=0.5, attempts=2)
    other = consumer(redis_client, namespace, "b", lease=0.5, attempts=2)
    await worker.ensure()
    await redis_client.xadd(worker.stream, {"n": "1"})
    [delivery] = await worker.read(1, 10)
    for _scale_down in range(3):  # three drains in a row
        assert await worker.hand_back([delivery]) == [delivery.entry_id]
        [delivery] = await other.reclaim(1)  # at once: a hand-back needs no lease to lapse
        assert delivery.attempt == 1
        worker, other = other, worker
    await worker.retry_later(delivery, "first failure", backoff_seconds=0.0)
    [delivery] = await other.reclaim(1)
    assert delivery.attempt == 2
    await other.retry_later(delivery, "second failure", backoff_seconds=0.0)
    [(_id, dead)] = await redis_client.xrange(keys.dead)
    assert dead["attempts"] == "2"
    assert dead["error"] == "gave up after 2 attempts; last error: second failure"


async def test_a_step_retried_after_its_reply_was_lost_writes_once(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    """redis-py sends a script again when the reply is lost: the second run must change nothing."""
    keys = Keys(namespace)
    jobs = await dispatch_request(redis_client, redis_url, namespace, jobs=2)
    host, port = (
        redis_client.connection_pool.connection_kwargs["host"],
        redis_client.connection_pool.connection_kwargs["port"],
    )
    proxy = ReplyDroppingProxy(host, port)
    faulty = connect(await proxy.start())
    try:
        worker = worker_group(faulty, namespace, "w", lease_seconds=5)
        states = JobStates(redis_client, keys)
        # Loaded first: the reply lost must be the step's own, not a NOSCRIPT before it.
        await redis_client.script_load(stream_scripts.SETTLE)
        first, second = await worker.read(2, 10)
        job_of = {job.job_id: job for job in jobs}
        dead_job = job_of[worker.job_of(first.fields).job_id]  # type: ignore[union-attr]
        done_job = job_of[worker.job_of(second.fields).job_id]  # type: ignore[union-attr]

        proxy.drop_reply_to(first.entry_id)
        status = await worker.dead_letter(first, reason="permanent", error="corrupt input")
        assert proxy.dropped == 1
        assert status in (Settlement.OK, Settlement.ALREADY)
        assert await redis_client.xlen(keys.dead) == 1, "one dead letter, however often sent"

        proxy.drop_reply_to(second.entry_id)
        status, _previous = await worker.settle(second, job=job_ref(done_job), state="done")
        assert proxy.dropped == 2
        assert status in (Settlement.OK, Settlement.ALREADY)
        request = await states.request(done_job.request_id)
        assert request is not None
        assert (request["jobs_done"], request["jobs_dead"], request["jobs_finished"]) == (
            "1",
            "1",
            "2",
        )
        job_events = [
            fields for _id, fields in await redis_client.xrange(keys.results)
            if fields["type"] == "job"
        ]  # fmt: skip
        assert sorted(event["job_id"] for event in job_events) == sorted(
            [dead_job.job_id, done_job.job_id]
        )
    finally:
        await faulty.aclose()
        await proxy.close()


async def test_unknown_lag_is_reported_as_unknown_not_zero(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    worker = consumer(redis_client, namespace, "a")
    await worker.ensure()
    ids = [await redis_client.xadd(worker.stream, {"n": str(n)}) for n in range(5)]
    await worker.read(1, 10)
    known = await group_stats(redis_client, worker.stream, "workers")
    assert (known.lag, known.pending, known.backlog) == (4, 1, 5)
    # A group moved by XGROUP SETID without ENTRIESREAD: no server can tell its lag.
    await redis_client.execute_command("XGROUP", "SETID", worker.stream, "workers", ids[1])
    unknown = await group_stats(redis_client, worker.stream, "workers")
    assert unknown.lag is None and unknown.backlog is None
    assert unknown.pending == 1


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    plan=st.lists(
        st.tuples(st.sampled_from(["add", "read_a", "read_b", "ack_a", "ack_b", "trim"]),
                  st.integers(1, 5)),
        min_size=1, max_size=30,
    )
)  # fmt: skip
def test_trimming_removes_exactly_what_every_group_has_read_and_acknowledged(
    redis_url: str, plan: list[tuple[str, int]]
) -> None:
    async def scenario() -> None:
        redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        stream = "trimprop:stream"
        await redis.delete(stream)
        groups = {}
        for name in ("a", "b"):
            groups[name] = ConsumerGroup(
                redis, stream=stream, group=name, consumer="c", keys=Keys("trimprop")
            )
            await groups[name].ensure()
        held: dict[str, list[str]] = {"a": [], "b": []}
        read: dict[str, int] = {"a": 0, "b": 0}  # how many of `added` each group has read
        added: list[str] = []
        for action, count in plan:
            if action == "add":
                added += [await redis.xadd(stream, {"n": "x"}) for _ in range(count)]
            elif action.startswith("read"):
                group = action[-1]
                got = [d.entry_id for d in await groups[group].read_new(count, None)]
                held[group] += got
                read[group] += len(got)
            elif action.startswith("ack"):
                group = action[-1]
                acked, held[group] = held[group][:count], held[group][count:]
                await groups[group].ack(acked)
            else:
                await trim(redis, stream)
        await trim(redis, stream)
        remaining = [entry_id for entry_id, _ in await redis.xrange(stream)]
        # What some group still needs: its oldest unacknowledged entry, or its first unread one.
        needed = [
            added.index(held[group][0]) if held[group] else read[group] for group in ("a", "b")
        ]
        assert remaining == added[min(needed) :], "trimmed too much or too little"
        await redis.aclose()

    asyncio.run(scenario())

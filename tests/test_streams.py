"""The streams layer against a real server: leases, reclaim, retries, dead letters, trimming."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.keys import Keys
from shared.streams import ConsumerGroup, group_stats, trim


def consumer(
    redis: aioredis.Redis, namespace: str, name: str, *, lease: float = 0.3, attempts: int = 3
) -> ConsumerGroup:
    keys = Keys(namespace)
    return ConsumerGroup(
        redis, stream=keys.jobs("product"), group="workers", consumer=name, keys=keys,
        lease_seconds=lease, max_attempts=attempts,
    )  # fmt: skip


async def test_a_renewed_lease_keeps_the_entry_and_a_lapsed_one_is_reclaimed(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    first, second = consumer(redis_client, namespace, "a"), consumer(redis_client, namespace, "b")
    await first.ensure()
    await redis_client.xadd(first.stream, {"n": "1"})
    [delivery] = await first.read(10, 10)
    for _ in range(4):  # well past the 0.3 s lease in total, renewed within it
        await asyncio.sleep(0.15)
        assert await first.renew([delivery.entry_id]) == [delivery.entry_id]
        assert await second.reclaim(10) == []
    await asyncio.sleep(0.4)
    [reclaimed] = await second.reclaim(10)
    assert reclaimed.entry_id == delivery.entry_id and reclaimed.attempt == 2
    assert await first.renew([delivery.entry_id]) == [], "a lapsed owner cannot steal it back"


async def test_a_failed_entry_is_retried_after_its_backoff_then_dead_lettered_with_its_error(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    worker = consumer(redis_client, namespace, "a", lease=5.0, attempts=2)
    await worker.ensure()
    await redis_client.xadd(worker.stream, {"n": "1"})
    [delivery] = await worker.read(10, 10)
    await worker.retry_later(delivery, "disk full", backoff_seconds=0.2)
    assert await worker.reclaim(10) == [], "not before the backoff"
    await asyncio.sleep(0.3)
    [retry] = await worker.reclaim(10)
    assert retry.attempt == 2
    await worker.retry_later(retry, "disk still full", backoff_seconds=0.1)
    [(_id, dead)] = await redis_client.xrange(Keys(namespace).dead)
    assert dead["reason"] == "max_attempts"
    assert "disk still full" in dead["error"] and dead["attempts"] == "2"
    stats = await group_stats(redis_client, worker.stream, "workers")
    assert stats.pending == 0


async def test_an_entry_of_a_killed_consumer_past_max_attempts_goes_to_dead_letters(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    worker = consumer(redis_client, namespace, "a", lease=0.1, attempts=2)
    await worker.ensure()
    await redis_client.xadd(worker.stream, {"n": "1"})
    await worker.read(10, 10)
    await asyncio.sleep(0.15)
    assert len(await worker.reclaim(10)) == 1  # second delivery
    await asyncio.sleep(0.15)
    assert await worker.reclaim(10) == []  # third would exceed max_attempts
    [(_id, dead)] = await redis_client.xrange(Keys(namespace).dead)
    assert "none recorded (the consumer stopped or was killed)" in dead["error"]


async def test_unknown_lag_is_reported_as_unknown_not_zero(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    worker = consumer(redis_client, namespace, "a")
    await worker.ensure()
    ids = [await redis_client.xadd(worker.stream, {"n": str(n)}) for n in range(5)]
    await worker.read(1, 10)
    await redis_client.xdel(worker.stream, ids[3])
    stats = await group_stats(redis_client, worker.stream, "workers")
    assert stats.lag is None or stats.lag == 3
    assert stats.pending == 1


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    plan=st.lists(
        st.tuples(st.sampled_from(["add", "read_a", "read_b", "ack_a", "ack_b", "trim"]),
                  st.integers(1, 5)),
        min_size=1, max_size=30,
    )
)  # fmt: skip
def test_trimming_never_removes_what_a_group_has_not_read_and_acknowledged(
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
        done: dict[str, set[str]] = {"a": set(), "b": set()}
        added: list[str] = []
        for action, count in plan:
            if action == "add":
                added += [await redis.xadd(stream, {"n": "x"}) for _ in range(count)]
            elif action.startswith("read"):
                group = action[-1]
                held[group] += [d.entry_id for d in await groups[group].read_new(count, None)]
            elif action.startswith("ack"):
                group = action[-1]
                acked, held[group] = held[group][:count], held[group][count:]
                await groups[group].ack(acked)
                done[group].update(acked)
            else:
                await trim(redis, stream)
        await trim(redis, stream)
        remaining = {entry_id for entry_id, _ in await redis.xrange(stream)}
        for entry_id in added:
            if not (entry_id in done["a"] and entry_id in done["b"]):
                assert entry_id in remaining, "an entry some group still needs was trimmed"
        await redis.aclose()

    asyncio.run(scenario())

"""Bounded state on a real server: consumers, dead letters, records, the events stream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from services.cli.app import app
from services.dispatcher.bridge import LegacyBridge
from services.dispatcher.service import Dispatcher
from shared.config import DispatcherSettings
from shared.jobstate import JobStates, job_ref
from shared.keys import WORKER_GROUP, Keys
from shared.streams import ConsumerGroup
from tests.processes import service_env, wait_until
from tests.queue_support import dispatch_request, worker_group
from tests.test_worker import start


async def cli(*args: str) -> str:
    """`conveyor ARGS` as a user runs it (in a thread: the command runs its own event loop)."""
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def dispatcher(
    redis: aioredis.Redis, redis_url: str, namespace: str, **values: object
) -> Dispatcher:
    settings = DispatcherSettings(
        redis_url=redis_url, namespace=namespace, block_ms=50, legacy_bridge=False, **values,  # type: ignore[arg-type]
    )  # fmt: skip
    return Dispatcher(redis, settings, check=None, registry=CollectorRegistry())


async def consumer_names(redis: aioredis.Redis, stream: str) -> list[str]:
    return sorted(str(c["name"]) for c in await redis.xinfo_consumers(stream, WORKER_GROUP))


async def test_housekeeping_removes_consumers_idle_past_the_threshold_that_hold_nothing(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    stream = keys.jobs("product")
    await dispatch_request(redis_client, redis_url, namespace, jobs=2)
    holding = worker_group(redis_client, namespace, "killed-holding", lease_seconds=60)
    await holding.read(1, 10)  # killed while holding a job: must stay, its entry is pending
    for number in range(30):  # pods that came and went without leaving their group
        await redis_client.xgroup_createconsumer(stream, WORKER_GROUP, f"gone-{number}")
    assert len(await consumer_names(redis_client, stream)) == 31
    service = dispatcher(redis_client, redis_url, namespace, consumer_idle_seconds=0.2)

    async def idle_ones_removed() -> bool:
        await service.housekeeping_once()
        return await consumer_names(redis_client, stream) == ["killed-holding"]

    await wait_until(idle_ones_removed, timeout=30, interval=0.05)
    removed = service.metrics.registry.get_sample_value(
        "conveyor_consumers_removed_total", {"stream": stream}
    )
    assert removed == 30


async def test_housekeeping_keeps_a_live_consumer_that_holds_nothing(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    live = worker_group(redis_client, namespace, "live")
    await live.ensure()
    service = dispatcher(redis_client, redis_url, namespace, consumer_idle_seconds=0.5)
    for _round in range(5):
        await live.read_new(1, 200)  # a live worker reads every block_ms
        await service.housekeeping_once()
    assert await consumer_names(redis_client, keys.jobs("product")) == ["live"]


async def test_a_dead_letter_is_written_once_per_entry_and_the_stream_is_capped(
    redis_client: aioredis.Redis, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    from shared.config import ConsumerSettings

    keys = Keys(namespace)
    group = ConsumerGroup(
        redis_client, stream=keys.jobs("product"), group=WORKER_GROUP, consumer="w", keys=keys,
        settings=ConsumerSettings.model_construct(dead_letters_max=3),
    )  # fmt: skip
    await group.ensure()
    for number in range(5):
        await redis_client.xadd(group.stream, {"n": str(number)})
    deliveries = await group.read(5, 10)
    for delivery in deliveries:
        await group.dead_letter(delivery, reason="invalid_job", error="unreadable")
        await group.dead_letter(delivery, reason="invalid_job", error="unreadable")  # a retry
    letters = await redis_client.xrange(keys.dead)
    assert [fields["entry_id"] for _id, fields in letters] == [
        d.entry_id for d in deliveries[-3:]
    ], "the cap keeps the newest"
    index = await redis_client.hgetall(keys.dead_index)
    assert sorted(index.values()) == sorted(letter_id for letter_id, _ in letters)


async def test_replaying_a_dead_job_reopens_it_and_its_request_counts_it_once(
    redis_client: aioredis.Redis, redis_url: str, namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    keys = Keys(namespace)
    [job] = await dispatch_request(redis_client, redis_url, namespace, jobs=1)
    worker = worker_group(redis_client, namespace, "w", lease_seconds=5)
    [delivery] = await worker.read(1, 10)
    await worker.dead_letter(delivery, reason="permanent", error="corrupt input", job=job_ref(job))
    states = JobStates(redis_client, keys)
    request = await states.request(job.request_id)
    assert request is not None and request["state"] == "finished"

    monkeypatch.setenv("CONVEYOR_REDIS_URL", redis_url)
    monkeypatch.setenv("CONVEYOR_NAMESPACE", namespace)
    assert "replayed 1" in await cli("dead", "replay", "--all")
    assert await redis_client.xlen(keys.dead) == 0
    assert await redis_client.hlen(keys.dead_index) == 0
    record = await states.get(job.job_id)
    assert record is not None and record["state"] == "queued"
    request = await states.request(job.request_id)
    assert request is not None
    assert (request["state"], request["jobs_finished"], request["jobs_dead"]) == (
        "dispatched",
        "0",
        "0",
    )

    [again] = await worker.read(1, 10)
    await worker.settle(again, job=job_ref(job), state="done")
    request = await states.request(job.request_id)
    assert request is not None
    assert (request["state"], request["jobs_finished"], request["jobs_done"]) == (
        "finished",
        "1",
        "1",
    )


async def test_dead_letters_are_purged_on_request(
    redis_client: aioredis.Redis, namespace: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys(namespace)
    group = worker_group(redis_client, namespace, "w")
    await group.ensure()
    for number in range(4):
        await redis_client.xadd(group.stream, {"n": str(number)})
    for delivery in await group.read(4, 10):
        await group.dead_letter(delivery, reason="invalid_job", error="unreadable")
    [first, *_rest] = [letter_id for letter_id, _ in await redis_client.xrange(keys.dead)]
    monkeypatch.setenv("CONVEYOR_REDIS_URL", redis_url)
    monkeypatch.setenv("CONVEYOR_NAMESPACE", namespace)
    assert "purged 1" in await cli("dead", "purge", first)
    assert "purged 0" in await cli("dead", "purge", "--older-than-days", "1")
    assert "purged 3" in await cli("dead", "purge", "--all")
    assert await redis_client.xlen(keys.dead) == 0 and await redis_client.hlen(keys.dead_index) == 0


async def test_the_bridge_leaves_items_in_their_list_while_the_events_stream_is_full(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    bridge = LegacyBridge(
        redis_client, lists=["jobProduct"], events_stream=keys.events, max_events=5
    )
    await redis_client.rpush("jobProduct", *(json.dumps({"n": n}) for n in range(8)))
    while await bridge.move_once():
        pass
    assert await redis_client.xlen(keys.events) == 5
    assert await redis_client.llen("jobProduct") == 3, "waiting, not dropped"


async def test_status_shows_live_consumers_only_and_the_server_memory(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    keys = Keys(namespace)
    # No job: the worker here only has to be alive (it has no datacube index to run one with).
    await worker_group(redis_client, namespace, "probe").ensure()
    for name in ("stale-1", "stale-2"):
        await redis_client.xgroup_createconsumer(keys.jobs("product"), WORKER_GROUP, name)
    services: dict = {}
    env = service_env(redis_url, namespace, CONVEYOR_BLOCK_MS="100", CONVEYOR_LEASE_SECONDS="1.5")
    try:
        start(services, "w", "services.worker", env, tmp_path / "w.log")

        async def worker_joined() -> bool:
            return len(await consumer_names(redis_client, keys.jobs("product"))) == 3

        await wait_until(worker_joined, timeout=120)
        monkeypatch.setenv("CONVEYOR_REDIS_URL", redis_url)
        monkeypatch.setenv("CONVEYOR_NAMESPACE", namespace)
        monkeypatch.setenv("CONVEYOR_LEASE_SECONDS", "1.5")

        async def stale_ones_not_live() -> bool:
            report = json.loads(await cli("status", "--json"))
            [jobs] = [row for row in report["streams"] if row["stream"] == keys.jobs("product")]
            return jobs["consumers"] == 1 and jobs["stale_consumers"] == 2

        await wait_until(stale_ones_not_live, timeout=30, interval=0.2)
        report = json.loads(await cli("status", "--json"))
        assert report["server"]["used_memory"] > 0
        [jobs] = [row for row in report["streams"] if row["stream"] == keys.jobs("product")]
        assert jobs["live_consumers"][0] not in ("stale-1", "stale-2")
        text = await cli("status")
        assert "server memory:" in text and "not seen for a lease" in text
    finally:
        for service in services.values():
            service.close()

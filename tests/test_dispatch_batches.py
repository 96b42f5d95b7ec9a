"""The dispatch step on a real server: bounded batches, exactly once through lost replies, a
dispatcher SIGKILLed between batches, and re-submission after the dedupe TTL."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from services.dispatcher.batches import batches, progress_key
from services.dispatcher.planning import plan_request
from services.dispatcher.service import Dispatcher
from shared.config import DispatcherSettings
from shared.keys import Keys
from shared.messages import ProductRequest, parse_request
from shared.redis_connection import connect
from shared.seed import SEED_PRODUCT_ITEM
from shared.streams import flatten_commands
from tests.processes import (
    ServiceProcess,
    pending_entries,
    running_service,
    service_env,
    wait_ready,
    wait_until,
)
from tests.test_dispatcher import drain, jobs_in, small_item

SEED = json.loads(SEED_PRODUCT_ITEM)
# The seed box in 3 km tiles (35 x 35: 1,225) for two half-years: 2,450 jobs.
MANY_JOBS = SEED | {"job_code": "shoreline", "time_step": "6M"}
MANY_JOBS_TILE_PIXELS = 100
MANY_JOBS_COUNT = 2_450


def parsed(item: dict[str, Any]) -> ProductRequest:
    request, _ignored = parse_request(item)
    assert isinstance(request, ProductRequest)
    return request


async def request_record(redis: aioredis.Redis, keys: Keys, request_id: str) -> dict[str, Any]:
    record: dict[str, Any] = await redis.hgetall(keys.request(request_id))
    record["jobs"] = await redis.lrange(keys.request_jobs(request_id), 0, -1)
    return record


def test_no_script_call_is_over_the_batch_budget_however_large_the_request() -> None:
    plan = plan_request(
        parsed(SEED | {"time_step": "1M"}), tile_size=None, tile_size_pixels=MANY_JOBS_TILE_PIXELS
    )
    assert plan.count == 1_225 * 12
    budget = 512 * 1024
    sizes, jobs = [], 0
    for batch in batches(plan, Keys("t"), 0, budget, now=0.0):
        arguments = [argument.encode() for argument in flatten_commands(batch.commands)]
        # As sent: `$<length>\r\n<argument>\r\n` each.
        sizes.append(sum(len(a) + len(str(len(a))) + 5 for a in arguments))
        jobs += batch.jobs
    assert jobs == plan.count
    assert len(sizes) > 10
    assert max(sizes) <= budget


async def test_a_large_request_is_dispatched_in_batches_exactly_once(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    client = connect(redis_url)
    settings = DispatcherSettings(
        redis_url=redis_url, namespace=namespace, block_ms=50,
        tile_size_pixels=MANY_JOBS_TILE_PIXELS, dispatch_batch_bytes=64 * 1024,
    )  # fmt: skip
    service = Dispatcher(client, settings)
    await service.group.ensure()
    await redis_client.xadd(keys.events, {"payload": json.dumps(MANY_JOBS)})
    [delivery] = await service.group.read(10, 50)

    tracemalloc.start()
    try:
        assert await service.handle(delivery) == MANY_JOBS_COUNT
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Made a batch at a time: all 2,450 jobs and their commands at once take about 10 MiB.
    assert peak < 5 * 2**20
    jobs = await jobs_in(redis_client, keys.jobs("product"))
    assert len(jobs) == MANY_JOBS_COUNT
    assert len({job.job_id for job in jobs}) == MANY_JOBS_COUNT
    record = await request_record(redis_client, keys, jobs[0].request_id)
    assert record["jobs_total"] == str(MANY_JOBS_COUNT)
    assert len(record["jobs"]) == MANY_JOBS_COUNT
    assert not await redis_client.exists(progress_key(keys, jobs[0].request_id))
    assert await pending_entries(redis_client, keys.events, "dispatcher") == 0
    await client.aclose()


class ReplyLosingProxy:
    """A TCP proxy to the server that, when armed, passes the next script call on and then drops
    the connection before the client gets the reply: a reply lost on the network."""

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.armed = 0
        self.dropped = 0
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self.connections:
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        lose_next_reply = asyncio.Event()

        async def to_server() -> None:
            while data := await reader.read(65536):
                if self.armed and b"EVALSHA" in data.upper():
                    self.armed -= 1
                    lose_next_reply.set()
                upstream_writer.write(data)
                await upstream_writer.drain()

        async def to_client() -> None:
            while data := await upstream_reader.read(65536):
                if lose_next_reply.is_set():
                    self.dropped += 1
                    break
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.create_task(to_server()), asyncio.create_task(to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            upstream_writer.close()


@pytest.fixture
async def losing_proxy(redis_url: str) -> AsyncIterator[ReplyLosingProxy]:
    proxy = ReplyLosingProxy(redis_url)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.mark.parametrize("lost_calls", [1, 3])
async def test_a_dispatch_whose_reply_was_lost_reports_the_same_outcome_and_adds_nothing_twice(
    redis_client: aioredis.Redis,
    namespace: str,
    losing_proxy: ReplyLosingProxy,
    lost_calls: int,
) -> None:
    keys = Keys(namespace)
    client = connect(losing_proxy.url)  # redis-py resends a script after a lost reply
    settings = DispatcherSettings(
        redis_url=losing_proxy.url, namespace=namespace, block_ms=50,
        tile_size_pixels=MANY_JOBS_TILE_PIXELS, dispatch_batch_bytes=256 * 1024,
    )  # fmt: skip
    service = Dispatcher(client, settings)
    await redis_client.xadd(keys.events, {"payload": small_item(1)})
    await drain(service)  # loads the scripts, so the calls below are the dispatch itself
    before = await redis_client.xlen(keys.jobs("product"))
    item = small_item(2) if lost_calls == 1 else json.dumps(MANY_JOBS)
    expected = plan_request(
        parsed(json.loads(item)), tile_size=None, tile_size_pixels=MANY_JOBS_TILE_PIXELS
    ).count
    await redis_client.xadd(keys.events, {"payload": item})
    [delivery] = await service.group.read(10, 50)

    losing_proxy.armed = lost_calls
    outcome = await service.handle(delivery)

    assert losing_proxy.dropped == lost_calls, "the replies were lost, and the calls resent"
    assert outcome == expected, "a resent dispatch reports what the first one did"
    jobs = await jobs_in(redis_client, keys.jobs("product"))
    assert len(jobs) == before + expected
    assert len({job.job_id for job in jobs}) == before + expected, "no job was added twice"
    record = await request_record(redis_client, keys, jobs[-1].request_id)
    assert len(record["jobs"]) == expected
    assert await pending_entries(redis_client, keys.events, "dispatcher") == 0
    assert await redis_client.xlen(keys.dead) == 0
    await client.aclose()


async def test_a_dispatcher_killed_between_batches_is_taken_over_and_the_request_finished_once(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    keys = Keys(namespace)
    env = service_env(
        redis_url, namespace,
        CONVEYOR_BLOCK_MS="50", CONVEYOR_LEASE_SECONDS="2",
        CONVEYOR_TILE_SIZE_PIXELS=str(MANY_JOBS_TILE_PIXELS),
        CONVEYOR_DISPATCH_BATCH_BYTES="4096",  # a couple of jobs per call: many calls
    )  # fmt: skip
    request_id = parsed(MANY_JOBS).request_id
    with running_service("services.dispatcher", env, tmp_path / "first.log") as first:
        await wait_ready(first)
        await redis_client.xadd(keys.events, {"payload": json.dumps(MANY_JOBS)})

        async def some_batches_out() -> bool:
            return await redis_client.xlen(keys.jobs("product")) >= 200

        await wait_until(some_batches_out, timeout=60, interval=0.005)
        first.kill()
    at_kill = await redis_client.xlen(keys.jobs("product"))
    progress = await redis_client.hgetall(progress_key(keys, request_id))
    assert 0 < at_kill < MANY_JOBS_COUNT, "killed between batches, mid-request"
    assert int(progress["next"]) == at_kill, "each batch went whole or not at all"

    with running_service("services.dispatcher", env, tmp_path / "second.log") as second:

        async def finished() -> bool:
            return (
                await redis_client.xlen(keys.jobs("product")) >= MANY_JOBS_COUNT
                and await pending_entries(redis_client, keys.events, "dispatcher") == 0
            )

        await wait_until(finished, timeout=180)
        assert second.terminate() == 0
        assert "resuming a request a dispatcher left half-dispatched" in second.output
    jobs = await jobs_in(redis_client, keys.jobs("product"))
    assert len(jobs) == MANY_JOBS_COUNT
    assert set(Counter(job.job_id for job in jobs).values()) == {1}, "nothing doubled"
    expected = [job.job_id for job in plan_request(
        parsed(MANY_JOBS), tile_size=None, tile_size_pixels=MANY_JOBS_TILE_PIXELS
    ).jobs()]  # fmt: skip
    assert [job.job_id for job in jobs] == expected, "nothing lost, in the planned order"
    record = await request_record(redis_client, keys, request_id)
    assert record["jobs_total"] == str(MANY_JOBS_COUNT)
    assert record["jobs"] == expected
    assert await redis_client.get(keys.dispatched(request_id)) is not None
    assert await redis_client.xlen(keys.dead) == 0


# -- re-submission, end to end -----------------------------------------------------------------


@pytest.fixture
def empty_index(fresh_database: Any) -> str:
    """A datacube index with the Landsat products and no datasets: every job ends as nodata."""
    from shared.datacube import DatacubeSettings, add_products, init_index, open_datacube

    url = str(fresh_database("rerun"))
    settings = DatacubeSettings(db_url=url)  # type: ignore[arg-type]
    init_index(settings)
    datacube = open_datacube(settings)
    try:
        add_products(datacube, ["ls8_usgs_sr_scene"])
    finally:
        datacube.close()
    return url


async def finished_runs(redis: aioredis.Redis, keys: Keys, request_id: str) -> int:
    return sum(
        1
        for _id, fields in await redis.xrange(keys.results)
        if fields["type"] == "request" and fields["request_id"] == request_id
    )


async def test_a_resubmission_after_the_dedupe_ttl_is_a_clean_new_run(
    redis_client: aioredis.Redis,
    redis_url: str,
    namespace: str,
    tmp_path: Path,
    empty_index: str,
) -> None:
    keys = Keys(namespace)
    env = service_env(
        redis_url, namespace, CONVEYOR_BLOCK_MS="50", CONVEYOR_DEDUPE_TTL_SECONDS="1",
        CONVEYOR_DB_URL=empty_index, CONVEYOR_OUTPUT_URL=str(tmp_path / "out"),
    )  # fmt: skip
    # One cell of the grid (x111y182), so one job.
    item = SEED | {
        "query_x_from": "2132000.0", "query_x_to": "2136000.0", "query_y_to": "3505700.0",
        "prefix": "rerun",
    }  # fmt: skip
    request_id = parsed(item).request_id
    services: list[ServiceProcess] = []
    try:
        dispatcher = ServiceProcess("services.dispatcher", env, [], tmp_path / "d.log")
        services.append(dispatcher)
        worker = ServiceProcess(
            "services.worker", env | {"CONVEYOR_METRICS_PORT": str(dispatcher.metrics_port + 1)},
            [], tmp_path / "w.log",
        )  # fmt: skip
        services.append(worker)

        async def runs_finished(count: int) -> None:
            async def done() -> bool:
                return await finished_runs(redis_client, keys, request_id) == count

            await wait_until(done, timeout=180)

        async def ttl_passed() -> bool:
            return not await redis_client.exists(keys.dispatched(request_id))

        await redis_client.rpush("jobProduct", json.dumps(item))
        await runs_finished(1)
        first = await request_record(redis_client, keys, request_id)
        await wait_until(ttl_passed, timeout=30)
        await redis_client.rpush("jobProduct", json.dumps(item))
        await runs_finished(2)
        second = await request_record(redis_client, keys, request_id)

        # A second request whose run is still in flight (no worker takes its jobs).
        assert worker.terminate() == 0
        other = item | {"prefix": "in-flight"}
        other_id = parsed(other).request_id
        await redis_client.rpush("jobProduct", json.dumps(other))

        async def other_dispatched() -> bool:
            return await redis_client.exists(keys.request(other_id)) == 1

        await wait_until(other_dispatched, timeout=60)

        async def other_ttl_passed() -> bool:
            return not await redis_client.exists(keys.dispatched(other_id))

        await wait_until(other_ttl_passed, timeout=30)
        await redis_client.rpush("jobProduct", json.dumps(other))

        async def refused() -> bool:
            return await redis_client.xlen(keys.dead) == 1

        await wait_until(refused, timeout=60)
    finally:
        for service in services:
            service.close()

    total = int(first["jobs_total"])
    assert total == 1 and first["jobs_nodata"] == "1" and first["state"] == "finished"
    assert second["run"] == "2" and second["state"] == "finished"
    assert second["jobs_total"] == first["jobs_total"]
    assert second["jobs_finished"] == str(total), "counters start again, not from the old run"
    assert second["jobs_nodata"] == str(total)
    assert second["jobs"] == first["jobs"], "the job list is not doubled"
    job = await redis_client.hgetall(keys.job(first["jobs"][0]))
    assert job["state"] == "nodata"
    # Finished entries are trimmed from the jobs stream; the results stream keeps each run.
    per_job = Counter(
        fields["job_id"] for _id, fields in await redis_client.xrange(keys.results)
        if fields["type"] == "job" and fields["job_id"] in first["jobs"]
    )  # fmt: skip
    assert set(per_job.values()) == {2}, "each job ran once per run"

    [(_id, letter)] = await redis_client.xrange(keys.dead)
    assert letter["reason"] == "in_flight"
    assert letter["error"].startswith(
        f"request {other_id} is still running its previous run (0 of 1 jobs finished)"
    )
    other_jobs = [
        job for job in await jobs_in(redis_client, keys.jobs("product"))
        if job.request_id == other_id
    ]  # fmt: skip
    assert len(other_jobs) == 1, "no second entry for a job still pending"

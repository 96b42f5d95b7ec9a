"""Hostile events against a dispatcher on a real server: each refused on its first delivery with a
reason, none retried, and the service keeps serving valid work throughout."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from services.dispatcher.service import Dispatcher
from shared.config import DispatcherSettings
from shared.keys import Keys
from shared.redis_connection import connect
from shared.seed import SEED_PRODUCT_ITEM, SEED_SCENE_ITEM
from shared.streams import decode_payload
from shared.wire import raw_bytes
from tests.processes import pending_entries, running_service, service_env, wait_until
from tests.test_dispatcher import drain, jobs_in, small_item

SEED = json.loads(SEED_PRODUCT_ITEM)
SCENE = json.loads(SEED_SCENE_ITEM)
SIXTY_SIX_TILES = {
    "query_x_from": "2112000", "query_x_to": "3168000",
    "query_y_from": "3456000", "query_y_to": "4032000",
}  # fmt: skip


def make_dispatcher(
    redis_url: str, namespace: str, registry: CollectorRegistry | None = None, **settings: Any
) -> tuple[Dispatcher, aioredis.Redis]:
    """A dispatcher in this process, on a client made as the service makes it."""
    client = connect(redis_url)
    service = Dispatcher(
        client,
        DispatcherSettings(redis_url=redis_url, namespace=namespace, block_ms=50, **settings),
        registry=registry,
    )
    return service, client


async def dead_letters(redis: aioredis.Redis, keys: Keys) -> dict[str, dict[str, str]]:
    """Dead letters by the entry id they refused."""
    return {fields["entry_id"]: fields for _id, fields in await redis.xrange(keys.dead)}


async def test_bytes_that_are_not_utf8_are_refused_once_kept_exactly_and_never_stop_the_service(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    keys = Keys(namespace)
    raw = aioredis.Redis.from_url(redis_url)  # bytes in, bytes out: what any producer can send
    readable = connect(redis_url)
    hostile = [
        {b"payload": b'{"job_code": "geomedian\xff\xfe", "product": "ls8"}'},
        {b"payload": b"\xff\xfe\x00 not even JSON"},
        {b"job_code\xc3": b"geomedian", b"product": b"ls8_usgs_sr_scene"},
        {b"payload": SEED_PRODUCT_ITEM.encode(), b"_source": b"jobProduct\xff"},
    ]
    env = service_env(redis_url, namespace, CONVEYOR_BLOCK_MS="50", CONVEYOR_LEASE_SECONDS="2")
    with running_service("services.dispatcher", env, tmp_path / "dispatcher.log") as service:
        ids = [await raw.xadd(keys.events, fields) for fields in hostile]
        await raw.xadd(keys.events, {b"payload": small_item(1).encode()})

        async def settled() -> bool:
            return (
                await readable.xlen(keys.jobs("product")) == 1
                and await pending_entries(readable, keys.events, "dispatcher") == 0
            )

        await wait_until(settled, timeout=60)
        assert service.process.poll() is None, "the dispatcher is still serving"
        assert service.terminate() == 0
        output = service.output
    refused = await dead_letters(readable, keys)
    assert len(refused) == 4
    for entry_id, fields in zip(ids, hostile, strict=True):
        letter = refused[entry_id.decode()]
        assert letter["attempts"] == "1"
        assert letter["reason"] == "invalid_request"
        assert "bytes that are not UTF-8" in letter["error"]
        # The exact bytes, for a person to see and for a replay to send again.
        exact = {
            base64.b64decode(name): base64.b64decode(value)
            for name, value in json.loads(letter["payload_base64"])
        }
        assert exact == fields
        assert {raw_bytes(n): raw_bytes(v) for n, v in decode_payload(letter).items()} == fields
        shown = json.loads(letter["payload"])
        assert any("\ufffd" in name + value for name, value in shown.items())
    assert "Traceback" not in output
    await raw.aclose()
    await readable.aclose()


async def test_an_oversized_event_is_refused_unread(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    service, client = make_dispatcher(redis_url, namespace)
    huge = json.dumps(SEED | {"prefix": "x" * (4 * 1024 * 1024)})
    entry_id = await redis_client.xadd(keys.events, {"payload": huge})
    await redis_client.xadd(keys.events, {"payload": small_item(2)})
    await drain(service)
    letter = (await dead_letters(redis_client, keys))[entry_id]
    assert letter["reason"] == "over_limit"
    assert letter["error"].startswith(
        f"the event is {len(huge) + len('payload'):,} bytes; the limit is 65,536 "
        "(CONVEYOR_MAX_EVENT_BYTES)"
    )
    assert letter["attempts"] == "1" and letter["payload_truncated"] == "true"
    assert len(letter["payload"]) < 4096
    assert len(await jobs_in(redis_client, keys.jobs("product"))) == 1
    await client.aclose()


async def test_requests_over_a_limit_are_dead_lettered_at_once_naming_the_figure(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    # 96 km cells, as the request was first made: 66 cells x 1,826 days.
    service, client = make_dispatcher(redis_url, namespace, tile_size_pixels=3200)
    daily_for_five_years = SEED | SIXTY_SIX_TILES | {
        "job_code": "shoreline", "time_from": "2015-01-01", "time_to": "2019-12-31",
        "time_step": "1D",
    }  # fmt: skip
    continent = SEED | {"naming": "legacy", "query_x_from": "-10000000", "query_x_to": "10000000"}
    tiny_chunks = SEED | {"dask_x_chunk_size": "1"}
    far_future = SEED | {"time_to": "9999-12-31", "time_step": "1D"}
    not_a_number = SEED | {"query_x_from": "nan"}
    infinite = SEED | {"resolution": "inf"}
    nested = "[" * 50_000
    items = [daily_for_five_years, continent, tiny_chunks, far_future, not_a_number, infinite]
    ids = [await redis_client.xadd(keys.events, {"payload": json.dumps(i)}) for i in items]
    ids.append(await redis_client.xadd(keys.events, {"payload": nested}))
    await redis_client.xadd(keys.events, {"payload": small_item(3)})
    await drain(service)

    refused = await dead_letters(redis_client, keys)
    errors = [refused[entry_id]["error"] for entry_id in ids]
    assert errors[0] == (
        "the request makes 120,516 jobs; the limit is 10,000 (CONVEYOR_MAX_JOBS_PER_REQUEST)"
    )
    assert "legacy-named job covers its whole box, 2,236,004,472 pixels" in errors[1]
    assert "Dask chunks of 1 pixels along x; the smallest allowed is 64" in errors[2]
    assert errors[3].startswith("time_to: 9999-12-31 is not between 1970-01-01 and 2099-12-31")
    assert errors[4] == "query_x_from: 'nan' is not a finite number (expected e.g. 2130000.0)"
    assert errors[5] == "resolution: 'inf' is not a finite number (expected e.g. 2130000.0)"
    assert "nests JSON more than 4 levels deep" in errors[6]
    assert {refused[entry_id]["attempts"] for entry_id in ids} == {"1"}
    assert [refused[entry_id]["reason"] for entry_id in ids] == [
        "over_limit", "over_limit", "over_limit", "invalid_request", "invalid_request",
        "invalid_request", "over_limit",
    ]  # fmt: skip
    assert len(await jobs_in(redis_client, keys.jobs("product"))) == 1
    assert not await redis_client.hlen(keys.last_errors(keys.events)), "nothing was retried"
    await client.aclose()


async def test_items_naming_a_place_the_operator_has_not_allowed_are_refused(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    service, client = make_dispatcher(
        redis_url,
        namespace,
        output_url="s3://eo-products/conveyor",
        ard_source="s3://scene-archive/s2",
    )
    elsewhere = SEED | {"bucket": "someone-elses-bucket"}
    ours = SEED | {"bucket": "eo-products", "prefix": "ours"}
    scene_bucket = SCENE | {"s3_bucket": "someone-elses-bucket"}
    scene_source = SCENE | {"source": "/etc", "s3_dir": "a"}
    scene_url = SCENE | {"source": "s3://other-archive/s2", "s3_dir": "b"}
    allowed_scene = SCENE | {"source": "s3://scene-archive/s2/", "s3_dir": "c"}
    legacy_scene = SCENE | {"source": "gcloud", "s3_dir": "d"}
    refused_items = [elsewhere, scene_bucket, scene_source, scene_url]
    ids = [await redis_client.xadd(keys.events, {"payload": json.dumps(i)}) for i in refused_items]
    for accepted in (SEED, ours, SCENE, allowed_scene, legacy_scene):
        await redis_client.xadd(keys.events, {"payload": json.dumps(accepted)})
    await drain(service)

    refused = await dead_letters(redis_client, keys)
    assert [refused[entry_id]["reason"] for entry_id in ids] == ["not_allowed"] * 4
    errors = [refused[entry_id]["error"] for entry_id in ids]
    assert errors[0].startswith(
        "bucket 'someone-elses-bucket' is not an allowed output bucket (allowed: eo-products, "
        "public-eo-data)"
    )
    assert "CONVEYOR_ALLOWED_OUTPUT_BUCKETS" in errors[0]
    assert errors[1].startswith("s3_bucket 'someone-elses-bucket' is not an allowed output bucket")
    assert errors[2].startswith("source '/etc' is not an allowed scene archive")
    assert errors[3].startswith("source 's3://other-archive/s2' is not an allowed scene archive")
    assert "CONVEYOR_ALLOWED_ARD_SOURCES" in errors[3]
    assert len(await jobs_in(redis_client, keys.jobs("product"))) == 2 * 42  # 42 cells x 2
    assert len(await jobs_in(redis_client, keys.jobs("ard"))) == 3
    await client.aclose()


async def test_an_events_source_is_a_metric_label_only_when_the_code_knows_it(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    registry = CollectorRegistry()
    service, client = make_dispatcher(redis_url, namespace, registry=registry)
    pipe = redis_client.pipeline(transaction=False)
    for number in range(300):
        pipe.xadd(keys.events, {"payload": small_item(number), "_source": f"made-up-{number}"})
    pipe.rpush("jobProduct", small_item(400))
    pipe.xadd(keys.events, {"payload": small_item(401)})
    await pipe.execute()
    await drain(service)

    counted = {
        sample.labels["source"]: sample.value
        for metric in registry.collect()
        if metric.name == "conveyor_events_consumed"
        for sample in metric.samples
        if sample.name.endswith("_total")
    }
    assert counted == {"other": 300.0, "jobProduct": 1.0, "stream": 1.0}
    await client.aclose()


async def test_unknown_fields_are_ignored_when_the_environment_says_not_strict(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    keys = Keys(namespace)
    lenient = service_env(
        redis_url, namespace, CONVEYOR_BLOCK_MS="50", CONVEYOR_STRICT_FIELDS="false"
    )
    extra = json.dumps(json.loads(small_item(5)) | {"colour": "red", "cloud_cover": "10"})
    with running_service("services.dispatcher", lenient, tmp_path / "lenient.log") as service:
        await redis_client.rpush("jobProduct", extra)

        async def dispatched() -> bool:
            return await redis_client.xlen(keys.jobs("product")) == 1

        await wait_until(dispatched, timeout=60)
        assert service.terminate() == 0
        lenient_output = service.output
    ignored = [
        json.loads(line)
        for line in lenient_output.splitlines()
        if line.startswith("{") and "ignored unknown fields" in line
    ]
    assert ignored and ignored[0]["fields"] == ["cloud_cover", "colour"]
    assert await redis_client.xlen(keys.dead) == 0

    strict = service_env(redis_url, namespace, CONVEYOR_BLOCK_MS="50")
    with running_service("services.dispatcher", strict, tmp_path / "strict.log") as service:
        await redis_client.rpush("jobProduct", json.dumps(json.loads(extra) | {"prefix": "x/y"}))

        async def refused() -> bool:
            return await redis_client.xlen(keys.dead) == 1

        await wait_until(refused, timeout=60)
        assert service.terminate() == 0
    [(_id, letter)] = await redis_client.xrange(keys.dead)
    assert letter["error"].startswith("unknown fields 'cloud_cover', 'colour' for a ProductRequest")

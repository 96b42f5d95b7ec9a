"""Where products end up, end to end: indexed back and `dc.load`-able (from a directory and from
S3), in the bucket each request names, and one product per tile per `time_step` period.

Work items go in with `RPUSH jobProduct`, as the original inserter pushed them; the dispatcher
and the workers run as real processes against real servers (valkey, PostgreSQL with a datacube
index of a synthetic Landsat 8 archive, moto's S3 over HTTP).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import redis.asyncio as aioredis
import yaml

from shared.keys import Keys
from tests.archive_support import ArchiveFixture
from tests.e2e_support import (
    S3_KEYS,
    TILE_SIZE,
    Running,
    bucket_keys,
    gdal_s3_environment,
    job_records,
    product_item,
    s3_client,
    tiled_box,
    wait_for_requests,
    worker_env,
)
from tests.processes import wait_until


def load_output(archive: ArchiveFixture, product: str, band: str, dataset_id: str) -> Any:
    """The band of an indexed output as `dc.load` gives it, found by a query over its area."""
    from odc.geo.geobox import GeoBox

    datacube = archive.datacube()
    try:
        dataset = datacube.index.datasets.get(dataset_id)
        assert dataset is not None, f"dataset {dataset_id} is not in the index"
        geobox = GeoBox.from_bbox(dataset.extent.boundingbox, crs="EPSG:3460", resolution=30)
        found = datacube.find_datasets(product=product, like=geobox, time=("2019-01", "2019-04"))
        assert [str(candidate.id) for candidate in found] == [dataset_id]
        loaded = datacube.load(product=product, measurements=[band], like=geobox,
                               time=("2019-01", "2019-04"))  # fmt: skip
        return dataset, loaded[band].isel(time=0).values
    finally:
        datacube.close()


async def test_an_output_indexed_back_is_found_and_loaded_with_dc_load(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, e2e_archive: ArchiveFixture,
    tmp_path: Path, running: Running,
) -> None:  # fmt: skip
    keys = Keys(namespace)
    output = tmp_path / "out"
    env = worker_env(redis_url, namespace, e2e_archive, str(output), CONVEYOR_INDEX_OUTPUTS="true")
    running.dispatcher(env)
    running.worker(env)
    await redis_client.rpush("jobProduct", json.dumps(product_item("ndvi")))
    await wait_for_requests(redis_client, keys, 1, running)

    [job] = await job_records(redis_client, keys)
    assert job["state"] == "done", job["error"]
    metadata = Path(job["metadata"].removeprefix("file://"))
    dataset, loaded = load_output(e2e_archive, "ls8_ndvi", "ndvi_median", job["dataset_id"])
    assert dataset.uri == metadata.as_uri()
    band = metadata.with_name(metadata.name.replace("final.odc-metadata.yaml", "ndvi_median.tif"))
    with rasterio.open(band) as written:
        on_disk = written.read(1)
    assert loaded.shape == on_disk.shape == (100, 100)
    assert np.array_equal(loaded, on_disk, equal_nan=True)
    assert np.isfinite(loaded).mean() > 0.5


async def test_an_s3_output_is_indexed_by_its_s3_url_and_dc_load_reads_it_from_there(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, e2e_archive: ArchiveFixture,
    tmp_path: Path, running: Running, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    keys = Keys(namespace)
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket="eo-indexed")
    env = worker_env(
        redis_url, namespace, e2e_archive, "s3://eo-indexed/conveyor",
        CONVEYOR_INDEX_OUTPUTS="true", AWS_S3_ENDPOINT_URL=s3_endpoint, **S3_KEYS,
    )  # fmt: skip
    running.dispatcher(env)
    running.worker(env)
    await redis_client.rpush("jobProduct", json.dumps(product_item("water")))
    await wait_for_requests(redis_client, keys, 1, running)

    [job] = await job_records(redis_client, keys)
    assert job["state"] == "done", job["error"]
    assert job["metadata"].startswith("s3://eo-indexed/conveyor/commonsensing/fiji/e2e/ls8_water/")
    # This process reads the bands as any datacube user would: GDAL, pointed at the endpoint.
    for name, value in gdal_s3_environment(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    dataset, loaded = load_output(e2e_archive, "ls8_water", "frequency", job["dataset_id"])
    assert dataset.uri == job["metadata"]
    frequency_url = job["metadata"].replace("final.odc-metadata.yaml", "frequency.tif")
    assert frequency_url in json.loads(job["outputs"])
    with rasterio.open(frequency_url) as written:
        in_s3 = written.read(1)
    assert loaded.shape == in_s3.shape == (100, 100)
    assert np.array_equal(loaded, in_s3, equal_nan=True)


async def test_a_product_committed_before_indexing_was_on_is_indexed_when_its_job_runs_again(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, e2e_archive: ArchiveFixture,
    tmp_path: Path, running: Running,
) -> None:  # fmt: skip
    """As after a worker killed between the commit and the index: the rerun finds the product
    committed, skips the computation, and indexes it."""
    keys = Keys(namespace)
    output = tmp_path / "out"
    env = worker_env(
        redis_url, namespace, e2e_archive, str(output), CONVEYOR_DEDUPE_TTL_SECONDS="1"
    )
    item = json.dumps(product_item("geomedian"))
    running.dispatcher(env)
    running.worker(env, name="without-index")
    await redis_client.rpush("jobProduct", item)
    await wait_for_requests(redis_client, keys, 1, running)
    assert running.stop("without-index") == 0
    [first] = await job_records(redis_client, keys)
    assert first["state"] == "done", first["error"]
    datacube = e2e_archive.datacube()
    try:
        assert datacube.index.datasets.get(first["dataset_id"]) is None
    finally:
        datacube.close()

    async def no_longer_a_duplicate() -> bool:
        return not await redis_client.exists(keys.dispatched(first["request_id"]))

    await wait_until(no_longer_a_duplicate, timeout=30)
    running.worker(env | {"CONVEYOR_INDEX_OUTPUTS": "true"}, name="with-index")
    await redis_client.rpush("jobProduct", item)
    await wait_for_requests(redis_client, keys, 2, running)

    [again] = await job_records(redis_client, keys)
    assert again["state"] == "skipped", again["error"]
    dataset, loaded = load_output(e2e_archive, "ls8_geomedian", "red", first["dataset_id"])
    assert dataset.uri == first["metadata"]
    assert (loaded != -9999).mean() > 0.5


async def test_with_an_output_url_of_s3_alone_each_request_s_bucket_decides_where_it_lands(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, e2e_archive: ArchiveFixture,
    tmp_path: Path, running: Running, s3_endpoint: str,
) -> None:  # fmt: skip
    keys = Keys(namespace)
    s3 = s3_client(s3_endpoint)
    for bucket in ("eo-alpha", "eo-beta", "public-eo-data"):
        s3.create_bucket(Bucket=bucket)
    env = worker_env(
        redis_url, namespace, e2e_archive, "s3://", AWS_S3_ENDPOINT_URL=s3_endpoint, **S3_KEYS,
        CONVEYOR_ALLOWED_OUTPUT_BUCKETS="eo-alpha,eo-beta,public-eo-data",
    )  # fmt: skip
    running.dispatcher(env)
    running.worker(env)
    items = {
        "eo-alpha": product_item("water", bucket="eo-alpha", prefix="alpha"),
        "eo-beta": product_item("water", bucket="eo-beta", prefix="beta"),
        "public-eo-data": product_item("water", prefix="default"),  # no bucket: the default
    }
    await redis_client.rpush("jobProduct", *(json.dumps(item) for item in items.values()))
    await wait_for_requests(redis_client, keys, 3, running)

    jobs = await job_records(redis_client, keys)
    assert [job["state"] for job in jobs] == ["done"] * 3, [job["error"] for job in jobs]
    for bucket, item in items.items():
        written = bucket_keys(s3, bucket)
        metadata = [key for key in written if key.endswith(".odc-metadata.yaml")]
        assert len(metadata) == 1, f"{bucket}: {written}"
        assert all(key.startswith(f"{item['prefix']}/ls8_water/") for key in written), written
        assert any(key.endswith("_frequency.tif") for key in written)
    recorded = {job["metadata"].split("/")[2] for job in jobs}
    assert recorded == set(items)


def months_of(day: date) -> str:
    return f"{day:%Y-%m}--P1M"


async def test_time_step_makes_one_job_per_tile_per_step_each_written_to_its_own_period(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, e2e_archive: ArchiveFixture,
    tmp_path: Path, running: Running,
) -> None:  # fmt: skip
    keys = Keys(namespace)
    output = tmp_path / "out"
    env = worker_env(redis_url, namespace, e2e_archive, str(output), CONVEYOR_TILE_SIZE=TILE_SIZE)
    running.dispatcher(env)
    running.worker(env)
    item = product_item("ndvi", box=tiled_box(2), time_step="1M", prefix="monthly")
    await redis_client.rpush("jobProduct", json.dumps(item))
    await wait_for_requests(redis_client, keys, 1, running)

    jobs = await job_records(redis_client, keys)
    assert {job["state"] for job in jobs} == {"done"}, [job["error"] for job in jobs]
    periods = ["2019-01--P1M", "2019-02--P1M", "2019-03--P1M", "2019-04--P1M"]
    tiles = ["x710y1167", "x711y1167"]
    assert sorted((job["tile"], job["period"]) for job in jobs) == [
        (tile, period) for tile in tiles for period in periods
    ]
    documents = sorted(output.rglob("*.odc-metadata.yaml"))
    assert [path.relative_to(output).as_posix() for path in documents] == [
        f"monthly/ls8_ndvi/{tile[:4]}/{tile[4:]}/{period}/ls8_ndvi_{tile}_{period}_final"
        ".odc-metadata.yaml"
        for tile in tiles
        for period in periods
    ]
    ids = set()
    for path in documents:
        document = yaml.safe_load(path.read_text())
        ids.add(document["id"])
        period = path.parent.name
        start = document["properties"]["dtr:start_datetime"]
        end = document["properties"]["dtr:end_datetime"]
        assert start.startswith(period[:7]) and end.startswith(period[:7]), (start, end)
        # Only that month's scenes went into it.
        sources = set(document["lineage"]["inputs"])
        this_month = {
            str(record.dataset_id)
            for record in e2e_archive.records
            if months_of(record.solar_day) == period
        }
        assert sources and sources <= this_month, (period, sources - this_month)
        assert len(list(path.parent.glob("*.tif"))) == 5
    assert len(ids) == len(documents), "each tile and period is a dataset of its own"

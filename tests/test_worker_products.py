"""Products end to end: items pushed as users push them, a dispatcher and a worker as processes,
the synthetic archive indexed in PostgreSQL; outputs and job records checked.

Fractional cover and shoreline through a worker; the tide table filtering shoreline days; and
per-product options (buffering, the water method) changing what is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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
from tests.processes import ServiceProcess, wait_until
from tests.test_worker import (
    archive,  # noqa: F401  (the module's archive fixture)
    finished_requests,
    item,
    job_records,
    start,
    worker_env,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def services() -> Iterator[dict[str, ServiceProcess]]:
    running: dict[str, ServiceProcess] = {}
    yield running
    for service in running.values():
        service.close()


def read(output: Path, prefix: str, band: str) -> tuple[np.ndarray, Any]:
    [path] = (output / prefix).rglob(f"*_{band}.tif")
    with rasterio.open(path) as raster:
        return raster.read(1), raster.nodata


async def run_items(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, source: ArchiveFixture,
    tmp_path: Path, services: dict[str, ServiceProcess], items: list[str], invalid: int = 0,
    **env: str,
) -> list[dict[str, str]]:  # fmt: skip
    keys = Keys(namespace)
    environment = worker_env(redis_url, namespace, source, str(tmp_path / "out"), **env)
    start(services, "dispatcher", "services.dispatcher", environment, tmp_path / "d.log")
    start(services, "worker", "services.worker", environment, tmp_path / "w.log")
    await redis_client.rpush("jobProduct", *items)

    async def all_finished() -> bool:
        done = await finished_requests(redis_client, keys) == len(items) - invalid
        return done and await redis_client.xlen(keys.dead) == invalid

    await wait_until(all_finished, timeout=420)
    return await job_records(redis_client, keys)


async def test_fractional_cover_and_shoreline_are_made_by_a_worker(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,  # noqa: F811
    tmp_path: Path, services: dict[str, ServiceProcess],
) -> None:  # fmt: skip
    items = [
        item("fractional_cover", prefix="fc"),
        item("shoreline", prefix="coast"),
        item("fc_percentiles", prefix="fcp"),
    ]
    jobs = await run_items(redis_client, redis_url, namespace, archive, tmp_path, services, items)

    assert {job["state"] for job in jobs} == {"done"}, [job.get("error") for job in jobs]
    output = tmp_path / "out"
    for band in ("bs", "pv", "npv"):
        cover, nodata = read(output, "fc", band)
        assert nodata == 255
        assert (cover != 255).mean() > 0.5 and cover[cover != 255].max() <= 127
    mndwi, _ = read(output, "coast", "mndwi")
    assert np.isfinite(mndwi).mean() > 0.9 and np.nanmax(np.abs(mndwi)) <= 1
    [vector] = (output / "coast").rglob("*_shoreline.geojson")
    assert json.loads(vector.read_text())["type"] == "FeatureCollection"
    median_green, nodata = read(output, "fcp", "pv_pc_50")
    assert nodata == 255 and (median_green != 255).mean() > 0.5
    qa, _ = read(output, "fcp", "qa")
    assert set(np.unique(qa)) <= {0, 1, 2}
    stac = json.loads(next((output / "fcp").rglob("*.stac-item.json")).read_text())
    assert stac["assets"]["pv_pc_50"]["raster:bands"][0]["nodata"] == 255


def acquisition_days(source: ArchiveFixture) -> list[date]:
    return sorted({record.solar_day for record in source.records})


def days_used(source: ArchiveFixture, output: Path, prefix: str) -> list[date]:
    """The solar days of the scenes an output names as its lineage."""
    [metadata] = (output / prefix).rglob("*.odc-metadata.yaml")
    inputs = set(yaml.safe_load(metadata.read_text())["lineage"]["inputs"])
    return sorted({r.solar_day for r in source.records if str(r.dataset_id) in inputs})


async def test_a_tide_table_filters_shoreline_days_in_the_worker(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,  # noqa: F811
    tmp_path: Path, services: dict[str, ServiceProcess],
) -> None:  # fmt: skip
    # Low tide (1 m) before March, high tide (3 m) after: a range of 0..2 keeps January and
    # February, which is what a request for January and February alone sees.
    rows = ["time,height", "2018-12-01T00:00:00Z,1.0", "2019-02-28T23:00:00Z,1.0",
            "2019-03-01T00:00:00Z,3.0", "2019-06-01T00:00:00Z,3.0"]  # fmt: skip
    table = tmp_path / "tides.csv"
    table.write_text("\n".join(rows) + "\n")
    days = acquisition_days(archive)
    assert any(day.month < 3 for day in days) and any(day.month >= 3 for day in days)
    items = [
        item("shoreline", prefix="range", options={"tide_range_from": "0", "tide_range_to": "2"}),
        item("shoreline", prefix="early", time_to="2019-02-28", options={"tide_filter": "none"}),
        item("shoreline", prefix="all", options={"tide_filter": "none"}),
    ]

    jobs = await run_items(
        redis_client, redis_url, namespace, archive, tmp_path, services, items,
        CONVEYOR_TIDE_TABLE=str(table),
    )  # fmt: skip

    assert {job["state"] for job in jobs} == {"done"}, [job.get("error") for job in jobs]
    output = tmp_path / "out"
    filtered, _ = read(output, "range", "mndwi")
    early, _ = read(output, "early", "mndwi")
    everything, _ = read(output, "all", "mndwi")
    np.testing.assert_array_equal(filtered, early)
    assert not np.array_equal(filtered, everything, equal_nan=True)
    log = (tmp_path / "w.log").read_text()
    [kept] = [json.loads(line) for line in log.splitlines() if "shoreline.tide_filter" in line]
    # The cell sees the scenes that cover it, not every scene of the archive.
    seen = days_used(archive, output, "all")
    assert kept["observations"] == len(seen)
    assert kept["kept"] == sum(day.month < 3 for day in seen)


async def test_options_change_what_is_written_and_bad_ones_are_dead_lettered(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,  # noqa: F811
    tmp_path: Path, services: dict[str, ServiceProcess],
) -> None:  # fmt: skip
    unbuffered = {"cloud_filter": "none", "shadow_filter": "none"}
    items = [
        item("water", prefix="wofs"),
        item("water", prefix="qa", options={"method": "qa", **unbuffered}),
        item("ndvi", prefix="buffered"),
        item("ndvi", prefix="unbuffered", options=unbuffered),
        item("ndvi", prefix="bad", options={"cloud_filter": "dilation:99"}),
    ]

    jobs = await run_items(
        redis_client, redis_url, namespace, archive, tmp_path, services, items, invalid=1
    )

    assert sorted(job["state"] for job in jobs) == ["done"] * 4, [j.get("error") for j in jobs]
    [(_id, dead)] = await redis_client.xrange(Keys(namespace).dead)
    assert "cloud_filter" in dead["error"] and "out of range" in dead["error"]
    output = tmp_path / "out"
    wofs_clear, _ = read(output, "wofs", "count_clear")
    qa_clear, _ = read(output, "qa", "count_clear")
    assert not np.array_equal(wofs_clear, qa_clear)
    buffered, _ = read(output, "buffered", "clear_count")
    raw, _ = read(output, "unbuffered", "clear_count")
    seen = raw != -999
    assert (buffered[seen] <= raw[seen]).all() and (buffered[seen] < raw[seen]).any()

"""Water classification end to end: `XADD` and `RPUSH jobWater` items -> dispatcher -> ard
worker -> one indexed `ls8_water_classification` dataset per scene, then water summaries that
count them.

Real valkey, PostgreSQL and processes (`python -m services.dispatcher`, `python -m
services.worker --pool ard` and `--pool product`) over a small synthetic Landsat 8 archive in
an index of its own. Every classification is checked against `wofs.classify` on the scene's
pixels as rasterio reads them from the archive's files, and its flags against `pixel_qa`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import redis.asyncio as aioredis
import yaml
from odc.geo.geobox import GeoBox

from services.worker.products.wofs import CLOUD, CLOUD_SHADOW, NO_DATA, TERRAIN_SHADOW, WET
from services.worker.products.wofs import classify as wofs_classify
from services.worker.water.identity import classification_dataset_id
from shared.keys import Keys
from tests.archive_support import ArchiveFixture, build_archive
from tests.e2e_support import Running, job_records, wait_for_requests, worker_env
from tests.processes import wait_until

PRODUCT = "ls8_usgs_sr_scene"
CLASSIFIED = "ls8_water_classification"
# 6 km x 6 km of the seed's Fiji box (200 x 200 px at 30 m), January to April 2019.
BOX = (2130000.0, 3501000.0, 2136000.0, 3507000.0)
PERIOD = (date(2019, 1, 1), date(2019, 4, 30))
BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")


@pytest.fixture
def archive(fresh_database: Callable[[str], str], tmp_path: Path) -> ArchiveFixture:
    """The archive in an index of its own: each test starts with no classification indexed."""
    return build_archive(
        fresh_database("water"), tmp_path / "archive", PRODUCT, BOX, *PERIOD
    )  # fmt: skip


def search_item(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "job_code": "water_classification",
        "product": PRODUCT,
        "query_x_from": str(BOX[0]),
        "query_y_from": str(BOX[1]),
        "query_x_to": str(BOX[2]),
        "query_y_to": str(BOX[3]),
        "query_crs": "EPSG:3460",
        "time_from": PERIOD[0].isoformat(),
        "time_to": PERIOD[1].isoformat(),
        "prefix": "fiji/water",
    }
    return body | extra


def dataset_item(dataset_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "job_code": "water_classification",
        "dataset_id": dataset_id,
        "prefix": "fiji/water",
    } | extra


def summary_item(method: str, prefix: str) -> str:
    return json.dumps(
        {
            "job_code": "water", "product": PRODUCT,
            "query_x_from": str(BOX[0]), "query_y_from": str(BOX[1]),
            "query_x_to": str(BOX[2]), "query_y_to": str(BOX[3]), "query_crs": "EPSG:3460",
            "time_from": PERIOD[0].isoformat(), "time_to": PERIOD[1].isoformat(),
            "output_crs": "EPSG:3460", "prefix": prefix, "options": {"method": method},
        }
    )  # fmt: skip


def ard_env(
    redis_url: str, namespace: str, archive: ArchiveFixture, tmp_path: Path, **extra: str
) -> dict[str, str]:
    return worker_env(
        redis_url, namespace, archive, str(tmp_path / "out"),
        CONVEYOR_SCRATCH_ROOT=str(tmp_path / "scratch"), CONVEYOR_DASK_THREADS="2", **extra,
    )  # fmt: skip


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as source:
        return source.read(1)


def classification_files(output: Path) -> dict[str, Path]:
    """Each committed classification's COG, by its source dataset id (from its eo3 lineage)."""
    found: dict[str, Path] = {}
    for document_path in output.rglob("*.odc-metadata.yaml"):
        document = yaml.safe_load(document_path.read_text())
        if document["product"]["name"] != CLASSIFIED:
            continue
        [source] = document["lineage"]["inputs"]
        assert document["id"] == str(classification_dataset_id(source, CLASSIFIED))
        found[source] = document_path.parent / document["measurements"]["water"]["path"]
    return found


def check_against_the_scene(water: np.ndarray, record: Any) -> None:
    """The layer is `wofs.classify` on the scene's own pixels where the scene is clear, and its
    flags are what the scene's pixel_qa says."""
    bands = {band: read_band(record.measurement_paths[band]) for band in BANDS}
    qa = read_band(record.measurement_paths["pixel_qa"]).astype(np.int64)
    assert water.shape == qa.shape and water.dtype == np.uint8
    fill = ((qa & 1) != 0) | np.all([bands[band] == -9999 for band in BANDS], axis=0)
    np.testing.assert_array_equal(water == NO_DATA, fill)
    observed = ~fill
    for bit, qa_bit in ((CLOUD, 1 << 5), (CLOUD_SHADOW, 1 << 3), (TERRAIN_SHADOW, 1 << 10)):
        np.testing.assert_array_equal(
            ((water & bit) != 0)[observed], ((qa & qa_bit) != 0)[observed]
        )
    clear = (water == 0) | (water == WET)
    assert clear.mean() > 0.05, "the scene should be partly clear"
    in_range = np.all([(bands[b] >= 1) & (bands[b] <= 10000) for b in BANDS], axis=0)
    assert in_range[clear].all()
    wet = wofs_classify(*(bands[band] for band in BANDS))
    np.testing.assert_array_equal((water == WET)[clear], wet[clear])


async def finished_count(redis: aioredis.Redis, keys: Keys) -> int:
    return sum(1 for _id, f in await redis.xrange(keys.results) if f.get("type") == "request")


async def test_scenes_found_by_xadd_and_named_on_jobWater_are_classified_once_and_indexed(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    running: Running, tmp_path: Path,
) -> None:  # fmt: skip
    keys = Keys(namespace)
    env = ard_env(redis_url, namespace, archive, tmp_path)
    records = {str(record.dataset_id): record for record in archive.records}
    assert len(records) >= 4
    first = archive.records[0]
    running.dispatcher(env)
    running.worker(env, "--pool", "ard")
    # Every scene of the box and period, as one event; and one scene by its id, as the original
    # per-scene queue took it.
    await redis_client.xadd(keys.events, {"payload": json.dumps(search_item())})
    await redis_client.rpush("jobWater", json.dumps(dataset_item(str(first.dataset_id))))  # type: ignore[misc]
    await wait_for_requests(redis_client, keys, 2, running)

    assert await redis_client.xrange(keys.dead) == []
    jobs = await job_records(redis_client, keys)
    searches = [job for job in jobs if job["scene"].startswith("search ")]
    assert [job["state"] for job in searches] == ["done"]
    per_scene = [job for job in jobs if job not in searches]
    # One job per scene found, plus the one named by id; each scene is made exactly once.
    assert len(per_scene) == len(records) + 1
    made = [json.loads(job["outputs"]) for job in per_scene if job["state"] == "done"]
    skipped = [job for job in per_scene if job["state"] == "skipped"]
    assert len(made) == len(records) and len(skipped) == 1
    request = await redis_client.hgetall(keys.request(searches[0]["request_id"]))  # type: ignore[misc]
    assert request["jobs_total"] == str(len(records) + 1)
    assert request["state"] == "finished"

    files = classification_files(tmp_path / "out")
    assert set(files) == set(records)
    for dataset_id, path in files.items():
        with rasterio.open(path) as written:
            assert (written.dtypes[0], written.nodata) == ("uint8", 1.0)
            assert written.transform == records[dataset_id].geobox.transform
            water = written.read(1)
        check_against_the_scene(water, records[dataset_id])

    # The classifications are a product of the index, loadable as such.
    datacube = archive.datacube()
    try:
        found = datacube.find_datasets(product=CLASSIFIED)
        assert {str(dataset.id) for dataset in found} == {
            str(classification_dataset_id(dataset_id, CLASSIFIED)) for dataset_id in records
        }
        geobox = GeoBox.from_bbox(BOX, crs="EPSG:3460", resolution=30)
        cube = datacube.load(product=CLASSIFIED, like=geobox, time=("2019-01-01", "2019-04-30"))
        assert cube.water.dtype == np.uint8 and cube.water.attrs["nodata"] == 1
        assert "wet" in cube.water.attrs["flags_definition"]
        by_time = {
            np.datetime64(record.acquired.replace(tzinfo=None), "ns"): str(record.dataset_id)
            for record in archive.records
        }
        assert cube.sizes["time"] == len(records)
        for when in cube.time.values:
            loaded = cube.water.sel(time=when).values
            np.testing.assert_array_equal(loaded, read_band(files[by_time[when]]))
    finally:
        datacube.close()

    # The same scenes asked for again under another request: every job finds its dataset
    # committed and does nothing.
    documents = {path: path.stat().st_mtime_ns for path in (tmp_path / "out").rglob("*.yaml")}
    await redis_client.xadd(keys.events, {"payload": json.dumps(search_item(time_to="2019-05-01"))})
    await wait_for_requests(redis_client, keys, 3, running)
    rerun = (await job_records(redis_client, keys))[len(jobs) :]
    assert len(rerun) == len(records) + 1
    assert sorted(job["state"] for job in rerun) == ["done"] + ["skipped"] * len(records)
    assert {path: path.stat().st_mtime_ns for path in documents} == documents


async def test_a_water_summary_counting_the_classifications_equals_the_one_from_reflectance(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    running: Running, tmp_path: Path,
) -> None:  # fmt: skip
    keys = Keys(namespace)
    env = ard_env(redis_url, namespace, archive, tmp_path)
    product_env = worker_env(redis_url, namespace, archive, str(tmp_path / "products"))
    running.dispatcher(env)
    running.worker(env, "--pool", "ard", name="ard")
    running.worker(product_env, "--pool", "product", name="product")

    # Before the scenes are classified, counting classifications is refused with the reason.
    await redis_client.rpush(
        "jobWater", json.dumps(dataset_item(str(archive.records[0].dataset_id)))
    )  # type: ignore[misc]
    await wait_for_requests(redis_client, keys, 1, running)
    await redis_client.rpush("jobProduct", summary_item("classification", "summary/early"))  # type: ignore[misc]

    async def refused() -> bool:
        running.check_alive()
        return bool(await redis_client.xlen(keys.dead))

    await wait_until(refused, timeout=240)
    [(_id, letter)] = await redis_client.xrange(keys.dead)
    assert letter["reason"] == "inputs_missing", letter
    assert f"{len(archive.records) - 1} of the {len(archive.records)}" in letter["error"]
    assert "jobWater" in letter["error"]

    await redis_client.rpush("jobWater", json.dumps(search_item()))  # type: ignore[misc]
    await wait_for_requests(redis_client, keys, 3, running)
    await redis_client.rpush(  # type: ignore[misc]
        "jobProduct",
        summary_item("wofs", "summary/reflectance"),
        summary_item("classification", "summary/classified"),
    )
    await wait_for_requests(redis_client, keys, 5, running)
    states = {job["job_code"]: job["state"] for job in await job_records(redis_client, keys)}
    assert states["water"] == "done", states

    summaries = tmp_path / "products" / "summary"
    for band in ("count_wet", "count_clear", "frequency"):
        [from_reflectance] = (summaries / "reflectance").rglob(f"*_{band}.tif")
        [from_classified] = (summaries / "classified").rglob(f"*_{band}.tif")
        expected, counted = read_band(from_reflectance), read_band(from_classified)
        np.testing.assert_array_equal(counted, expected, err_msg=band)
    count_clear = read_band(next((summaries / "classified").rglob("*_count_clear.tif")))
    count_wet = read_band(next((summaries / "classified").rglob("*_count_wet.tif")))
    assert count_clear.max() >= 2, "several clear days should have been counted"
    assert count_wet.max() >= 1 and (count_wet == 0).any(), "the box holds water and land"
    lineage = yaml.safe_load(
        next((summaries / "classified").rglob("*.odc-metadata.yaml")).read_text()
    )
    assert sorted(lineage["lineage"]["inputs"]) == sorted(
        str(classification_dataset_id(str(record.dataset_id), CLASSIFIED))
        for record in archive.records
    )

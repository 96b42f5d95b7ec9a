"""Water classification's parts: items, plans, product definitions, the stored layer, counting
stored layers, and a search's per-scene jobs added exactly once (against a real server).

The service end to end is in `test_water_classification_service.py`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import redis.asyncio as aioredis
import xarray as xr
from datacube.model import Product as DatacubeProduct
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from services.dispatcher.planning import check_limits, plan_request
from services.worker.ard.index import SceneIndexer
from services.worker.outputs.settings import S3Settings
from services.worker.products import ProductContext, get_product, sensor_for
from services.worker.products.wofs import (
    CLOUD,
    CLOUD_SHADOW,
    NO_DATA,
    WET,
    classify,
    water_observations,
)
from services.worker.water.expansion import Expansion
from services.worker.water.identity import classification_dataset_id
from services.worker.water.layer import WATER_SPEC, classify_scene
from shared.catalogue import (
    INPUT_PRODUCTS,
    WATER_CLASSIFICATION_PRODUCTS,
    water_classification_definition,
    water_classification_product,
)
from shared.destinations import DestinationSettings, NotAllowed, check_destinations
from shared.errors import InvalidRequest
from shared.jobs import WaterJob, decode_job, water_dataset_job, water_job
from shared.jobstate import request_record
from shared.keys import LEGACY_LISTS, Keys
from shared.limits import RequestLimits
from shared.mask_filters import UNBUFFERED
from shared.messages import DATASET_ID, WaterClassificationRequest, parse_request
from tests.test_products_support import ALL_PRODUCTS, synthetic_scene

BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")

SEARCH: dict[str, Any] = {
    "job_code": "water_classification",
    "product": "ls8_usgs_sr_scene",
    "latitude_from": "-16.9",
    "latitude_to": "-16.78",
    "longitude_from": "179.92",
    "longitude_to": "180",
    "time_from": "2019-01-01",
    "time_to": "2019-01-31",
}


def water_request(body: dict[str, Any]) -> WaterClassificationRequest:
    request, _ignored = parse_request(body)
    assert isinstance(request, WaterClassificationRequest)
    return request


# -- items -------------------------------------------------------------------------------------


@given(st.uuids())
def test_a_dataset_id_in_either_case_names_the_same_request(dataset: uuid.UUID) -> None:
    lower = water_request({"job_code": "water_classification", "dataset_id": str(dataset)})
    upper = water_request(
        {"job_code": "water_classification", "dataset_id": f" {str(dataset).upper()} "}
    )
    assert lower.dataset_id == upper.dataset_id == str(dataset)
    assert lower.request_id == upper.request_id


@settings(suppress_health_check=[HealthCheck.filter_too_much])
@given(st.text(max_size=48))
def test_anything_but_a_uuid_as_dataset_id_is_refused_naming_the_field(text: str) -> None:
    assume(not DATASET_ID.fullmatch(text.strip()))
    with pytest.raises(InvalidRequest) as refused:
        parse_request({"job_code": "water_classification", "dataset_id": text})
    assert "dataset_id" in str(refused.value)


def test_a_search_names_the_product_area_and_period_and_a_dataset_item_nothing_else() -> None:
    search = water_request(SEARCH)
    assert (search.product, search.dataset_id, search.pool) == ("ls8_usgs_sr_scene", None, "ard")
    assert search.area_crs == "EPSG:4326" and search.area_bounds == (179.92, -16.9, 180, -16.78)
    refusals = {
        "a projected area without its CRS": (
            {**SEARCH, "query_x_from": "1"},
            "give the area either as",
        ),
        "time_to before time_from": (
            {**SEARCH, "time_to": "2018-12-31"},
            "time_from 2019-01-01 is after time_to",
        ),
        "an empty area": ({**SEARCH, "latitude_to": "-16.9"}, "must be less than latitude_to"),
        "a Sentinel-1 product": ({**SEARCH, "product": "s1_grd"}, "is not a known product"),
        "a date that is not one": ({**SEARCH, "time_to": "2019-02-30"}, "is not a date"),
        "a path in the prefix": ({**SEARCH, "prefix": "../up"}, "prefix"),
    }
    for case, (body, words) in refusals.items():
        with pytest.raises(InvalidRequest) as refused:
            parse_request(body)
        assert words in str(refused.value), case


def test_water_items_are_served_from_jobWater_on_the_ard_pool() -> None:
    assert LEGACY_LISTS["jobWater"] == "ard"


def test_a_water_request_is_one_job_on_the_ard_pool_however_large_its_area() -> None:
    search = water_request({**SEARCH, "latitude_from": "-60", "longitude_from": "-180"})
    plan = plan_request(search, tile_size=None, tile_size_pixels=3200)
    check_limits(plan, RequestLimits())
    [job] = list(plan.jobs())
    assert isinstance(job, WaterJob) and job.expands and job.pool == "ard"
    assert list(plan.jobs(1)) == []
    assert decode_job({"job": job.model_dump_json()}) == job
    by_id = water_request({"job_code": "water_classification", "dataset_id": str(uuid.uuid4())})
    [one] = list(plan_request(by_id, tile_size=None, tile_size_pixels=3200).jobs())
    assert isinstance(one, WaterJob) and not one.expands and one.dataset_id == by_id.dataset_id


def test_a_water_job_naming_a_bucket_not_allowed_is_refused_by_the_worker_too() -> None:
    policy = DestinationSettings(output_url="s3://ours").destination_policy()
    job = water_job(water_request({**SEARCH, "bucket": "ours"}))
    check_destinations(job, policy)
    theirs = job.model_copy(update={"request": water_request({**SEARCH, "bucket": "theirs"})})
    with pytest.raises(NotAllowed, match="'theirs' is not an allowed output bucket"):
        check_destinations(theirs, policy)


# -- products ----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", sorted(INPUT_PRODUCTS))
def test_each_input_product_has_a_water_classification_product_as_ga_declares_it(
    source: str,
) -> None:
    name = water_classification_product(source)
    assert WATER_CLASSIFICATION_PRODUCTS[name] == source
    document = water_classification_definition(name)
    DatacubeProduct.validate(document)
    DatacubeProduct.validate_measurements(document)
    assert document["name"] == name and document["metadata_type"] == "eo3"
    [water] = document["measurements"]
    assert (water["name"], water["dtype"], water["nodata"]) == ("water", "uint8", 1)
    flags = water["flags_definition"]
    assert flags["nodata"]["bits"] == 0 and flags["water_observed"]["bits"] == 7
    assert flags["wet"]["values"] == {128: True} and flags["dry"]["values"] == {0: True}
    assert (WATER_SPEC.dtype, WATER_SPEC.nodata) == (water["dtype"], water["nodata"])


def test_products_are_named_as_the_original_named_them() -> None:
    assert water_classification_product("ls8_usgs_sr_scene") == "ls8_water_classification"
    assert water_classification_product("ls5_usgs_sr_scene") == "ls5_water_classification"
    assert water_classification_product("s2_esa_sr_granule") == "s2_water_classification"
    assert water_classification_product("ls9_c2l2_sr") == "ls9c2_water_classification"


# -- the stored layer and counting it ------------------------------------------------------


@pytest.mark.parametrize("product", ALL_PRODUCTS)
def test_a_scene_is_stored_as_its_water_observations_with_cloud_unbuffered(product: str) -> None:
    scene = synthetic_scene(product, dates=2, seed=5)
    sensor = sensor_for(product)
    expected = water_observations(scene.cube, sensor, UNBUFFERED).values
    for day in range(2):
        layer = classify_scene(scene.cube.isel(time=[day]), sensor).compute()
        assert layer.dims == ("y", "x") and layer.dtype == np.uint8
        assert layer.attrs["nodata"] == NO_DATA
        np.testing.assert_array_equal(layer.values, expected[day])


FILTERS = ("none", "dilation:3", "opening:2,dilation:5", "erosion:1", "closing:2,dilation:1")


@settings(max_examples=12, deadline=None)
@given(
    product=st.sampled_from(ALL_PRODUCTS),
    cloud_filter=st.sampled_from(FILTERS),
    shadow_filter=st.sampled_from(FILTERS),
    seed=st.integers(0, 10_000),
)
def test_counting_stored_classifications_equals_classifying_the_reflectance_again(
    product: str, cloud_filter: str, shadow_filter: str, seed: int
) -> None:
    scene = synthetic_scene(product, dates=5, seed=seed, intertidal=True)
    sensor = sensor_for(product)
    water = get_product("water")
    options = {"cloud_filter": cloud_filter, "shadow_filter": shadow_filter}
    # What jobWater stored for each day, loaded as the worker loads a product's datasets.
    stored = xr.Dataset({"water": water_observations(scene.cube, sensor, UNBUFFERED)})
    counted = water.compute(
        stored, sensor, options | {"method": "classification"}, ProductContext()
    ).compute()
    classified = water.compute(scene.cube, sensor, options, ProductContext()).compute()
    for band in ("count_wet", "count_clear", "frequency"):
        np.testing.assert_array_equal(counted[band].values, classified[band].values, band)


def test_counting_classifications_loads_the_classification_product_and_needs_every_scene() -> None:
    plan = get_product("water").load_plan(sensor_for("ls8_c2l2_sr"), {"method": "classification"})
    assert (plan.product, plan.measurements, plan.resampling) == (
        "ls8c2_water_classification", ["water"], "nearest"
    )  # fmt: skip
    assert plan.derived_from is not None and plan.derived_from.product == "ls8_c2l2_sr"
    source = str(uuid.uuid4())
    assert plan.derived_from.dataset_id(source) == classification_dataset_id(
        source, "ls8c2_water_classification"
    )
    default = get_product("water").load_plan(sensor_for("ls8_c2l2_sr"), {})
    assert default.product == "ls8_c2l2_sr" and default.derived_from is None


# -- a search's jobs, each added once ------------------------------------------------------


async def test_a_search_adds_each_scene_job_once_however_often_and_however_far_it_ran(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    search = water_job(water_request(SEARCH))
    request_id = search.request_id
    now = time.time()
    # The dispatcher's record of the request: one job, the search.
    record = request_record(search.request, 1, now) | {"run": "1"}
    await redis_client.hset(keys.request(request_id), mapping=record)  # type: ignore[misc]
    scenes = [water_dataset_job(search, str(uuid.uuid4()), f"scene-{n}") for n in range(25)]
    # Small batches, so that one run is several calls.
    expansion = Expansion(redis_client, keys, batch_bytes=4096)

    # A run that stopped after its first scenes, then two runs at once, then one more.
    assert await expansion.add(search, scenes[:10], now) == 10
    together = await asyncio.gather(
        expansion.add(search, scenes, now), expansion.add(search, list(reversed(scenes)), now)
    )
    assert sum(together) == 15
    assert await expansion.add(search, scenes, now) == 0

    entries = await redis_client.xrange(keys.jobs("ard"))
    added = [decode_job(fields) for _id, fields in entries]
    assert sorted(job.job_id for job in added) == sorted(job.job_id for job in scenes)
    assert await redis_client.lrange(keys.request_jobs(request_id), 0, -1) == [  # type: ignore[misc]
        json.loads(fields["job"])["job_id"] for _id, fields in entries
    ]
    assert await redis_client.hget(keys.request(request_id), "jobs_total") == "26"  # type: ignore[misc]
    job = await redis_client.hgetall(keys.job(scenes[3].job_id))  # type: ignore[misc]
    assert (job["state"], job["scene"], job["pool"]) == ("queued", "scene-3", "ard")

    # The request submitted again once it finished is a new run: its search adds them again.
    await redis_client.hset(keys.request(request_id), "run", "2")  # type: ignore[misc]
    assert await expansion.add(search, scenes, now) == 25
    assert await redis_client.xlen(keys.jobs("ard")) == 50
    assert await redis_client.ttl(keys.expanded(search.job_id, "2")) > 0


# -- a Sentinel-2 granule, to S3 -------------------------------------------------------------


async def test_a_sentinel2_granule_is_classified_on_its_10m_grid_and_committed_to_s3(
    fresh_database: Any, redis_client: aioredis.Redis, s3_endpoint: str,
    aws_credentials: None, tmp_path: Path,
) -> None:  # fmt: skip
    """The 20 m SWIR bands and SCL are taken nearest onto the granule's 10 m grid; the COG,
    STAC item and eo3 document go to S3, the document last, and are indexed from there."""
    import boto3

    from devtools.archive.synthetic import generate_archive
    from services.worker.settings import WorkerSettings
    from services.worker.water.runner import WaterRunner
    from shared.datacube import (
        DatacubeSettings,
        add_products,
        index_datasets,
        init_index,
        open_datacube,
    )

    product = "s2_esa_sr_granule"
    url = fresh_database("water_s2")
    settings = DatacubeSettings(db_url=url)  # type: ignore[arg-type]
    init_index(settings)
    datacube = open_datacube(settings)
    try:
        add_products(datacube, [product])
        records = generate_archive(
            product, (178.40, -17.70, 178.43, -17.67), date(2019, 1, 1), date(2019, 1, 12),
            tmp_path / "archive", processes=1,
        )  # fmt: skip
        index_datasets(datacube, [record.metadata_path for record in records])
    finally:
        datacube.close()
    record = max(records, key=lambda found: -found.cloud_cover)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="water-out")
    worker = WorkerSettings(
        pool="ard", output_url="s3://", allowed_output_buckets=["water-out"],
        scratch_root=tmp_path / "scratch", dask_threads=2, default_chunk_pixels=128,
    )  # fmt: skip
    runner = WaterRunner(
        worker, redis_client, index=SceneIndexer(lambda: open_datacube(settings)),
        s3_settings=S3Settings(
            aws_s3_endpoint_url=s3_endpoint, aws_region="us-east-1", aws_virtual_hosting=False
        ),
    )  # fmt: skip
    request = water_request(
        {"job_code": "water_classification", "dataset_id": str(record.dataset_id),
         "bucket": "water-out", "prefix": "s2"}
    )  # fmt: skip
    try:
        outcome = await runner.run(water_job(request))
        again = await runner.run(water_job(request))
    finally:
        await runner.close()
    assert (outcome.state, outcome.destination, again.state) == ("done", "s3", "skipped")
    keys = [entry["Key"] for entry in s3.list_objects_v2(Bucket="water-out")["Contents"]]
    assert len(keys) == 3 and all(
        key.startswith("s2/s2_water_classification/2019/01/") for key in keys
    )
    [cog_key] = [key for key in keys if key.endswith("_water.tif")]
    (tmp_path / "water.tif").write_bytes(
        s3.get_object(Bucket="water-out", Key=cog_key)["Body"].read()
    )
    with rasterio.open(tmp_path / "water.tif") as written:
        assert written.transform == record.geobox.transform and written.res == (10.0, 10.0)
        water = written.read(1)

    def at_10m(band: str) -> np.ndarray:
        with rasterio.open(record.measurement_paths[band]) as source:
            pixels = source.read(1)
        factor = water.shape[0] // pixels.shape[0]
        return np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)

    bands = {band: at_10m(band).astype(np.int32) for band in BANDS}
    scl = at_10m("scene_classification")
    np.testing.assert_array_equal(water == NO_DATA, scl == 0)
    np.testing.assert_array_equal((water & CLOUD) != 0, np.isin(scl, [8, 9, 10]))
    np.testing.assert_array_equal((water & CLOUD_SHADOW) != 0, scl == 3)
    clear = (water == 0) | (water == WET)
    assert clear.mean() > 0.3
    wet = classify(*(bands[band] for band in BANDS))
    np.testing.assert_array_equal((water == WET)[clear], wet[clear])
    datacube = open_datacube(settings)
    try:
        [indexed] = datacube.find_datasets(product="s2_water_classification")
        assert indexed.uris[0].startswith("s3://water-out/s2/s2_water_classification/")
        assert str(indexed.id) == str(
            classification_dataset_id(record.dataset_id, indexed.product.name)
        )
    finally:
        datacube.close()


def test_the_demo_asks_for_its_landsat_scenes_water_classification_by_its_ard_id(
    tmp_path: Path,
) -> None:
    from types import SimpleNamespace

    from devtools.archive.demo import DemoLandsatScene
    from services.cli.demo import _landsat_items
    from services.worker.ard.metadata import ard_dataset_id

    name = "LC08_L1TP_001072_20190105_20190130_01_T1"
    scenes = [
        DemoLandsatScene(name, "ls8_usgs_sr_scene", "EPSG:32601", (0.0, -1.0, 1.0, 0.0)),
        DemoLandsatScene(
            "LC08_L2SP_001072_20190105_20200830_02_T1", "ls8_c2l2_sr", "EPSG:32601",
            (0.0, -1.0, 1.0, 0.0),
        ),
    ]  # fmt: skip
    items = _landsat_items(SimpleNamespace(landsat_scenes=scenes), tmp_path)
    [item] = items.water
    request = water_request(json.loads(item))
    assert request.dataset_id == str(ard_dataset_id("ls8_usgs_sr_scene", name))


def test_the_water_benchmark_runs_both_ways_and_finds_the_layers_equal() -> None:
    import subprocess
    import sys

    from tests.processes import REPO

    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.water_scene", "--size", "300", "--repeats", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "worker / bare:" in completed.stdout and "layers equal" in completed.stdout

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
from scipy import ndimage

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
BOX = (2130000.0, 3483000.0, 2136000.0, 3489000.0)
PERIOD = (date(2019, 1, 1), date(2019, 4, 30))
BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")


@pytest.fixture
def archive(fresh_database: Callable[[str], str], tmp_path: Path) -> ArchiveFixture:
    """The archive in an index of its own: each test starts with no classification indexed."""
    return build_archive(
        fresh_database("water"), tmp_path / "archive", PRODUCT, BOX, *PERIOD
    )  # fmt: skip


@pytest.fixture(scope="module")
def usgs_record(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One Landsat 8 scene astride the antimeridian off Taveuni, to package as USGS does."""
    from devtools.archive.synthetic import generate_archive

    found = generate_archive(
        PRODUCT, (179.92, -16.90, 180.08, -16.78), date(2019, 1, 1), date(2019, 1, 31),
        tmp_path_factory.mktemp("usgs-source"), processes=1,
    )  # fmt: skip
    return max(found, key=lambda r: (r.geobox.shape[0] * r.geobox.shape[1], -r.cloud_cover))


@pytest.fixture(scope="module")
def usgs_db_url(fresh_database: Callable[[str], str]) -> str:
    from shared.datacube import DatacubeSettings, add_products, init_index, open_datacube

    url = fresh_database("water_usgs")
    settings = DatacubeSettings(db_url=url)  # type: ignore[arg-type]
    init_index(settings)
    datacube = open_datacube(settings)
    add_products(datacube, ["ls8_usgs_sr_scene", "ls8_c2l2_sr"])
    datacube.close()
    return url


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
    """A summary of the box: one job per tile (the tests' tiles are 3 km, so four)."""
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


TILES_IN_BOX = 4


def tiles_of(folder: Path, band: str) -> dict[str, Path]:
    """A summary's COGs of one band, by their tile's folder (`x…/y…`)."""
    return {
        str(path.parent.parent.relative_to(folder)): path for path in folder.rglob(f"*_{band}.tif")
    }


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


def sent_item(letter: dict[str, str]) -> dict[str, Any]:
    """What a dead letter was sent as: the item (dispatcher), or its job's scene (worker)."""
    fields = json.loads(letter["payload"])
    if "job" in fields:
        request = json.loads(fields["job"])["request"]
        return {name: request.get(name) for name in ("dataset_id", "product")}
    return dict(json.loads(fields["payload"]))


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
        assert set(cube.time.values) == set(by_time)
        # Loaded on its own (native UTM) grid, each dataset is its file, pixel for pixel.
        by_id = {str(dataset.id): dataset for dataset in found}
        for dataset_id, path in files.items():
            with rasterio.open(path) as written:
                own_grid = GeoBox(written.shape, written.transform, written.crs.to_wkt())
            dataset = by_id[str(classification_dataset_id(dataset_id, CLASSIFIED))]
            loaded = datacube.load(datasets=[dataset], like=own_grid)
            np.testing.assert_array_equal(loaded.water.isel(time=0).values, read_band(path))
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


async def test_a_summary_counting_the_classifications_matches_the_one_from_reflectance_off_shore(
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
    [(_id, letter), *_others] = await redis_client.xrange(keys.dead)
    assert letter["reason"] == "inputs_missing", letter
    assert f"of the {len(archive.records)}" in letter["error"]
    assert "jobWater" in letter["error"]

    await redis_client.rpush("jobWater", json.dumps(search_item()))  # type: ignore[misc]
    await wait_for_requests(redis_client, keys, 3, running)
    await redis_client.rpush(  # type: ignore[misc]
        "jobProduct",
        summary_item("wofs", "summary/reflectance"),
        summary_item("classification", "summary/classified"),
    )
    await wait_for_requests(redis_client, keys, 5, running)
    jobs = await job_records(redis_client, keys)
    summaries_made = [job for job in jobs if job["job_code"] == "water" and job["state"] == "done"]
    assert len(summaries_made) == 2 * TILES_IN_BOX, [job["state"] for job in jobs]

    summaries = tmp_path / "products" / "summary"
    wet_seen = land_seen = False
    for band in ("count_wet", "count_clear", "frequency"):
        from_reflectance = tiles_of(summaries / "reflectance", band)
        from_classified = tiles_of(summaries / "classified", band)
        assert len(from_classified) == TILES_IN_BOX
        assert set(from_classified) == set(from_reflectance)
        for tile, path in from_classified.items():
            counted, expected = read_band(path), read_band(from_reflectance[tile])
            if band == "count_clear":
                np.testing.assert_array_equal(counted, expected, err_msg=f"{band} {tile}")
            else:
                # Reflectance is loaded bilinear, a classification nearest: a pixel on a
                # shore blends water and land in one and not the other. Away from shores the
                # two methods agree pixel for pixel.
                differ = ~np.isclose(counted, expected, equal_nan=True)
                wet = read_band(tiles_of(summaries / "reflectance", "count_wet")[tile])
                shore = ndimage.maximum_filter(wet, size=3) != ndimage.minimum_filter(wet, size=3)
                assert not (differ & ~shore).any(), (band, tile, np.argwhere(differ & ~shore))
                assert differ.mean() < 0.01, (band, tile, differ.mean())
            if band == "count_clear":
                assert counted.max() >= 2, "several clear days should have been counted"
            if band == "count_wet":
                wet_seen |= bool(counted.max() >= 1)
                land_seen |= bool((counted == 0).any())
    assert wet_seen and land_seen, "the box holds water and land"
    scenes = {
        str(classification_dataset_id(str(record.dataset_id), CLASSIFIED))
        for record in archive.records
    }
    for document in (summaries / "classified").rglob("*.odc-metadata.yaml"):
        inputs = yaml.safe_load(document.read_text())["lineage"]["inputs"]
        assert inputs and set(inputs) <= scenes


async def test_each_water_item_that_cannot_be_served_is_dead_lettered_with_its_reason(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    running: Running, tmp_path: Path,
) -> None:  # fmt: skip
    keys = Keys(namespace)
    env = ard_env(
        redis_url, namespace, archive, tmp_path, CONVEYOR_MAX_JOBS_PER_REQUEST="3"
    )  # fmt: skip
    first = str(archive.records[0].dataset_id)
    classification = str(classification_dataset_id(first, CLASSIFIED))
    outside = {"query_x_from": "2300000", "query_x_to": "2303000"}
    cases: dict[str, tuple[dict[str, Any], str, str, str]] = {
        "unknown product": (
            search_item(product="ls8_usgs_sr"), "invalid_request",
            "'ls8_usgs_sr' is not a known product", "dispatcher",
        ),
        "bad uuid": (
            dataset_item("LC08-not-a-uuid"), "invalid_request", "is not a dataset id",
            "dispatcher",
        ),
        "both": (
            dataset_item(first, product=PRODUCT), "invalid_request",
            "give either dataset_id (one scene), or product", "dispatcher",
        ),
        "no period": (
            search_item(time_from=None, time_to=None), "invalid_request",
            "the period is missing time_from, time_to", "dispatcher",
        ),
        "no area": (
            {"job_code": "water_classification", "product": PRODUCT, "time_from": "2019-01-01",
             "time_to": "2019-01-31"},
            "invalid_request", "no area", "dispatcher",
        ),
        "unknown field": (
            dataset_item(first, output_crs="EPSG:3460"), "invalid_request",
            "unknown field 'output_crs'", "dispatcher",
        ),
        "bucket": (
            dataset_item(first, bucket="someone-elses-bucket"), "not_allowed",
            "'someone-elses-bucket' is not an allowed output bucket", "dispatcher",
        ),
        "not in the index": (
            dataset_item("3fa85f64-5717-4562-b3fc-2c963f66afa6"), "dataset_not_found",
            "has no dataset 3fa85f64-5717-4562-b3fc-2c963f66afa6", "worker",
        ),
        "not a scene": (
            dataset_item(classification), "invalid_request",
            f"is a {CLASSIFIED} dataset; water classification reads scenes of", "worker",
        ),
        "over the limit": (
            search_item(), "over_limit", "more than 3 ls8_usgs_sr_scene scenes; the limit is 3 "
            "(CONVEYOR_MAX_JOBS_PER_REQUEST)", "worker",
        ),
    }  # fmt: skip
    running.dispatcher(env)
    running.worker(env, "--pool", "ard")
    # A classification to name by id, then everything that cannot be served, half on the list.
    await redis_client.rpush("jobWater", json.dumps(dataset_item(first)))  # type: ignore[misc]
    await wait_for_requests(redis_client, keys, 1, running)
    for number, (item, _reason, _words, _service) in enumerate(cases.values()):
        body = json.dumps({name: value for name, value in item.items() if value is not None})
        if number % 2:
            await redis_client.rpush("jobWater", body)  # type: ignore[misc]
        else:
            await redis_client.xadd(keys.events, {"payload": body})
    # A search where there is nothing is not an error: its request ends `nodata`.
    await redis_client.xadd(keys.events, {"payload": json.dumps(search_item(**outside))})

    async def all_dead() -> bool:
        running.check_alive()
        return bool(await redis_client.xlen(keys.dead) >= len(cases))

    await wait_until(all_dead, timeout=240)
    await wait_for_requests(redis_client, keys, 2 + 3, running)
    letters = [fields for _id, fields in await redis_client.xrange(keys.dead)]
    assert len(letters) == len(cases)
    for case, (item, reason, words, service) in cases.items():
        sent = {name: value for name, value in item.items() if value is not None}
        if service == "worker":  # the letter holds the job, and in it the request
            sent = {name: sent.get(name) for name in ("dataset_id", "product")}
        [letter] = [letter for letter in letters if sent_item(letter) == sent]
        assert (letter["reason"], letter["service"]) == (reason, service), (case, letter)
        assert words in letter["error"], (case, letter["error"])
    states = [job["state"] for job in await job_records(redis_client, keys)]
    assert sorted(states) == sorted(["done", "nodata", "dead", "dead", "dead"]), states
    assert not list((tmp_path / "scratch").rglob("*.tif"))


async def test_a_worker_killed_while_classifying_leaves_no_visible_dataset_and_another_finishes(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    running: Running, tmp_path: Path,
) -> None:  # fmt: skip
    keys = Keys(namespace)
    env = ard_env(redis_url, namespace, archive, tmp_path, CONVEYOR_LEASE_SECONDS="3")
    output = tmp_path / "out"
    running.dispatcher(env)
    first = running.worker(env, "--pool", "ard", name="first")
    await redis_client.xadd(keys.events, {"payload": json.dumps(search_item())})

    async def classifying() -> bool:
        running.check_alive()
        jobs = await job_records(redis_client, keys)
        return any(
            job["state"] == "running" and not job["scene"].startswith("search ") for job in jobs
        )

    await wait_until(classifying, timeout=120, interval=0.02)
    first.kill()
    running.stopped.add("first")

    # Whatever the worker was doing, no dataset is half there: each one in the index has all
    # its files, the eo3 document last; none is indexed without its document.
    committed = classification_files(output)
    for dataset_id, cog in committed.items():
        assert cog.is_file() and cog.stat().st_size > 0, dataset_id
        assert list(cog.parent.glob("*.stac-item.json")), dataset_id
    datacube = archive.datacube()
    try:
        indexed = {str(dataset.id) for dataset in datacube.find_datasets(product=CLASSIFIED)}
    finally:
        datacube.close()
    assert indexed <= {str(classification_dataset_id(d, CLASSIFIED)) for d in committed}

    running.worker(env, "--pool", "ard", name="second")
    await wait_for_requests(redis_client, keys, 1, running, timeout=240)
    assert await redis_client.xrange(keys.dead) == []
    states = [job["state"] for job in await job_records(redis_client, keys)]
    assert set(states) <= {"done", "skipped"} and len(states) == len(archive.records) + 1
    files = classification_files(output)
    assert set(files) == {str(record.dataset_id) for record in archive.records}
    datacube = archive.datacube()
    try:
        assert len(datacube.find_datasets(product=CLASSIFIED)) == len(archive.records)
    finally:
        datacube.close()
    assert not [path for path in (tmp_path / "scratch").rglob("*") if path.is_file()]


async def test_landsat_ard_made_from_usgs_tarballs_is_classified_in_both_collections(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, usgs_db_url: str,
    usgs_record: Any, running: Running, tmp_path: Path,
) -> None:  # fmt: skip
    """jobLS -> indexed ARD astride the antimeridian (UTM, negative northings) -> jobWater:
    Collection 1 into ls8_water_classification, Collection 2 (stored as USGS's DN) into
    ls8c2_water_classification, each `wofs.classify` of the scene's reflectance."""
    from devtools.archive.usgs import write_usgs_scene
    from tests.test_ard_landsat_service import environment, places_in, scene_item

    keys = Keys(namespace)
    places = places_in(tmp_path)
    c1 = write_usgs_scene(usgs_record, places["archive"], collection=1)
    c2 = write_usgs_scene(usgs_record, places["archive"], collection=2)
    env = environment(redis_url, namespace, places, usgs_db_url)
    running.dispatcher(env)
    running.worker(env, "--pool", "ard")
    await redis_client.rpush("jobLS", scene_item(c1.name, places), scene_item(c2.name, places))  # type: ignore[misc]
    await wait_for_requests(redis_client, keys, 2, running, timeout=300)
    box = c1.geobox.boundingbox
    crs = f"EPSG:{c1.geobox.crs.epsg}"
    for product in ("ls8_usgs_sr_scene", "ls8_c2l2_sr"):
        item = search_item(
            product=product, query_crs=crs, query_x_from=str(box.left),
            query_x_to=str(box.right), query_y_from=str(box.bottom), query_y_to=str(box.top),
            time_from="2019-01-01", time_to="2019-01-31",
        )  # fmt: skip
        await redis_client.rpush("jobWater", json.dumps(item))  # type: ignore[misc]
    await wait_for_requests(redis_client, keys, 4, running, timeout=300)
    assert await redis_client.xrange(keys.dead) == []

    def written(product: str) -> np.ndarray:
        [path] = (places["products"] / "fiji" / "water" / product).rglob("*_water.tif")
        with rasterio.open(path) as source:
            assert source.transform == c1.geobox.transform
            return source.read(1)

    # OLI's blue is band 2 ... SWIR 2 band 7; Collection 2 rescaled as the catalogue declares:
    # reflectance x 10000 = DN x 0.275 - 2000, fill 0.
    numbers = dict(zip(BANDS, (2, 3, 4, 5, 6, 7), strict=True))
    reflectance = {
        1: {band: c1.values[f"sr_band{n}"] for band, n in numbers.items()},
        2: {
            band: np.where(
                c2.values[f"SR_B{n}"] == 0, -9999,
                np.rint(c2.values[f"SR_B{n}"].astype("float32") * np.float32(0.275)
                        + np.float32(-2000.0)),
            )
            for band, n in numbers.items()
        },
    }  # fmt: skip
    for collection, product in ((1, "ls8_water_classification"), (2, "ls8c2_water_classification")):
        water = written(product)
        clear = (water == 0) | (water == WET)
        assert clear.mean() > 0.3, "the scene should be mostly clear"
        bands = reflectance[collection]
        wet = wofs_classify(*(bands[band] for band in BANDS))
        np.testing.assert_array_equal((water == WET)[clear], wet[clear], err_msg=product)

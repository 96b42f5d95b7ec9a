"""The Landsat queue end to end: `RPUSH jobLS` -> dispatcher -> ARD worker -> indexed scenes,
then `RPUSH jobProduct` geomedian items that load them -> product worker -> composites.

Real valkey, PostgreSQL and processes (`python -m services.dispatcher`, `python -m
services.worker --pool ard` and `--pool product`). The scenes are synthetic USGS downloads of
one Landsat 8 scene astride the antimeridian off Taveuni, Fiji: a Collection 1 ESPA order
(`.tar.gz`) and a Collection 2 Level-2 product (`.tar`).
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
import xarray as xr
import yaml
from rasterio.enums import Resampling
from rasterio.warp import reproject
from scipy import ndimage

from devtools.archive.scene_files import SceneRecord
from devtools.archive.synthetic import generate_archive
from devtools.archive.usgs import UsgsScene, write_usgs_scene
from services.worker.ard.metadata import ard_dataset_id
from services.worker.products import sensor_for
from shared.datacube import DatacubeSettings, add_products, init_index, open_datacube
from shared.embedded import free_port
from shared.keys import Keys
from tests.processes import ServiceProcess, service_env, wait_until

ANTIMERIDIAN = (179.92, -16.90, 180.08, -16.78)
PRODUCTS = ["ls8_usgs_sr_scene", "ls8_c2l2_sr"]


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> SceneRecord:
    root = tmp_path_factory.mktemp("synthetic")
    found = generate_archive(
        "ls8_usgs_sr_scene", ANTIMERIDIAN, date(2019, 1, 1), date(2019, 1, 31), root, processes=1
    )
    # The largest window, and of those the clearest: most of it should reach the composite.
    return max(found, key=lambda r: (r.geobox.shape[0] * r.geobox.shape[1], -r.cloud_cover))


@pytest.fixture(scope="module")
def db_url(fresh_database: Any) -> str:
    url: str = fresh_database("landsat_service")
    settings = DatacubeSettings(db_url=url)  # type: ignore[arg-type]
    init_index(settings)
    cube = open_datacube(settings)
    add_products(cube, PRODUCTS)
    cube.close()
    return url


def places_in(tmp_path: Path) -> dict[str, Path]:
    made = {name: tmp_path / name for name in ("archive", "scratch", "ard", "products")}
    for folder in made.values():
        folder.mkdir()
    return made


def environment(
    redis_url: str, namespace: str, places: dict[str, Path], db_url: str
) -> dict[str, str]:
    return service_env(
        redis_url,
        namespace,
        CONVEYOR_BLOCK_MS="100",
        CONVEYOR_RETRY_BACKOFF_SECONDS="0.2",
        CONVEYOR_SCRATCH_ROOT=str(places["scratch"]),
        CONVEYOR_ARD_SOURCE=str(places["archive"]),
        CONVEYOR_ARD_OUTPUT_URL=str(places["ard"]),
        CONVEYOR_OUTPUT_URL=str(places["products"]),
        CONVEYOR_DB_URL=db_url,
        CONVEYOR_DASK_THREADS="2",
    )


def start(
    module: str, env: dict[str, str], log: Path, *args: str, running: list[ServiceProcess]
) -> ServiceProcess:
    service = ServiceProcess(
        module, env | {"CONVEYOR_METRICS_PORT": str(free_port())}, list(args), log
    )
    running.append(service)
    return service


def scene_item(name: str, places: dict[str, Path]) -> str:
    return json.dumps(
        {"in_scene": name, "inter_dir": str(places["scratch"] / "intermediate"),
         "s3_dir": "fiji/landsat/", "source": "gcloud"}
    )  # fmt: skip


def geomedian_item(product: str, scene: UsgsScene) -> str:
    box = scene.geobox.boundingbox
    crs = f"EPSG:{scene.geobox.crs.epsg}" if scene.geobox.crs is not None else ""
    return json.dumps(
        {
            "job_code": "geomedian", "product": product,
            "query_x_from": str(box.left), "query_y_from": str(box.bottom),
            "query_x_to": str(box.right), "query_y_to": str(box.top), "query_crs": crs,
            "time_from": "2019-01-01", "time_to": "2019-01-31", "output_crs": crs,
            "prefix": f"fiji/{product}",
        }
    )  # fmt: skip


async def job_states(redis: aioredis.Redis, keys: Keys) -> list[dict[str, str]]:
    return [
        await redis.hgetall(keys.job(job_id))  # type: ignore[misc]
        for job_id in await redis.zrange(keys.job_index, 0, -1)
    ]


async def finished_requests(redis: aioredis.Redis, keys: Keys) -> int:
    return sum(
        1 for _id, fields in await redis.xrange(keys.results) if fields.get("type") == "request"
    )


def cell_files(folder: Path, band: str) -> dict[str, Path]:
    """The composite's `band` COGs, by their cell (`x…/y…`, the same in any product)."""
    return {"/".join(path.parent.parent.parts[-2:]): path for path in folder.rglob(f"*_{band}.tif")}


def on_cell(values: np.ndarray, scene: UsgsScene, cell: Path, resampling: Resampling) -> np.ndarray:
    """The scene's `values` warped onto the grid of the cell file `cell`, as the worker warps
    them (GDAL); float, NaN outside the scene."""
    with rasterio.open(cell) as written:
        out = np.full(written.shape, np.nan, dtype="float64")
        transform, crs = written.transform, written.crs
    reproject(
        values.astype("float64"), out,
        src_transform=scene.geobox.affine, src_crs=str(scene.geobox.crs), src_nodata=np.nan,
        dst_transform=transform, dst_crs=crs, dst_nodata=np.nan, resampling=resampling,
    )  # fmt: skip
    return out


def read_cell(path: Path) -> np.ndarray:
    with rasterio.open(path) as written:
        return written.read(1)


async def test_c1_and_c2_tarballs_pushed_on_jobLS_become_scenes_a_geomedian_item_then_uses(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, db_url: str,
    record: SceneRecord, tmp_path: Path,
) -> None:  # fmt: skip
    places = places_in(tmp_path)
    c1 = write_usgs_scene(record, places["archive"], collection=1)
    c2 = write_usgs_scene(record, places["archive"], collection=2)
    env = environment(redis_url, namespace, places, db_url)
    keys = Keys(namespace)
    running: list[ServiceProcess] = []
    try:
        start("services.dispatcher", env, tmp_path / "dispatcher.log", running=running)
        ard = start("services.worker", env, tmp_path / "ard.log", "--pool", "ard", running=running)
        await redis_client.rpush("jobLS", scene_item(c1.name, places), scene_item(c2.name, places))  # type: ignore[misc]

        async def scenes_finished() -> bool:
            return await finished_requests(redis_client, keys) == 2

        await wait_until(scenes_finished, timeout=240)
        states = {job["scene"]: job["state"] for job in await job_states(redis_client, keys)}
        assert states == {c1.name: "done", c2.name: "done"}, ard.output[-3000:]

        product = start(
            "services.worker", env, tmp_path / "product.log", "--pool", "product", running=running
        )
        await redis_client.rpush(  # type: ignore[misc]
            "jobProduct", geomedian_item("ls8_usgs_sr_scene", c1), geomedian_item("ls8_c2l2_sr", c2)
        )

        async def composites_finished() -> bool:
            return await finished_requests(redis_client, keys) == 4

        await wait_until(composites_finished, timeout=300)
        jobs = await job_states(redis_client, keys)
        # Two scenes, then each composite in as many whole cells as the scene touches.
        assert len(jobs) >= 4, jobs
        assert {job["state"] for job in jobs} == {"done"}, product.output[-3000:]
    finally:
        for service in running:
            service.close()

    assert await redis_client.xlen(keys.dead) == 0
    reds: list[dict[str, np.ndarray]] = []
    for product_name, scene, red_file, mask in (
        ("ls8_usgs_sr_scene", c1, "sr_band4", "pixel_qa"),
        ("ls8_c2l2_sr", c2, "SR_B4", "QA_PIXEL"),
    ):
        folder = places["products"] / "fiji" / product_name
        # The composite was made from the scene the ARD worker indexed, and from nothing else.
        for document_path in folder.rglob("*.odc-metadata.yaml"):
            document = yaml.safe_load(document_path.read_text())
            assert document["lineage"]["inputs"] == [str(ard_dataset_id(product_name, scene.name))]
        sensor = sensor_for(product_name)
        clear = sensor.clear(xr.DataArray(scene.values[mask])).values
        has_data = np.ones(clear.shape, dtype=bool)
        for band in (red_file, *(f for f in scene.values if f.lower().startswith("sr_b"))):
            has_data &= scene.values[band] != (0 if scene.collection == 2 else -9999)
        usable = clear & has_data
        assert usable.mean() > 0.3, "the scene should be mostly clear"
        counts, composite_reds = cell_files(folder, "count"), cell_files(folder, "red")
        assert counts and set(counts) == set(composite_reds)
        product_reds: dict[str, np.ndarray] = {}
        for cell, count_path in counts.items():
            count = read_cell(count_path)
            # The cell's grid is its zone's, anchored at the origin, not the scene's own: the
            # scene is warped onto it (masks nearest, reflectance bilinear). Within two pixels
            # of the edge of the usable area (cloud, shadow, no data) a pixel may take its
            # neighbour's mask or lean on a neighbour without reflectance; everywhere else the
            # one usable observation is counted.
            usable_here = on_cell(usable, scene, count_path, Resampling.nearest) == 1
            edge = ndimage.binary_dilation(usable_here, iterations=2) & ~ndimage.binary_erosion(
                usable_here, iterations=2
            )
            differ = (count == 1) != usable_here
            assert not (differ & ~edge).any(), (cell, np.argwhere(differ & ~edge)[:5])
            # One observation: the geomedian is that observation, as int16 reflectance x
            # 10000, interpolated as the worker interpolates it: within a unit for geomad's
            # float round trip and one for the warp of integers (Collection 2's scaled
            # integers are rounded once more on the way).
            red = read_cell(composite_reds[cell])
            want = on_cell(scene.source_values["red"], scene, count_path, Resampling.bilinear)
            inside = ndimage.binary_erosion(usable_here, iterations=2) & (count == 1)
            assert inside.sum() > 1000, cell
            assert np.abs(red[inside] - np.round(want[inside])).max() <= 2, cell
            product_reds[cell] = np.where(count == 1, red, -9999)
        reds.append(product_reds)
    # Where both collections call the pixel clear, both composites hold the same reflectance
    # (to the rounding of the two collections' integers).
    assert set(reds[0]) == set(reds[1])
    for cell, c1_red in reds[0].items():
        both = (c1_red != -9999) & (reds[1][cell] != -9999)
        np.testing.assert_allclose(c1_red[both], reds[1][cell][both], atol=2, err_msg=cell)


async def test_landsat_scenes_that_cannot_be_made_are_dead_lettered_with_their_reason(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, db_url: str,
    record: SceneRecord, tmp_path: Path,
) -> None:  # fmt: skip
    places = places_in(tmp_path)
    corrupt = write_usgs_scene(record, places["archive"], collection=2, processed=date(2020, 9, 1))
    corrupt.path.write_bytes(corrupt.path.read_bytes()[:4000])
    level1 = write_usgs_scene(
        record, places["archive"], collection=1, level1=True, processed=date(2019, 2, 1)
    )
    items = {
        "corrupt_scene": corrupt.name,
        "unsupported_collection": level1.name,
        "scene_not_found": "LC08_L2SP_073072_20190103_20200901_02_T2",
        "level1_name": "LC08_L1TP_073072_20190103_20190110_02_T1",
        "malformed": "LC08_L2SP_73072_20190103_20200901_02_T1",
    }
    expected = {
        "corrupt_scene": ("corrupt_scene", f"{corrupt.name}.tar is not a readable tar archive"),
        "unsupported_collection": ("unsupported_collection", "is a Level-1 download"),
        "scene_not_found": ("scene_not_found", str(places["archive"])),
        "level1_name": ("unsupported_collection", "Collection 2 Level-2 product instead"),
        "malformed": ("invalid_request", "nor a USGS Landsat product name"),
    }
    env = environment(redis_url, namespace, places, db_url)
    keys = Keys(namespace)
    running: list[ServiceProcess] = []
    try:
        start("services.dispatcher", env, tmp_path / "dispatcher.log", running=running)
        start("services.worker", env, tmp_path / "ard.log", "--pool", "ard", running=running)
        await redis_client.rpush(  # type: ignore[misc]
            "jobLS", *(scene_item(name, places) for name in items.values())
        )

        async def all_dead() -> bool:
            return bool(await redis_client.xlen(keys.dead) >= len(items))

        await wait_until(all_dead, timeout=180)
    finally:
        for service in running:
            service.close()

    letters = [fields for _id, fields in await redis_client.xrange(keys.dead)]
    assert len(letters) == len(items)
    for case, name in items.items():
        [letter] = [letter for letter in letters if name in letter["payload"]]
        reason, words = expected[case]
        assert letter["reason"] == reason, (case, letter)
        assert words in letter["error"], (case, letter["error"])
        assert letter["service"] == ("dispatcher" if case == "malformed" else "worker")
    assert not list(places["ard"].rglob("*.odc-metadata.yaml"))
    assert sorted(p.name for p in places["scratch"].rglob("*")) in ([], ["intermediate"])

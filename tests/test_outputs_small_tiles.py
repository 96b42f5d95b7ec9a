"""Every band either pool writes is a valid Cloud-Optimised GeoTIFF, whatever its size.

Tiles smaller than a COG block (a small `CONVEYOR_TILE_SIZE_PIXELS`, an odd-sized array) are
where GeoTIFF writers fall back to strips; rio-cogeo's validator is the judge.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
import redis.asyncio as aioredis
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros
from rio_cogeo.cogeo import cog_validate

from services.worker.outputs.cog import encode_cog, write_cog_file
from services.worker.outputs.spec import BandSpec, CogOptions
from shared.embedded import free_port
from shared.keys import Keys
from tests.archive_support import ArchiveFixture, build_archive
from tests.processes import ServiceProcess, service_env, wait_until

BOX = (2130000.0, 3499700.0, 2136030.0, 3503810.0)  # 201 x 137 px at 30 m: odd edges


def assert_valid_cog(path: Path) -> None:
    valid, errors, warnings = cog_validate(path, quiet=True)
    assert valid and not errors, (path.name, errors)
    assert not warnings, (path.name, warnings)


@pytest.mark.parametrize(
    "shape", [(1, 1), (1, 700), (7, 13), (128, 128), (300, 511), (512, 512), (513, 1030)]
)
@pytest.mark.parametrize(
    ("dtype", "nodata"),
    [("uint8", 255), ("int8", -1), ("uint16", 0), ("int16", -999), ("int32", -1),
     ("float32", math.nan), ("float64", -9999.0)],
)  # fmt: skip
@pytest.mark.parametrize("blocksize", [512, 256])
def test_a_band_of_any_shape_and_dtype_is_a_valid_cog(
    tmp_path: Path, shape: tuple[int, int], dtype: str, nodata: float, blocksize: int
) -> None:
    geobox = GeoBox.from_bbox(
        (2130000, 3499700, 2130000 + shape[1] * 30, 3499700 + shape[0] * 30),
        crs="EPSG:3460",
        resolution=30,
    )
    band = xr_zeros(geobox, dtype=dtype, chunks=(100, 100))
    spec = BandSpec(dtype=dtype, nodata=nodata)
    options = CogOptions(blocksize=blocksize)

    encoded = tmp_path / "encoded.tif"
    encoded.write_bytes(encode_cog(band, spec, options))
    assert_valid_cog(encoded)
    in_place = tmp_path / "file.tif"
    write_cog_file(band, in_place, spec, options)
    assert_valid_cog(in_place)


@pytest.fixture(scope="module")
def archive(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> ArchiveFixture:
    return build_archive(
        postgres_url,
        Path(tmp_path_factory.mktemp("archive")),
        "ls8_usgs_sr_scene",
        (2129000.0, 3498000.0, 2138000.0, 3505000.0),
        date(2019, 1, 1),
        date(2019, 2, 28),
    )


@pytest.fixture
def processes() -> Iterator[list[ServiceProcess]]:
    running: list[ServiceProcess] = []
    yield running
    for process in running:
        process.close()


async def test_small_cells_of_every_product_are_valid_cogs(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    tmp_path: Path, processes: list[ServiceProcess],
) -> None:  # fmt: skip
    output = tmp_path / "out"
    env = service_env(
        redis_url, namespace,
        CONVEYOR_BLOCK_MS="100", CONVEYOR_OUTPUT_URL=str(output), CONVEYOR_DASK_THREADS="1",
        CONVEYOR_TILE_SIZE_PIXELS="128", **archive.environment,
    )  # fmt: skip
    for module in ("services.dispatcher", "services.worker"):
        log = tmp_path / f"{module}.log"
        processes.append(
            ServiceProcess(module, env | {"CONVEYOR_METRICS_PORT": str(free_port())}, [], log)
        )
    request = {
        "product": "ls8_usgs_sr_scene", "query_crs": "EPSG:3460", "output_crs": "EPSG:3460",
        "query_x_from": BOX[0], "query_y_from": BOX[1], "query_x_to": BOX[2], "query_y_to": BOX[3],
        "time_from": "2019-01-01", "time_to": "2019-02-28", "prefix": "small",
    }  # fmt: skip
    items = [json.dumps(request | {"job_code": code}) for code in ("ndvi", "water", "geomedian")]
    await redis_client.rpush("jobProduct", *items)
    keys = Keys(namespace)

    async def all_finished() -> bool:
        results = await redis_client.xrange(keys.results)
        return sum(1 for _id, fields in results if fields["type"] == "request") == len(items)

    await wait_until(all_finished, timeout=300)
    states = [
        await redis_client.hget(keys.job(job_id), "state")
        for job_id in await redis_client.zrange(keys.job_index, 0, -1)
    ]
    tiles = len(states) // len(items)
    # 201 x 137 px cut by a 128 px grid anchored at the CRS origin: four cells at least.
    assert tiles >= 4 and states == ["done"] * len(states), states
    bands = sorted(output.rglob("*.tif"))
    assert len(bands) == tiles * (5 + 3 + 10)
    shapes = set()
    for path in bands:
        assert_valid_cog(path)
        with rasterio.open(path) as dataset:
            shapes.add(dataset.shape)
            assert np.isfinite(dataset.read(1)).any()
    # Cells are whole, never clipped to the request's box: every band is one 128 px cell,
    # a quarter of a COG block.
    assert shapes == {(128, 128)}, shapes

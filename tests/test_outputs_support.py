"""Builders shared by the output tests: a small synthetic tile result and its spec (no tests)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros

from services.worker.outputs import BandSpec, OutputSpec
from services.worker.outputs.destination import S3Destination
from shared.jobs import Period
from shared.seed import SEED_BOX_EPSG3460

# A 64 x 64 tile at 30 m inside the seed's Fiji box, on the EPSG:3460 grid.
TILE_BOUNDS = (2130000.0, 3499680.0, 2131920.0, 3501600.0)
YEAR_2019 = Period(start=date(2019, 1, 1), end=date(2019, 12, 31))
SOURCES = (
    "6d1d1b5e-1a54-4d8c-9a51-2f9e1d3c0a01",
    "0a7c4f3e-9b1e-4c55-8f0e-7a6b5c4d3e02",
    "f3e2d1c0-b9a8-4765-8432-10fedcba9803",
)
REFLECTANCE = BandSpec(dtype="int16", nodata=-9999)
COUNT = BandSpec(dtype="int16", nodata=-999, overview_resampling="nearest")


def tile_geobox(size: int = 64) -> GeoBox:
    left, _bottom, _right, top = TILE_BOUNDS
    return GeoBox.from_bbox(
        (left, top - size * 30, left + size * 30, top), "EPSG:3460", resolution=30
    )


def band(
    geobox: GeoBox, dtype: str, low: float, high: float, nodata: float | None, seed: int
) -> xr.DataArray:
    """Random pixels in [low, high) with a 4 x 4 corner of nodata."""
    rng = np.random.default_rng(seed)
    layer = xr_zeros(geobox, dtype=dtype)
    if np.dtype(dtype).kind == "f":
        layer.data[:] = rng.uniform(low, high, layer.shape)
    else:
        layer.data[:] = rng.integers(int(low), int(high), layer.shape)
    if nodata is not None:
        layer.data[:4, :4] = nodata
        layer.attrs["nodata"] = nodata
    return layer


def geomedian_result(seed: int = 0, size: int = 64) -> xr.Dataset:
    """What a geomedian plugin hands the writer: reflectance bands and a clear count."""
    geobox = tile_geobox(size)
    bands = {
        name: band(geobox, "int16", 0, 3000, -9999, seed + number)
        for number, name in enumerate(("red", "green", "blue", "nir", "swir1", "swir2"))
    }
    bands["count"] = band(geobox, "int16", 0, 40, -999, seed + 99)
    return xr.Dataset(bands)


def geomedian_spec(**changes: Any) -> OutputSpec:
    fields: dict[str, Any] = {
        "product_name": "ls8_geomedian",
        "job_code": "geomedian",
        "source_product": "ls8_usgs_sr_scene",
        "tile": "x022y036",
        "crs": "EPSG:3460",
        "bounds": TILE_BOUNDS,
        "period": YEAR_2019,
        "sources": SOURCES,
        "prefix": "commonsensing/fiji/landsat_8_geomedian/2019",
        "producer": "example.org",
        "bands": {
            **{name: REFLECTANCE for name in ("red", "green", "blue", "nir", "swir1", "swir2")},
            "count": COUNT,
        },
    }
    fields.update(changes)
    return OutputSpec(**fields)


def seed_legacy_spec(**changes: Any) -> OutputSpec:
    """The seed job (ls8 geomedian over the seed's box, 2019) with the original worker's names."""
    return geomedian_spec(naming="legacy", legacy_bounds=SEED_BOX_EPSG3460, **changes)


async def new_bucket(destination: S3Destination) -> None:
    client = await destination.client()
    await client.create_bucket(Bucket=destination.bucket)


def bucket_name() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"

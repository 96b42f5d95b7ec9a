"""Geomedian: the period's geometric median composite with its median absolute deviations.

odc-algo's `geomedian_with_mads` (Geoscience Australia's geomad) over the clear observations,
whole observations masked first (see `observations`). As odc-stats runs it, reflectance is
scaled to 0..1 inside the computation; the non-zero offset odc-stats passes is what makes
odc-algo turn nodata into NaN (with offset 0 it averages -9999 in as a value).

Cloud and shadow masks are used as the scene gives them unless the request asks for buffering
(`cloud_filter`, `shadow_filter`; DEA's Landsat geomedian uses `opening:3,dilation:6` and
`dilation:6`): a median resists the odd cloud-edge value that a mean does not.

`count` is the number of clear observations used; -999 (its nodata) where the pixel was never
observed at all, 0 where it was observed but never clear.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import xarray as xr
from odc.algo import geomedian_with_mads

from services.worker.products.base import OutputBand, Product, ProductContext, register
from services.worker.products.observations import (
    REFLECTANCE_DTYPE,
    REFLECTANCE_NODATA,
    REFLECTANCE_SCALE,
    clean_reflectance,
)
from shared.catalogue import Sensor
from shared.mask_filters import MASK_FILTER_OPTIONS, UNBUFFERED, MaskFilters

COMPOSITE_BANDS: tuple[str, ...] = ("red", "green", "blue", "nir", "swir1", "swir2")
#: Pixels per side of the pieces geomad works on (odc-stats' default for Landsat).
WORK_CHUNK_PIXELS = 400
MAX_ITERATIONS = 1000
COUNT_NODATA = -999


def geomedian_settings(*, compute_mads: bool = True) -> dict[str, object]:
    """The keyword arguments of `geomedian_with_mads` every composite here uses."""
    return {
        "scale": REFLECTANCE_SCALE,
        "offset": -REFLECTANCE_SCALE,
        "maxiters": MAX_ITERATIONS,
        "num_threads": 1,
        # Rechunked in Dask, so it runs on a multi-worker cluster too (odc-algo's "mem"
        # strategy needs the whole input on one worker).
        "reshape_strategy": "yxbt",
        "work_chunks": (WORK_CHUNK_PIXELS, WORK_CHUNK_PIXELS),
        "compute_mads": compute_mads,
        "compute_count": True,
    }


def clear_composite(
    cube: xr.Dataset,
    sensor: Sensor,
    bands: Sequence[str] = COMPOSITE_BANDS,
    *,
    compute_mads: bool = True,
    filters: MaskFilters = UNBUFFERED,
) -> xr.Dataset:
    """The geomedian of the usable observations of `bands` (int16 x 10000, nodata -9999),
    with `smad`, `emad`, `bcmad` (float32) when `compute_mads`, and `count` (uint16)."""
    clean, _usable = clean_reflectance(cube, sensor, bands, filters)
    # `reshape_strategy="yxbt"` takes one date per chunk.
    clean = clean.chunk({"time": 1})
    return geomedian_with_mads(clean, **geomedian_settings(compute_mads=compute_mads))


def _reflectance_band(name: str) -> OutputBand:
    return OutputBand(
        REFLECTANCE_DTYPE,
        REFLECTANCE_NODATA,
        "1",
        f"geomedian {name} surface reflectance x 10000",
        scale=REFLECTANCE_SCALE,
        offset=0.0,
    )


def observed(cube: xr.Dataset, sensor: Sensor) -> xr.DataArray:
    """True where the mask band saw the pixel on at least one day (it is not all fill)."""
    mask = cube[sensor.mask_band]
    return (mask != sensor.mask_nodata).any("time")


@register("geomedian")
class Geomedian(Product):
    inputs = COMPOSITE_BANDS
    accepted_options = MASK_FILTER_OPTIONS
    outputs = MappingProxyType(
        {
            **{band: _reflectance_band(band) for band in COMPOSITE_BANDS},
            "smad": OutputBand("float32", math.nan, "1", "spectral median absolute deviation"),
            "emad": OutputBand(
                "float32",
                math.nan,
                "1",
                "Euclidean median absolute deviation (x 10000)",
                scale=REFLECTANCE_SCALE,
                offset=0.0,
            ),
            "bcmad": OutputBand("float32", math.nan, "1", "Bray-Curtis median absolute deviation"),
            "count": OutputBand("int16", COUNT_NODATA, "1", "clear observations used", "nearest"),
        }
    )

    def compute(
        self,
        cube: xr.Dataset,
        sensor: Sensor,
        options: Mapping[str, str],
        context: ProductContext,
    ) -> xr.Dataset:
        composite = clear_composite(cube, sensor, filters=self.mask_filters(sensor, options))
        bands = dict(composite.data_vars)
        bands["count"] = bands["count"].where(observed(cube, sensor), COUNT_NODATA)
        return self.finish(bands, cube)

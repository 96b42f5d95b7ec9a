"""Water observation summary, as odc-stats' `wofs-summary` makes DEA's and DE Africa's.

For each day, the water observation layer (`wofs.water_observations`: the WOfS classifier on
surface reflectance, with no data, non-contiguous or saturated reflectance, cloud and cloud
shadow buffered by the request's filters, and terrain shadow flagged), then per pixel:

* `count_clear`: days clear (no flag) and classified, wet or dry;
* `count_wet`: those classified wet;
* `frequency`: count_wet / count_clear (NaN where nothing was clear).

Counts are int16 with nodata -999 where the pixel was never observed at all (only no data),
frequency float32 with NaN where nothing was clear.

`options.method = "qa"` counts the mask band's water flags instead, as the original worker did
(Landsat `pixel_qa` clear/water codes, Sentinel-2 SCL class 6), with the same buffering; with
`cloud_filter: none` and `shadow_filter: none` it is the original's count exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import xarray as xr

from services.worker.products.base import OutputBand, Product, ProductContext, register
from services.worker.products.observations import clear
from services.worker.products.wofs import DRY, NO_DATA, WET, WOFS_BANDS, water_observations
from shared.catalogue import WATER_METHOD, Sensor, water_method
from shared.mask_filters import MASK_FILTER_OPTIONS, MaskFilters

COUNT_NODATA = -999


def summarise(wet: xr.DataArray, dry: xr.DataArray, seen: xr.DataArray) -> dict[str, xr.DataArray]:
    """`count_wet`, `count_clear`, `frequency` from per-day wet and dry (clear) observations;
    counts are nodata where the pixel was never `seen`."""
    count_wet = wet.sum("time", dtype="int16")
    count_clear = count_wet + dry.sum("time", dtype="int16")
    frequency = (count_wet / count_clear.where(count_clear > 0)).astype("float32")
    return {
        "count_wet": count_wet.where(seen, COUNT_NODATA),
        "count_clear": count_clear.where(seen, COUNT_NODATA),
        "frequency": frequency,
    }


def wofs_summary(cube: xr.Dataset, sensor: Sensor, filters: MaskFilters) -> dict[str, xr.DataArray]:
    """The summary of the days' water observation layers."""
    layers = water_observations(cube, sensor, filters)
    seen = (layers != NO_DATA).any("time")
    return summarise(layers == WET, layers == DRY, seen)


def qa_summary(cube: xr.Dataset, sensor: Sensor, filters: MaskFilters) -> dict[str, xr.DataArray]:
    """The summary of the mask band's own water flags (the original worker's method)."""
    mask = cube[sensor.mask_band]
    seen_clear = clear(cube, sensor, filters)
    wet = seen_clear & sensor.water(mask)
    seen = (mask != sensor.mask_nodata).any("time")
    return summarise(wet, seen_clear & ~wet, seen)


@register("water")
class WaterSummary(Product):
    inputs = WOFS_BANDS
    accepted_options = MASK_FILTER_OPTIONS | {WATER_METHOD}
    outputs = MappingProxyType(
        {
            "count_wet": OutputBand(
                "int16", COUNT_NODATA, "1", "clear observations that were water", "nearest"
            ),
            "count_clear": OutputBand(
                "int16", COUNT_NODATA, "1", "clear observations (wet or dry)", "nearest"
            ),
            "frequency": OutputBand(
                "float32", math.nan, "1", "share of clear observations that were water"
            ),
        }
    )

    def compute(
        self,
        cube: xr.Dataset,
        sensor: Sensor,
        options: Mapping[str, str],
        context: ProductContext,
    ) -> xr.Dataset:
        filters = self.mask_filters(sensor, options)
        summary = (
            qa_summary(cube, sensor, filters)
            if water_method(options) == "qa"
            else wofs_summary(cube, sensor, filters)
        )
        return self.finish(summary, cube)

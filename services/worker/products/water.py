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

`options.method = "classification"` counts the scenes' water classifications already in the
index (`lsN_water_classification`, made by `jobWater`) instead of classifying the reflectance
again: they hold each scene's layer with the mask band's cloud and shadow unbuffered, so the
request's buffering is applied to their cloud and shadow bits here, and the summary equals the
one computed from reflectance. Every scene of the input product in the tile and period must
have its classification indexed, or the job is refused naming one that has none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import xarray as xr

from services.worker.products.base import (
    DerivedFrom,
    LoadPlan,
    OutputBand,
    Product,
    ProductContext,
    register,
)
from services.worker.products.masks import buffered
from services.worker.products.observations import clear
from services.worker.products.wofs import (
    CLOUD,
    CLOUD_SHADOW,
    DRY,
    NO_DATA,
    WET,
    WOFS_BANDS,
    water_observations,
)
from services.worker.water.identity import classification_dataset_id
from shared.catalogue import (
    WATER_CLASSIFICATION_BAND,
    WATER_METHOD,
    Sensor,
    water_classification_product,
    water_method,
)
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


def classification_summary(stored: xr.DataArray, filters: MaskFilters) -> dict[str, xr.DataArray]:
    """The summary of the days' stored water classifications (uint8 layers, cloud and shadow
    unbuffered): their cloud and shadow bits buffered by `filters` first, as `wofs_summary`
    buffers the mask band's."""
    observed = stored != NO_DATA
    cloud = buffered((stored & CLOUD) != 0, filters.cloud)
    shadow = buffered((stored & CLOUD_SHADOW) != 0, filters.shadow)
    kept = stored & np.uint8(0xFF & ~(CLOUD | CLOUD_SHADOW))
    layers = (
        kept
        | cloud.astype("uint8") * np.uint8(CLOUD)
        | shadow.astype("uint8") * np.uint8(CLOUD_SHADOW)
    )
    layers = layers.where(observed, np.uint8(NO_DATA))
    return summarise(layers == WET, layers == DRY, observed.any("time"))


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
        method = water_method(options)
        if method == "classification":
            summary = classification_summary(cube[WATER_CLASSIFICATION_BAND], filters)
        elif method == "qa":
            summary = qa_summary(cube, sensor, filters)
        else:
            summary = wofs_summary(cube, sensor, filters)
        return self.finish(summary, cube)

    def load_plan(self, sensor: Sensor, options: Mapping[str, str]) -> LoadPlan:
        """With `method: classification`, the scenes' indexed water classifications."""
        if water_method(options) != "classification":
            return super().load_plan(sensor, options)
        product = water_classification_product(sensor.product)
        return LoadPlan(
            product,
            [WATER_CLASSIFICATION_BAND],
            "nearest",
            derived_from=DerivedFrom(
                sensor.product, lambda source: classification_dataset_id(source, product)
            ),
        )

"""Water observation summary, WOfS-style: how often each pixel was seen, and seen wet.

Read from the mask band alone (Landsat `pixel_qa` water codes, Sentinel-2 SCL class 6):

* `count_clear`: observations the mask calls clear, land or water;
* `count_wet`: those among them that were water;
* `frequency`: count_wet / count_clear.

As odc-stats stores them: counts int16 with nodata -999 where the pixel was never observed at
all (only fill in the mask band), frequency float32 with NaN where nothing was clear.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import xarray as xr

from services.worker.products.base import OutputBand, Product, ProductContext, register
from shared.catalogue import Sensor

COUNT_NODATA = -999


@register("water")
class WaterSummary(Product):
    inputs = ()
    outputs = MappingProxyType(
        {
            "count_wet": OutputBand(
                "int16", COUNT_NODATA, "1", "clear observations that were water", "nearest"
            ),
            "count_clear": OutputBand(
                "int16", COUNT_NODATA, "1", "clear observations (land or water)", "nearest"
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
        mask = cube[sensor.mask_band]
        clear = sensor.clear(mask)
        wet = clear & sensor.water(mask)
        observed = (mask != sensor.mask_nodata).any("time")
        count_clear = clear.sum("time", dtype="int16")
        count_wet = wet.sum("time", dtype="int16")
        frequency = (count_wet / count_clear.where(count_clear > 0)).astype("float32")
        return self.finish(
            {
                "count_wet": count_wet.where(observed, COUNT_NODATA),
                "count_clear": count_clear.where(observed, COUNT_NODATA),
                "frequency": frequency,
            },
            cube,
        )

"""NDVI statistics over the period's clear observations.

NDVI = (nir - red) / (nir + red) per usable observation (mask clear outside buffered cloud and
shadow, red and nir reflectances in range; see `observations`), then per pixel: median, mean,
standard deviation (population, ddof 0) and the number of observations they came from
(`ndvi_count`). `clear_count` is the number of observations that were clear (after buffering);
the two differ only where a clear observation lacked red or nir, had one out of range, or had
nir + red = 0. Counts are -999 (their nodata) where the pixel was never observed at all.

Cloud and shadow are buffered by default (`shared.mask_filters`), since a cloud's bright or a
shadow's dark edge moves a mean and a standard deviation far more than a median.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import xarray as xr

from services.worker.products.base import OutputBand, Product, ProductContext, register
from services.worker.products.geomedian import observed
from services.worker.products.observations import (
    clean_reflectance,
    clear,
    normalised_difference,
    reduce_time,
    reflectance_float,
)
from shared.catalogue import Sensor
from shared.mask_filters import MASK_FILTER_OPTIONS, UNBUFFERED, MaskFilters

COUNT_NODATA = -999


def ndvi_observations(
    cube: xr.Dataset, sensor: Sensor, filters: MaskFilters = UNBUFFERED
) -> xr.DataArray:
    """NDVI (float32) per observation, NaN where the observation is not usable."""
    clean, _usable = clean_reflectance(cube, sensor, ("red", "nir"), filters)
    floats = reflectance_float(clean)
    return normalised_difference(floats["nir"], floats["red"])


@register("ndvi")
class NdviStatistics(Product):
    inputs = ("red", "nir")
    accepted_options = MASK_FILTER_OPTIONS
    outputs = MappingProxyType(
        {
            "ndvi_median": OutputBand("float32", math.nan, "1", "median NDVI"),
            "ndvi_mean": OutputBand("float32", math.nan, "1", "mean NDVI"),
            "ndvi_std": OutputBand("float32", math.nan, "1", "standard deviation of NDVI"),
            "ndvi_count": OutputBand(
                "int16", COUNT_NODATA, "1", "observations with an NDVI", "nearest"
            ),
            "clear_count": OutputBand(
                "int16", COUNT_NODATA, "1", "observations the mask called clear", "nearest"
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
        ndvi = ndvi_observations(cube, sensor, filters)
        seen = observed(cube, sensor)
        ndvi_count = ndvi.notnull().sum("time", dtype="int16")
        clear_count = clear(cube, sensor, filters).sum("time", dtype="int16")
        return self.finish(
            {
                "ndvi_median": reduce_time(ndvi, np.nanmedian),
                "ndvi_mean": reduce_time(ndvi, np.nanmean),
                "ndvi_std": reduce_time(ndvi, np.nanstd),
                "ndvi_count": ndvi_count.where(seen, COUNT_NODATA),
                "clear_count": clear_count.where(seen, COUNT_NODATA),
            },
            cube,
        )

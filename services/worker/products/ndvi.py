"""NDVI statistics over the period's clear observations.

NDVI = (nir - red) / (nir + red) per usable observation (mask clear, red and nir present; see
`observations`), then per pixel: median, mean, standard deviation (population, ddof 0) and the
number of observations they came from (`ndvi_count`). `clear_count` is the number of
observations the mask called clear; the two differ only where a clear observation lacked red
or nir, or had nir + red = 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import xarray as xr

from services.worker.products.base import OutputBand, Product, ProductContext, register
from services.worker.products.observations import (
    clean_reflectance,
    normalised_difference,
    reduce_time,
    reflectance_float,
)
from shared.catalogue import Sensor

COUNT_NODATA = -999


def ndvi_observations(cube: xr.Dataset, sensor: Sensor) -> xr.DataArray:
    """NDVI (float32) per observation, NaN where the observation is not usable."""
    clean, _usable = clean_reflectance(cube, sensor, ("red", "nir"))
    floats = reflectance_float(clean)
    return normalised_difference(floats["nir"], floats["red"])


@register("ndvi")
class NdviStatistics(Product):
    inputs = ("red", "nir")
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
        ndvi = ndvi_observations(cube, sensor)
        return self.finish(
            {
                "ndvi_median": reduce_time(ndvi, np.nanmedian),
                "ndvi_mean": reduce_time(ndvi, np.nanmean),
                "ndvi_std": reduce_time(ndvi, np.nanstd),
                "ndvi_count": ndvi.notnull().sum("time", dtype="int16"),
                "clear_count": sensor.clear(cube[sensor.mask_band]).sum("time", dtype="int16"),
            },
            cube,
        )

"""From a loaded cube to clean observations: canonical reflectance and whole-observation masks.

Every sensor's reflectance is brought to one encoding, Landsat's: int16, reflectance x 10000,
nodata -9999. Landsat bands pass through untouched; Sentinel-2's uint16 (x 10000, nodata 0) is
re-labelled, values above int16's range clipped (saturated surfaces only). A product stored with
another scale or offset (USGS Collection 2: value x 0.0000275 - 0.2, as the catalogue declares
it) is rescaled: round((value x scale + offset) x 10000), computed in float32.

An observation (a pixel on a date) is usable when its mask calls it clear, no buffered cloud or
cloud shadow covers it (`masks.buffered`, with the request's `cloud_filter`/`shadow_filter`),
and every band the product reads holds a reflectance in (0, 1] there (`masks.in_range`: not
fill, not saturated). It is then kept or dropped whole: masking band by band leaves
observations with some bands missing, which geomedians and band ratios silently get wrong.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import xarray as xr
from odc.algo import keep_good_only, to_float

from services.worker.products.masks import buffered, in_range
from shared.catalogue import Sensor
from shared.mask_filters import UNBUFFERED, MaskFilters

REFLECTANCE_DTYPE = "int16"
REFLECTANCE_NODATA = -9999
REFLECTANCE_SCALE = 0.0001
_INT16_MAX = int(np.iinfo(np.int16).max)


def reflectance(cube: xr.Dataset, sensor: Sensor, bands: Sequence[str]) -> xr.Dataset:
    """`bands` of `cube` under their canonical names, as int16 x 10000 with nodata -9999."""
    canonical: dict[str, xr.DataArray] = {}
    factor = sensor.reflectance_scale / REFLECTANCE_SCALE
    shift = sensor.reflectance_offset / REFLECTANCE_SCALE
    for band in bands:
        layer = cube[sensor.measurement(band)]
        nodata = layer.attrs.get("nodata", sensor.reflectance_nodata)
        if (factor, shift) != (1.0, 0.0):
            values = layer.data
            scaled = np.rint(values.astype("float32") * np.float32(factor) + np.float32(shift))
            clipped = np.clip(scaled, REFLECTANCE_NODATA + 1, _INT16_MAX)
            rescaled = np.where(values == nodata, REFLECTANCE_NODATA, clipped)
            converted = layer.copy(data=rescaled.astype(REFLECTANCE_DTYPE))
        elif layer.dtype == np.dtype(REFLECTANCE_DTYPE) and nodata == REFLECTANCE_NODATA:
            converted = layer
        else:
            # Sentinel-2 (and any other encoding): same scale, Landsat's dtype and nodata.
            # (`xr.where` would drop the attributes of `spatial_ref`, and with them the CRS.)
            values = layer.data
            relabelled = np.where(
                values == nodata, REFLECTANCE_NODATA, np.minimum(values, _INT16_MAX)
            )
            converted = layer.copy(data=relabelled.astype(REFLECTANCE_DTYPE))
        attrs = {**layer.attrs, "nodata": REFLECTANCE_NODATA, "units": "1"}
        canonical[band] = converted.assign_attrs(attrs).rename(band)
    return xr.Dataset(canonical)


def has_data(bands: xr.Dataset) -> xr.DataArray:
    """True where every band of `bands` (canonical reflectance) has data."""
    layers = [bands[name] != REFLECTANCE_NODATA for name in bands.data_vars]
    present = layers[0]
    for layer in layers[1:]:
        present = present & layer
    return present


def clear(cube: xr.Dataset, sensor: Sensor, filters: MaskFilters = UNBUFFERED) -> xr.DataArray:
    """True for observations the mask calls clear, outside the buffered cloud and shadow."""
    mask = cube[sensor.mask_band]
    seen_clear = sensor.clear(mask)
    if filters.cloud:
        seen_clear = seen_clear & ~buffered(sensor.cloud(mask), filters.cloud)
    if filters.shadow:
        seen_clear = seen_clear & ~buffered(sensor.shadow(mask), filters.shadow)
    return seen_clear


def usable(
    cube: xr.Dataset, sensor: Sensor, bands: xr.Dataset, filters: MaskFilters = UNBUFFERED
) -> xr.DataArray:
    """True for clear observations (see `clear`) where every one of `bands` is a reflectance."""
    seen_clear = clear(cube, sensor, filters)
    return seen_clear & in_range(bands) if bands.data_vars else seen_clear


def clean_reflectance(
    cube: xr.Dataset, sensor: Sensor, bands: Sequence[str], filters: MaskFilters = UNBUFFERED
) -> tuple[xr.Dataset, xr.DataArray]:
    """Canonical reflectance with unusable observations blanked in every band, and the mask."""
    canonical = reflectance(cube, sensor, bands)
    keep = usable(cube, sensor, canonical, filters)
    return keep_good_only(canonical, keep), keep


def reflectance_float(bands: xr.Dataset) -> xr.Dataset:
    """Canonical reflectance as float32 in 0..1, NaN where there is no data."""
    floats: xr.Dataset = to_float(bands, scale=REFLECTANCE_SCALE)
    return floats


def normalised_difference(first: xr.DataArray, second: xr.DataArray) -> xr.DataArray:
    """(first - second) / (first + second), float32; NaN where either is NaN or the sum is 0."""
    total = first + second
    ratio = (first - second) / total.where(total != 0)
    return ratio.astype("float32")


def reduce_time(
    observations: xr.DataArray, reduction: Callable[..., npt.NDArray[np.floating]]
) -> xr.DataArray:
    """`reduction` (a NaN-skipping numpy reduction) over time, chunk by chunk, quietly:
    pixels with no usable observation come out NaN, as intended, without numpy's warnings."""

    def quietly(values: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return reduction(values, axis=-1).astype("float32")

    reduced: xr.DataArray = xr.apply_ufunc(
        quietly,
        # A pixel's reduction needs all its dates in one chunk.
        observations.chunk({"time": -1}),
        input_core_dims=[["time"]],
        dask="parallelized",
        output_dtypes=["float32"],
    )
    return reduced

"""The WOfS water classifier (Mueller et al. 2016) and the water observation layer of a day.

Mueller, N., Lewis, A., Roberts, D., Ring, S., Melrose, R., Sixsmith, J., Lymburner, L.,
McIntyre, A., Tan, P., Curnow, S., Ip, A. (2016). Water observations from space: Mapping surface
water from 25 years of Landsat imagery across Australia. Remote Sensing of Environment 174,
341-352. The decision tree (a CART tree fitted to Landsat TM/ETM+ surface reflectance x 10000)
is the one Geoscience Australia runs in `wofs.classifier.classify` (GeoscienceAustralia/wofs);
its nodes are numbered here as there (N1 ... N45), thresholds as published.

`classify` is pure numpy on arrays of any shape (Dask uses it chunk by chunk); like the
reference it computes in float32. `water_observations` turns a loaded cube into the water
observation layer ("WOfL") of each day, as the reference's bit flags:

    1 no data            2 non-contiguous (a band missing) or saturated / out of range
    8 terrain shadow     32 cloud shadow     64 cloud     128 wet

Clear dry is 0 and clear wet 128; anything else is not a clear observation. Where the reference
uses a digital surface model for terrain shadow and slope, we have only what the mask band says
(USGS terrain occlusion on Landsat 8); high slope and low solar angle are not flagged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from services.worker.products.masks import buffered, in_range
from services.worker.products.observations import REFLECTANCE_NODATA, reflectance
from shared.catalogue import Sensor
from shared.mask_filters import MaskFilters

#: The classifier's inputs in its order: Landsat TM bands 1, 2, 3, 4, 5 and 7.
WOFS_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir", "swir1", "swir2")

# The water observation layer's bits, as the reference defines them (wofs.constants).
NO_DATA = 1 << 0
NON_CONTIGUOUS = 1 << 1
TERRAIN_SHADOW = 1 << 3
CLOUD_SHADOW = 1 << 5
CLOUD = 1 << 6
WET = 1 << 7
DRY = 0

Array = npt.NDArray[np.floating] | npt.NDArray[np.integer]


def _normalised_difference(first: npt.NDArray[np.float32], second: npt.NDArray[np.float32]) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (first - second) / (first + second)


def classify(
    blue: Array, green: Array, red: Array, nir: Array, swir1: Array, swir2: Array
) -> npt.NDArray[np.bool_]:
    """True where the WOfS decision tree calls a pixel water, from surface reflectance x 10000.

    Inputs broadcast together; any invalid input (fill, NaN) must be masked by the caller: the
    tree is defined on reflectance only (a NaN ratio fails every test and ends dry, at N36).
    """
    b1, b2, b3, b4, b5, b7 = (
        np.asarray(band, dtype=np.float32) for band in (blue, green, red, nir, swir1, swir2)
    )
    ndi_52 = _normalised_difference(b5, b2)  # swir1 against green
    ndi_43 = _normalised_difference(b4, b3)  # nir against red
    ndi_72 = _normalised_difference(b7, b2)  # swir2 against green

    # Left of N1 (ndi_52 <= -0.01): bright in green, dark in swir.
    n9 = ndi_43 <= -0.01  # N9: N10 wet, N11 dry
    n13 = b1 <= 379  # N13: N14 wet, N15 dry
    n16 = np.where(ndi_43 <= 0.22, True, b1 <= 473)  # N16: N17 wet; N18: N19 wet, N20 dry
    n12 = np.where(ndi_72 <= -0.23, n16, n13)
    n8 = np.where(b1 <= 1400.5, n12, n9)
    n5 = ndi_43 <= 0.61  # N5: N6 wet, N7 dry
    n4 = np.where(b7 <= 323.5, n5, n8)
    n2 = np.where(b1 <= 2083.5, n4, False)  # N3 dry

    # Right of N1.
    n28 = np.where(b3 <= 364.5, b1 <= 129.5, b1 <= 300.5)  # N29: N31/N32; N30: N33/N34
    n26 = np.where(ndi_52 <= 0.12, True, n28)  # N27 wet
    n24 = np.where(ndi_43 <= 0.54, n26, False)  # N25 dry
    n22 = np.where(b1 <= 334.5, n24, False)  # N23 dry
    n41 = np.where(b3 <= 364.5, b1 <= 129.5, False)  # N43: N44 wet, N45 dry; N42 dry
    n39 = np.where(ndi_43 <= 0.45, n41, False)  # N40 dry
    n37 = np.where(b1 <= 249.5, n39, False)  # N38 dry
    n35 = np.where(ndi_52 <= 0.34, n37, False)  # N36 dry
    n21 = np.where(ndi_52 <= 0.23, n22, n35)

    wet: npt.NDArray[np.bool_] = np.where(ndi_52 <= -0.01, n2, n21)
    return wet


def _classify_block(*bands: npt.NDArray[np.int16]) -> npt.NDArray[np.bool_]:
    return classify(*bands)


def classify_cube(bands: xr.Dataset) -> xr.DataArray:
    """`classify` over canonical reflectance (int16 x 10000, the `WOFS_BANDS`), lazily."""
    layers = [bands[band] for band in WOFS_BANDS]
    wet: xr.DataArray = xr.apply_ufunc(
        _classify_block, *layers, dask="parallelized", output_dtypes=[bool]
    )
    return wet.rename("wet")


def water_observations(cube: xr.Dataset, sensor: Sensor, filters: MaskFilters) -> xr.DataArray:
    """Each day's water observation layer (uint8 bit flags, see the module), lazily.

    Cloud and cloud shadow are buffered with `filters` first, as odc-stats does before it
    summarises water observations.
    """
    mask = cube[sensor.mask_band]
    bands = reflectance(cube, sensor, WOFS_BANDS)
    all_missing = bands[WOFS_BANDS[0]] == REFLECTANCE_NODATA
    for band in WOFS_BANDS[1:]:
        all_missing = all_missing & (bands[band] == REFLECTANCE_NODATA)
    no_data = sensor.no_observation(mask) | all_missing
    non_contiguous = ~in_range(bands) | sensor.saturation_rule.flags(mask)
    cloud = buffered(sensor.cloud(mask), filters.cloud)
    shadow = buffered(sensor.shadow(mask), filters.shadow)
    terrain = sensor.terrain_rule.flags(mask)
    wet = classify_cube(bands)

    def flag(condition: xr.DataArray, bit: int) -> xr.DataArray:
        return condition.astype("uint8") * np.uint8(bit)

    layer = (
        flag(non_contiguous, NON_CONTIGUOUS)
        | flag(terrain, TERRAIN_SHADOW)
        | flag(shadow, CLOUD_SHADOW)
        | flag(cloud, CLOUD)
        | flag(wet, WET)
    )
    # As the reference: where nothing was observed the layer is no data alone.
    observations: xr.DataArray = layer.where(~no_data, np.uint8(NO_DATA)).astype("uint8")
    return observations.rename("water")

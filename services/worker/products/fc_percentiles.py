"""Fractional cover percentiles, as DEA's `ga_ls_fc_pc_cyear_3` (odc-stats' `fc-percentiles`).

Fractional cover per observation (Geoscience Australia's `fc` unmixing, with the sensor's band
regression, see `fractional_cover`), kept where the day's water observation layer (`wofs`) says
clear and dry, cloud and shadow buffered by the request's filters (DEA: dilation 6 of each on
Landsat). Then per pixel, for green (`pv`), dry (`npv`) vegetation and bare soil (`bs`): the
10th, 50th and 90th percentiles of those observations, odc-algo's nearest-rank percentile
(`odc.algo.xr_quantile`), nodata (255) where fewer than three observations had a cover.

`qa`, as odc-stats defines it: 2 where every percentile has a value; otherwise 0 where the pixel
was ever seen clear and wet (water, so no cover is expected), 1 where it was not. `count_valid`
is the number of clear dry observations. Both are nodata (255, -999) where nothing was ever
observed (odc-stats writes qa 1 and count 0 there).

What differs from DEA's product: DEA unmixes each scene once (its `ga_ls_fc_3` product) and
fuses the scenes of a day by their mean; this product fuses the reflectance of a day first (as
`dc.load` groups by solar day) and unmixes that.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import xarray as xr
from odc.algo import keep_good_only, xr_quantile

from services.worker.products.base import OutputBand, Product, ProductContext, register
from services.worker.products.fractional_cover import NODATA, PACKAGE_NAMES, UNMIXING_BANDS, unmix
from services.worker.products.observations import reflectance
from services.worker.products.wofs import DRY, NO_DATA, WET, WOFS_BANDS, water_observations
from shared.catalogue import Sensor
from shared.mask_filters import MASK_FILTER_OPTIONS

COVER_BANDS: tuple[str, ...] = ("pv", "bs", "npv")
PERCENTILES: tuple[int, ...] = (10, 50, 90)
COUNT_NODATA = -999
#: Fewer clear dry observations with a cover than this give no percentile (odc-algo's rule).
MIN_OBSERVATIONS = 3


def percentile_name(band: str, percentile: int) -> str:
    return f"{band}_pc_{percentile}"


def cover_per_observation(cube: xr.Dataset, sensor: Sensor) -> xr.Dataset:
    """`pv`, `npv`, `bs` per observation as uint8 percentages, 255 where unmixing failed or a
    band was missing; lazily, one unmixing per day."""
    bands = reflectance(cube, sensor, UNMIXING_BANDS)
    days = []
    for index in range(bands.sizes["time"]):
        day = bands.isel(time=index)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            fractions = unmix(day, sensor)
        covers = {}
        for name in COVER_BANDS:
            fraction = fractions[PACKAGE_NAMES[name]]
            covers[name] = keep_good_only(fraction.astype("uint8"), fraction != -1, nodata=NODATA)
        days.append(xr.Dataset(covers))
    return xr.concat(days, dim=bands["time"])


def cover_percentiles(
    cover: xr.Dataset, valid: xr.DataArray, ever_wet: xr.DataArray
) -> dict[str, xr.DataArray]:
    """The percentiles of `cover` (uint8, nodata 255) over the `valid` days, and `qa`."""
    kept = keep_good_only(cover, valid, nodata=NODATA)
    for name in kept.data_vars:
        kept[name].attrs["nodata"] = NODATA
    quantiles = xr_quantile(kept.chunk({"time": -1}), [p / 100 for p in PERCENTILES], nodata=NODATA)
    bands: dict[str, xr.DataArray] = {}
    for name in COVER_BANDS:
        for position, percentile in enumerate(PERCENTILES):
            bands[percentile_name(name, percentile)] = (
                quantiles[name].isel(quantile=position, drop=True).astype("uint8")
            )
    all_valid = bands[percentile_name(COVER_BANDS[0], PERCENTILES[0])] != NODATA
    for layer in list(bands.values())[1:]:
        all_valid = all_valid & (layer != NODATA)
    all_valid_number = all_valid.astype("uint8")
    bands["qa"] = 1 + all_valid_number - ever_wet.astype("uint8") * (1 - all_valid_number)
    return bands


def _band(description: str) -> OutputBand:
    return OutputBand("uint8", NODATA, "percent", description, "nearest")


_DESCRIPTIONS = {"pv": "green vegetation", "bs": "bare soil", "npv": "non-green vegetation"}


@register("fc_percentiles")
class FractionalCoverPercentiles(Product):
    inputs = WOFS_BANDS
    accepted_options = MASK_FILTER_OPTIONS
    outputs = MappingProxyType(
        {
            **{
                percentile_name(name, percentile): _band(
                    f"{percentile}th percentile of {_DESCRIPTIONS[name]} cover of clear dry days"
                )
                for name in COVER_BANDS
                for percentile in PERCENTILES
            },
            "qa": OutputBand(
                "uint8",
                NODATA,
                "1",
                "2: every percentile valid; 1: not, never wet; 0: not, seen wet",
                "nearest",
            ),
            "count_valid": OutputBand(
                "int16", COUNT_NODATA, "1", "clear dry observations", "nearest"
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
        layers = water_observations(cube, sensor, self.mask_filters(sensor, options))
        valid = layers == DRY
        ever_wet = (layers == WET).any("time")
        seen = (layers != NO_DATA).any("time")
        bands = cover_percentiles(cover_per_observation(cube, sensor), valid, ever_wet)
        bands["qa"] = bands["qa"].where(seen, np.uint8(NODATA))
        bands["count_valid"] = valid.sum("time", dtype="int16").where(seen, COUNT_NODATA)
        return self.finish(bands, cube)

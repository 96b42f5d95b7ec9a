"""Fractional cover: bare soil, green and dry vegetation per pixel of the period's composite.

As the original worker did, the unmixing runs on a geomedian of the period (the same one the
`geomedian` product makes) and pixels that were mostly water are dropped: those whose share of
water among their clear observations exceeds 0.4.

The unmixing is Geoscience Australia's `fc` package (`fc.fractional_cover.fractional_cover`),
which expects int16 `green, red, nir, swir1, swir2` surface reflectance x 10000. Our composites
are exactly that for every sensor: Landsat's own encoding, and Sentinel-2's uint16 x 10000
re-labelled as int16 with nodata -9999 (see `observations`). The package's endmembers were
fitted to Landsat TM/ETM+, so other sensors' reflectance goes through a band regression to
ETM+ first (`reflectance = intercept + slope x value`, on the 0..10000 scale), the result
clipped to 0..10000 so that the darkest water cannot go negative:

* Landsat 8 OLI: the package's own `LANDSAT_8_COEFFICIENTS` (Flood 2014, table 2), as GA ran it;
* Sentinel-2 MSI: `SENTINEL_2_COEFFICIENTS`, Flood (2017), "Comparing Sentinel-2A and Landsat
  7 and 8 using surface reflectance over Australia", Remote Sensing 9(7) 659, with the
  intercepts scaled to 0..10000 as Geoscience Australia's Sentinel-2 fractional cover
  configuration gives them (GeoscienceAustralia/fc, `config/s2_fc_albers.yaml`);
* Landsat 5/7: none (the model's own sensors).

Outputs are percentages in uint8 with nodata 255, as odc-stats stores fractional cover.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from types import MappingProxyType

import xarray as xr
from fc.fractional_cover import LANDSAT_8_COEFFICIENTS, fractional_cover
from odc.algo import keep_good_only

from services.worker.products.base import OutputBand, Product, ProductContext, register
from services.worker.products.geomedian import COMPOSITE_BANDS, clear_composite
from services.worker.products.observations import reflectance, usable
from shared.catalogue import Sensor
from shared.mask_filters import MASK_FILTER_OPTIONS, UNBUFFERED, MaskFilters

UNMIXING_BANDS: tuple[str, ...] = ("green", "red", "nir", "swir1", "swir2")
#: A pixel whose clear observations were water more often than this is not land.
MAX_WATER_SHARE = 0.4
NODATA = 255
#: The package's output names, by ours.
PACKAGE_NAMES = {"bs": "BS", "pv": "PV", "npv": "NPV", "ue": "UE"}

#: Sentinel-2 MSI to Landsat ETM+ surface reflectance, (intercept x 10000, slope) per band:
#: Flood (2017) as GA's Sentinel-2 fractional cover configuration applies it.
SENTINEL_2_COEFFICIENTS: Mapping[str, list[float]] = MappingProxyType(
    {
        "blue": [-22.0, 0.9551],
        "green": [31.0, 1.0582],
        "red": [64.0, 0.9871],
        "nir": [120.0, 1.0187],
        "swir1": [79.0, 0.9528],
        "swir2": [-42.0, 0.9688],
    }
)

REGRESSION_COEFFICIENTS: Mapping[str, Mapping[str, list[float]] | None] = MappingProxyType(
    {
        "ls8_usgs_sr_scene": LANDSAT_8_COEFFICIENTS,
        # Collection 2 OLI (Landsat 8 and 9's OLI-2) has the same bands as Collection 1 OLI.
        "ls8_c2l2_sr": LANDSAT_8_COEFFICIENTS,
        "ls9_c2l2_sr": LANDSAT_8_COEFFICIENTS,
        "s2_esa_sr_granule": SENTINEL_2_COEFFICIENTS,
    }
)


def regression_for(sensor: Sensor) -> Mapping[str, list[float]] | None:
    """The band regression applied before unmixing `sensor`'s reflectance, if any."""
    return REGRESSION_COEFFICIENTS.get(sensor.product)


def water_share(
    cube: xr.Dataset, sensor: Sensor, filters: MaskFilters = UNBUFFERED
) -> xr.DataArray:
    """Share of each pixel's clear observations that were water (NaN where none were clear)."""
    canonical = reflectance(cube, sensor, COMPOSITE_BANDS)
    clear = usable(cube, sensor, canonical, filters)
    water = clear & sensor.water(cube[sensor.mask_band])
    clear_count = clear.sum("time")
    return water.sum("time") / clear_count.where(clear_count > 0)


def unmix(composite: xr.Dataset, sensor: Sensor) -> xr.Dataset:
    """The package's `PV, NPV, BS, UE` (int8, nodata -1) for an int16 x 10000 composite."""
    bands = composite[list(UNMIXING_BANDS)]
    with warnings.catch_warnings():
        # The package still uses datacube's old `.geobox` and coordinates dict: not ours to act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        fractions: xr.Dataset = fractional_cover(
            bands,
            regression_coefficients=regression_for(sensor),
            # Regressed reflectance below zero (the darkest water) would unmix to garbage.
            clip_after_regression=True,
        )
    return fractions


@register("fractional_cover")
class FractionalCover(Product):
    inputs = COMPOSITE_BANDS
    accepted_options = MASK_FILTER_OPTIONS
    outputs = MappingProxyType(
        {
            "bs": OutputBand("uint8", NODATA, "percent", "bare soil"),
            "pv": OutputBand("uint8", NODATA, "percent", "photosynthetic vegetation"),
            "npv": OutputBand("uint8", NODATA, "percent", "non-photosynthetic vegetation"),
            "ue": OutputBand("uint8", NODATA, "1", "unmixing error"),
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
        composite = clear_composite(cube, sensor, compute_mads=False, filters=filters)
        fractions = unmix(composite, sensor)
        land = ~(water_share(cube, sensor, filters) > MAX_WATER_SHARE)
        bands: dict[str, xr.DataArray] = {}
        for name, package_name in PACKAGE_NAMES.items():
            fraction = fractions[package_name]
            # int8 percentages (0..127 after the package's clip), nodata -1 -> uint8, nodata 255.
            present = land & (fraction != -1)
            bands[name] = keep_good_only(fraction.astype("uint8"), present, nodata=NODATA)
        return self.finish(bands, cube)

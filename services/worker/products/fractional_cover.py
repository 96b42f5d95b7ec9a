"""Fractional cover: bare soil, green and dry vegetation per pixel of the period's composite.

As the original worker did, the unmixing runs on a geomedian of the period (the same one the
`geomedian` product makes) and pixels that were mostly water are dropped: those whose share of
water among their clear observations exceeds 0.4.

The unmixing is Geoscience Australia's `fc` package (`fc.fractional_cover.fractional_cover`),
which expects int16 `green, red, nir, swir1, swir2` surface reflectance x 10000. Our composites
are exactly that for every sensor: Landsat's own encoding, and Sentinel-2's uint16 x 10000
re-labelled as int16 with nodata -9999 (see `observations`). The package's endmembers were
fitted to Landsat TM/ETM+, so Landsat 8 OLI goes through the package's own OLI-to-ETM+ band
regression (`LANDSAT_8_COEFFICIENTS`, as GA ran it), the result clipped to 0..10000 so that the
darkest water cannot go negative; Landsat 5/7 and Sentinel-2 are used as they are (the package
publishes no Sentinel-2 regression).

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

UNMIXING_BANDS: tuple[str, ...] = ("green", "red", "nir", "swir1", "swir2")
#: A pixel whose clear observations were water more often than this is not land.
MAX_WATER_SHARE = 0.4
NODATA = 255
#: The package's output names, by ours.
PACKAGE_NAMES = {"bs": "BS", "pv": "PV", "npv": "NPV", "ue": "UE"}

REGRESSION_COEFFICIENTS: Mapping[str, Mapping[str, list[float]] | None] = MappingProxyType(
    {
        "ls8_usgs_sr_scene": LANDSAT_8_COEFFICIENTS,
        # Collection 2 OLI (Landsat 8 and 9's OLI-2) has the same bands as Collection 1 OLI.
        "ls8_c2l2_sr": LANDSAT_8_COEFFICIENTS,
        "ls9_c2l2_sr": LANDSAT_8_COEFFICIENTS,
    }
)


def regression_for(sensor: Sensor) -> Mapping[str, list[float]] | None:
    """The band regression applied before unmixing `sensor`'s reflectance, if any."""
    return REGRESSION_COEFFICIENTS.get(sensor.product)


def water_share(cube: xr.Dataset, sensor: Sensor) -> xr.DataArray:
    """Share of each pixel's clear observations that were water (NaN where none were clear)."""
    canonical = reflectance(cube, sensor, COMPOSITE_BANDS)
    clear = usable(cube, sensor, canonical)
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
        composite = clear_composite(cube, sensor, compute_mads=False)
        fractions = unmix(composite, sensor)
        land = ~(water_share(cube, sensor) > MAX_WATER_SHARE)
        bands: dict[str, xr.DataArray] = {}
        for name, package_name in PACKAGE_NAMES.items():
            fraction = fractions[package_name]
            # int8 percentages (0..127 after the package's clip), nodata -1 -> uint8, nodata 255.
            present = land & (fraction != -1)
            bands[name] = keep_good_only(fraction.astype("uint8"), present, nodata=NODATA)
        return self.finish(bands, cube)

"""The datacube products a product plugin reads: band names, masks and reflectance encoding.

Masks follow the original worker's choice of good pixels exactly:

* Landsat 5/7 `pixel_qa` (USGS Collection-1 SR): 66, 130 clear land; 68, 132 water.
* Landsat 8 `pixel_qa`: 322, 386, 834, 898, 1346 clear land; 324, 388, 836, 900, 1348 water.
* Sentinel-2 `scene_classification` (ESA SCL): 2 dark area, 4 vegetation, 5 not vegetated,
  7 unclassified as land; 6 water.

A *clear* observation is one the mask calls land or water (good for compositing); every other
code (fill, cloud, shadow, snow, cirrus, saturation) is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import xarray as xr
from odc.algo import enum_to_bool

from shared.errors import InvalidRequest

Family = Literal["landsat", "sentinel2"]

#: The reflectance bands every product speaks of, whatever the sensor calls them.
CANONICAL_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir", "swir1", "swir2")


@dataclass(frozen=True)
class Sensor:
    """One datacube product's bands, mask and reflectance encoding."""

    product: str
    family: Family
    short_name: str
    #: canonical band name -> measurement name in the datacube product
    bands: Mapping[str, str]
    mask_band: str
    mask_nodata: int
    land_values: frozenset[int]
    water_values: frozenset[int]
    #: How reflectance is stored: value = reflectance / reflectance_scale, `nodata` where missing.
    reflectance_dtype: str
    reflectance_nodata: int
    reflectance_scale: float = 0.0001

    @property
    def clear_values(self) -> frozenset[int]:
        """Mask codes of a clear observation, land or water: the pixels a composite may use."""
        return self.land_values | self.water_values

    def measurement(self, band: str) -> str:
        """The datacube measurement name of canonical `band` (e.g. `red`)."""
        try:
            return self.bands[band]
        except KeyError:
            raise InvalidRequest(
                f"{self.product} has no {band} band (it has {', '.join(self.bands)})"
            ) from None

    def clear(self, mask: xr.DataArray) -> xr.DataArray:
        """True where the mask band calls the observation clear (land or water)."""
        return enum_to_bool(mask, sorted(self.clear_values), name=f"{self.short_name}_clear")

    def water(self, mask: xr.DataArray) -> xr.DataArray:
        """True where the mask band calls the observation clear water."""
        return enum_to_bool(mask, sorted(self.water_values), name=f"{self.short_name}_water")


def _same_names() -> Mapping[str, str]:
    # Both the USGS Landsat and the ESA Sentinel-2 product definitions use the canonical names.
    return MappingProxyType({band: band for band in CANONICAL_BANDS})


_LANDSAT_5_7_LAND = frozenset({66, 130})
_LANDSAT_5_7_WATER = frozenset({68, 132})


def _landsat(product: str, short_name: str, land: frozenset[int], water: frozenset[int]) -> Sensor:
    return Sensor(
        product=product,
        family="landsat",
        short_name=short_name,
        bands=_same_names(),
        mask_band="pixel_qa",
        mask_nodata=1,
        land_values=land,
        water_values=water,
        reflectance_dtype="int16",
        reflectance_nodata=-9999,
    )


SENSORS: Mapping[str, Sensor] = MappingProxyType(
    {
        "ls5_usgs_sr_scene": _landsat(
            "ls5_usgs_sr_scene", "ls5", _LANDSAT_5_7_LAND, _LANDSAT_5_7_WATER
        ),
        "ls7_usgs_sr_scene": _landsat(
            "ls7_usgs_sr_scene", "ls7", _LANDSAT_5_7_LAND, _LANDSAT_5_7_WATER
        ),
        "ls8_usgs_sr_scene": _landsat(
            "ls8_usgs_sr_scene",
            "ls8",
            frozenset({322, 386, 834, 898, 1346}),
            frozenset({324, 388, 836, 900, 1348}),
        ),
        "s2_esa_sr_granule": Sensor(
            product="s2_esa_sr_granule",
            family="sentinel2",
            short_name="s2",
            bands=_same_names(),
            mask_band="scene_classification",
            mask_nodata=0,
            land_values=frozenset({2, 4, 5, 7}),
            water_values=frozenset({6}),
            reflectance_dtype="uint16",
            reflectance_nodata=0,
        ),
    }
)


def sensor_for(product: str) -> Sensor:
    """The sensor of datacube product `product`, or InvalidRequest naming the known ones."""
    try:
        return SENSORS[product]
    except KeyError:
        raise InvalidRequest(
            f"no product plugin reads {product!r}; known products: {', '.join(SENSORS)}"
        ) from None

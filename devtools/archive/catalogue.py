"""The archive's products as the generator sees them: the catalogue's facts plus acquisition.

Bands, dtypes, nodata and masks come from the product contract (`shared.catalogue`) and the ODC
product definitions beside it (`shared/odc_products/*.yaml`); this module adds what only a
generator needs: each platform's flying days and orbit phase, and the swath geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time
from typing import Any

from shared.catalogue import CANONICAL_BANDS, INPUT_PRODUCTS, Family, InputProduct
from shared.catalogue import product_definition as catalogue_definition
from shared.errors import InvalidRequest

LANDSAT_BANDS = CANONICAL_BANDS
SENTINEL2_BANDS = (
    "coastal_aerosol",
    "blue",
    "green",
    "red",
    "veg_red_edge_1",
    "veg_red_edge_2",
    "veg_red_edge_3",
    "nir",
    "narrow_nir",
    "water_vapour",
    "swir1",
    "swir2",
)

# Native resolution of each Sentinel-2 band (metres), as MSI samples it.
SENTINEL2_RESOLUTION: dict[str, int] = {
    "coastal_aerosol": 60,
    "blue": 10,
    "green": 10,
    "red": 10,
    "veg_red_edge_1": 20,
    "veg_red_edge_2": 20,
    "veg_red_edge_3": 20,
    "nir": 10,
    "narrow_nir": 20,
    "water_vapour": 60,
    "swir1": 20,
    "swir2": 20,
    "scene_classification": 20,
}


@dataclass(frozen=True)
class Platform:
    """One satellite of a product: its eo3 name and the days it flew."""

    name: str  # eo:platform, e.g. landsat-8
    instrument: str
    first_day: date
    last_day: date | None
    # Days added to the path's phase in the repeat cycle: Landsat 7 flies 8 days after Landsat 8
    # on the same WRS-2 path, Sentinel-2B 5 days after 2A on the same relative orbit.
    phase_days: int
    label_prefix: str  # LC08, LE07, LT05, S2A


@dataclass(frozen=True)
class Swath:
    """A sun-synchronous orbit's ground tracks, simplified: straight, tilted, evenly spaced."""

    paths_per_cycle: int  # 233 WRS-2 paths; 143 Sentinel-2 relative orbits
    repeat_days: int  # one satellite's repeat cycle
    width_m: float  # across track
    lon_of_path_one: float  # where path 1 crosses the equator (descending)
    # Longitude drift of the ground track per degree of latitude: descending tracks run from
    # north-north-east to south-south-west.
    drift_per_degree: float
    local_time: time  # mean local solar time at the scene centre
    rows_per_orbit: int  # WRS-2 rows along a path; Sentinel-2 has tiles instead
    path_step_days: int  # days between neighbouring paths' acquisitions


@dataclass(frozen=True)
class ProductSpec:
    """What the generator needs of a product: the catalogue's facts plus how it is acquired."""

    sensor: InputProduct
    #: Every measurement the generator writes besides the mask (Sentinel-2 has more than the
    #: canonical six).
    bands: tuple[str, ...]
    platforms: tuple[Platform, ...]
    swath: Swath

    @property
    def name(self) -> str:
        return self.sensor.product

    @property
    def family(self) -> Family:
        return self.sensor.family

    @property
    def qa_band(self) -> str:
        return self.sensor.mask_band

    @property
    def dtype(self) -> str:
        return self.sensor.reflectance_dtype

    @property
    def qa_dtype(self) -> str:
        return self.sensor.mask_dtype

    @property
    def nodata(self) -> int:
        return self.sensor.reflectance_nodata

    @property
    def qa_nodata(self) -> int:
        return self.sensor.mask_nodata

    @property
    def resolution(self) -> int:
        """The finest grid, metres."""
        return int(self.sensor.resolution)

    def band_resolution(self, band: str) -> int:
        if self.family == "sentinel2":
            return SENTINEL2_RESOLUTION[band]
        return self.resolution

    @property
    def coarsest_resolution(self) -> int:
        """The coarsest band's pixel size: every native grid's edges fall on its multiples."""
        return max(self.band_resolution(band) for band in self.measurements)

    @property
    def pixel_corner(self) -> float:
        """Where native pixel corners fall in UTM, modulo the pixel size: USGS grids Landsat
        with corners on 15 + 30k metres (centres on multiples of 30); ESA's MGRS tiles have
        corners on multiples of 60 m."""
        return 15.0 if self.family == "landsat" else 0.0

    @property
    def measurements(self) -> tuple[str, ...]:
        return (*self.bands, self.qa_band)

    @property
    def has_cirrus_band(self) -> bool:
        """OLI and MSI see cirrus (pixel_qa bits 8-9, SCL class 10); TM and ETM+ do not."""
        return self.name in ("ls8_usgs_sr_scene", "s2_esa_sr_granule")


WRS2 = Swath(
    paths_per_cycle=233,
    repeat_days=16,
    width_m=185_000.0,
    lon_of_path_one=-64.6,
    drift_per_degree=0.2125,
    local_time=time(10, 12),
    rows_per_orbit=248,
    path_step_days=7,
)
SENTINEL2_ORBITS = Swath(
    paths_per_cycle=143,
    repeat_days=10,
    width_m=290_000.0,
    lon_of_path_one=-25.0,
    drift_per_degree=0.2,
    local_time=time(10, 30),
    rows_per_orbit=0,
    path_step_days=3,
)

PRODUCTS: dict[str, ProductSpec] = {
    "ls5_usgs_sr_scene": ProductSpec(
        sensor=INPUT_PRODUCTS["ls5_usgs_sr_scene"],
        bands=LANDSAT_BANDS,
        platforms=(Platform("landsat-5", "TM", date(1984, 3, 16), date(2011, 11, 18), 0, "LT05"),),
        swath=WRS2,
    ),
    "ls7_usgs_sr_scene": ProductSpec(
        sensor=INPUT_PRODUCTS["ls7_usgs_sr_scene"],
        bands=LANDSAT_BANDS,
        platforms=(Platform("landsat-7", "ETM", date(1999, 5, 28), None, 8, "LE07"),),
        swath=WRS2,
    ),
    "ls8_usgs_sr_scene": ProductSpec(
        sensor=INPUT_PRODUCTS["ls8_usgs_sr_scene"],
        bands=LANDSAT_BANDS,
        platforms=(Platform("landsat-8", "OLI_TIRS", date(2013, 4, 11), None, 0, "LC08"),),
        swath=WRS2,
    ),
    "s2_esa_sr_granule": ProductSpec(
        sensor=INPUT_PRODUCTS["s2_esa_sr_granule"],
        bands=SENTINEL2_BANDS,
        platforms=(
            Platform("sentinel-2a", "MSI", date(2015, 7, 4), None, 0, "S2A"),
            Platform("sentinel-2b", "MSI", date(2017, 7, 6), None, 5, "S2B"),
        ),
        swath=SENTINEL2_ORBITS,
    ),
}

# Landsat 7's scan line corrector failed on this day; every later scene has wedge-shaped gaps.
LANDSAT7_SLC_OFF = date(2003, 5, 31)


def product_spec(name: str) -> ProductSpec:
    """The product called `name`, or InvalidRequest naming the products that exist."""
    try:
        return PRODUCTS[name]
    except KeyError:
        raise InvalidRequest(
            f"unknown product {name!r}: the archive has {', '.join(sorted(PRODUCTS))}"
        ) from None


def product_definition(name: str) -> dict[str, Any]:
    """The eo3 product definition of `name` as datacube reads it (a fresh copy each call)."""
    product_spec(name)
    return catalogue_definition(name)


def product_definitions(names: list[str] | None = None) -> list[dict[str, Any]]:
    return [product_definition(name) for name in (names or sorted(PRODUCTS))]

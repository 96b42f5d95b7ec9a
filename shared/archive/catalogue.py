"""The four archive products: their definitions, bands, platforms and acquisition geometry.

Product definitions live as YAML beside this module (`products/*.yaml`) so that an operator can
add them to a datacube with datacube's own tools; this module reads them and adds what the
generator needs to know about each sensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml

from shared.errors import InvalidRequest

LANDSAT_BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")
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

Family = Literal["landsat", "sentinel2"]


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
    name: str
    family: Family
    bands: tuple[str, ...]
    qa_band: str
    dtype: str
    qa_dtype: str
    nodata: int
    qa_nodata: int
    platforms: tuple[Platform, ...]
    swath: Swath
    resolution: int  # finest grid, metres

    def band_resolution(self, band: str) -> int:
        if self.family == "sentinel2":
            return SENTINEL2_RESOLUTION[band]
        return self.resolution

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
        name="ls5_usgs_sr_scene",
        family="landsat",
        bands=LANDSAT_BANDS,
        qa_band="pixel_qa",
        dtype="int16",
        qa_dtype="uint16",
        nodata=-9999,
        qa_nodata=1,
        platforms=(Platform("landsat-5", "TM", date(1984, 3, 16), date(2011, 11, 18), 0, "LT05"),),
        swath=WRS2,
        resolution=30,
    ),
    "ls7_usgs_sr_scene": ProductSpec(
        name="ls7_usgs_sr_scene",
        family="landsat",
        bands=LANDSAT_BANDS,
        qa_band="pixel_qa",
        dtype="int16",
        qa_dtype="uint16",
        nodata=-9999,
        qa_nodata=1,
        platforms=(Platform("landsat-7", "ETM", date(1999, 5, 28), None, 8, "LE07"),),
        swath=WRS2,
        resolution=30,
    ),
    "ls8_usgs_sr_scene": ProductSpec(
        name="ls8_usgs_sr_scene",
        family="landsat",
        bands=LANDSAT_BANDS,
        qa_band="pixel_qa",
        dtype="int16",
        qa_dtype="uint16",
        nodata=-9999,
        qa_nodata=1,
        platforms=(Platform("landsat-8", "OLI_TIRS", date(2013, 4, 11), None, 0, "LC08"),),
        swath=WRS2,
        resolution=30,
    ),
    "s2_esa_sr_granule": ProductSpec(
        name="s2_esa_sr_granule",
        family="sentinel2",
        bands=SENTINEL2_BANDS,
        qa_band="scene_classification",
        dtype="uint16",
        qa_dtype="uint8",
        nodata=0,
        qa_nodata=0,
        platforms=(
            Platform("sentinel-2a", "MSI", date(2015, 7, 4), None, 0, "S2A"),
            Platform("sentinel-2b", "MSI", date(2017, 7, 6), None, 5, "S2B"),
        ),
        swath=SENTINEL2_ORBITS,
        resolution=10,
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


@cache
def _definition_text(name: str) -> str:
    return (resources.files("shared.archive.products") / f"{name}.yaml").read_text("utf-8")


def product_definition(name: str) -> dict[str, Any]:
    """The eo3 product definition of `name` as datacube reads it (a fresh copy each call)."""
    product_spec(name)
    document = yaml.safe_load(_definition_text(name))
    assert isinstance(document, dict)
    return document


def product_definitions(names: list[str] | None = None) -> list[dict[str, Any]]:
    return [product_definition(name) for name in (names or sorted(PRODUCTS))]

"""The ground: sea, lakes, vegetation with a seasonal cycle, bare soil and towns.

Land cover is static and a pure function of longitude and latitude on the ground raster (see
`ground` and `noise`); reflectance is `base + vigour * amplitude * season(day)` per band, so a
date costs two passes per band. Spectra are typical surface reflectances x 10000 (USGS/ESA
conventions). Feature sizes are given in metres and turned into degrees of the ground raster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from enum import IntEnum

import numpy as np
import numpy.typing as npt
from odc.geo import CRS

from devtools.archive.catalogue import LANDSAT_BANDS, SENTINEL2_BANDS
from devtools.archive.ground import degrees
from devtools.archive.noise import (
    Field,
    Floats,
    evaluate,
    fractal_noise,
    pixel_noise,
    stable_key,
    value_noise,
)

SEA_LEVEL = np.float32(0.5)
# The share of each vegetated pixel's greenness that comes and goes with the seasons.
SEASONAL_SHARE = 0.3


class Cover(IntEnum):
    SEA = 1
    LAKE = 2
    VEGETATION = 3
    BARE = 4
    URBAN = 5


# Reflectance x 10000 of each kind of ground, per band.
SPECTRA: dict[str, dict[str, int]] = {
    #                 deep  shallow  lush  dry  bare urban
    "coastal_aerosol": dict(deep=450, shallow=700, lush=300, dry=550, bare=800, urban=1000),
    "blue": dict(deep=350, shallow=600, lush=250, dry=500, bare=900, urban=1100),
    "green": dict(deep=420, shallow=850, lush=550, dry=800, bare=1300, urban=1250),
    "red": dict(deep=230, shallow=650, lush=300, dry=1000, bare=1800, urban=1400),
    "veg_red_edge_1": dict(deep=180, shallow=550, lush=900, dry=1500, bare=2050, urban=1550),
    "veg_red_edge_2": dict(deep=150, shallow=450, lush=2800, dry=2200, bare=2200, urban=1700),
    "veg_red_edge_3": dict(deep=130, shallow=400, lush=3800, dry=2500, bare=2300, urban=1800),
    "nir": dict(deep=120, shallow=350, lush=4200, dry=2600, bare=2400, urban=1900),
    "narrow_nir": dict(deep=110, shallow=330, lush=4300, dry=2650, bare=2450, urban=1950),
    "water_vapour": dict(deep=60, shallow=200, lush=1500, dry=1200, bare=900, urban=700),
    "swir1": dict(deep=60, shallow=150, lush=1900, dry=2600, bare=3200, urban=2100),
    "swir2": dict(deep=40, shallow=90, lush=850, dry=1600, bare=2600, urban=1900),
}
# TM and ETM+ see the same ground a little differently from OLI.
SENSOR_GAIN: dict[str, float] = {"landsat-5": 1.03, "landsat-7": 1.02}

assert set(LANDSAT_BANDS) <= set(SPECTRA) and set(SENTINEL2_BANDS) == set(SPECTRA)


@dataclass
class Land:
    """Static ground on a grid of pixel centres."""

    cover: npt.NDArray[np.uint8]
    vigour: Field  # 0..1 greenness of vegetation at the peak of the season; 0 elsewhere
    rugged: npt.NDArray[np.bool_]  # steep, shaded land: terrain occlusion / dark area pixels
    base: dict[str, Field]  # reflectance without the seasonal part
    amplitude: dict[str, float]  # reflectance change per unit of vigour x season

    def window(self, rows: slice, columns: slice) -> Land:
        return Land(
            cover=self.cover[rows, columns],
            vigour=self.vigour[rows, columns],
            rugged=self.rugged[rows, columns],
            base={band: values[rows, columns] for band, values in self.base.items()},
            amplitude=self.amplitude,
        )

    def take(self, flat: npt.NDArray[np.int64]) -> Land:
        """The ground at positions `flat` of these (flattened) arrays, shaped like `flat`."""
        return Land(
            cover=np.take(self.cover, flat),
            vigour=np.take(self.vigour, flat),
            rugged=np.take(self.rugged, flat),
            base={band: np.take(values, flat) for band, values in self.base.items()},
            amplitude=self.amplitude,
        )

    @property
    def water(self) -> npt.NDArray[np.bool_]:
        return (self.cover == Cover.SEA) | (self.cover == Cover.LAKE)


def make_land(
    xs: Floats, ys: Floats, resolution: float, bands: tuple[str, ...], seed: int, gain: float = 1.0
) -> Land:
    """The ground under ground-raster centres `xs` (longitudes) x `ys` (latitudes), whose pixels
    are `resolution` degrees, for `bands`."""
    f32 = np.float32
    elevation = fractal_noise(xs, ys, degrees(30_000.0), stable_key(seed, "elevation"), octaves=6)
    moisture = fractal_noise(xs, ys, degrees(9_000.0), stable_key(seed, "moisture"), octaves=3)
    fields = {
        "elevation": elevation,
        "moisture": moisture,
        "lake_noise": value_noise(xs, ys, degrees(2_400.0), stable_key(seed, "lakes")),
        "town_noise": fractal_noise(xs, ys, degrees(5_000.0), stable_key(seed, "towns"), octaves=3),
        "rugged_noise": value_noise(xs, ys, degrees(1_200.0), stable_key(seed, "rugged")),
        "sea_level": SEA_LEVEL,
    }
    sea = evaluate("elevation < sea_level", **fields)
    lakes = evaluate("~sea & (lake_noise > 0.86) & (elevation < 0.62)", sea=sea, **fields)
    towns = evaluate(
        "~sea & ~lakes & (town_noise > 0.66) & (elevation < 0.58)", sea=sea, lakes=lakes, **fields
    )
    bare = evaluate(
        "~sea & ~lakes & ~towns & ((moisture < 0.36) | (elevation > 0.72))",
        sea=sea,
        lakes=lakes,
        towns=towns,
        **fields,
    )
    cover = evaluate(
        f"where(sea, {Cover.SEA}, where(lakes, {Cover.LAKE}, where(towns, {Cover.URBAN}, "
        f"where(bare, {Cover.BARE}, {Cover.VEGETATION}))))",
        sea=sea,
        lakes=lakes,
        towns=towns,
        bare=bare,
    ).astype(np.uint8)
    water = sea | lakes
    vegetation = ~water & ~towns & ~bare
    vigour = evaluate(
        "where(vegetation, where(v < low, low, where(v > one, one, v)), zero)",
        v=evaluate("moisture * 2.4 - 0.61", moisture=moisture).astype(np.float32),
        vegetation=vegetation,
        low=f32(0.3),
        one=f32(1.0),
        zero=f32(0.0),
    )
    rugged = evaluate("(elevation > 0.64) & ~water & (rugged_noise > 0.78)", water=water, **fields)
    # Texture: a patchwork of fields (hundreds of metres) and pixel-to-pixel noise; calm water.
    texture = evaluate(
        "where(water, one + (speckle - half) * calm, "
        "one + (patches - half) * patchy + (speckle - half) * grainy)",
        water=water,
        calm=f32(0.03),
        patchy=f32(0.22),
        grainy=f32(0.08),
        patches=value_noise(xs, ys, degrees(450.0), stable_key(seed, "patches")),
        speckle=pixel_noise(xs, ys, resolution, stable_key(seed, "speckle")),
        one=f32(1.0),
        half=f32(0.5),
    )
    # Deep water away from the coast; lakes stay shallow and green-brown.
    depth = evaluate(
        "where(lakes, lake_depth, where(d < zero, zero, where(d > one, one, d)))",
        d=evaluate("(sea_level - elevation) * steep", steep=f32(14.0), **fields),
        lake_depth=f32(0.1),
        lakes=lakes,
        zero=f32(0.0),
        one=f32(1.0),
    )
    base: dict[str, Field] = {}
    amplitude: dict[str, float] = {}
    for band in bands:
        spectrum = {name: f32(value) for name, value in SPECTRA[band].items()}
        lush, dry = float(spectrum["lush"]), float(spectrum["dry"])
        base[band] = evaluate(
            "where(water, shallow + depth * (deep - shallow), where(towns, urban, "
            "where(bare, bare_soil, dry + vigour * greening))) * texture * gain",
            water=water,
            towns=towns,
            bare=bare,
            depth=depth,
            vigour=vigour,
            texture=texture,
            shallow=spectrum["shallow"],
            deep=spectrum["deep"],
            urban=spectrum["urban"],
            bare_soil=spectrum["bare"],
            dry=spectrum["dry"],
            greening=f32((lush - dry) * (1.0 - SEASONAL_SHARE)),
            gain=f32(gain),
        )
        amplitude[band] = (lush - dry) * SEASONAL_SHARE
    return Land(cover=cover, vigour=vigour, rugged=rugged, base=base, amplitude=amplitude)


def southern_hemisphere(crs: CRS) -> bool:
    """Seasons follow the grid's hemisphere (from the CRS, so never from the area asked for)."""
    from pyproj import CRS as ProjCRS

    area = ProjCRS.from_user_input(crs.to_wkt()).area_of_use
    if area is None:
        return False
    return (area.south + area.north) / 2 < 0


def season(day: date, southern: bool) -> float:
    """+1 at the height of the growing season (late February in the south), -1 half a year on."""
    peak = 55 if southern else 238
    return math.cos(2 * math.pi * (day.timetuple().tm_yday - peak) / 365.25)


def clear_sky(land: Land, band: str, day_season: float, day_gain: float) -> Field:
    """Surface reflectance of `band` on a day, rounded half up (still float32)."""
    return evaluate(
        "base * gain + vigour * swing + half",
        base=land.base[band],
        vigour=land.vigour,
        gain=np.float32(day_gain),
        swing=np.float32(land.amplitude[band] * day_season * day_gain),
        half=np.float32(0.5),
    )

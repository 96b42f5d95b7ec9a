"""The weather of a day: clouds, their shadows, thin cirrus, and how sensors flag them.

Clouds are thresholded fractal noise keyed by the solar day, so two products flying the same
day see the same clouds. A shadow is the cloud field moved by a per-day offset (cloud height and
sun position), which is again a pure function of coordinates. The sky is made on the ground
raster (longitude and latitude, see `ground`) and each scene samples it, so scenes of one pass in
two UTM zones see the same clouds.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt

from devtools.archive.ground import METRES_PER_DEGREE, GroundWindow, degrees
from devtools.archive.noise import (
    Field,
    fractal_noise,
    stable_key,
    unit_scalar,
    value_noise,
)

CLOUD_CELL = degrees(14_000.0)
CIRRUS_CELL = degrees(20_000.0)
# Quantiles of the cloud field (4 octaves): the threshold leaving `share` of the sky cloudy.
_CLOUD_FIELD_QUANTILES = (
    (0.0, 0.80),
    (0.02, 0.665),
    (0.05, 0.635),
    (0.1, 0.605),
    (0.2, 0.57),
    (0.3, 0.545),
    (0.4, 0.522),
    (0.5, 0.5),
    (0.6, 0.478),
    (0.7, 0.455),
    (0.8, 0.43),
    (1.0, 0.2),
)
HIGH_CONFIDENCE_MARGIN = np.float32(0.03)
EDGE_MARGIN = np.float32(0.02)
# Offsets are whole pixels of every ground raster (2 arcseconds: the 60 m raster's pixel).
SHADOW_STEP = 1.0 / 1800


@dataclass(frozen=True)
class Weather:
    """What a day's sky is like, independent of where it is looked at."""

    day: date
    cloud_share: float  # expected cloudy fraction
    cloud_threshold: float
    shadow_dx: float  # degrees
    shadow_dy: float
    cirrus: bool
    cloud_key: int
    cirrus_key: int


def _threshold(share: float) -> float:
    for (low_share, low_value), (high_share, high_value) in itertools.pairwise(
        _CLOUD_FIELD_QUANTILES
    ):
        if low_share <= share <= high_share:
            weight = (share - low_share) / (high_share - low_share)
            return low_value + weight * (high_value - low_value)
    return _CLOUD_FIELD_QUANTILES[-1][1]


def weather(day: date, seed: int, southern: bool) -> Weather:
    """The day's sky: wetter seasons are cloudier, and about one day in six is clear."""
    draw = unit_scalar(seed, "cloudiness", day.isoformat())
    wet = math.cos(2 * math.pi * (day.timetuple().tm_yday - (30 if southern else 210)) / 365.25)
    share = 0.0 if draw < 0.16 else min(0.9, (draw - 0.16) ** 1.3 * (0.55 + 0.25 * wet))
    distance = 600 + 1500 * unit_scalar(seed, "cloud height", day.isoformat())
    # Morning sun in the east-north-east (south) or east-south-east (north): shadows fall west.
    bearing = math.radians(
        (250 if southern else 290) + 30 * unit_scalar(seed, "sun", day.isoformat())
    )
    return Weather(
        day=day,
        cloud_share=share,
        cloud_threshold=_threshold(share),
        shadow_dx=SHADOW_STEP
        * round(math.sin(bearing) * distance / METRES_PER_DEGREE / SHADOW_STEP),
        shadow_dy=SHADOW_STEP
        * round(math.cos(bearing) * distance / METRES_PER_DEGREE / SHADOW_STEP),
        cirrus=unit_scalar(seed, "cirrus", day.isoformat()) < 0.3,
        cloud_key=stable_key(seed, "clouds", day.isoformat()),
        cirrus_key=stable_key(seed, "cirrus field", day.isoformat()),
    )


@dataclass
class Sky:
    """The day's sky over a grid of pixel centres."""

    cloud: npt.NDArray[np.bool_]
    cloud_high: npt.NDArray[np.bool_]  # high confidence (cloud core)
    cloud_edge: npt.NDArray[np.bool_]  # clear, but next to a cloud: medium confidence
    shadow: npt.NDArray[np.bool_]  # shadowed and not itself cloud
    cirrus: npt.NDArray[np.bool_]
    brightness: Field  # cloud-top reflectance x 10000 where cloud

    def take(self, flat: npt.NDArray[np.int64]) -> Sky:
        """The sky at positions `flat` of these (flattened) arrays, shaped like `flat`."""
        return Sky(
            cloud=np.take(self.cloud, flat),
            cloud_high=np.take(self.cloud_high, flat),
            cloud_edge=np.take(self.cloud_edge, flat),
            shadow=np.take(self.shadow, flat),
            cirrus=np.take(self.cirrus, flat),
            brightness=np.take(self.brightness, flat),
        )


def _field_with_shadow(window: GroundWindow, day_weather: Weather) -> tuple[Field, Field]:
    """The cloud field over the window, and at each pixel's shadow source, in one evaluation.

    A shadow falls (dx, dy) from its cloud, so a pixel is shaded when the cloud field is set
    `dx` degrees west and `dy` south of it: `kx` columns west and `ky` rows south on the ground
    raster (the offsets are whole pixels of every ground raster).
    """
    kx = round(day_weather.shadow_dx * window.per_degree)
    ky = round(day_weather.shadow_dy * window.per_degree)
    top, left = min(0, ky), min(0, -kx)
    union = GroundWindow(
        per_degree=window.per_degree,
        row=window.row + top,
        rows=window.rows + abs(ky),
        column=(window.column + left) % (360 * window.per_degree),
        columns=window.columns + abs(kx),
    )
    field = fractal_noise(
        union.longitudes(), union.latitudes(), CLOUD_CELL, day_weather.cloud_key, octaves=4
    )
    rows, columns = -top, -left
    here = field[rows : rows + window.rows, columns : columns + window.columns]
    there = field[rows + ky : rows + ky + window.rows, columns - kx : columns - kx + window.columns]
    return here, there


def make_sky(window: GroundWindow, day_weather: Weather) -> Sky:
    """The day's sky over a window of the ground raster."""
    shape = window.shape
    if day_weather.cloud_share <= 0:
        nothing = np.zeros(shape, dtype=bool)
        cirrus = _cirrus(window, day_weather)
        return Sky(nothing, nothing, nothing, nothing, cirrus, np.zeros(shape, np.float32))
    here, there = _field_with_shadow(window, day_weather)
    threshold = np.float32(day_weather.cloud_threshold)
    cloud = here > threshold
    cloud_high = here > threshold + HIGH_CONFIDENCE_MARGIN
    cloud_edge = (here > threshold - EDGE_MARGIN) & ~cloud
    shadow = (there > threshold) & ~cloud
    brightness = np.clip((here - threshold) * np.float32(40.0), 0.0, 1.0).astype(np.float32)
    brightness *= np.float32(5000.0)
    brightness += np.float32(2600.0)
    return Sky(cloud, cloud_high, cloud_edge, shadow, _cirrus(window, day_weather), brightness)


def _cirrus(window: GroundWindow, day_weather: Weather) -> npt.NDArray[np.bool_]:
    if not day_weather.cirrus:
        return np.zeros(window.shape, dtype=bool)
    field = value_noise(
        window.longitudes(), window.latitudes(), CIRRUS_CELL, day_weather.cirrus_key
    )
    return field > np.float32(0.62)


# How white a cloud top is in each band (relative to the visible).
CLOUD_COLOUR: dict[str, float] = {
    "coastal_aerosol": 1.05,
    "blue": 1.0,
    "green": 1.0,
    "red": 1.0,
    "veg_red_edge_1": 0.98,
    "veg_red_edge_2": 0.97,
    "veg_red_edge_3": 0.96,
    "nir": 0.95,
    "narrow_nir": 0.95,
    "water_vapour": 0.55,
    "swir1": 0.75,
    "swir2": 0.6,
}
# Thin cirrus haze added to Sentinel-2 reflectance where SCL says thin cirrus.
CIRRUS_HAZE: dict[str, float] = {
    "coastal_aerosol": 320.0,
    "blue": 300.0,
    "green": 260.0,
    "red": 230.0,
    "veg_red_edge_1": 210.0,
    "veg_red_edge_2": 200.0,
    "veg_red_edge_3": 190.0,
    "nir": 180.0,
    "narrow_nir": 180.0,
    "water_vapour": 80.0,
    "swir1": 120.0,
    "swir2": 90.0,
}
SHADOW_FACTOR = np.float32(0.35)

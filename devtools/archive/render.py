"""A pass's pixels: the ground, the sky over it, the footprint, and the QA encoding.

`render` is used both to write scenes and to recompute their truth, so what the tests compare
against is the very function that made the files. It works pixel by pixel on whatever ground and
sky lie under each native pixel, so a scene's grid and a truth's arbitrary points go through the
same arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt

from devtools.archive.catalogue import LANDSAT7_SLC_OFF, ProductSpec
from devtools.archive.footprints import ScenePlan, inside_footprint
from devtools.archive.landcover import SENSOR_GAIN, Cover, Land, clear_sky, season
from devtools.archive.noise import evaluate, unit_scalar
from devtools.archive.sky import CIRRUS_HAZE, CLOUD_COLOUR, SHADOW_FACTOR, Sky

# USGS Collection-1 SR pixel_qa bits.
QA_FILL = 1
QA_CLEAR = 2
QA_WATER = 4
QA_SHADOW = 8
QA_SNOW = 16
QA_CLOUD = 32
QA_CLOUD_LOW = 64
QA_CLOUD_MEDIUM = 128
QA_CLOUD_HIGH = 192
QA_CIRRUS_LOW = 256
QA_CIRRUS_HIGH = 768
QA_TERRAIN = 1024

# Sen2Cor scene classes.
SCL_NO_DATA = 0
SCL_DARK_AREA = 2
SCL_CLOUD_SHADOW = 3
SCL_VEGETATION = 4
SCL_NOT_VEGETATED = 5
SCL_WATER = 6
SCL_UNCLASSIFIED = 7
SCL_CLOUD_MEDIUM = 8
SCL_CLOUD_HIGH = 9
SCL_THIN_CIRRUS = 10

# ETM+ scan-line-corrector-off gaps: one scan is 16 detector lines of 30 m.
SLC_SCAN_M = 480.0
SLC_WIDEST_GAP = 0.45


@dataclass
class Rendered:
    """A day's pixels on one grid: stored values and the masks they were made from."""

    values: dict[str, np.ndarray]  # measurement -> stored dtype, nodata outside the footprint
    surface: dict[str, np.ndarray]  # band -> clear-sky reflectance (stored dtype), everywhere
    valid: npt.NDArray[np.bool_]  # seen by a scene (inside footprint, not in an SLC gap)
    sky: Sky
    cover: npt.NDArray[np.uint8]

    @property
    def cloud(self) -> npt.NDArray[np.bool_]:
        return self.sky.cloud & self.valid

    @property
    def shadow(self) -> npt.NDArray[np.bool_]:
        return self.sky.shadow & self.valid

    @property
    def water(self) -> npt.NDArray[np.bool_]:
        """Water seen under a clear sky (what pixel_qa bit 2 and SCL class 6 say)."""
        return (
            ((self.cover == Cover.SEA) | (self.cover == Cover.LAKE))
            & self.valid
            & ~self.sky.cloud
            & ~self.sky.shadow
        )


def seen(plans: Sequence[ScenePlan], xs: Any, ys: Any) -> npt.NDArray[np.bool_]:
    """Native pixel centres any of the scenes saw (ETM+ gaps excluded); all plans share a CRS.

    `xs`, `ys` broadcast (a row of x and a column of y for a grid, or two arrays of points).
    """
    valid: npt.NDArray[np.bool_] | None = None
    for plan in plans:
        inside = inside_footprint(plan, xs, ys)
        if plan.product.name == "ls7_usgs_sr_scene" and plan.solar_day > LANDSAT7_SLC_OFF:
            inside &= ~_slc_gaps(plan, xs, ys)
        valid = inside if valid is None else valid | inside
    if valid is None:
        return np.zeros(np.broadcast_shapes(np.shape(ys), np.shape(xs)), dtype=bool)
    return valid


def _slc_gaps(plan: ScenePlan, xs: Any, ys: Any) -> npt.NDArray[np.bool_]:
    """Wedge-shaped stripes: none at the scene's centre line, widest at the swath edges."""
    track = plan.track
    return evaluate(
        "along / scan - floor(along / scan) < abs(across) * (widest / half_width)",
        along=track.along(xs, ys),
        across=track.across(xs, ys),
        scan=SLC_SCAN_M,
        widest=SLC_WIDEST_GAP,
        half_width=track.half_width,
    )


def render(
    product: ProductSpec,
    platform: str,
    day: date,
    measurements: Sequence[str],
    land: Land,
    sky: Sky,
    valid: npt.NDArray[np.bool_],
    seed: int,
    southern: bool,
    *,
    with_surface: bool = True,
) -> Rendered:
    """`measurements` (all of one resolution) of a pass on `day`, pixel by pixel.

    `land` and `sky` are what lies under each pixel (sampled from the ground raster) and
    `valid` says which pixels a scene saw; the arrays have any one shape.
    """
    bands = [m for m in measurements if m != product.qa_band]
    day_season = season(day, southern)
    sensor_gain = SENSOR_GAIN.get(platform, 1.0)
    blend = _Blend.of(product, sky, valid)
    values: dict[str, np.ndarray] = {}
    surface: dict[str, np.ndarray] = {}
    for band in bands:
        # Atmospheric correction is never perfect: a small per-day, per-band gain.
        gain = sensor_gain * (1.0 + 0.04 * (unit_scalar(seed, "gain", day.isoformat(), band) - 0.5))
        if with_surface:
            surface[band] = clear_sky(land, band, day_season, gain).astype(product.dtype)
        values[band] = blend.observe(land, band, day_season, gain)
    if product.qa_band in measurements:
        values[product.qa_band] = _quality(product, land, sky, valid)
    return Rendered(values=values, surface=surface, valid=valid, sky=sky, cover=land.cover)


@dataclass
class _Blend:
    """Per-pixel weights that turn clear-sky reflectance into what the sensor recorded.

    Arithmetic, not masks: a clear pixel is multiplied by exactly 1 and has exactly 0 added, so
    it keeps its clear-sky value bit for bit. Unseen pixels get weight 0 and `fill`, which with
    the rounding half is exactly nodata.
    """

    keep: np.ndarray  # 0 under cloud or unseen, SHADOW_FACTOR in shadow, 1 elsewhere
    cloud_top: np.ndarray  # cloud brightness where cloud, 0 elsewhere
    haze: np.ndarray | None  # 1 where thin cirrus haze is added (Sentinel-2), else None
    fill: np.ndarray  # nodata - 0.5 where unseen, 0 elsewhere
    dtype: str

    @classmethod
    def of(cls, product: ProductSpec, sky: Sky, seen: np.ndarray) -> _Blend:
        operands = {
            "cloud": sky.cloud,
            "shadow": sky.shadow,
            "seen": seen,
            "shaded": SHADOW_FACTOR,
            "one": np.float32(1.0),
            "zero": np.float32(0.0),
        }
        keep = evaluate("where(seen & ~cloud, where(shadow, shaded, one), zero)", **operands)
        cloud_top = evaluate("where(seen & cloud, bright, zero)", bright=sky.brightness, **operands)
        fill = evaluate(
            "where(seen, zero, nodata)", nodata=np.float32(product.nodata - 0.5), **operands
        )
        haze = None
        if product.family == "sentinel2" and sky.cirrus.any():
            haze = evaluate("where(cirrus & ~cloud, one, zero)", cirrus=sky.cirrus, **operands)
        return cls(keep, cloud_top, haze, fill, product.dtype)

    def observe(self, land: Land, band: str, day_season: float, gain: float) -> np.ndarray:
        operands = {
            "base": land.base[band],
            "vigour": land.vigour,
            "gain": np.float32(gain),
            "swing": np.float32(land.amplitude[band] * day_season * gain),
            "keep": self.keep,
            "cloud_top": self.cloud_top,
            "white": np.float32(CLOUD_COLOUR[band]),
            "fill": self.fill,
            "half": np.float32(0.5),
        }
        expression = "(base * gain + vigour * swing) * keep + cloud_top * white + fill + half"
        if self.haze is not None:
            operands |= {"haze": self.haze, "veil": np.float32(CIRRUS_HAZE[band])}
            expression += " + haze * veil"
        # Truncation after adding a half rounds (all reflectances are positive).
        return evaluate(expression, **operands).astype(self.dtype)


def _quality(product: ProductSpec, land: Land, sky: Sky, valid: np.ndarray) -> np.ndarray:
    if product.family == "sentinel2":
        return _scene_classification(land, sky, valid)
    return _pixel_qa(product, land, sky, valid)


def _pixel_qa(product: ProductSpec, land: Land, sky: Sky, valid: np.ndarray) -> np.ndarray:
    oli = product.has_cirrus_band
    # Cloud confidence is low by default, medium beside a cloud, medium or high in one.
    terms = [
        f"{QA_CLOUD_LOW + (QA_CIRRUS_LOW if oli else 0)}",
        f"where(edge, {QA_CLOUD_MEDIUM - QA_CLOUD_LOW}, 0)",
        f"where(cloud, {QA_CLOUD + QA_CLOUD_MEDIUM - QA_CLOUD_LOW}, 0)",
        f"where(high, {QA_CLOUD_HIGH - QA_CLOUD_MEDIUM}, 0)",
        f"where(shadow, {QA_SHADOW}, 0)",
        f"where(~cloud & ~shadow & water, {QA_WATER}, 0)",
        f"where(~cloud & ~shadow & ~water, {QA_CLEAR}, 0)",
    ]
    if oli:
        terms += [
            f"where(cirrus, {QA_CIRRUS_HIGH - QA_CIRRUS_LOW}, 0)",
            f"where(~cloud & ~shadow & ~water & rugged, {QA_TERRAIN}, 0)",
        ]
    expression = f"where(valid, {' + '.join(terms)}, {QA_FILL})"
    qa = evaluate(
        expression,
        valid=valid,
        edge=sky.cloud_edge,
        cloud=sky.cloud,
        high=sky.cloud_high,
        shadow=sky.shadow,
        cirrus=sky.cirrus,
        water=land.water,
        rugged=land.rugged,
    )
    return qa.astype(np.uint16)


def _scene_classification(land: Land, sky: Sky, valid: np.ndarray) -> np.ndarray:
    # Later classes win, as Sen2Cor's own precedence does: cloud over shadow over cirrus.
    expression = (
        f"where(~valid, {SCL_NO_DATA}, where(high, {SCL_CLOUD_HIGH}, "
        f"where(cloud, {SCL_CLOUD_MEDIUM}, where(shadow, {SCL_CLOUD_SHADOW}, "
        f"where(cirrus, {SCL_THIN_CIRRUS}, where(edge, {SCL_UNCLASSIFIED}, "
        f"where(water, {SCL_WATER}, where(rugged, {SCL_DARK_AREA}, "
        f"where(vegetation, {SCL_VEGETATION}, {SCL_NOT_VEGETATED})))))))))"
    )
    scl = evaluate(
        expression,
        valid=valid,
        high=sky.cloud_high,
        cloud=sky.cloud,
        shadow=sky.shadow,
        cirrus=sky.cirrus,
        edge=sky.cloud_edge,
        water=land.water,
        rugged=land.rugged,
        vegetation=land.cover == Cover.VEGETATION,
    )
    return scl.astype(np.uint8)

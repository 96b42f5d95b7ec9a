"""Reference implementations that share no code with the products: plain numpy and scipy.

Each takes plain arrays (time, y, x) of stored values, as rasterio reads scene files, and
recomputes what a product should hold, written from the published descriptions rather than
from the product code:

* `wofs_wet`: the WOfS tree (Mueller et al. 2016) as one rule per wet leaf (the conjunction of
  the tests on its path); the product evaluates it node by node;
* `buffer`: cloud and shadow masks grown with scipy's binary morphology and a disk footprint
  (the product uses odc-algo's distance-transform morphology);
* `weiszfeld_geomedian`: Weiszfeld's iteration, pixel by pixel;
* `nearest_rank_percentile`: numpy's "nearest" percentile with odc-algo's three-observation rule;
* `water_summary`, `ndvi_statistics`, `median_mndwi`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

Bools = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]

#: Wet leaves of the WOfS tree and the tests on their paths, on float32 reflectance x 10000:
#: b1 blue, b3 red, b7 swir2, r52 = nd(swir1, green), r43 = nd(nir, red), r72 = nd(swir2, green).
_WET_LEAVES: dict[str, str] = {
    "N6": "r52 <= -0.01 & b1 <= 2083.5 & b7 <= 323.5 & r43 <= 0.61",
    "N10": "r52 <= -0.01 & b1 <= 2083.5 & b7 > 323.5 & b1 > 1400.5 & r43 <= -0.01",
    "N14": "r52 <= -0.01 & b7 > 323.5 & b1 <= 1400.5 & r72 > -0.23 & b1 <= 379",
    "N17": "r52 <= -0.01 & b7 > 323.5 & b1 <= 1400.5 & r72 <= -0.23 & r43 <= 0.22",
    "N19": "r52 <= -0.01 & b7 > 323.5 & b1 <= 1400.5 & r72 <= -0.23 & r43 > 0.22 & b1 <= 473",
    "N27": "r52 > -0.01 & r52 <= 0.23 & b1 <= 334.5 & r43 <= 0.54 & r52 <= 0.12",
    "N31": "r52 > 0.12 & r52 <= 0.23 & b1 <= 334.5 & r43 <= 0.54 & b3 <= 364.5 & b1 <= 129.5",
    "N33": "r52 > 0.12 & r52 <= 0.23 & b1 <= 334.5 & r43 <= 0.54 & b3 > 364.5 & b1 <= 300.5",
    "N44": "r52 > 0.23 & r52 <= 0.34 & b1 <= 249.5 & r43 <= 0.45 & b3 <= 364.5 & b1 <= 129.5",
}


def _nd(first: npt.NDArray[np.float32], second: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (first - second) / (first + second)


def wofs_wet(
    blue: npt.ArrayLike,
    green: npt.ArrayLike,
    red: npt.ArrayLike,
    nir: npt.ArrayLike,
    swir1: npt.ArrayLike,
    swir2: npt.ArrayLike,
) -> Bools:
    """True where one of the tree's wet leaves holds."""
    b1, b2, b3, b4, b5, b7 = (
        np.asarray(band, dtype=np.float32) for band in (blue, green, red, nir, swir1, swir2)
    )
    names = {"b1": b1, "b3": b3, "b7": b7, "r52": _nd(b5, b2), "r43": _nd(b4, b3),
             "r72": _nd(b7, b2)}  # fmt: skip
    wet = np.zeros(np.broadcast(b1, b2, b3, b4, b5, b7).shape, dtype=bool)
    for rule in _WET_LEAVES.values():
        holds = np.ones_like(wet)
        for test in rule.split("&"):
            name, operator, threshold = test.split()
            value = names[name]
            limit = np.float32(float(threshold))
            holds &= (value <= limit) if operator == "<=" else (value > limit)
        wet |= holds
    return wet


def _disk(radius: int) -> Bools:
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2


def buffer(mask: Bools, steps: Sequence[tuple[str, int]]) -> Bools:
    """Morphology of each 2-D layer of `mask` (…, y, x); outside the array counts as unknown:
    erosion keeps edge pixels, dilation adds none from outside."""
    result = np.array(mask, dtype=bool)
    for index in np.ndindex(result.shape[:-2]):
        layer = result[index]
        for operation, radius in steps:
            if radius == 0:
                continue
            disk = _disk(radius)
            if operation in ("dilation", "closing"):
                layer = ndimage.binary_dilation(layer, disk, border_value=0)
            if operation in ("erosion", "opening", "closing"):
                layer = ndimage.binary_erosion(layer, disk, border_value=1)
            if operation == "opening":
                layer = ndimage.binary_dilation(layer, disk, border_value=0)
        result[index] = layer
    return result


def water_summary(wet: Bools, dry: Bools, seen: Bools) -> dict[str, Floats]:
    """count_wet, count_clear (-999 where never seen) and frequency over time (axis 0)."""
    count_wet = wet.sum(axis=0)
    count_clear = count_wet + dry.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        frequency = np.where(count_clear > 0, count_wet / count_clear, np.nan)
    never = ~seen.any(axis=0)
    return {
        "count_wet": np.where(never, -999, count_wet).astype(np.float64),
        "count_clear": np.where(never, -999, count_clear).astype(np.float64),
        "frequency": frequency,
    }


def ndvi_statistics(red: Floats, nir: Floats, usable: Bools) -> dict[str, Floats]:
    """NDVI median, mean, std and count over the usable observations (reflectance as floats)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = np.where(usable & (red + nir != 0), (nir - red) / (nir + red), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "ndvi_median": np.nanmedian(ndvi, axis=0),
            "ndvi_mean": np.nanmean(ndvi, axis=0),
            "ndvi_std": np.nanstd(ndvi, axis=0),
            "ndvi_count": np.isfinite(ndvi).sum(axis=0).astype(np.float64),
        }


def median_mndwi(green: Floats, swir1: Floats, usable: Bools) -> Floats:
    with np.errstate(divide="ignore", invalid="ignore"):
        mndwi = np.where(usable & (green + swir1 != 0), (green - swir1) / (green + swir1), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(mndwi, axis=0)


def nearest_rank_percentile(values: Floats, valid: Bools, percentile: float) -> Floats:
    """The value at rank round(p (n - 1)) of each pixel's n valid values (NaN when n < 3)."""
    data = np.where(valid, values, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = np.nanpercentile(data, percentile, axis=0, method="nearest")
    return np.where(valid.sum(axis=0) >= 3, result, np.nan)


def weiszfeld_geomedian(
    observations: Floats, valid: Bools, iterations: int = 1000, tolerance: float = 1e-7
) -> Floats:
    """Geometric median of each pixel's valid observations, (time, band, y, x) -> (band, y, x).

    Weiszfeld's algorithm from the mean, stopping when a step moves less than `tolerance`.
    """
    _times, bands, height, width = observations.shape
    result = np.full((bands, height, width), np.nan)
    for row in range(height):
        for column in range(width):
            keep = valid[:, row, column]
            if not keep.any():
                continue
            points = observations[keep, :, row, column]
            estimate = points.mean(axis=0)
            for _ in range(iterations):
                distances = np.linalg.norm(points - estimate, axis=1)
                distances = np.maximum(distances, 1e-12)
                weights = 1.0 / distances
                moved = (points * weights[:, None]).sum(axis=0) / weights.sum()
                if np.linalg.norm(moved - estimate) < tolerance:
                    estimate = moved
                    break
                estimate = moved
            result[:, row, column] = estimate
    return result

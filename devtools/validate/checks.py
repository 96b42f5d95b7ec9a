"""Each product's output against its reference, recomputed from the scene files on windows.

The mask codes, buffering defaults and valid range below are written out again from the
sensors' documentation and the reference products' configurations, not imported from the
product code, so that a mistake there shows up here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import xarray as xr
import yaml
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from devtools.validate import references
from devtools.validate.scenes import Grid, Scene, days_of, read_stack, scene_of

BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")
Array = np.ndarray[Any, Any]

# USGS Collection-1 pixel_qa codes the original worker called clear (land, water); ESA SCL.
CLEAR_CODES = {
    "ls5_usgs_sr_scene": (66, 130, 68, 132),
    "ls7_usgs_sr_scene": (66, 130, 68, 132),
    "ls8_usgs_sr_scene": (322, 386, 834, 898, 1346, 324, 388, 836, 900, 1348),
    "s2_esa_sr_granule": (2, 4, 5, 7, 6),
}
LANDSAT_BUFFER = (("dilation", 6),)  # DEA ga_ls_wo_fq_cyear_3, ga_ls_fc_pc_cyear_3
SENTINEL_2_BUFFER = (("opening", 2), ("dilation", 5))  # odc-stats gm-s2
MARGIN = 16  # pixels of context read around a window (more than any default filter reaches)
S2_REGRESSION = {  # Flood (2017), as GA's s2_fc_albers.yaml gives it
    "blue": [-22.0, 0.9551],
    "green": [31.0, 1.0582],
    "red": [64.0, 0.9871],
    "nir": [120.0, 1.0187],
    "swir1": [79.0, 0.9528],
    "swir2": [-42.0, 0.9688],
}


@dataclass
class Difference:
    product: str
    band: str
    pixels: int = 0
    largest: float = 0.0
    nodata_mismatches: int = 0
    tolerance: float = 0.0

    @property
    def ok(self) -> bool:
        return self.nodata_mismatches == 0 and self.largest <= self.tolerance

    def add(self, got: Array, want: Array, got_nodata: float | None) -> None:
        got = got.astype(np.float64)
        want = want.astype(np.float64)
        got_missing = (
            np.isnan(got) if got_nodata is None or np.isnan(got_nodata) else (got == got_nodata)
        )
        want_missing = np.isnan(want)
        both = ~got_missing & ~want_missing
        self.pixels += int(both.sum())
        self.nodata_mismatches += int((got_missing != want_missing).sum())
        if both.any():
            self.largest = max(self.largest, float(np.abs(got[both] - want[both]).max()))


@dataclass(frozen=True)
class Observations:
    """One window's scene data: canonical reflectance (int16 x 10000), mask, and what it says."""

    sensor: str
    reflectance: dict[str, Array]
    mask: Array
    days: list[date]

    @property
    def landsat(self) -> bool:
        return self.sensor.startswith("ls")

    def fill(self) -> Array:
        return (self.mask & 1) != 0 if self.landsat else self.mask == 0

    def cloud(self) -> Array:
        return (self.mask & 32) != 0 if self.landsat else np.isin(self.mask, (8, 9, 10))

    def shadow(self) -> Array:
        return (self.mask & 8) != 0 if self.landsat else self.mask == 3

    def clear(self, buffer: tuple[tuple[str, int], ...]) -> Array:
        seen = np.isin(self.mask, CLEAR_CODES[self.sensor])
        if buffer:
            seen &= ~references.buffer(self.cloud(), buffer) & ~references.buffer(
                self.shadow(), buffer
            )
        return seen

    def in_range(self, bands: tuple[str, ...]) -> Array:
        return np.all(
            [(self.reflectance[b] >= 1) & (self.reflectance[b] <= 10000) for b in bands], axis=0
        )

    @property
    def default_buffer(self) -> tuple[tuple[str, int], ...]:
        return LANDSAT_BUFFER if self.landsat else SENTINEL_2_BUFFER


def load_observations(
    days: dict[date, list[Scene]],
    sensor: str,
    grid: Grid,
    bands: tuple[str, ...],
    reflectance: Resampling,
) -> Observations:
    """Reflectance resampled as the worker resamples it (`Product.reflectance_resampling`),
    the mask band nearest."""
    mask_band = "pixel_qa" if sensor.startswith("ls") else "scene_classification"
    resampling = dict.fromkeys(bands, reflectance)
    stacks, nodatas = read_stack(days, [*bands, mask_band], grid, resampling)
    canonical = {}
    for band in bands:
        values = stacks[band]
        if values.dtype == np.int16 and nodatas[band] == -9999:
            canonical[band] = values
        else:
            clipped = np.minimum(values.astype(np.int64), 32767)
            canonical[band] = np.where(values == nodatas[band], -9999, clipped).astype(np.int16)
    return Observations(sensor, canonical, stacks[mask_band], list(days))


def floats(values: Array) -> Array:
    return np.where(values == -9999, np.nan, values / 10000.0)


def wofs_layers(obs: Observations) -> tuple[Array, Array, Array]:
    """(clear wet, clear dry, seen) per day, as the WOfS observation layers say."""
    bands = obs.reflectance
    no_data = obs.fill() | np.all([bands[b] == -9999 for b in BANDS], axis=0)
    bad = ~obs.in_range(BANDS)
    if not obs.landsat:
        bad |= obs.mask == 1  # SCL saturated or defective
    bad |= references.buffer(obs.cloud(), obs.default_buffer)
    bad |= references.buffer(obs.shadow(), obs.default_buffer)
    if obs.sensor == "ls8_usgs_sr_scene":
        bad |= (obs.mask & 1024) != 0  # terrain occlusion
    wet = references.wofs_wet(*(bands[b] for b in BANDS))
    clear = ~no_data & ~bad
    return clear & wet, clear & ~wet, ~no_data


def expected_water(obs: Observations) -> dict[str, Array]:
    wet, dry, seen = wofs_layers(obs)
    summary = references.water_summary(wet, dry, seen)
    return {name: np.where(values == -999, np.nan, values) for name, values in summary.items()}


def expected_ndvi(obs: Observations) -> dict[str, Array]:
    clear = obs.clear(obs.default_buffer)
    usable = clear & obs.in_range(("red", "nir"))
    stats = references.ndvi_statistics(
        floats(obs.reflectance["red"]), floats(obs.reflectance["nir"]), usable
    )
    never = obs.fill().all(axis=0)
    stats["clear_count"] = clear.sum(axis=0).astype(np.float64)
    for name in ("ndvi_count", "clear_count"):
        stats[name] = np.where(never, np.nan, stats[name])
    return stats


def expected_shoreline(obs: Observations) -> dict[str, Array]:
    usable = obs.clear(obs.default_buffer) & obs.in_range(("green", "swir1"))
    green, swir1 = (floats(obs.reflectance[b]) for b in ("green", "swir1"))
    return {"mndwi": references.median_mndwi(green, swir1, usable)}


def _cover_per_day(obs: Observations) -> dict[str, Array]:
    from fc.fractional_cover import LANDSAT_8_COEFFICIENTS, fractional_cover
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords

    regression = {"ls8_usgs_sr_scene": LANDSAT_8_COEFFICIENTS, "s2_esa_sr_granule": S2_REGRESSION}
    shape = obs.mask.shape[1:]
    coords = xr_coords(GeoBox(shape, Affine(30, 0, 0, 0, -30, 0), "EPSG:3857"))
    covers: dict[str, list[Array]] = {"pv": [], "npv": [], "bs": []}
    for day in range(obs.mask.shape[0]):
        inputs = xr.Dataset(
            {
                band: xr.DataArray(
                    obs.reflectance[band][day], dims=("y", "x"), coords=coords,
                    attrs={"nodata": -9999},
                )
                for band in ("green", "red", "nir", "swir1", "swir2")
            }
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cover = fractional_cover(
                inputs,
                regression_coefficients=regression.get(obs.sensor),
                clip_after_regression=True,
            )
        for name, package_name in (("pv", "PV"), ("npv", "NPV"), ("bs", "BS")):
            values = cover[package_name].values.astype(np.float64)
            covers[name].append(np.where(values == -1, np.nan, values))
    return {name: np.stack(layers) for name, layers in covers.items()}


def expected_fc_percentiles(obs: Observations) -> dict[str, Array]:
    wet, dry, seen = wofs_layers(obs)
    expected: dict[str, Array] = {}
    for name, cover in _cover_per_day(obs).items():
        valid = dry & np.isfinite(cover)
        for percentile in (10, 50, 90):
            expected[f"{name}_pc_{percentile}"] = references.nearest_rank_percentile(
                cover, valid, percentile
            )
    never = ~seen.any(axis=0)
    expected["count_valid"] = np.where(never, np.nan, dry.sum(axis=0))
    all_valid = np.all([np.isfinite(v) for v in expected.values()][:9], axis=0)
    qa = np.where(all_valid, 2, np.where(wet.any(axis=0), 0, 1)).astype(np.float64)
    expected["qa"] = np.where(never, np.nan, qa)
    return expected


def expected_geomedian(obs: Observations, pixels: Array) -> dict[str, Array]:
    """Weiszfeld's geomedian (x 10000, rounded) and count at the sampled (row, column) pixels."""
    order = ("red", "green", "blue", "nir", "swir1", "swir2")
    usable = obs.clear(()) & obs.in_range(order)
    rows, columns = pixels[:, 0], pixels[:, 1]
    stack = np.stack([obs.reflectance[b][:, rows, columns] / 10000.0 for b in order], axis=1)
    keep = usable[:, rows, columns]
    median = references.weiszfeld_geomedian(stack[..., None], keep[..., None])[..., 0]
    expected = {band: np.round(median[i] * 10000.0) for i, band in enumerate(order)}
    never = obs.fill()[:, rows, columns].all(axis=0)
    expected["count"] = np.where(never, np.nan, keep.sum(axis=0))
    return expected


TOLERANCES: dict[str, dict[str, float]] = {
    # geomad, as odc-stats runs it on int16, stops when a step moves less than 0.1 unit of
    # 10,000; where the sum of distances is flat that can be several units short of the exact
    # minimiser Weiszfeld reaches (the demo's worst: 7 units of nir, at a 0.01 % higher sum).
    "geomedian": {band: 10.0 for band in BANDS} | {"count": 0.0},
    # Scenes are warped onto the cell with an interpolating kernel on both sides, by GDAL, but
    # datacube warps the window of the scene it reads and the reference the whole file, each
    # through GDAL's approximate transformer (an eighth of a pixel): interpolated reflectance
    # can differ by a unit or two, a few 1e-4 of an index and a point of cover.
    "ndvi": {"ndvi_median": 1e-3, "ndvi_mean": 1e-3, "ndvi_std": 1e-3},
    "water": {"frequency": 1e-6},
    "shoreline": {"mndwi": 1e-3},
    "fc_percentiles": {
        f"{cover}_pc_{percentile}": 1.0
        for cover in ("pv", "npv", "bs")
        for percentile in (10, 50, 90)
    },
}

FullCheck = Callable[[Observations], dict[str, Array]]
FULL_CHECKS: dict[str, tuple[tuple[str, ...], Resampling, FullCheck]] = {
    # job code: (bands read, reflectance resampling, reference)
    "water": (BANDS, Resampling.bilinear, expected_water),
    "ndvi": (("red", "nir"), Resampling.bilinear, expected_ndvi),
    "shoreline": (("green", "swir1"), Resampling.cubic, expected_shoreline),
    "fc_percentiles": (BANDS, Resampling.bilinear, expected_fc_percentiles),
}
GEOMEDIAN_RESAMPLING = Resampling.bilinear


@dataclass(frozen=True)
class OutputDataset:
    job_code: str
    product: str
    sensor: str
    grid: Grid
    files: dict[str, Path]
    nodata: dict[str, float | None]
    sources: list[str]


def output_dataset(path: Path) -> OutputDataset | None:
    document = yaml.safe_load(path.read_text("utf-8"))
    properties = document.get("properties", {})
    job_code = str(properties.get("odc:product_family", ""))
    if job_code not in FULL_CHECKS and job_code != "geomedian":
        return None
    grid_doc = document["grids"]["default"]
    transform = Affine(*grid_doc["transform"][:6])
    grid = Grid(str(document["crs"]), transform, tuple(grid_doc["shape"]))  # type: ignore[arg-type]
    files = {name: path.parent / entry["path"] for name, entry in document["measurements"].items()}
    nodata: dict[str, float | None] = {}
    for name, file in files.items():
        with rasterio.open(file) as raster:
            nodata[name] = raster.nodata
    product = str(document["product"]["name"])
    sensor = {"ls5": "ls5_usgs_sr_scene", "ls7": "ls7_usgs_sr_scene", "ls8": "ls8_usgs_sr_scene",
              "s2": "s2_esa_sr_granule"}.get(product.split("_")[0], "")  # fmt: skip
    sources = [str(source) for source in document.get("lineage", {}).get("inputs", [])]
    return OutputDataset(job_code, product, sensor, grid, files, nodata, sources)


def _read_window(file: Path, row: int, column: int, rows: int, columns: int) -> Array:
    with rasterio.open(file) as raster:
        values: Array = raster.read(1, window=Window(column, row, columns, rows))
    return values


def _observed_pixels(dataset: OutputDataset) -> Array:
    """(row, column) of the pixels where the dataset's first band holds a value: a cell is
    bigger than the archive that fed it, and a window of nodata checks nothing."""
    band = next(iter(dataset.files))
    with rasterio.open(dataset.files[band]) as raster:
        values: Array = raster.read(1)
    nodata = dataset.nodata.get(band)
    valid = np.isfinite(values)
    if nodata is not None:
        valid &= ~np.isclose(values, nodata)
    return np.argwhere(valid)


def _window_over(
    observed: Array, height: int, width: int, rng: np.random.Generator, shape: tuple[int, int]
) -> tuple[int, int]:
    """A window's top left corner, the window centred (as far as the grid allows) on a random
    observed pixel; anywhere when nothing was observed."""
    rows, columns = shape
    if len(observed):
        row, column = observed[int(rng.integers(0, len(observed)))]
    else:
        row, column = rng.integers(0, rows), rng.integers(0, columns)
    top = min(max(int(row) - height // 2, 0), rows - height)
    left = min(max(int(column) - width // 2, 0), columns - width)
    return top, left


def check_dataset(
    dataset: OutputDataset,
    archive: dict[str, Path],
    results: dict[tuple[str, str], Difference],
    *,
    windows: int,
    size: int,
    geomedian_pixels: int,
    seed: int,
) -> None:
    scenes = [scene_of(archive[source]) for source in dataset.sources if source in archive]
    missing = len(dataset.sources) - len(scenes)
    if missing:
        raise FileNotFoundError(
            f"{missing} source scenes of {dataset.product} are not under the archive folder"
        )
    days = days_of(scenes)
    rows, columns = dataset.grid.shape
    rng = np.random.default_rng(seed)
    observed = _observed_pixels(dataset)
    for _ in range(windows):
        height, width = min(size, rows), min(size, columns)
        top, left = _window_over(observed, height, width, rng, (rows, columns))
        # Read with context around the window, clipped to the tile (the product sees no more).
        outer_top, outer_left = max(top - MARGIN, 0), max(left - MARGIN, 0)
        outer_bottom = min(top + height + MARGIN, rows)
        outer_right = min(left + width + MARGIN, columns)
        grid = dataset.grid.window(
            outer_top, outer_left, outer_bottom - outer_top, outer_right - outer_left
        )
        inner = (slice(top - outer_top, top - outer_top + height),
                 slice(left - outer_left, left - outer_left + width))  # fmt: skip
        if dataset.job_code == "geomedian":
            obs = load_observations(days, dataset.sensor, grid, BANDS, GEOMEDIAN_RESAMPLING)
            count = min(geomedian_pixels, height * width)
            flat = rng.choice(height * width, size=count, replace=False)
            pixels = np.column_stack(
                [flat // width + inner[0].start, flat % width + inner[1].start]
            )
            expected = expected_geomedian(obs, pixels)
            # With one or two observations (or all on a line) the geometric median is not
            # unique: any point between them minimises the distances. Compared where it is.
            counts = expected["count"]
            unique = ~(np.isin(counts, (1, 2)))
            for band, want in expected.items():
                window = _read_window(
                    dataset.files[band], outer_top, outer_left, grid.shape[0], grid.shape[1]
                )
                got = window[pixels[:, 0], pixels[:, 1]]
                keep = np.ones_like(unique) if band == "count" else unique
                _record(results, dataset, band, got[keep], want[keep])
            continue
        bands, resampling, reference = FULL_CHECKS[dataset.job_code]
        obs = load_observations(days, dataset.sensor, grid, bands, resampling)
        for band, want in reference(obs).items():
            got = _read_window(dataset.files[band], top, left, height, width)
            _record(results, dataset, band, got, want[inner])
        if dataset.job_code == "water":
            _check_against_truth(dataset, days, grid.window(top - outer_top, left - outer_left,
                                                            height, width), results)  # fmt: skip


def _check_against_truth(
    dataset: OutputDataset,
    days: dict[date, list[Scene]],
    grid: Grid,
    results: dict[tuple[str, str], Difference],
) -> None:
    """Where the synthetic archive's truth says a pixel was water on every clear day, or on
    none, the water frequency must be 1, or 0. Skipped for archives without that truth."""
    from odc.geo.geobox import GeoBox

    try:
        from devtools.archive.synthetic import truth

        geobox = GeoBox(grid.shape, grid.transform, grid.crs)
        water, clear = [], []
        for day in days:
            known = truth(dataset.sensor, day, geobox)
            water.append(known.water)
            clear.append(known.clear)
    except Exception:  # not a synthetic archive, or a grid its truth cannot be drawn on
        return
    wet_days, clear_days = np.sum(water, axis=0), np.sum(clear, axis=0)
    pure = (clear_days > 0) & ((wet_days == 0) | (wet_days == clear_days))
    want = np.where(pure, wet_days / np.maximum(clear_days, 1), np.nan)
    got = _read_window(
        dataset.files["frequency"],
        round((grid.transform.f - dataset.grid.transform.f) / dataset.grid.transform.e),
        round((grid.transform.c - dataset.grid.transform.c) / dataset.grid.transform.a),
        *grid.shape,
    )
    got = np.where(pure, got, np.nan)
    key = (dataset.product, "frequency~truth")
    if key not in results:
        results[key] = Difference(dataset.product, "frequency~truth", tolerance=0.0)
    # Only pixels both call pure water or pure land count; a cloud may hide a pixel from one.
    both = np.isfinite(got) & np.isfinite(want)
    results[key].add(np.where(both, got, np.nan), np.where(both, want, np.nan), None)


def _record(
    results: dict[tuple[str, str], Difference],
    dataset: OutputDataset,
    band: str,
    got: Array,
    want: Array,
) -> None:
    key = (dataset.product, band)
    if key not in results:
        tolerance = TOLERANCES.get(dataset.job_code, {}).get(band, 0.0)
        results[key] = Difference(dataset.product, band, tolerance=tolerance)
    results[key].add(got, want, dataset.nodata.get(band))

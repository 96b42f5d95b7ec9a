"""Shoreline: the land/water boundary of the period, as lines, and the water index it follows.

The raster is the median MNDWI, (green - swir1) / (green + swir1), over the period's usable
observations (mask clear, both bands present): positive over water, negative over land. The
shoreline is its sub-pixel contour at 0 (`skimage.measure.find_contours`), taken to map
coordinates through the geobox, as a GeoJSON FeatureCollection of LineStrings with the CRS
named; lines of fewer than five vertices are dropped as speckle, as the original did. The
dispatcher has already split the request into one job per `time_step`.

Following DEA Coastlines (Bishop-Taylor et al. 2021) as far as the data here allow:

* Observations are filtered by tide when the worker has a tide table (`CONVEYOR_TIDE_TABLE`):
  by default DEA's filter, keeping those taken within centre ± 0.25 x the observed tide range
  (`shared.shoreline_options`: `tide_centre`, `tide_band`, `tide_filter`); or, with
  `tide_range_from`/`tide_range_to`, those inside that fixed range (bounds included). A height
  is interpolated in the table at each acquisition time; an unknown height is outside.
* Reflectance is resampled onto the output grid with cubic convolution, the mask band with
  nearest neighbour (DEA Coastlines loads `"*": "cubic"`, `oa_fmask: "nearest"`).
* Cloud and shadow are buffered (`cloud_filter`, `shadow_filter`; the sensor's defaults).

What differs from DEA Coastlines: one tide table (a gauge or a model at one point) stands for
the whole tile, where DEA models tides per 5 km cell (FES2014) and interpolates them per pixel;
the observed range is that of the job's own acquisitions (its period), where DEA takes it over
the whole time series; the centre defaults to the table's mean height, DEA's to 0 m above mean
sea level of its model; DEA's composites are annual with a three-year gap-fill, terrain shadow
masked from a DEM, and its cloud mask closed (2), opened (10) and dilated (5), which this
product leaves to `cloud_filter`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import structlog
import xarray as xr
from affine import Affine
from odc.geo import CRS
from skimage.measure import find_contours

from services.worker.products.base import OutputBand, Product, ProductContext, register
from services.worker.products.observations import (
    clean_reflectance,
    normalised_difference,
    reduce_time,
    reflectance_float,
)
from services.worker.products.tides import TideTable
from shared.catalogue import Sensor
from shared.errors import NoData, Permanent
from shared.mask_filters import MASK_FILTER_OPTIONS, UNBUFFERED, MaskFilters
from shared.options import TIDE_OPTIONS, TideRange, parse_tide_range
from shared.shoreline_options import (
    SHORELINE_OPTIONS,
    TIDE_BAND,
    TIDE_CENTRE,
    TIDE_FILTER,
    TideBand,
    parse_tide_band,
)

log = structlog.get_logger(__name__)

WATER_LEVEL = 0.0
VECTOR_NAME = "shoreline"
#: Shorter contours are speckle (a pixel or two cut by the tile edge); the original dropped them.
MIN_VERTICES = 5


def observations_within_tide(
    cube: xr.Dataset, table: TideTable, tide_range: TideRange
) -> xr.Dataset:
    """The dates of `cube` taken at a tide height inside `tide_range`."""
    heights = table.heights_at(cube["time"].values)
    keep = tide_range.contains(heights)
    log.info(
        "shoreline.tide_filter",
        low=tide_range.low,
        high=tide_range.high,
        observations=int(keep.size),
        kept=int(keep.sum()),
        unknown_height=int(np.isnan(heights).sum()),
    )
    if not keep.any():
        seen = ", ".join(f"{height:g}" for height in heights if not np.isnan(height)) or "none"
        raise NoData(
            f"none of the {keep.size} observations was taken at a tide between "
            f"{tide_range.low:g} and {tide_range.high:g} (heights at acquisition: {seen})"
        )
    return cube.isel(time=np.flatnonzero(keep))


def observations_within_tide_band(cube: xr.Dataset, table: TideTable, band: TideBand) -> xr.Dataset:
    """The dates of `cube` taken within DEA Coastlines' band around the centre height:
    |height - centre| <= share x (highest - lowest height among the dates)."""
    heights = table.heights_at(cube["time"].values)
    known = ~np.isnan(heights)
    if not known.any():
        raise NoData(
            f"none of the {heights.size} observations has a tide height: the tide table covers "
            f"{table.times[0]} to {table.times[-1]}"
        )
    centre = table.mean_height if band.centre is None else band.centre
    spread = band.share * float(np.nanmax(heights) - np.nanmin(heights))
    keep = known & (np.abs(np.where(known, heights, np.inf) - centre) <= spread)
    log.info(
        "shoreline.tide_band",
        centre=centre,
        low=centre - spread,
        high=centre + spread,
        observations=int(keep.size),
        kept=int(keep.sum()),
        unknown_height=int((~known).sum()),
    )
    if not keep.any():
        raise NoData(
            f"none of the {keep.size} observations was taken within {spread:g} of the tide "
            f"centre {centre:g}"
        )
    return cube.isel(time=np.flatnonzero(keep))


def filter_by_tide(
    cube: xr.Dataset, options: Mapping[str, str], table: TideTable | None
) -> xr.Dataset:
    """The observations the request's tide options keep (all of them without a tide table,
    unless the request asks for a filter, which then needs one)."""
    tide_range = parse_tide_range(options)
    band = parse_tide_band(options)
    asked = tide_range is not None or any(
        name in options for name in (TIDE_FILTER, TIDE_CENTRE, TIDE_BAND)
    )
    if table is None:
        if asked and (tide_range is not None or band is not None):
            raise Permanent(
                "the request filters observations by tide but this worker has no tide table: "
                "set CONVEYOR_TIDE_TABLE to a CSV of time,height"
            )
        return cube
    if tide_range is not None:
        return observations_within_tide(cube, table, tide_range)
    if band is not None:
        return observations_within_tide_band(cube, table, band)
    return cube


def water_index(
    cube: xr.Dataset, sensor: Sensor, filters: MaskFilters = UNBUFFERED
) -> xr.DataArray:
    """Median MNDWI (float32) over the usable observations; NaN where there were none."""
    clean, _usable = clean_reflectance(cube, sensor, ("green", "swir1"), filters)
    floats = reflectance_float(clean)
    return reduce_time(normalised_difference(floats["green"], floats["swir1"]), np.nanmedian)


def crs_member(crs: CRS) -> dict[str, Any]:
    """GeoJSON's (2008) named CRS, e.g. `urn:ogc:def:crs:EPSG::3460`."""
    name = f"urn:ogc:def:crs:EPSG::{crs.epsg}" if crs.epsg is not None else crs.to_wkt()
    return {"type": "name", "properties": {"name": name}}


def contour_lines(
    values: np.ndarray[Any, Any], transform: Affine, level: float = WATER_LEVEL
) -> list[list[list[float]]]:
    """Sub-pixel contours of `values` at `level` as lists of [x, y] in map coordinates."""
    lines = []
    for contour in find_contours(values, level):
        rows, cols = contour[:, 0], contour[:, 1]
        # find_contours works in pixel indices, whose centres are half a pixel in.
        xs, ys = transform * (cols + 0.5, rows + 0.5)
        lines.append([[float(x), float(y)] for x, y in zip(xs, ys, strict=True)])
    return lines


def shoreline_features(index: xr.DataArray, level: float = WATER_LEVEL) -> dict[str, Any]:
    """The contour of `index` (computed, 2-D, on a geobox) at `level` as a FeatureCollection."""
    geobox = index.odc.geobox
    values = np.asarray(index.values, dtype="float64")
    features = [
        {
            "type": "Feature",
            "properties": {"level": level, "index": "mndwi"},
            "geometry": {"type": "LineString", "coordinates": line},
        }
        for line in contour_lines(values, geobox.affine, level)
        if len(line) >= MIN_VERTICES
    ]
    return {"type": "FeatureCollection", "crs": crs_member(geobox.crs), "features": features}


@register("shoreline")
class Shoreline(Product):
    inputs = ("green", "swir1")
    outputs = MappingProxyType(
        {
            "mndwi": OutputBand(
                "float32", math.nan, "1", "median modified normalised difference water index"
            ),
        }
    )
    accepted_options = TIDE_OPTIONS | SHORELINE_OPTIONS | MASK_FILTER_OPTIONS
    reflectance_resampling = "cubic"

    def compute(
        self,
        cube: xr.Dataset,
        sensor: Sensor,
        options: Mapping[str, str],
        context: ProductContext,
    ) -> xr.Dataset:
        cube = filter_by_tide(cube, options, context.tide_table)
        index = water_index(cube, sensor, self.mask_filters(sensor, options))
        return self.finish({"mndwi": index}, cube)

    def vectors(self, result: xr.Dataset, options: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        return {VECTOR_NAME: shoreline_features(result["mndwi"])}

"""The synthetic world's ground raster: a longitude/latitude grid that every scene samples.

Scenes are gridded as the agencies grid them (Landsat in its scene's UTM zone, Sentinel-2 on
MGRS tiles), so two scenes of one place may lie in different zones (Fiji: 60S and 1S). What they
see must still be one world: the ground and the sky are defined on a longitude/latitude raster,
and each native pixel takes the value of the ground pixel under its centre (nearest).

The ground raster has whole pixels around the globe: `pixels_per_degree(resolution)` is 3600 for
30 m (one arcsecond), 10800 for 10 m, 5400 for 20 m, 1800 for 60 m. Column `c` is centred on
longitude `(c + 0.5) / P` in [0, 360), row `r` on latitude `90 - (r + 0.5) / P`. Longitudes count
eastwards from Greenwich, so the antimeridian (which Fiji straddles) is continuous ground; the
world's one seam is the Greenwich meridian, where no test or demo looks.

A native pixel centre is carried to longitude/latitude by interpolating, bilinearly, a lattice of
exact transforms at every 480 m of the native CRS (millimetre error). The lattice is anchored at
the CRS origin, so a pixel's ground pixel depends on its centre only, never on the window it is
computed in: the truth recomputed for any box equals, bit for bit, what was written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
from odc.geo import CRS
from pyproj import Transformer

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

#: Metres of ground per degree of latitude, to turn feature sizes in metres into degrees.
METRES_PER_DEGREE = 111_320.0
#: Spacing (native CRS units) of the lattice of exact transforms that pixels interpolate.
LATTICE_STEP = 480.0


def pixels_per_degree(resolution: float) -> int:
    """Ground pixels per degree for a native `resolution` in metres (30 m: 3600, one arcsecond)."""
    per_degree = 108_000 / resolution
    if per_degree != int(per_degree):
        raise ValueError(f"no ground raster for a {resolution} m grid (108000 / it must be whole)")
    return int(per_degree)


def degrees(metres: float) -> float:
    """A feature size in metres as degrees of the ground raster."""
    return metres / METRES_PER_DEGREE


def central_meridian(crs: CRS) -> float:
    """The central meridian of a UTM CRS (EPSG:326zz / 327zz)."""
    epsg = crs.epsg or 0
    if not (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        raise ValueError(f"scenes are gridded in UTM; {crs} is not a UTM CRS")
    return -183.0 + 6.0 * (epsg % 100)


@cache
def _to_lonlat(crs_wkt: str) -> Transformer:
    return Transformer.from_crs(crs_wkt, "EPSG:4326", always_xy=True)


def native_lonlat(crs: CRS, xs: Floats, ys: Floats) -> tuple[Floats, Floats]:
    """Longitude (unwrapped around the zone's central meridian) and latitude of native points.

    `xs`, `ys` broadcast against each other (e.g. a row of x and a column of y for a grid).
    Each point is interpolated from the four lattice nodes around it with the same arithmetic,
    whatever the shape, so a point's result never depends on its neighbours.
    """
    # No explicit broadcast: for a grid, fx and node_x stay one row and fy one column, and
    # numpy broadcasts each operation, giving every point the arithmetic it would get alone.
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    node_x = np.floor(xs / LATTICE_STEP)
    node_y = np.floor(ys / LATTICE_STEP)
    fx = (xs - node_x * LATTICE_STEP) / LATTICE_STEP
    fy = (ys - node_y * LATTICE_STEP) / LATTICE_STEP
    first_x, first_y = int(node_x.min()), int(node_y.min())
    columns = np.arange(first_x, int(node_x.max()) + 2)
    rows = np.arange(first_y, int(node_y.max()) + 2)
    grid_x, grid_y = np.meshgrid(columns * LATTICE_STEP, rows * LATTICE_STEP)
    lon, lat = _to_lonlat(crs.to_wkt()).transform(grid_x, grid_y)
    meridian = central_meridian(crs)
    # Whole turns only, so a longitude that needs no unwrapping is not touched at all.
    lon = lon + 360.0 * np.round((meridian - lon) / 360.0)
    column = (node_x - first_x).astype(np.int64)
    row = (node_y - first_y).astype(np.int64)
    return _bilinear(lon, row, column, fx, fy), _bilinear(lat, row, column, fx, fy)


def _bilinear(nodes: Floats, row: Ints, column: Ints, fx: Floats, fy: Floats) -> Floats:
    """Interpolate node values at points: along x between the two nodes of each lattice row,
    then along y. For a grid (a row of columns, a column of rows) the x step is done once per
    lattice row and reused, with the same arithmetic as for a single point."""
    if row.ndim == 2 and row.shape[1] == 1 and column.ndim == 2 and column.shape[0] == 1:
        left, step = column[0], fx[0]
        along_x = nodes[:, left] + step * (nodes[:, left + 1] - nodes[:, left])
        low, high = along_x[row[:, 0]], along_x[row[:, 0] + 1]
    else:
        low = nodes[row, column] + fx * (nodes[row, column + 1] - nodes[row, column])
        high = nodes[row + 1, column] + fx * (nodes[row + 1, column + 1] - nodes[row + 1, column])
    result: Floats = low + fy * (high - low)
    return result


@dataclass(frozen=True)
class GroundIndex:
    """Ground raster row and column (global, canonical) of each of a set of points."""

    per_degree: int
    rows: Ints
    columns: Ints

    @classmethod
    def of_native(cls, crs: CRS, xs: Floats, ys: Floats, resolution: float) -> GroundIndex:
        """The ground pixel under each native point (`xs`, `ys` broadcast as in native_lonlat)."""
        per_degree = pixels_per_degree(resolution)
        lon, lat = native_lonlat(crs, xs, ys)
        columns = np.floor(lon * per_degree).astype(np.int64)
        around = 360 * per_degree
        if columns.size and (columns.min() < 0 or columns.max() >= around):
            columns %= around
        rows = np.floor((90.0 - lat) * per_degree).astype(np.int64)
        return cls(per_degree, rows, columns)


@dataclass(frozen=True)
class GroundWindow:
    """A rectangle of the ground raster: rows from `row`, columns from `column` (wrapping)."""

    per_degree: int
    row: int
    rows: int
    column: int
    columns: int

    @classmethod
    def covering(cls, per_degree: int, indexes: Iterable[GroundIndex]) -> GroundWindow:
        indexes = [index for index in indexes if index.rows.size]
        if not indexes:
            return cls(per_degree, 0, 0, 0, 0)
        around = 360 * per_degree
        reference = int(indexes[0].columns.flat[0])
        low_row = min(int(index.rows.min()) for index in indexes)
        high_row = max(int(index.rows.max()) for index in indexes)
        offsets = [(index.columns - reference + around // 2) % around for index in indexes]
        low = min(int(offset.min()) for offset in offsets) - around // 2
        high = max(int(offset.max()) for offset in offsets) - around // 2
        return cls(
            per_degree=per_degree,
            row=low_row,
            rows=high_row - low_row + 1,
            column=(reference + low) % around,
            columns=high - low + 1,
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.columns)

    def longitudes(self) -> Floats:
        """Pixel-centre longitudes in [0, 360), a pure function of each global column."""
        around = 360 * self.per_degree
        columns = (self.column + np.arange(self.columns, dtype=np.int64)) % around
        centres: Floats = (columns + 0.5) / self.per_degree
        return centres

    def latitudes(self) -> Floats:
        rows = self.row + np.arange(self.rows, dtype=np.int64)
        centres: Floats = 90.0 - (rows + 0.5) / self.per_degree
        return centres

    @property
    def pixel_degrees(self) -> float:
        return 1.0 / self.per_degree

    def local(self, index: GroundIndex) -> tuple[Ints, Ints]:
        """Row and column of each point inside this window."""
        around = 360 * self.per_degree
        columns = index.columns - self.column
        if columns.size and (columns.min() < 0 or columns.max() >= around):
            columns %= around  # the window wraps past Greenwich
        return index.rows - self.row, columns

    def flat(self, index: GroundIndex) -> Ints:
        """Position of each point in this window's arrays, flattened (for `np.take`)."""
        rows, columns = self.local(index)
        if rows.size and (
            rows.min() < 0 or rows.max() >= self.rows or columns.max() >= self.columns
        ):
            raise ValueError("a point lies outside the ground window")
        flat: Ints = rows * self.columns + columns
        return flat

    def sub_window(self, index: GroundIndex) -> GroundWindow:
        """The part of this window holding the points of `index` (same pixels, smaller box)."""
        rows, columns = self.local(index)
        return GroundWindow(
            per_degree=self.per_degree,
            row=self.row + int(rows.min()),
            rows=int(rows.max() - rows.min()) + 1,
            column=(self.column + int(columns.min())) % (360 * self.per_degree),
            columns=int(columns.max() - columns.min()) + 1,
        )

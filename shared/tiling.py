"""The output grid: one fixed grid of cells per output CRS and resolution; a job is a whole cell.

One product, one grid. A product's outputs are cells of a regular grid in the output CRS, as
odc-stats tiles its products: cells of `tile_size` (CONVEYOR_TILE_SIZE, or
CONVEYOR_TILE_SIZE_PIXELS x the resolution: 640 px, 19.2 km at 30 m, 6.4 km at 10 m), anchored
at the CRS origin, named by their index (`x110y182`). A request becomes the whole cells its area
meets, never a clipped part of one, so:

- two requests over parts of one cell name the same dataset (same files, same dataset id): the
  first computes it, the second finds it committed and skips it, and the index holds one
  dataset per cell and period, which `dc.load` of the output product tiles without overlaps;
- a small request pays for the cells it touches (at most four 19.2 km cells at 30 m for a box
  smaller than a cell), not for a 96 km tile.

Where the output CRS is the inputs' own (UTM), the grid's pixels are the inputs' pixels: USGS
grids Landsat with pixel corners on 15 + 30k metres, so Landsat cells in UTM are anchored at
15 m and a load copies pixels instead of interpolating half a pixel. Changing the cell size or
anchor of a product that already has outputs would give it a second, overlapping grid: don't.

A `CellPlan` counts a request's cells without making them, row by row of the grid (the cells of
a row from the first to the last one the area meets there), so a request for a billion cells is
refused for what it is (a figure) rather than by running out of memory; its cells are then made
one at a time, always in the same order, so a dispatch resumed after a crash makes exactly the
cells that are missing.

The exception is the legacy naming mode (`"naming": "legacy"`): one job over the request's
whole box, named after the box, as the original worker made it (`whole_area`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from odc.geo import XY, geom
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox
from odc.geo.gridspec import GridSpec

from shared.catalogue import INPUT_PRODUCTS
from shared.errors import InvalidRequest
from shared.jobs import TileArea

#: `tile_areas` makes a list: it refuses more cells than this (planning counts instead).
MAX_TILES_PER_REQUEST = 10_000
#: Rows of cells a plan walks to count them; an area spanning more makes at least that many
#: jobs, far past any job limit, and is refused without walking them.
MAX_ROWS_COUNTED = 100_000
#: An area overlapping a cell by less than this share of a pixel only touches it (floating
#: point leaves such slivers where edges coincide).
SLIVER = 1e-6
#: Where each family's native pixel corners fall in UTM, modulo the pixel size.
NATIVE_PIXEL_CORNER = {"landsat": 15.0, "sentinel2": 0.0}


def request_area_in(
    bounds: tuple[float, float, float, float], area_crs: str, output_crs: str
) -> geom.Geometry:
    """The request's area as a polygon in the output CRS (edges densified, so curved).

    `InvalidRequest` when the area has no finite extent there (e.g. outside a projection's
    domain), rather than a planning error that would be retried.
    """
    try:
        area = geom.box(*bounds, crs=CRS(area_crs))
        if CRS(area_crs) != CRS(output_crs):
            left, bottom, right, top = bounds
            area = area.to_crs(CRS(output_crs), resolution=max(right - left, top - bottom) / 64)
        wanted = area.boundingbox
    except Exception as error:  # pyproj and shapely raise many kinds for a hostile box
        raise InvalidRequest(
            f"the area {bounds} in {area_crs} cannot be expressed in {output_crs} "
            f"({type(error).__name__}); check the coordinates and the CRSs"
        ) from None
    if not all(math.isfinite(value) for value in wanted) or not (
        wanted.left < wanted.right and wanted.bottom < wanted.top
    ):
        raise InvalidRequest(
            f"the area {bounds} in {area_crs} has no finite extent in {output_crs}; "
            "check the coordinates and the CRSs"
        )
    return area


def request_bounds_in(
    bounds: tuple[float, float, float, float], area_crs: str, output_crs: str
) -> geom.BoundingBox:
    """The request's area as a bounding box in the output CRS."""
    return request_area_in(bounds, area_crs, output_crs).boundingbox


def grid_anchor(product: str, output_crs: str) -> float:
    """Where the output grid's pixel corners fall (modulo the pixel): the inputs' native corner
    when the output CRS is a UTM zone (the inputs' own projection), else 0."""
    known = INPUT_PRODUCTS.get(product)
    crs = CRS(output_crs)
    if known is None or (crs.epsg or 0) // 100 not in (326, 327):
        return 0.0
    return NATIVE_PIXEL_CORNER.get(known.family, 0.0)


def cell_grid(
    output_crs: str, resolution: float, tile_size: float, anchor: float = 0.0
) -> GridSpec:
    """The fixed grid of cells of an output CRS and resolution."""
    if tile_size < resolution:
        raise InvalidRequest(f"tile size {tile_size} is smaller than the resolution {resolution}")
    tile_pixels = max(1, round(tile_size / resolution))
    return GridSpec(
        CRS(output_crs),
        tile_shape=(tile_pixels, tile_pixels),
        resolution=resolution,
        origin=XY(anchor, anchor),
    )


def cell_name(ix: int, iy: int) -> str:
    """odc-stats' region code of a cell: `x110y182`, `x-05y036`."""
    return f"x{ix:+04d}y{iy:+04d}".replace("+", "")


@dataclass(frozen=True)
class CellRow:
    """The cells of one grid row that a request makes: columns `first` to `last - 1`."""

    iy: int
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first


@dataclass(frozen=True)
class CellPlan:
    """The whole cells a request's area meets, counted before any is made."""

    crs: str
    resolution: float
    grid: GridSpec
    rows: tuple[CellRow, ...]

    @property
    def count(self) -> int:
        return sum(row.count for row in self.rows)

    @property
    def largest_tile_pixels(self) -> int:
        """Pixels of one cell (every job of a plan is one whole cell)."""
        if not self.rows:
            return 0
        rows, columns = self.grid.tile_shape.yx
        return int(rows) * int(columns)

    def __iter__(self) -> Iterator[TileArea]:
        return self.areas()

    def areas(self, skip: int = 0) -> Iterator[TileArea]:
        """The cells row by row, each row's from west to east, after the first `skip`."""
        for row in self.rows:
            if skip >= row.count:
                skip -= row.count
                continue
            for ix in range(row.first + skip, row.last):
                yield self._area(ix, row.iy)
            skip = 0

    def _area(self, ix: int, iy: int) -> TileArea:
        left, bottom, right, top = self.grid.tile_geobox((ix, iy)).boundingbox
        return TileArea(
            tile=cell_name(ix, iy),
            crs=self.crs,
            resolution=self.resolution,
            left=left,
            bottom=bottom,
            right=right,
            top=top,
        )


def plan_tiles(
    bounds: tuple[float, float, float, float],
    area_crs: str,
    output_crs: str,
    resolution: float,
    tile_size: float,
    *,
    anchor: float = 0.0,
) -> CellPlan:
    """The whole cells of the output grid that the request's area meets, row by row.

    In each row of cells, the cells from the first to the last one that the area covers with
    more than an edge (for a convex area, and so for a box, exactly the cells it meets).
    """
    grid = cell_grid(output_crs, resolution, tile_size, anchor)
    wanted = request_area_in(bounds, area_crs, output_crs)
    box = wanted.boundingbox
    ix1, iy1, _ix2, iy2 = (int(index) for index in grid.idx_bounds(box))
    if iy2 - iy1 > MAX_ROWS_COUNTED:
        raise InvalidRequest(
            f"the area spans {iy2 - iy1:,} rows of {tile_size:g} {CRS(output_crs).units[0]} "
            f"cells, so it makes at least {iy2 - iy1:,} jobs; split the request"
        )
    rows: list[CellRow] = []
    for iy in range(iy1, iy2):
        band = grid.tile_geobox((ix1, iy)).boundingbox
        strip = geom.box(box.left, band.bottom, box.right, band.top, wanted.crs)
        inside = wanted.intersection(strip)
        if inside.is_empty:
            continue
        west, south, east, north = inside.boundingbox
        if min(east - west, north - south) <= SLIVER * resolution:
            continue
        first = _cell_index(west + SLIVER * resolution, ix1, grid, iy, round_up=False)
        last = _cell_index(east - SLIVER * resolution, ix1, grid, iy, round_up=True)
        if last > first:
            rows.append(CellRow(iy, first, last))
    return CellPlan(crs=str(CRS(output_crs)), resolution=resolution, grid=grid, rows=tuple(rows))


def _cell_index(x: float, ix1: int, grid: GridSpec, iy: int, *, round_up: bool) -> int:
    """The column of cells whose west edge is at or below `x` (or, rounding up, the first whose
    west edge is at or past it): cells that only touch the area along an edge hold none of it."""
    west = grid.tile_geobox((ix1, iy)).boundingbox.left
    width = grid.tile_geobox((ix1, iy)).boundingbox.right - west
    offset = (x - west) / width
    return ix1 + (math.ceil(offset) if round_up else math.floor(offset))


def tile_areas(
    bounds: tuple[float, float, float, float],
    area_crs: str,
    output_crs: str,
    resolution: float,
    tile_size: float,
    *,
    anchor: float = 0.0,
) -> list[TileArea]:
    """`plan_tiles` as a list, for a request known to be small."""
    plan = plan_tiles(bounds, area_crs, output_crs, resolution, tile_size, anchor=anchor)
    if plan.count > MAX_TILES_PER_REQUEST:
        raise InvalidRequest(
            f"the area needs {plan.count:,} cells at resolution {resolution}, more than "
            f"{MAX_TILES_PER_REQUEST:,}; split the request or raise the tile size"
        )
    return list(plan)


def whole_area(
    bounds: tuple[float, float, float, float],
    area_crs: str,
    output_crs: str,
    resolution: float,
    *,
    anchor: float = 0.0,
) -> TileArea:
    """The whole request as one area snapped to the pixel grid, as the original worker made it
    (legacy naming only: such an output is named after the request's box, not a cell)."""
    wanted = request_bounds_in(bounds, area_crs, output_crs)
    return TileArea(
        tile="whole",
        crs=str(CRS(output_crs)),
        resolution=resolution,
        left=_floor_to(wanted.left, resolution, anchor),
        bottom=_floor_to(wanted.bottom, resolution, anchor),
        right=_ceil_to(wanted.right, resolution, anchor),
        top=_ceil_to(wanted.top, resolution, anchor),
    )


def area_pixels(area: TileArea) -> int:
    """Pixels of one job's output grid."""
    rows, columns = area.shape
    return rows * columns


def area_geobox(area: TileArea) -> GeoBox:
    """The job's pixel grid, exactly on the area's edges (no snapping to multiples of the pixel,
    which would move a grid anchored at 15 m)."""
    from affine import Affine

    rows, columns = area.shape
    transform = Affine(area.resolution, 0.0, area.left, 0.0, -area.resolution, area.top)
    return GeoBox((rows, columns), transform, CRS(area.crs))


def _floor_to(value: float, step: float, anchor: float = 0.0) -> float:
    return ((value - anchor) // step) * step + anchor


def _ceil_to(value: float, step: float, anchor: float = 0.0) -> float:
    return -((anchor - value) // step) * step + anchor

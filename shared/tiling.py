"""The output grid: tiles of a regular grid in the output CRS, anchored at the CRS origin.

A tile is clipped to the request's box; a clipped tile's id carries a short hash of its bounds
(`x022y036-1a2b3c`), a whole tile's does not (`x022y036`).

Anchoring at the origin (as odc-stats does) means two requests over neighbouring or overlapping
areas use the same tiles and pixel grid, so their outputs line up.

A `TilePlan` counts and sizes a request's tiles without making them, so that a request for a
billion tiles is refused for what it is (a figure) rather than by running out of memory; its
tiles are then made one at a time, in the same order and with the same ids as odc-geo's
`GridSpec.tiles` gives them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

from odc.geo import XY, geom
from odc.geo.crs import CRS
from odc.geo.gridspec import GridSpec

from shared.errors import InvalidRequest
from shared.jobs import TileArea

#: `tile_areas` makes a list: it refuses more tiles than this (planning counts instead).
MAX_TILES_PER_REQUEST = 10_000


def request_bounds_in(
    bounds: tuple[float, float, float, float], area_crs: str, output_crs: str
) -> geom.BoundingBox:
    """The request's area as a bounding box in the output CRS.

    `InvalidRequest` when the area has no finite extent there (e.g. outside a projection's
    domain), rather than a planning error that would be retried.
    """
    try:
        area = geom.box(*bounds, crs=CRS(area_crs))
        if CRS(area_crs) != CRS(output_crs):
            area = area.to_crs(CRS(output_crs))
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
    return wanted


@dataclass(frozen=True)
class _Axis:
    """The tiles of one axis that hold at least one pixel of the request: [first, last)."""

    first: int
    last: int
    #: (low, high) of the clipped first, last and (when there are three or more) inner tile.
    spans: tuple[tuple[float, float], ...]

    @property
    def count(self) -> int:
        return max(0, self.last - self.first)

    def largest_pixels(self, resolution: float) -> int:
        return max((round((high - low) / resolution) for low, high in self.spans), default=0)


@dataclass(frozen=True)
class TilePlan:
    """The tiles covering a request's area, counted and sized before any is made."""

    crs: str
    resolution: float
    grid: GridSpec
    #: The request's box in `crs`, snapped outwards to whole pixels.
    left: float
    bottom: float
    right: float
    top: float
    #: Index ranges from the grid's lookup, before tiles with no whole pixel are dropped.
    ix_range: tuple[int, int]
    iy_range: tuple[int, int]

    @cached_property
    def _columns(self) -> _Axis:
        return self._axis(self.ix_range, self._x_span)

    @cached_property
    def _rows(self) -> _Axis:
        return self._axis(self.iy_range, self._y_span)

    def _axis(
        self, index_range: tuple[int, int], span: Callable[[int], tuple[float, float]]
    ) -> _Axis:
        """`span(index)` is the clipped (low, high) of a tile index on this axis."""
        start, stop = index_range
        if stop <= start:
            return _Axis(start, start, ())
        first, last = start, stop
        # Only the outermost tiles can be clipped to less than a pixel.
        while first < last and _too_thin(span(first), self.resolution):
            first += 1
        while last > first and _too_thin(span(last - 1), self.resolution):
            last -= 1
        if last <= first:
            return _Axis(first, first, ())
        spans = [span(first), span(last - 1)]
        if last - first >= 3:
            spans.append(span(first + 1))
        return _Axis(first, last, tuple(spans))

    def _x_span(self, ix: int) -> tuple[float, float]:
        box = self.grid.tile_geobox((ix, self.iy_range[0])).boundingbox
        return max(box.left, self.left), min(box.right, self.right)

    def _y_span(self, iy: int) -> tuple[float, float]:
        box = self.grid.tile_geobox((self.ix_range[0], iy)).boundingbox
        return max(box.bottom, self.bottom), min(box.top, self.top)

    @property
    def count(self) -> int:
        return self._columns.count * self._rows.count

    @property
    def largest_tile_pixels(self) -> int:
        """Pixels of the largest tile (clipped tiles are smaller than whole ones)."""
        return self._columns.largest_pixels(self.resolution) * self._rows.largest_pixels(
            self.resolution
        )

    def __iter__(self) -> Iterator[TileArea]:
        return self.areas()

    def areas(self, skip: int = 0) -> Iterator[TileArea]:
        """The tiles row by row (as `GridSpec.tiles` orders them), after the first `skip`."""
        columns, rows = self._columns, self._rows
        if columns.count == 0 or rows.count == 0:
            return
        row_offset, column_offset = divmod(skip, columns.count)
        for iy in range(rows.first + row_offset, rows.last):
            for ix in range(columns.first + column_offset, columns.last):
                yield self._area(ix, iy)
            column_offset = 0

    def _area(self, ix: int, iy: int) -> TileArea:
        tile_bounds = self.grid.tile_geobox((ix, iy)).boundingbox
        left = max(tile_bounds.left, self.left)
        bottom = max(tile_bounds.bottom, self.bottom)
        right = min(tile_bounds.right, self.right)
        top = min(tile_bounds.top, self.top)
        tile = f"x{ix:+04d}y{iy:+04d}".replace("+", "")
        if (left, bottom, right, top) != tuple(tile_bounds):
            # Two requests over different parts of one tile must never share an output name.
            tile += "-" + hashlib.sha256(repr((left, bottom, right, top)).encode()).hexdigest()[:6]
        return TileArea(
            tile=tile,
            crs=self.crs,
            resolution=self.resolution,
            left=left,
            bottom=bottom,
            right=right,
            top=top,
        )


def _too_thin(span: tuple[float, float], resolution: float) -> bool:
    low, high = span
    return high - low < resolution


def plan_tiles(
    bounds: tuple[float, float, float, float],
    area_crs: str,
    output_crs: str,
    resolution: float,
    tile_size: float,
) -> TilePlan:
    """The tiles covering the area, clipped to it and snapped to the `resolution` pixel grid."""
    if tile_size < resolution:
        raise InvalidRequest(f"tile size {tile_size} is smaller than the resolution {resolution}")
    wanted = request_bounds_in(bounds, area_crs, output_crs)
    tile_pixels = max(1, round(tile_size / resolution))
    grid = GridSpec(
        CRS(output_crs),
        tile_shape=(tile_pixels, tile_pixels),
        resolution=resolution,
        origin=XY(0.0, 0.0),
    )
    ix1, iy1, ix2, iy2 = (int(index) for index in grid.idx_bounds(wanted))
    return TilePlan(
        crs=str(CRS(output_crs)),
        resolution=resolution,
        grid=grid,
        left=_floor_to(wanted.left, resolution),
        bottom=_floor_to(wanted.bottom, resolution),
        right=_ceil_to(wanted.right, resolution),
        top=_ceil_to(wanted.top, resolution),
        ix_range=(ix1, ix2),
        iy_range=(iy1, iy2),
    )


def tile_areas(
    bounds: tuple[float, float, float, float],
    area_crs: str,
    output_crs: str,
    resolution: float,
    tile_size: float,
) -> list[TileArea]:
    """`plan_tiles` as a list, for a request known to be small."""
    plan = plan_tiles(bounds, area_crs, output_crs, resolution, tile_size)
    if plan.count > MAX_TILES_PER_REQUEST:
        raise InvalidRequest(
            f"the area needs {plan.count:,} tiles at resolution {resolution}, more than "
            f"{MAX_TILES_PER_REQUEST:,}; split the request or raise the tile size"
        )
    return list(plan)


def whole_area(
    bounds: tuple[float, float, float, float], area_crs: str, output_crs: str, resolution: float
) -> TileArea:
    """The whole request as one area snapped to the pixel grid, as the original worker made it."""
    wanted = request_bounds_in(bounds, area_crs, output_crs)
    return TileArea(
        tile="whole",
        crs=str(CRS(output_crs)),
        resolution=resolution,
        left=_floor_to(wanted.left, resolution),
        bottom=_floor_to(wanted.bottom, resolution),
        right=_ceil_to(wanted.right, resolution),
        top=_ceil_to(wanted.top, resolution),
    )


def area_pixels(area: TileArea) -> int:
    """Pixels of one job's output grid."""
    rows, columns = area.shape
    return rows * columns


def _floor_to(value: float, step: float) -> float:
    return (value // step) * step


def _ceil_to(value: float, step: float) -> float:
    return -((-value) // step) * step

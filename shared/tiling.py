"""The output grid: tiles of a regular grid in the output CRS, anchored at the CRS origin.

A tile is clipped to the request's box; a clipped tile's id carries a short hash of its bounds
(`x022y036-1a2b3c`), a whole tile's does not (`x022y036`).

Anchoring at the origin (as odc-stats does) means two requests over neighbouring or overlapping
areas use the same tiles and pixel grid, so their outputs line up.
"""

from __future__ import annotations

import hashlib

from odc.geo import XY, geom
from odc.geo.crs import CRS
from odc.geo.gridspec import GridSpec

from shared.errors import InvalidRequest
from shared.jobs import TileArea

MAX_TILES_PER_REQUEST = 10_000


def request_bounds_in(
    bounds: tuple[float, float, float, float], area_crs: str, output_crs: str
) -> geom.BoundingBox:
    """The request's area as a bounding box in the output CRS."""
    area = geom.box(*bounds, crs=CRS(area_crs))
    if CRS(area_crs) != CRS(output_crs):
        area = area.to_crs(CRS(output_crs))
    return area.boundingbox


def tile_areas(
    bounds: tuple[float, float, float, float],
    area_crs: str,
    output_crs: str,
    resolution: float,
    tile_size: float,
) -> list[TileArea]:
    """Tiles covering the area, each clipped to it and snapped to the `resolution` pixel grid."""
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
    areas: list[TileArea] = []
    for (ix, iy), tile_box in grid.tiles(wanted):
        tile_bounds = tile_box.boundingbox
        left = max(tile_bounds.left, _floor_to(wanted.left, resolution))
        bottom = max(tile_bounds.bottom, _floor_to(wanted.bottom, resolution))
        right = min(tile_bounds.right, _ceil_to(wanted.right, resolution))
        top = min(tile_bounds.top, _ceil_to(wanted.top, resolution))
        if right - left < resolution or top - bottom < resolution:
            continue
        tile = f"x{ix:+04d}y{iy:+04d}".replace("+", "")
        clipped = (left, bottom, right, top) != tuple(tile_bounds)
        if clipped:
            # Two requests over different parts of one tile must never share an output name.
            tile += "-" + hashlib.sha256(repr((left, bottom, right, top)).encode()).hexdigest()[:6]
        areas.append(
            TileArea(
                tile=tile,
                crs=str(CRS(output_crs)),
                resolution=resolution,
                left=left,
                bottom=bottom,
                right=right,
                top=top,
            )
        )
        if len(areas) > MAX_TILES_PER_REQUEST:
            raise InvalidRequest(
                f"the area needs more than {MAX_TILES_PER_REQUEST} tiles at resolution "
                f"{resolution}; split the request or raise the tile size"
            )
    return areas


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


def _floor_to(value: float, step: float) -> float:
    return (value // step) * step


def _ceil_to(value: float, step: float) -> float:
    return -((-value) // step) * step

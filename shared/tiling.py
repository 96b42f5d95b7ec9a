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

The exception is the legacy naming mode (`"naming": "legacy"`): one job over the request's
whole box, named after the box, as the original worker made it (`whole_area`).
"""

from __future__ import annotations

from odc.geo import XY, geom
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox
from odc.geo.gridspec import GridSpec

from shared.catalogue import INPUT_PRODUCTS
from shared.errors import InvalidRequest
from shared.jobs import TileArea

MAX_TILES_PER_REQUEST = 10_000
#: Where each family's native pixel corners fall in UTM, modulo the pixel size.
NATIVE_PIXEL_CORNER = {"landsat": 15.0, "sentinel2": 0.0}


def request_area_in(
    bounds: tuple[float, float, float, float], area_crs: str, output_crs: str
) -> geom.Geometry:
    """The request's area as a polygon in the output CRS (edges densified, so curved)."""
    area = geom.box(*bounds, crs=CRS(area_crs))
    if CRS(area_crs) != CRS(output_crs):
        left, bottom, right, top = bounds
        area = area.to_crs(CRS(output_crs), resolution=max(right - left, top - bottom) / 64)
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


def tile_areas(
    bounds: tuple[float, float, float, float],
    area_crs: str,
    output_crs: str,
    resolution: float,
    tile_size: float,
    *,
    anchor: float = 0.0,
) -> list[TileArea]:
    """The whole cells of the output grid that the request's area meets."""
    grid = cell_grid(output_crs, resolution, tile_size, anchor)
    wanted = request_area_in(bounds, area_crs, output_crs)
    crs = str(CRS(output_crs))
    areas: list[TileArea] = []
    for (ix, iy), cell in grid.tiles_from_geopolygon(wanted):
        # Cells that only touch the area along an edge hold none of it.
        if cell.extent.intersection(wanted).area <= 0:
            continue
        left, bottom, right, top = cell.boundingbox
        areas.append(
            TileArea(
                tile=cell_name(ix, iy),
                crs=crs,
                resolution=resolution,
                left=left,
                bottom=bottom,
                right=right,
                top=top,
            )
        )
        if len(areas) > MAX_TILES_PER_REQUEST:
            raise InvalidRequest(
                f"the area needs more than {MAX_TILES_PER_REQUEST} cells at resolution "
                f"{resolution}; split the request or raise the tile size"
            )
    return sorted(areas, key=lambda area: area.tile)


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

"""Where and when a satellite sees an area: WRS-2-like paths and rows, MGRS-like tiles.

Simplified but shaped like the real thing: descending ground tracks tilted from north-north-east
to south-south-west, evenly spaced at the equator, swaths 185 km (Landsat) or 290 km (Sentinel-2)
wide, a 16-day (Landsat) or 10-day-per-satellite (Sentinel-2A/B, so 5-day) repeat with
neighbouring paths a week apart. Footprints are exact half-planes in the grid CRS, so whether a
pixel is inside is a pure function of its coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.geom import BoundingBox, Geometry, polygon
from pyproj import Transformer

from devtools.archive.catalogue import Platform, ProductSpec, Swath
from devtools.archive.noise import Floats, evaluate

# Day 0 of every repeat cycle; any fixed day would do.
CYCLE_EPOCH = date(2000, 1, 1)
DEGREES_PER_WRS_ROW = 360.0 / 248 * math.sin(math.radians(81.8))
WRS_EQUATOR_ROW = 60
SENTINEL2_TILE_STEP = 100_000.0
SENTINEL2_TILE_SIZE = 109_800.0
MGRS_COLUMN_LETTERS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
MGRS_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
MGRS_BAND_LETTERS = "CDEFGHJKLMNPQRSTUVWX"


@dataclass(frozen=True)
class Track:
    """A straight stretch of a ground track in the grid CRS: a point on it and its direction."""

    origin_x: float
    origin_y: float
    along_x: float  # unit vector pointing down the (descending) track
    along_y: float
    half_width: float

    def along(self, xs: Floats, ys: Floats) -> np.ndarray:
        """Distance down the track from the origin, for every pixel (rows x columns).

        Offsets are taken in float64 per row and column, the sum in float32: centimetre
        precision, half the memory traffic.
        """
        down = ((ys - self.origin_y) * self.along_y).astype(np.float32)
        right = ((xs - self.origin_x) * self.along_x).astype(np.float32)
        return np.add.outer(down, right)

    def across(self, xs: Floats, ys: Floats) -> np.ndarray:
        """Signed distance from the centre line, for every pixel (rows x columns)."""
        down = ((ys - self.origin_y) * -self.along_x).astype(np.float32)
        right = ((xs - self.origin_x) * self.along_y).astype(np.float32)
        return np.add.outer(down, right)

    def strip(self, along_from: float, along_to: float) -> Geometry:
        """The quadrilateral [along_from, along_to) x [-half_width, half_width] as a polygon."""
        ax, ay = self.along_x, self.along_y
        # `across` is positive along (ay, -ax).
        corners = []
        for along, across in (
            (along_from, -self.half_width),
            (along_from, self.half_width),
            (along_to, self.half_width),
            (along_to, -self.half_width),
        ):
            corners.append(
                (self.origin_x + along * ax + across * ay, self.origin_y + along * ay - across * ax)
            )
        return polygon([*corners, corners[0]], crs=None)


@dataclass(frozen=True)
class ScenePlan:
    """One dataset to make: a scene (path/row or tile, one day) clipped to the requested area."""

    product: ProductSpec
    platform: Platform
    solar_day: date
    acquired: datetime
    path: int  # WRS-2 path or Sentinel-2 relative orbit
    row: int  # WRS-2 row; 0 for Sentinel-2
    tile: str  # MGRS tile for Sentinel-2; "" for Landsat
    track: Track
    # The lines between this row and its neighbours (shared with them, so rows never overlap).
    row_start: Track | None
    row_end: Track | None
    tile_bounds: BoundingBox | None  # Sentinel-2 tile in the grid CRS
    geobox: GeoBox  # finest-resolution window written, inside the area's grid
    footprint: Geometry  # valid-data polygon in the grid CRS

    @property
    def region_code(self) -> str:
        return self.tile if self.tile else f"{self.path:03d}{self.row:03d}"

    @property
    def label(self) -> str:
        day = self.solar_day.strftime("%Y%m%d")
        if self.product.family == "landsat":
            processed = (self.solar_day + timedelta(days=16)).strftime("%Y%m%d")
            return f"{self.platform.label_prefix}_L2SP_{self.region_code}_{day}_{processed}_01_T1"
        sensing = self.acquired.strftime("%Y%m%dT%H%M%S")
        return f"{self.platform.label_prefix}_MSIL2A_{sensing}_R{self.path:03d}_T{self.tile}"


def utm_crs(lon: float, lat: float) -> CRS:
    zone = math.floor(((lon + 180.0) % 360.0) / 6.0) + 1
    return CRS(f"EPSG:{32700 + zone if lat < 0 else 32600 + zone}")


def grid_crs(product: ProductSpec, area_crs: CRS, centre_lonlat: tuple[float, float]) -> CRS:
    """Landsat scenes are gridded in the request's projected CRS (Fiji's EPSG:3460 for the seed),
    or UTM for a lat/lon request; Sentinel-2 tiles are always UTM."""
    lon, lat = centre_lonlat
    if product.family == "landsat" and area_crs.projected and area_crs.units[0] in ("metre", "m"):
        return area_crs
    return utm_crs(lon, lat)


def area_grid(product: ProductSpec, bbox: BoundingBox, crs: CRS) -> GeoBox:
    """The product's finest grid over `bbox`, snapped outwards so that pixel edges fall on
    multiples of the coarsest band's resolution (60 m for Sentinel-2, so all its grids nest)."""
    coarsest = 60 if product.family == "sentinel2" else product.resolution
    snapped = BoundingBox(
        math.floor(bbox.left / coarsest) * coarsest,
        math.floor(bbox.bottom / coarsest) * coarsest,
        math.ceil(bbox.right / coarsest) * coarsest,
        math.ceil(bbox.top / coarsest) * coarsest,
        crs=crs,
    )
    return GeoBox.from_bbox(snapped, crs, resolution=product.resolution)


def _wrap_degrees(value: float) -> float:
    return (value + 180.0) % 360.0 - 180.0


def _path_longitude(swath: Swath, path: int, latitude: float) -> float:
    spacing = 360.0 / swath.paths_per_cycle
    return _wrap_degrees(
        swath.lon_of_path_one - (path - 1) * spacing + swath.drift_per_degree * latitude
    )


def _row_latitude(row: float) -> float:
    return -(row - WRS_EQUATOR_ROW) * DEGREES_PER_WRS_ROW


def _track(swath: Swath, path: int, latitude: float, to_grid: Transformer) -> Track:
    """The track of `path` near `latitude`, straightened over a few degrees."""
    north = latitude + 1.0
    south = latitude - 1.0
    x0, y0 = to_grid.transform(_path_longitude(swath, path, north), north)
    x1, y1 = to_grid.transform(_path_longitude(swath, path, south), south)
    length = math.hypot(x1 - x0, y1 - y0)
    xm, ym = to_grid.transform(_path_longitude(swath, path, latitude), latitude)
    return Track(
        origin_x=xm,
        origin_y=ym,
        along_x=(x1 - x0) / length,
        along_y=(y1 - y0) / length,
        half_width=swath.width_m / 2,
    )


def _candidate_paths(swath: Swath, lon: float, lat: float) -> list[int]:
    spacing = 360.0 / swath.paths_per_cycle
    km_per_degree = 111.32 * max(math.cos(math.radians(lat)), 0.05)
    reach = (swath.width_m / 2_000 + 400) / km_per_degree
    paths = []
    for path in range(1, swath.paths_per_cycle + 1):
        offset = abs(_wrap_degrees(_path_longitude(swath, path, lat) - lon))
        if offset <= reach + spacing:
            paths.append(path)
    return paths


def _acquisition_days(
    swath: Swath, path: int, platform: Platform, first: date, last: date
) -> list[date]:
    start = max(first, platform.first_day)
    end = min(last, platform.last_day or last)
    phase = (path * swath.path_step_days + platform.phase_days) % swath.repeat_days
    days = []
    offset = (phase - (start - CYCLE_EPOCH).days) % swath.repeat_days
    day = start + timedelta(days=offset)
    while day <= end:
        days.append(day)
        day += timedelta(days=swath.repeat_days)
    return days


def _acquired(swath: Swath, day: date, lon: float, seconds_along: float) -> datetime:
    local = datetime.combine(day, swath.local_time, tzinfo=UTC)
    return local - timedelta(hours=lon / 15.0) + timedelta(seconds=seconds_along)


def _window(area: GeoBox, footprint: Geometry) -> GeoBox | None:
    """The smallest window of the area's grid holding the footprint, snapped like the area."""
    if footprint.is_empty or footprint.area <= 0:
        return None
    left, bottom, right, top = footprint.boundingbox
    step = 60 if area.resolution.x < 30 else abs(area.resolution.x)
    area_box = area.boundingbox
    box = BoundingBox(
        max(area_box.left, math.floor(left / step) * step),
        max(area_box.bottom, math.floor(bottom / step) * step),
        min(area_box.right, math.ceil(right / step) * step),
        min(area_box.top, math.ceil(top / step) * step),
    )
    if box.right <= box.left or box.top <= box.bottom:
        return None
    return GeoBox.from_bbox(box, area.crs, resolution=area.resolution)


def mgrs_tile_name(zone: int, lat: float, column: int, row: int) -> str:
    band = MGRS_BAND_LETTERS[min(max(int((lat + 80) // 8), 0), len(MGRS_BAND_LETTERS) - 1)]
    column_letter = MGRS_COLUMN_LETTERS[(zone - 1) % 3][(column - 1) % 8]
    row_letter = MGRS_ROW_LETTERS[(row + (5 if zone % 2 == 0 else 0)) % 20]
    return f"{zone:02d}{band}{column_letter}{row_letter}"


@dataclass(frozen=True)
class _Piece:
    """Where one scene of a path can be: before the day and the area's clip are known."""

    row: int
    tile: str
    track: Track
    row_start: Track | None
    row_end: Track | None
    tile_bounds: BoundingBox | None
    outline: Geometry  # in the grid CRS
    centre_lon: float


def crs_of(geobox: GeoBox) -> CRS:
    if geobox.crs is None:
        raise ValueError("the grid has no CRS")
    return geobox.crs


def plan_scenes(product: ProductSpec, area: GeoBox, first: date, last: date) -> list[ScenePlan]:
    """Every scene of `product` that sees `area` between `first` and `last` (solar days).

    A scene's geometry depends on its path, row or tile only, never on the area asked for, so
    planning a smaller box finds the same scenes with the same footprints.
    """
    crs = crs_of(area)
    to_grid = Transformer.from_crs("EPSG:4326", crs.to_wkt(), always_xy=True)
    to_lonlat = Transformer.from_crs(crs.to_wkt(), "EPSG:4326", always_xy=True)
    box = area.boundingbox
    lon, lat = to_lonlat.transform((box.left + box.right) / 2, (box.bottom + box.top) / 2)
    swath = product.swath
    plans: list[ScenePlan] = []
    for path in _candidate_paths(swath, lon, lat):
        if product.family == "landsat":
            pieces = _landsat_rows(swath, path, lat, to_grid, crs)
        else:
            pieces = _sentinel2_tiles(swath, path, area, to_grid, to_lonlat)
        for piece in pieces:
            footprint = area.extent.intersection(piece.outline)
            window = _window(area, footprint)
            if window is None:
                continue
            seconds = 24.6 * (piece.row - WRS_EQUATOR_ROW) if piece.row else 0.0
            # Local time where the data is, as datacube reckons a dataset's solar day (this
            # matters beside the antimeridian, where a track's centre is a day ahead).
            centre_lon, _ = to_lonlat.transform(*footprint.centroid.coords[0])
            for platform in product.platforms:
                for day in _acquisition_days(swath, path, platform, first, last):
                    plans.append(
                        ScenePlan(
                            product=product,
                            platform=platform,
                            solar_day=day,
                            acquired=_acquired(swath, day, centre_lon, seconds),
                            path=path,
                            row=piece.row,
                            tile=piece.tile,
                            track=piece.track,
                            row_start=piece.row_start,
                            row_end=piece.row_end,
                            tile_bounds=piece.tile_bounds,
                            geobox=window,
                            footprint=footprint,
                        )
                    )
    plans.sort(key=lambda plan: (plan.acquired, plan.region_code))
    return plans


def _edge(swath: Swath, path: int, row: float, to_grid: Transformer) -> Track:
    """The line across the track between two rows, as a track whose `along` is 0 on it."""
    return _track(swath, path, _row_latitude(row), to_grid)


def _landsat_rows(
    swath: Swath, path: int, lat: float, to_grid: Transformer, crs: CRS
) -> list[_Piece]:
    nearest = WRS_EQUATOR_ROW - lat / DEGREES_PER_WRS_ROW
    pieces = []
    for row in range(int(nearest) - 2, int(nearest) + 4):
        if not 1 <= row <= swath.rows_per_orbit:
            continue
        centre = _row_latitude(row)
        track = _track(swath, path, centre, to_grid)
        row_start = _edge(swath, path, row - 0.5, to_grid)
        row_end = _edge(swath, path, row + 0.5, to_grid)
        outline = _row_outline(track, row_start, row_end).assign_crs(crs)
        pieces.append(
            _Piece(
                row=row,
                tile="",
                track=track,
                row_start=row_start,
                row_end=row_end,
                tile_bounds=None,
                outline=outline,
                centre_lon=_path_longitude(swath, path, centre),
            )
        )
    return pieces


def _row_outline(track: Track, row_start: Track, row_end: Track) -> Geometry:
    """The row's quadrilateral: the swath between the two edge lines."""
    corners = []
    for edge in (row_start, row_end):
        for side in (-1.0, 1.0):
            # Intersect the edge line (along_edge == 0) with the swath side (across == side*w).
            ax, ay = track.along_x, track.along_y
            px = track.origin_x + side * track.half_width * ay
            py = track.origin_y - side * track.half_width * ax
            # Move along the track until the edge's along coordinate is zero.
            offset_x, offset_y = px - edge.origin_x, py - edge.origin_y
            rate = ax * edge.along_x + ay * edge.along_y
            distance = -(offset_x * edge.along_x + offset_y * edge.along_y) / rate
            corners.append((px + distance * ax, py + distance * ay))
    ring = [corners[0], corners[1], corners[3], corners[2], corners[0]]
    return polygon(ring, crs=None)


def _sentinel2_tiles(
    swath: Swath, path: int, area: GeoBox, to_grid: Transformer, to_lonlat: Transformer
) -> list[_Piece]:
    box = area.boundingbox
    zone = int(crs_of(area).epsg or 0) % 100
    pieces = []
    step = SENTINEL2_TILE_STEP
    for column in range(int(box.left // step) - 1, int(box.right // step) + 1):
        for tile_row in range(int(box.bottom // step) - 1, int(box.top // step) + 1):
            bounds = BoundingBox(
                column * step,
                tile_row * step,
                column * step + SENTINEL2_TILE_SIZE,
                tile_row * step + SENTINEL2_TILE_SIZE,
                crs=area.crs,
            )
            if not bounds.polygon.intersects(area.extent):
                continue
            _centre_lon, centre_lat = to_lonlat.transform(
                (bounds.left + bounds.right) / 2, (bounds.bottom + bounds.top) / 2
            )
            track = _track(swath, path, centre_lat, to_grid)
            reach = 2 * SENTINEL2_TILE_SIZE
            strip = track.strip(-reach, reach).assign_crs(area.crs)
            pieces.append(
                _Piece(
                    row=0,
                    tile=mgrs_tile_name(zone, centre_lat, column, tile_row),
                    track=track,
                    row_start=None,
                    row_end=None,
                    tile_bounds=bounds,
                    outline=strip.intersection(bounds.polygon),
                    centre_lon=_path_longitude(swath, path, centre_lat),
                )
            )
    return pieces


def inside_footprint(plan: ScenePlan, xs: Floats, ys: Floats) -> np.ndarray:
    """Which pixel centres the scene saw: inside its swath, its row's stretch and its tile."""
    track = plan.track
    operands: dict[str, Any] = {
        "across": track.across(xs, ys),
        "half_width": track.half_width,
    }
    expression = "(abs(across) <= half_width)"
    if plan.row_start is not None and plan.row_end is not None:
        operands["start"] = plan.row_start.along(xs, ys)
        operands["end"] = plan.row_end.along(xs, ys)
        expression += " & (start >= 0) & (end < 0)"
    inside: np.ndarray = evaluate(expression, **operands)
    if plan.tile_bounds is not None:
        bounds = plan.tile_bounds
        inside &= ((ys >= bounds.bottom) & (ys < bounds.top))[:, None]
        inside &= ((xs >= bounds.left) & (xs < bounds.right))[None, :]
    return inside

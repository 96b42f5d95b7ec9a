"""Where and when a satellite sees an area: WRS-2 paths and rows, MGRS tiles, in native UTM.

Shaped like the real thing, simplified where it does not matter:

- Descending ground tracks tilted from north-north-east to south-south-west, evenly spaced at
  the equator, a 16-day (Landsat) or 10-day-per-satellite (Sentinel-2A/B, so 5-day) repeat with
  neighbouring paths a week (Landsat) or three days (Sentinel-2) apart.
- A Landsat scene is a WRS-2 path/row: 185 km across track and 180 km along it, centred on the
  row's nominal centre, rows 161 km apart, so consecutive rows of a pass overlap by about 19 km
  and neighbouring paths overlap across track. Each scene is gridded as USGS grids it: in the
  UTM zone of its centre (south zones below the equator), 30 m pixels with their corners on
  15 + 30k metres.
- A Sentinel-2 granule is an MGRS tile: 109.8 km square in its UTM zone, one every 100 km (so
  9.8 km overlap), corners on multiples of 60 m so the 10, 20 and 60 m grids nest, clipped to
  the relative orbit's 290 km swath. Tiles of neighbouring zones overlap, as ESA's do.

Fiji spans UTM zones 60 and 1 and the antimeridian: its scenes come in both zones, and a zone-60
scene's footprint crosses longitude 180.

A scene's geometry depends on its path/row or tile only, never on the area asked for; only the
window written (the part of the scene over the area) does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any

import numpy as np
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.geom import BoundingBox, Geometry, polygon
from pyproj import Transformer

from devtools.archive.catalogue import Platform, ProductSpec, Swath
from devtools.archive.ground import METRES_PER_DEGREE
from devtools.archive.noise import evaluate
from shared.solar_day import solar_day_at

# Day 0 of every repeat cycle; any fixed day would do.
CYCLE_EPOCH = date(2000, 1, 1)
DEGREES_PER_WRS_ROW = 360.0 / 248 * math.sin(math.radians(81.8))
WRS_EQUATOR_ROW = 60
#: A WRS-2 scene's length along track; rows are about 161 km apart, so consecutive rows overlap.
WRS_SCENE_LENGTH = 180_000.0
#: Seconds between two rows of a pass.
WRS_ROW_SECONDS = 24.6
SENTINEL2_TILE_STEP = 100_000.0
SENTINEL2_TILE_SIZE = 109_800.0
#: Ground speed of a sub-satellite point, metres per second.
GROUND_SPEED = 6_700.0
MGRS_COLUMN_LETTERS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
MGRS_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
MGRS_BAND_LETTERS = "CDEFGHJKLMNPQRSTUVWX"
#: Native pixels added around the footprint's part of the area in each written window, so a
#: load onto another grid (nearest or bilinear) finds every neighbour it interpolates.
WINDOW_PAD_PIXELS = 2


@dataclass(frozen=True)
class Track:
    """A straight stretch of a ground track in a scene's CRS: a point on it and its direction."""

    origin_x: float
    origin_y: float
    along_x: float  # unit vector pointing down the (descending) track
    along_y: float
    half_width: float

    def along(self, xs: Any, ys: Any) -> np.ndarray:
        """Distance down the track from the origin at each point (`xs`, `ys` broadcast).

        Offsets are taken in float64, the sum in float32: centimetre precision, half the memory
        traffic. A grid passes a row of x and a column of y; any point gets the same arithmetic.
        """
        down = ((ys - self.origin_y) * self.along_y).astype(np.float32)
        right = ((xs - self.origin_x) * self.along_x).astype(np.float32)
        result: np.ndarray = down + right
        return result

    def across(self, xs: Any, ys: Any) -> np.ndarray:
        """Signed distance from the centre line at each point (`xs`, `ys` broadcast)."""
        down = ((ys - self.origin_y) * -self.along_x).astype(np.float32)
        right = ((xs - self.origin_x) * self.along_y).astype(np.float32)
        result: np.ndarray = down + right
        return result

    def strip(self, along_from: float, along_to: float) -> Geometry:
        """The quadrilateral [along_from, along_to] x [-half_width, half_width] as a polygon."""
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
    """One dataset to make: a scene (path/row or tile, one pass) and its window over the area."""

    product: ProductSpec
    platform: Platform
    #: The pass's day in the repeat cycle (the local solar date at its equator crossing). The day a
    #: load groups the scene into is the solar day at the loaded tile (`shared.solar_day`), which
    #: is a day apart on the far side of the antimeridian.
    solar_day: date
    acquired: datetime
    path: int  # WRS-2 path or Sentinel-2 relative orbit
    row: int  # WRS-2 row; 0 for Sentinel-2
    tile: str  # MGRS tile for Sentinel-2; "" for Landsat
    crs: CRS  # the scene's UTM zone
    track: Track
    #: Half the scene's length along track (Landsat); None for a Sentinel-2 tile.
    half_length: float | None
    tile_bounds: BoundingBox | None  # Sentinel-2 tile in its CRS
    geobox: GeoBox  # finest-resolution window written: the scene over the area, padded
    footprint: Geometry  # valid-data polygon of the window, in the scene's CRS

    @property
    def region_code(self) -> str:
        return self.tile if self.tile else f"{self.path:03d}{self.row:03d}"

    @property
    def label(self) -> str:
        if self.product.family == "landsat":
            day = self.acquired.strftime("%Y%m%d")
            processed = (self.acquired + timedelta(days=16)).strftime("%Y%m%d")
            return f"{self.platform.label_prefix}_L2SP_{self.region_code}_{day}_{processed}_02_T1"
        sensing = self.acquired.strftime("%Y%m%dT%H%M%S")
        return f"{self.platform.label_prefix}_MSIL2A_{sensing}_R{self.path:03d}_T{self.tile}"


def utm_crs(lon: float, lat: float) -> CRS:
    """The UTM zone of a point, south zones below the equator."""
    zone = math.floor(((lon + 180.0) % 360.0) / 6.0) + 1
    return CRS(f"EPSG:{32700 + zone if lat < 0 else 32600 + zone}")


def native_grid(product: ProductSpec, bbox: BoundingBox, crs: CRS) -> GeoBox:
    """The product's finest native grid in `crs` over `bbox` (in `crs`), snapped outwards to
    whole pixels of its coarsest band (Landsat: corners on 15 + 30k m; Sentinel-2: 60 m)."""
    step = product.coarsest_resolution
    corner = product.pixel_corner
    return grid_box(
        math.floor((bbox.left - corner) / step) * step + corner,
        math.floor((bbox.bottom - corner) / step) * step + corner,
        math.ceil((bbox.right - corner) / step) * step + corner,
        math.ceil((bbox.top - corner) / step) * step + corner,
        product.resolution,
        crs,
    )


def grid_box(
    left: float, bottom: float, right: float, top: float, resolution: float, crs: CRS
) -> GeoBox:
    """The north-up grid with exactly these edges (no snapping)."""
    width = round((right - left) / resolution)
    height = round((top - bottom) / resolution)
    return GeoBox((height, width), Affine(resolution, 0.0, left, 0.0, -resolution, top), crs)


def _wrap_degrees(value: float) -> float:
    return (value + 180.0) % 360.0 - 180.0


def _path_longitude(swath: Swath, path: int, latitude: float) -> float:
    spacing = 360.0 / swath.paths_per_cycle
    return _wrap_degrees(
        swath.lon_of_path_one - (path - 1) * spacing + swath.drift_per_degree * latitude
    )


def _row_latitude(row: float) -> float:
    return -(row - WRS_EQUATOR_ROW) * DEGREES_PER_WRS_ROW


def _to_native(crs: CRS) -> Transformer:
    return transformer("EPSG:4326", crs.to_wkt())


@cache
def transformer(source: str, target: str) -> Transformer:
    """A cached pyproj transformer (x, y order) between two CRSs given as WKT or codes."""
    return Transformer.from_crs(source, target, always_xy=True)


def _track(swath: Swath, path: int, latitude: float, to_native: Transformer) -> Track:
    """The track of `path` near `latitude`, straightened over a few degrees."""
    north = latitude + 1.0
    south = latitude - 1.0
    x0, y0 = to_native.transform(_path_longitude(swath, path, north), north)
    x1, y1 = to_native.transform(_path_longitude(swath, path, south), south)
    length = math.hypot(x1 - x0, y1 - y0)
    xm, ym = to_native.transform(_path_longitude(swath, path, latitude), latitude)
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


def _acquired(swath: Swath, day: date, path: int, seconds_along: float) -> datetime:
    """UTC time of a pass: the swath's local time at the path's equator crossing, plus the time
    down the track. One pass has one clock, whichever side of the antimeridian a scene lies."""
    local = datetime.combine(day, swath.local_time, tzinfo=UTC)
    equator_lon = _path_longitude(swath, path, 0.0)
    return local - timedelta(hours=equator_lon / 15.0) + timedelta(seconds=seconds_along)


def mgrs_tile_name(zone: int, lat: float, column: int, row: int) -> str:
    band = MGRS_BAND_LETTERS[min(max(int((lat + 80) // 8), 0), len(MGRS_BAND_LETTERS) - 1)]
    column_letter = MGRS_COLUMN_LETTERS[(zone - 1) % 3][(column - 1) % 8]
    row_letter = MGRS_ROW_LETTERS[(row + (5 if zone % 2 == 0 else 0)) % 20]
    return f"{zone:02d}{band}{column_letter}{row_letter}"


@dataclass(frozen=True)
class _Scene:
    """A scene of a path before the day is known: where it is and what of the area it covers."""

    row: int
    tile: str
    crs: CRS
    track: Track
    half_length: float | None
    tile_bounds: BoundingBox | None
    seconds_along: float
    geobox: GeoBox
    footprint: Geometry


def area_centre(area: Geometry) -> tuple[float, float]:
    """(lon, lat) of the area's centre, computed in the area's own CRS (right across 180)."""
    centre = area.centroid.to_crs("EPSG:4326").coords[0]
    return float(centre[0]), float(centre[1])


def plan_scenes(product: ProductSpec, area: Geometry, first: date, last: date) -> list[ScenePlan]:
    """Every scene of `product` that sees `area` on a solar day (at the area's centre) between
    `first` and `last`, each with the window of it that covers the area."""
    lon, lat = area_centre(area)
    swath = product.swath
    plans: list[ScenePlan] = []
    in_crs = _AreaInCrs(area)
    for path in _candidate_paths(swath, lon, lat):
        scenes = (
            _landsat_rows(product, path, lat, in_crs)
            if product.family == "landsat"
            else _sentinel2_tiles(product, path, lon, lat, in_crs)
        )
        for scene in scenes:
            for platform in product.platforms:
                # A pass's solar day at the area is its cycle day or one either side of it.
                days = _acquisition_days(
                    swath, path, platform, first - timedelta(days=1), last + timedelta(days=1)
                )
                for day in days:
                    acquired = _acquired(swath, day, path, scene.seconds_along)
                    if not first <= solar_day_at(acquired, lon) <= last:
                        continue
                    plans.append(
                        ScenePlan(
                            product=product,
                            platform=platform,
                            solar_day=day,
                            acquired=acquired,
                            path=path,
                            row=scene.row,
                            tile=scene.tile,
                            crs=scene.crs,
                            track=scene.track,
                            half_length=scene.half_length,
                            tile_bounds=scene.tile_bounds,
                            geobox=scene.geobox,
                            footprint=scene.footprint,
                        )
                    )
    plans.sort(key=lambda plan: (plan.acquired, plan.region_code))
    return plans


@dataclass
class _AreaInCrs:
    """The area in each scene CRS, densified so that its curved edges stay curved; each
    transformed once per plan."""

    area: Geometry

    def __post_init__(self) -> None:
        self._by_crs: dict[str, Geometry] = {}

    def __call__(self, crs: CRS) -> Geometry:
        key = crs.to_wkt()
        if key not in self._by_crs:
            if self.area.crs == crs:
                self._by_crs[key] = self.area
            else:
                left, bottom, right, top = self.area.boundingbox
                step = max(right - left, top - bottom) / 64
                self._by_crs[key] = self.area.to_crs(crs, resolution=step)
        return self._by_crs[key]


def _window(
    product: ProductSpec, outline: Geometry, area: Geometry
) -> tuple[GeoBox, Geometry] | None:
    """The written window of a scene over the area, and its footprint inside the window."""
    covered = outline.intersection(area)
    if covered.is_empty or covered.area <= 0:
        return None
    crs = outline.crs
    assert crs is not None
    pad = WINDOW_PAD_PIXELS * product.coarsest_resolution
    left, bottom, right, top = covered.boundingbox
    window = native_grid(
        product, BoundingBox(left - pad, bottom - pad, right + pad, top + pad, crs=crs), crs
    )
    return window, outline.intersection(window.extent)


def _landsat_rows(
    product: ProductSpec, path: int, lat: float, area: _AreaInCrs
) -> Iterator[_Scene]:
    swath = product.swath
    nearest = WRS_EQUATOR_ROW - lat / DEGREES_PER_WRS_ROW
    for row in range(int(nearest) - 2, int(nearest) + 4):
        if not 1 <= row <= swath.rows_per_orbit:
            continue
        centre_lat = _row_latitude(row)
        centre_lon = _path_longitude(swath, path, centre_lat)
        crs = utm_crs(centre_lon, centre_lat)
        track = _track(swath, path, centre_lat, _to_native(crs))
        half_length = WRS_SCENE_LENGTH / 2
        outline = track.strip(-half_length, half_length).assign_crs(crs)
        window = _window(product, outline, area(crs))
        if window is None:
            continue
        geobox, footprint = window
        yield _Scene(
            row=row,
            tile="",
            crs=crs,
            track=track,
            half_length=half_length,
            tile_bounds=None,
            seconds_along=WRS_ROW_SECONDS * (row - WRS_EQUATOR_ROW),
            geobox=geobox,
            footprint=footprint,
        )


def _zones_near(lon: float, lat: float) -> list[CRS]:
    """The UTM zone of a point and its two neighbours (tiles of all three may reach it)."""
    zone = math.floor(((lon + 180.0) % 360.0) / 6.0) + 1
    base = 32700 if lat < 0 else 32600
    return [CRS(f"EPSG:{base + (zone + step - 1) % 60 + 1}") for step in (-1, 0, 1)]


def _sentinel2_tiles(
    product: ProductSpec, path: int, lon: float, lat: float, area: _AreaInCrs
) -> Iterator[_Scene]:
    swath = product.swath
    step = SENTINEL2_TILE_STEP
    for crs in _zones_near(lon, lat):
        zone = (crs.epsg or 0) % 100
        meridian = -183.0 + 6.0 * zone
        to_native = _to_native(crs)
        to_lonlat = transformer(crs.to_wkt(), "EPSG:4326")
        area_native = area(crs)
        left, bottom, right, top = area_native.boundingbox
        for column in range(int(left // step) - 1, int(right // step) + 1):
            for tile_row in range(int(bottom // step) - 1, int(top // step) + 1):
                square_lon, square_lat = to_lonlat.transform(
                    (column + 0.5) * step, (tile_row + 0.5) * step
                )
                # A zone's tiles are those whose 100 km square lies (partly) in the zone.
                if abs(_wrap_degrees(square_lon - meridian)) > 3.5 or not 1 <= column <= 8:
                    continue
                west = math.floor(column * step / 60) * 60.0
                north = math.ceil((tile_row + 1) * step / 60) * 60.0
                bounds = BoundingBox(
                    west, north - SENTINEL2_TILE_SIZE, west + SENTINEL2_TILE_SIZE, north, crs=crs
                )
                centre_x, centre_y = (
                    (bounds.left + bounds.right) / 2,
                    (bounds.bottom + bounds.top) / 2,
                )
                _centre_lon, centre_lat = to_lonlat.transform(centre_x, centre_y)
                track = _track(swath, path, centre_lat, to_native)
                reach = 2 * SENTINEL2_TILE_SIZE
                outline = track.strip(-reach, reach).assign_crs(crs).intersection(bounds.polygon)
                window = _window(product, outline, area_native)
                if window is None:
                    continue
                geobox, footprint = window
                along = float(track.along(np.float64(centre_x), np.float64(centre_y)))
                yield _Scene(
                    row=0,
                    tile=mgrs_tile_name(zone, square_lat, column, tile_row),
                    crs=crs,
                    track=track,
                    half_length=None,
                    tile_bounds=bounds,
                    seconds_along=(-centre_lat * METRES_PER_DEGREE + along) / GROUND_SPEED,
                    geobox=geobox,
                    footprint=footprint,
                )


def inside_footprint(plan: ScenePlan, xs: Any, ys: Any) -> np.ndarray:
    """Which native pixel centres the scene saw: inside its swath and its row or tile.

    `xs`, `ys` are in the scene's CRS and broadcast (a row of x and a column of y for a grid).
    """
    track = plan.track
    operands: dict[str, Any] = {
        "across": track.across(xs, ys),
        "half_width": np.float32(track.half_width),
    }
    expression = "(abs(across) <= half_width)"
    if plan.half_length is not None:
        operands["along"] = track.along(xs, ys)
        operands["half_length"] = np.float32(plan.half_length)
        expression += " & (abs(along) <= half_length)"
    inside: np.ndarray = evaluate(expression, **operands)
    if plan.tile_bounds is not None:
        bounds = plan.tile_bounds
        inside = inside & (ys >= bounds.bottom) & (ys < bounds.top)
        inside = inside & (xs >= bounds.left) & (xs < bounds.right)
    return inside


def crs_of(geobox: GeoBox) -> CRS:
    if geobox.crs is None:
        raise ValueError("the grid has no CRS")
    return geobox.crs

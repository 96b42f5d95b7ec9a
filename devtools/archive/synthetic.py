"""A synthetic archive for an area and period, and the truth it was made from.

    records = generate_archive("ls8_usgs_sr_scene", (2130000, 3499700, 2233300, 3600300),
                               date(2019, 1, 1), date(2019, 12, 31), Path("archive"),
                               seed=2019, crs="EPSG:3460")
    day = truth("ls8_usgs_sr_scene", some_day, some_geobox, seed=2019)
    day.values["red"], day.surface["red"], day.cloud, day.shadow, day.water, day.nodata

Scenes are written on their native grids (Landsat: the UTM zone of the scene's centre, pixel
corners on 15 + 30k m; Sentinel-2: MGRS tiles), each clipped to a window over the requested area
(a real scene is much larger). Every native pixel takes the ground and sky under its centre from
one longitude/latitude ground raster (see `ground`), so scenes in two UTM zones see one world,
and every value is a pure function of (seed, product, pass, native pixel centre).

`truth(product, day, geobox)` says what a nearest-neighbour load of the archive onto `geobox`
gives, whatever its CRS: each output pixel takes the native pixel under its centre, and where
two scenes of the day overlap, the earlier one (datacube's fuse order). On a scene's own grid
this is exactly what was written. A bilinear or cubic load interpolates between native pixels:
compare it with the truth on the native grid, interpolated, or with a tolerance.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog
import yaml
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.geom import BoundingBox, Geometry
from pyproj import Transformer
from pyproj.transformer import AreaOfInterest

from devtools.archive.catalogue import ProductSpec, product_spec
from devtools.archive.footprints import (
    ScenePlan,
    area_centre,
    crs_of,
    grid_box,
    native_grid,
    plan_scenes,
    utm_crs,
)
from devtools.archive.ground import GroundIndex, GroundWindow, pixels_per_degree
from devtools.archive.landcover import SENSOR_GAIN, Land, make_land, southern_hemisphere
from devtools.archive.noise import evaluate
from devtools.archive.render import Rendered, render, seen
from devtools.archive.scene_files import (
    CogOptions,
    SceneRecord,
    dataset_id,
    eo3_document,
    write_cog,
    write_document,
)
from devtools.archive.scene_pool import write_scenes
from devtools.archive.sky import Sky, make_sky, weather
from shared.errors import InvalidRequest
from shared.solar_day import solar_day_at

log = structlog.get_logger(__name__)

Area = GeoBox | BoundingBox | Geometry | tuple[float, float, float, float]
Ints = npt.NDArray[np.int64]
DEFAULT_SEED = 2019
#: Rows of a zone's grid carried to the ground raster at a time (bounds the temporaries).
_ROWS_PER_BLOCK = 512


def archive_grid(
    product: str, area: Area, crs: str | CRS | None = None, *, grid_crs: str | CRS | None = None
) -> GeoBox:
    """The product's finest grid over `area`, as a load of it in one CRS gives it.

    In `grid_crs` when given; else the area's projected CRS for Landsat (EPSG:3460 for the
    seed), else the UTM zone of the area's centre. In UTM the grid is the scenes' native one
    (Landsat pixel corners on 15 + 30k m), elsewhere pixel edges fall on multiples of the pixel.
    """
    spec = product_spec(product)
    outline = _area_geometry(area, crs)
    bbox_crs = outline.crs or CRS("EPSG:4326")
    if grid_crs is not None:
        target = CRS(grid_crs)
    elif spec.family == "landsat" and bbox_crs.projected and bbox_crs.units[0] in ("metre", "m"):
        target = bbox_crs
    else:
        target = utm_crs(*area_centre(outline))
    left, bottom, right, top = _in_crs(outline, target).boundingbox
    bbox = BoundingBox(left, bottom, right, top, crs=target)
    if (target.epsg or 0) // 100 in (326, 327):
        return native_grid(spec, bbox, target)
    step = spec.coarsest_resolution
    return grid_box(
        np.floor(left / step) * step,
        np.floor(bottom / step) * step,
        np.ceil(right / step) * step,
        np.ceil(top / step) * step,
        spec.resolution,
        target,
    )


def _in_crs(outline: Geometry, crs: CRS) -> Geometry:
    if outline.crs == crs:
        return outline
    left, bottom, right, top = outline.boundingbox
    return outline.to_crs(crs, resolution=max(right - left, top - bottom) / 64)


def _area_geometry(area: Area, crs: str | CRS | None) -> Geometry:
    """The area as a polygon with its CRS (EPSG:4326 when none is given)."""
    if isinstance(area, GeoBox):
        return area.extent
    if isinstance(area, Geometry):
        if area.crs is None:
            return area.assign_crs(CRS(crs or "EPSG:4326"))
        return area
    if isinstance(area, BoundingBox) and area.crs is not None:
        return area.polygon
    left, bottom, right, top = (float(value) for value in area)
    if not (left < right and bottom < top):
        raise InvalidRequest(
            f"area ({left}, {bottom}, {right}, {top}) is empty: give (left, bottom, right, top) "
            "with left < right and bottom < top"
        )
    return BoundingBox(left, bottom, right, top, crs=CRS(crs or "EPSG:4326")).polygon


def measurement_groups(spec: ProductSpec) -> dict[int, tuple[str, ...]]:
    """Measurements by native resolution, finest first."""
    groups: dict[int, list[str]] = {}
    for measurement in spec.measurements:
        groups.setdefault(spec.band_resolution(measurement), []).append(measurement)
    return {resolution: tuple(groups[resolution]) for resolution in sorted(groups)}


def _grid_name(spec: ProductSpec, resolution: int) -> str:
    return "default" if resolution == spec.resolution else f"{resolution}m"


def _geobox_at(geobox: GeoBox, resolution: int) -> GeoBox:
    if abs(geobox.resolution.x) == resolution:
        return geobox
    left, bottom, right, top = geobox.boundingbox
    return grid_box(left, bottom, right, top, resolution, crs_of(geobox))


def native_indices(spec: ProductSpec, geobox: GeoBox) -> tuple[Ints, Ints]:
    """Global column and row numbers of a native grid's pixels (x increasing, y increasing).

    Pixel `m` spans [corner + m * r, corner + (m + 1) * r) on each axis.
    """
    resolution = abs(geobox.resolution.x)
    corner = spec.pixel_corner
    left, _bottom, _right, top = geobox.boundingbox
    first_column = round((left - corner) / resolution)
    top_row = round((top - corner) / resolution)
    height, width = geobox.shape
    columns = first_column + np.arange(width, dtype=np.int64)
    rows = top_row - 1 - np.arange(height, dtype=np.int64)
    return columns, rows


def native_centres(
    spec: ProductSpec, resolution: float, indices: npt.NDArray[np.int64] | npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Centre coordinates of native pixels `indices` (one formula, so every caller agrees)."""
    centres = spec.pixel_corner + (np.asarray(indices, np.float64) + 0.5) * resolution
    return np.asarray(centres, dtype=np.float64)


@dataclass
class ZoneGround:
    """One UTM zone's native grid over the area at one resolution, and what lies under it.

    `rows` and `columns` place the ground pixel under each native pixel in `ground` (the
    area's ground window), so a scene's window finds its ground and sky with one gather.
    """

    geobox: GeoBox
    ground: GroundWindow
    rows: npt.NDArray[np.int32]
    columns: npt.NDArray[np.int32]
    lands: dict[str, Land]  # by platform, on `geobox`

    def window(self, geobox: GeoBox) -> tuple[slice, slice]:
        zone = self.geobox.boundingbox
        box = geobox.boundingbox
        resolution = abs(self.geobox.resolution.x)
        first_row = round((zone.top - box.top) / resolution)
        first_column = round((box.left - zone.left) / resolution)
        rows, columns = geobox.shape
        return slice(first_row, first_row + rows), slice(first_column, first_column + columns)

    def sky(self, rows: slice, columns: slice, day: date, seed: int, southern: bool) -> Sky:
        """The pass's sky over a window of the zone's grid, made on the ground under it."""
        ground_rows, ground_columns = self.rows[rows, columns], self.columns[rows, columns]
        top, left = int(ground_rows.min()), int(ground_columns.min())
        height = int(ground_rows.max()) - top + 1
        width = int(ground_columns.max()) - left + 1
        part = GroundWindow(
            per_degree=self.ground.per_degree,
            row=self.ground.row + top,
            rows=height,
            column=(self.ground.column + left) % (360 * self.ground.per_degree),
            columns=width,
        )
        flat = evaluate(
            "(r - top) * width + (c - left)",
            r=ground_rows,
            c=ground_columns,
            top=np.int64(top),
            width=np.int64(width),
            left=np.int64(left),
        )
        return make_sky(part, weather(day, seed, southern)).take(flat)


def generate_archive(
    product: str,
    area: Area,
    time_from: date,
    time_to: date,
    out_dir: Path,
    seed: int = DEFAULT_SEED,
    *,
    crs: str | CRS | None = None,
    cog: CogOptions | None = None,
    processes: int | None = None,
    on_scene: Callable[[SceneRecord], None] | None = None,
    on_planned: Callable[[int], None] | None = None,
) -> list[SceneRecord]:
    """Write every scene of `product` over `area` between the two days (solar days at the
    area's centre, inclusive).

    `area` is a GeoBox, a BoundingBox or polygon with its CRS, or (left, bottom, right, top) in
    `crs` (EPSG:4326 when not given). Scenes already on disk (same id) are not written again.
    `processes` (default: one per core) write scenes side by side.
    """
    spec = product_spec(product)
    if time_to < time_from:
        raise InvalidRequest(f"time_to {time_to} is before time_from {time_from}")
    outline = _area_geometry(area, crs)
    plans = plan_scenes(spec, outline, time_from, time_to)
    if on_planned is not None:
        on_planned(len(plans))
    log.info(
        "synthesising",
        product=product,
        scenes=len(plans),
        zones=sorted({str(plan.crs) for plan in plans}),
    )
    existing = [scene_document_path(spec, plan, out_dir, seed) for plan in plans]
    if all(path.exists() for path in existing):
        # Already synthesised: nothing to compute.
        records = [
            _existing_record(spec, plan, path) for plan, path in zip(plans, existing, strict=True)
        ]
        for record in records:
            if on_scene is not None:
                on_scene(record)
        return records
    writer = SceneWriter(
        spec=spec,
        zones=_zone_grounds(spec, plans, seed),
        out_dir=out_dir,
        seed=seed,
        cog=cog or CogOptions(),
    )
    return write_scenes(writer, plans, processes or os.cpu_count() or 1, on_scene)


def _zone_grounds(
    spec: ProductSpec, plans: Sequence[ScenePlan], seed: int
) -> dict[tuple[str, int], ZoneGround]:
    """Per (zone, resolution): the zone's grid over every scene window in it, the ground pixel
    under each of its pixels, and the ground (computed once for the whole area) under them."""
    by_zone: dict[str, list[ScenePlan]] = {}
    for plan in plans:
        by_zone.setdefault(plan.crs.to_wkt(), []).append(plan)
    platforms = sorted({plan.platform.name for plan in plans})
    grounds: dict[tuple[str, int], ZoneGround] = {}
    for resolution, measurements in measurement_groups(spec).items():
        bands = tuple(band for band in measurements if band != spec.qa_band)
        zone_grids: dict[str, tuple[GeoBox, GroundIndex]] = {}
        for key, zone_plans in by_zone.items():
            boxes = [plan.geobox.boundingbox for plan in zone_plans]
            geobox = grid_box(
                min(b.left for b in boxes),
                min(b.bottom for b in boxes),
                max(b.right for b in boxes),
                max(b.top for b in boxes),
                resolution,
                zone_plans[0].crs,
            )
            zone_grids[key] = (geobox, _ground_index(spec, geobox))
        window = GroundWindow.covering(
            pixels_per_degree(resolution), [index for _geobox, index in zone_grids.values()]
        )
        lands = {
            platform: make_land(
                window.longitudes(),
                window.latitudes(),
                window.pixel_degrees,
                bands,
                seed,
                SENSOR_GAIN.get(platform, 1.0),
            )
            for platform in platforms
        }
        for key, (geobox, index) in zone_grids.items():
            rows, columns = window.local(index)
            flat = evaluate(
                "rows * width + columns", rows=rows, columns=columns, width=np.int64(window.columns)
            )
            grounds[(key, resolution)] = ZoneGround(
                geobox=geobox,
                ground=window,
                rows=rows.astype(np.int32),
                columns=columns.astype(np.int32),
                lands={platform: land.take(flat) for platform, land in lands.items()},
            )
    return grounds


def _ground_index(spec: ProductSpec, geobox: GeoBox) -> GroundIndex:
    """The ground pixel under every pixel of a native grid, a block of rows at a time."""
    resolution = abs(geobox.resolution.x)
    columns, rows = native_indices(spec, geobox)
    xs = native_centres(spec, resolution, columns)[None, :]
    ys = native_centres(spec, resolution, rows)[:, None]
    crs = crs_of(geobox)
    ground_rows = np.empty(geobox.shape, dtype=np.int64)
    ground_columns = np.empty(geobox.shape, dtype=np.int64)
    for start in range(0, ys.shape[0], _ROWS_PER_BLOCK):
        block = GroundIndex.of_native(crs, xs, ys[start : start + _ROWS_PER_BLOCK], resolution)
        ground_rows[start : start + _ROWS_PER_BLOCK] = block.rows
        ground_columns[start : start + _ROWS_PER_BLOCK] = block.columns
    return GroundIndex(pixels_per_degree(resolution), ground_rows, ground_columns)


@dataclass
class SceneWriter:
    """Everything needed to write any scene of one archive request."""

    spec: ProductSpec
    zones: dict[tuple[str, int], ZoneGround]
    out_dir: Path
    seed: int
    cog: CogOptions

    def __call__(self, plan: ScenePlan) -> SceneRecord:
        return _write_scene(self, plan)


def scene_document_path(spec: ProductSpec, plan: ScenePlan, out_dir: Path, seed: int) -> Path:
    """Where a scene's eo3 document goes: its presence means the scene is complete."""
    label = plan.label
    identifier = dataset_id(spec.name, label, plan.geobox, seed)
    folder = f"{label}_{identifier.hex[:8]}"
    day = plan.solar_day.isoformat()
    return out_dir / spec.name / plan.region_code / day / folder / f"{label}.odc-metadata.yaml"


def _sky_under(
    window: GroundWindow, index: GroundIndex, day: date, seed: int, southern: bool
) -> Sky:
    """The pass's sky over the ground pixels of `index`, made on the ground raster."""
    part = window.sub_window(index)
    return make_sky(part, weather(day, seed, southern)).take(part.flat(index))


def _write_scene(job: SceneWriter, plan: ScenePlan) -> SceneRecord:
    spec = job.spec
    label = plan.label
    identifier = dataset_id(spec.name, label, plan.geobox, job.seed)
    metadata_path = scene_document_path(spec, plan, job.out_dir, job.seed)
    folder = metadata_path.parent
    if metadata_path.exists():
        return _existing_record(spec, plan, metadata_path)
    folder.mkdir(parents=True, exist_ok=True)
    southern = southern_hemisphere(plan.crs)
    paths: dict[str, Path] = {}
    grids_used: dict[str, GeoBox] = {}
    measurement_grids: dict[str, str] = {}
    cloud_cover = 0.0
    for resolution, measurements in measurement_groups(spec).items():
        zone = job.zones[(plan.crs.to_wkt(), resolution)]
        window = _geobox_at(plan.geobox, resolution)
        rows, columns = zone.window(window)
        column_numbers, row_numbers = native_indices(spec, window)
        valid = seen(
            [plan],
            native_centres(spec, resolution, column_numbers)[None, :],
            native_centres(spec, resolution, row_numbers)[:, None],
        )
        pixels = render(
            spec,
            plan.platform.name,
            plan.solar_day,
            measurements,
            zone.lands[plan.platform.name].window(rows, columns),
            zone.sky(rows, columns, plan.solar_day, job.seed, southern),
            valid,
            job.seed,
            southern,
            with_surface=False,
        )
        grid_name = _grid_name(spec, resolution)
        grids_used[grid_name] = window
        for measurement in measurements:
            path = folder / f"{label}_{measurement}.tif"
            nodata = spec.qa_nodata if measurement == spec.qa_band else spec.nodata
            write_cog(path, pixels.values[measurement], window, nodata, job.cog)
            paths[measurement] = path
            measurement_grids[measurement] = grid_name
        if spec.qa_band in measurements:
            cloud_cover = _cloud_cover(pixels)
    record = SceneRecord(
        dataset_id=identifier,
        product=spec.name,
        label=label,
        platform=plan.platform.name,
        region_code=plan.region_code,
        solar_day=plan.solar_day,
        acquired=plan.acquired,
        cloud_cover=cloud_cover,
        geobox=plan.geobox,
        metadata_path=metadata_path,
        measurement_paths=paths,
    )
    extra: dict[str, object] = (
        {"landsat:wrs_path": plan.path, "landsat:wrs_row": plan.row}
        if spec.family == "landsat"
        else {"sentinel:mgrs_tile": plan.tile, "sat:relative_orbit": plan.path}
    )
    document = eo3_document(
        record,
        instrument=plan.platform.instrument,
        footprint=plan.footprint,
        grids=grids_used,
        measurement_grids=measurement_grids,
        extra_properties=extra,
    )
    write_document(metadata_path, document)
    return record


def _cloud_cover(pixels: Rendered) -> float:
    seen_pixels = int(np.count_nonzero(pixels.valid))
    if not seen_pixels:
        return 0.0
    return 100.0 * int(np.count_nonzero(pixels.cloud)) / seen_pixels


def _existing_record(spec: ProductSpec, plan: ScenePlan, metadata_path: Path) -> SceneRecord:
    document = yaml.safe_load(metadata_path.read_text("utf-8"))
    folder = metadata_path.parent
    return SceneRecord(
        dataset_id=uuid.UUID(str(document["id"])),
        product=spec.name,
        label=document["label"],
        platform=plan.platform.name,
        region_code=plan.region_code,
        solar_day=plan.solar_day,
        acquired=plan.acquired,
        cloud_cover=float(document["properties"].get("eo:cloud_cover", 0.0)),
        geobox=plan.geobox,
        metadata_path=metadata_path,
        measurement_paths={
            band: folder / entry["path"] for band, entry in document["measurements"].items()
        },
    )


@dataclass
class Truth:
    """What a nearest-neighbour load of the archive gives for one product and solar day.

    Arrays are on `geobox` (any CRS); each output pixel holds the native pixel under its centre,
    of the day's first scene (in acquisition order) that saw it. `day` is the solar day at the
    geobox's centre, as product jobs group scenes (`shared.solar_day`).
    """

    product: str
    day: date
    geobox: GeoBox
    values: dict[str, np.ndarray]  # stored values, nodata where no scene saw the pixel
    surface: dict[str, np.ndarray]  # clear-sky surface reflectance, everywhere
    nodata: npt.NDArray[np.bool_]
    cloud: npt.NDArray[np.bool_]
    shadow: npt.NDArray[np.bool_]
    water: npt.NDArray[np.bool_]  # clear water
    clear: npt.NDArray[np.bool_]  # seen, not cloud or shadow (land or water)
    cover: npt.NDArray[np.uint8]  # landcover.Cover class
    scenes: list[str] = field(default_factory=list)  # labels of the day's scenes, fuse order


def geobox_longitude(geobox: GeoBox) -> float:
    """Longitude of a grid's centre: where its solar days are reckoned."""
    return area_centre(geobox.extent)[0]


def acquisition_days(
    product: str, geobox: GeoBox, time_from: date, time_to: date
) -> dict[date, list[ScenePlan]]:
    """Solar days (at the geobox's centre) on which `product` saw `geobox`, with their scenes in
    the order a load fuses them."""
    longitude = geobox_longitude(geobox)
    days: dict[date, list[ScenePlan]] = {}
    for plan in plan_scenes(product_spec(product), geobox.extent, time_from, time_to):
        days.setdefault(solar_day_at(plan.acquired, longitude), []).append(plan)
    return {day: sorted(plans, key=lambda p: p.acquired) for day, plans in sorted(days.items())}


def truth(
    product: str,
    day: date | datetime,
    geobox: GeoBox,
    seed: int = DEFAULT_SEED,
    measurements: Sequence[str] | None = None,
    *,
    scenes: Sequence[str] | None = None,
) -> Truth:
    """Recompute what a nearest load of the archive gives on `geobox` for one solar day.

    `scenes` (labels) keeps only those of the day's scenes, e.g. one file's own pixels.
    """
    spec = product_spec(product)
    solar_day = day.date() if isinstance(day, datetime) else day
    wanted = tuple(measurements or spec.measurements)
    unknown = sorted(set(wanted) - set(spec.measurements))
    if unknown:
        raise InvalidRequest(
            f"{product} has no measurement {', '.join(unknown)} "
            f"(it has {', '.join(spec.measurements)})"
        )
    if geobox.affine.b != 0 or geobox.affine.d != 0:
        raise InvalidRequest("truth needs a north-up grid (no rotation)")
    plans = acquisition_days(product, geobox, solar_day, solar_day).get(solar_day, [])
    if scenes is not None:
        plans = [plan for plan in plans if plan.label in scenes]
    values: dict[str, np.ndarray] = {}
    surface: dict[str, np.ndarray] = {}
    masks: _Fused | None = None
    for resolution, group in measurement_groups(spec).items():
        chosen = [m for m in group if m in wanted]
        has_qa = spec.qa_band in group
        if not chosen and not has_qa:
            continue
        fused = _fuse(spec, plans, geobox, resolution, group, seed)
        for measurement in chosen:
            values[measurement] = fused.values[measurement]
            if measurement in fused.surface:
                surface[measurement] = fused.surface[measurement]
        if has_qa:
            masks = fused
    assert masks is not None
    clear = masks.valid & ~masks.cloud & ~masks.shadow
    return Truth(
        product=product,
        day=solar_day,
        geobox=geobox,
        values=values,
        surface=surface,
        nodata=~masks.valid,
        cloud=masks.cloud,
        shadow=masks.shadow,
        water=masks.water,
        clear=clear,
        cover=masks.cover,
        scenes=[plan.label for plan in plans],
    )


@dataclass
class _Fused:
    values: dict[str, np.ndarray]
    surface: dict[str, np.ndarray]
    valid: npt.NDArray[np.bool_]
    cloud: npt.NDArray[np.bool_]
    shadow: npt.NDArray[np.bool_]
    water: npt.NDArray[np.bool_]
    cover: npt.NDArray[np.uint8]


def load_transformer(geobox: GeoBox, crs: CRS) -> Transformer:
    """From `geobox`'s CRS to `crs` with the operation a load onto `geobox` uses: the one PROJ
    picks for the geobox's area, as GDAL's warper picks it for the area it reads."""
    return _transformer_for(crs_of(geobox).to_wkt(), crs.to_wkt(), _area_of_interest(geobox))


@functools.lru_cache(maxsize=64)
def _transformer_for(source: str, target: str, area: AreaOfInterest) -> Transformer:
    return Transformer.from_crs(source, target, always_xy=True, area_of_interest=area)


def _area_of_interest(geobox: GeoBox) -> AreaOfInterest:
    """The geobox's extent in degrees (west > east when it crosses longitude 180)."""
    corners = geobox.extent.to_crs("EPSG:4326").exterior.coords
    centre_lon, _ = area_centre(geobox.extent)
    lons = [centre_lon + (lon - centre_lon + 180.0) % 360.0 - 180.0 for lon, _lat in corners]
    lats = [lat for _lon, lat in corners]
    west, east = min(lons), max(lons)
    return AreaOfInterest(
        (west + 180.0) % 360.0 - 180.0, min(lats), (east + 180.0) % 360.0 - 180.0, max(lats)
    )


def _output_centres(geobox: GeoBox) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    affine = geobox.affine
    height, width = geobox.shape
    xs = affine.c + (np.arange(width) + 0.5) * affine.a
    ys = affine.f + (np.arange(height) + 0.5) * affine.e
    grid_x, grid_y = np.meshgrid(xs, ys)
    return grid_x, grid_y


def _fuse(
    spec: ProductSpec,
    plans: Sequence[ScenePlan],
    geobox: GeoBox,
    resolution: int,
    measurements: Sequence[str],
    seed: int,
) -> _Fused:
    """Every scene of the day sampled at the geobox's pixels (nearest), the first valid kept."""
    out_x, out_y = _output_centres(geobox)
    samples: list[tuple[ScenePlan, GroundIndex, npt.NDArray[np.bool_]]] = []
    for plan in plans:
        if plan.crs == geobox.crs:
            native_x, native_y = out_x, out_y
        else:
            # The operation PROJ picks for this area, as GDAL's warper picks it for the area it
            # reads (e.g. EPSG:3460 to WGS 84 is a 2 m Helmert north of 20.81 S, where EPSG
            # defines one, and a ballpark offset 16 m away south of it).
            native_x, native_y = load_transformer(geobox, plan.crs).transform(out_x, out_y)
        corner = spec.pixel_corner
        centre_x = native_centres(spec, resolution, np.floor((native_x - corner) / resolution))
        centre_y = native_centres(spec, resolution, np.floor((native_y - corner) / resolution))
        index = GroundIndex.of_native(plan.crs, centre_x, centre_y, resolution)
        samples.append((plan, index, seen([plan], centre_x, centre_y)))
    shape = geobox.shape
    bands = tuple(m for m in measurements if m != spec.qa_band)
    nodata = {m: (spec.qa_nodata if m == spec.qa_band else spec.nodata) for m in measurements}
    fused = _Fused(
        values={
            m: np.full(shape, nodata[m], dtype=spec.qa_dtype if m == spec.qa_band else spec.dtype)
            for m in measurements
        },
        surface={m: np.zeros(shape, dtype=spec.dtype) for m in bands},
        valid=np.zeros(shape, dtype=bool),
        cloud=np.zeros(shape, dtype=bool),
        shadow=np.zeros(shape, dtype=bool),
        water=np.zeros(shape, dtype=bool),
        cover=np.zeros(shape, dtype=np.uint8),
    )
    if not samples:
        return fused
    window = GroundWindow.covering(
        pixels_per_degree(resolution), [index for _p, index, _v in samples]
    )
    lands: dict[str, Land] = {}
    for position, (plan, index, valid) in enumerate(samples):
        platform = plan.platform.name
        if platform not in lands:
            lands[platform] = make_land(
                window.longitudes(),
                window.latitudes(),
                window.pixel_degrees,
                bands,
                seed,
                SENSOR_GAIN.get(platform, 1.0),
            )
        southern = southern_hemisphere(plan.crs)
        rendered = render(
            spec,
            platform,
            plan.solar_day,
            measurements,
            lands[platform].take(window.flat(index)),
            _sky_under(window, index, plan.solar_day, seed, southern),
            valid,
            seed,
            southern,
        )
        take = rendered.valid & ~fused.valid
        if position == 0:
            # Where no scene saw a pixel, the ground under the first one still says what is there.
            fused.surface = {band: rendered.surface[band].copy() for band in bands}
            fused.cover = rendered.cover.copy()
        for measurement in measurements:
            np.copyto(fused.values[measurement], rendered.values[measurement], where=take)
        for band in bands:
            np.copyto(fused.surface[band], rendered.surface[band], where=take)
        np.copyto(fused.cover, rendered.cover, where=take)
        np.copyto(fused.cloud, rendered.cloud, where=take)
        np.copyto(fused.shadow, rendered.shadow, where=take)
        np.copyto(fused.water, rendered.water, where=take)
        fused.valid |= rendered.valid
    return fused

"""A synthetic archive for an area and period, and the truth it was made from.

    records = generate_archive("ls8_usgs_sr_scene", (2130000, 3499700, 2233300, 3600300),
                               date(2019, 1, 1), date(2019, 12, 31), Path("archive"),
                               seed=2019, crs="EPSG:3460")
    day = truth("ls8_usgs_sr_scene", records[0].solar_day, some_geobox, seed=2019)
    day.values["red"], day.surface["red"], day.cloud, day.shadow, day.water, day.nodata

Only pixels inside the requested area are generated (a real scene is much larger); every pixel
is a pure function of (seed, product, day, coordinates), so `truth` recomputes any box exactly.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog
import yaml
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.geom import BoundingBox

from devtools.archive.catalogue import ProductSpec, product_spec
from devtools.archive.footprints import ScenePlan, area_grid, crs_of, grid_crs, plan_scenes
from devtools.archive.landcover import SENSOR_GAIN, Land, make_land, southern_hemisphere
from devtools.archive.noise import Floats
from devtools.archive.render import Rendered, render
from devtools.archive.scene_files import (
    CogOptions,
    SceneRecord,
    dataset_id,
    eo3_document,
    write_cog,
    write_document,
)
from devtools.archive.scene_pool import write_scenes
from devtools.archive.sky import weather
from shared.errors import InvalidRequest

log = structlog.get_logger(__name__)

Area = GeoBox | BoundingBox | tuple[float, float, float, float]
DEFAULT_SEED = 2019


def archive_grid(product: str, area: Area, crs: str | CRS | None = None) -> GeoBox:
    """The product's finest grid over `area`: the request's projected CRS for Landsat (UTM for a
    lat/lon area), UTM for Sentinel-2, snapped outwards to whole pixels."""
    spec = product_spec(product)
    bbox = _bounding_box(area, crs)
    lonlat = bbox.to_crs("EPSG:4326")
    centre = ((lonlat.left + lonlat.right) / 2, (lonlat.bottom + lonlat.top) / 2)
    if lonlat.right - lonlat.left > 180:  # the box straddles the antimeridian
        centre = (_wrap(centre[0] + 180), centre[1])
    target = grid_crs(spec, bbox.crs or CRS("EPSG:4326"), centre)
    projected = bbox if bbox.crs == target else bbox.to_crs(target)
    return area_grid(spec, projected, target)


def _wrap(lon: float) -> float:
    return (lon + 180.0) % 360.0 - 180.0


def _bounding_box(area: Area, crs: str | CRS | None) -> BoundingBox:
    if isinstance(area, GeoBox):
        return area.boundingbox
    if isinstance(area, BoundingBox) and area.crs is not None:
        return area
    left, bottom, right, top = (float(value) for value in area)
    if not (left < right and bottom < top):
        raise InvalidRequest(
            f"area ({left}, {bottom}, {right}, {top}) is empty: give (left, bottom, right, top) "
            "with left < right and bottom < top"
        )
    return BoundingBox(left, bottom, right, top, crs=CRS(crs or "EPSG:4326"))


@dataclass
class _Grids:
    """Pixel centres of the area's grid for each native resolution of the product."""

    area: GeoBox
    xs: dict[int, Floats] = field(default_factory=dict)
    ys: dict[int, Floats] = field(default_factory=dict)

    @classmethod
    def of(cls, area: GeoBox, resolutions: Iterable[int]) -> _Grids:
        grids = cls(area)
        box = area.boundingbox
        for resolution in resolutions:
            columns = round((box.right - box.left) / resolution)
            rows = round((box.top - box.bottom) / resolution)
            grids.xs[resolution] = box.left + (np.arange(columns) + 0.5) * resolution
            grids.ys[resolution] = box.top - (np.arange(rows) + 0.5) * resolution
        return grids

    def window(self, geobox: GeoBox, resolution: int) -> tuple[slice, slice]:
        area, box = self.area.boundingbox, geobox.boundingbox
        first_row = round((area.top - box.top) / resolution)
        first_column = round((box.left - area.left) / resolution)
        rows = round((box.top - box.bottom) / resolution)
        columns = round((box.right - box.left) / resolution)
        return slice(first_row, first_row + rows), slice(first_column, first_column + columns)


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
    return GeoBox.from_bbox(geobox.boundingbox, geobox.crs, resolution=resolution)


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
    """Write every scene of `product` over `area` between the two days (inclusive).

    `area` is a GeoBox, a BoundingBox with its CRS, or (left, bottom, right, top) in `crs`
    (EPSG:4326 when not given). Scenes already on disk (same id) are not written again.
    `processes` (default: one per core) write scenes side by side.
    """
    spec = product_spec(product)
    if time_to < time_from:
        raise InvalidRequest(f"time_to {time_to} is before time_from {time_from}")
    grid = archive_grid(product, area, crs)
    plans = plan_scenes(spec, grid, time_from, time_to)
    if on_planned is not None:
        on_planned(len(plans))
    log.info("synthesising", product=product, scenes=len(plans), shape=tuple(grid.shape))
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
    groups = measurement_groups(spec)
    grids = _Grids.of(grid, groups)
    # The ground does not change: computed once for the whole area, sliced per scene.
    lands = {
        (resolution, platform): make_land(
            grids.xs[resolution],
            grids.ys[resolution],
            resolution,
            tuple(band for band in groups[resolution] if band != spec.qa_band),
            seed,
            SENSOR_GAIN.get(platform, 1.0),
        )
        for platform in sorted({plan.platform.name for plan in plans})
        for resolution in groups
    }
    job = SceneWriter(
        spec=spec,
        grids=grids,
        groups=groups,
        lands=lands,
        out_dir=out_dir,
        seed=seed,
        southern=southern_hemisphere(crs_of(grid)),
        cog=cog or CogOptions(),
    )
    return write_scenes(job, plans, processes or os.cpu_count() or 1, on_scene)


@dataclass
class SceneWriter:
    """Everything needed to write any scene of one archive request."""

    spec: ProductSpec
    grids: _Grids
    groups: dict[int, tuple[str, ...]]
    lands: dict[tuple[int, str], Land]
    out_dir: Path
    seed: int
    southern: bool
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


def _write_scene(job: SceneWriter, plan: ScenePlan) -> SceneRecord:
    spec = job.spec
    label = plan.label
    identifier = dataset_id(spec.name, label, plan.geobox, job.seed)
    metadata_path = scene_document_path(spec, plan, job.out_dir, job.seed)
    folder = metadata_path.parent
    if metadata_path.exists():
        return _existing_record(spec, plan, metadata_path)
    folder.mkdir(parents=True, exist_ok=True)
    day_weather = weather(plan.solar_day, job.seed, job.southern)
    paths: dict[str, Path] = {}
    grids_used: dict[str, GeoBox] = {}
    measurement_grids: dict[str, str] = {}
    cloud_cover = 0.0
    for resolution, measurements in job.groups.items():
        rows, columns = job.grids.window(plan.geobox, resolution)
        land = job.lands[(resolution, plan.platform.name)].window(rows, columns)
        pixels = render(
            spec,
            [plan],
            plan.solar_day,
            measurements,
            job.grids.xs[resolution][columns],
            job.grids.ys[resolution][rows],
            land,
            day_weather,
            job.seed,
            job.southern,
            with_surface=False,
        )
        window = _geobox_at(plan.geobox, resolution)
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
    seen = int(np.count_nonzero(pixels.valid))
    if not seen:
        return 0.0
    return 100.0 * int(np.count_nonzero(pixels.cloud)) / seen


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
    """What the archive holds for one product and solar day over a grid, and why.

    Arrays are on `geobox` (which must be in the archive's grid CRS); each measurement is
    sampled from its native grid (nearest), as datacube loads it.
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


def acquisition_days(
    product: str, geobox: GeoBox, time_from: date, time_to: date
) -> dict[date, list[ScenePlan]]:
    """Solar days on which `product` saw `geobox`, with the scenes of each."""
    days: dict[date, list[ScenePlan]] = {}
    for plan in plan_scenes(product_spec(product), geobox, time_from, time_to):
        days.setdefault(plan.solar_day, []).append(plan)
    return dict(sorted(days.items()))


def truth(
    product: str,
    day: date | datetime,
    geobox: GeoBox,
    seed: int = DEFAULT_SEED,
    measurements: Sequence[str] | None = None,
) -> Truth:
    """Recompute the archive's pixels and masks for one solar day over `geobox`."""
    spec = product_spec(product)
    solar_day = day.date() if isinstance(day, datetime) else day
    plans = acquisition_days(product, geobox, solar_day, solar_day).get(solar_day, [])
    wanted = tuple(measurements or spec.measurements)
    unknown = sorted(set(wanted) - set(spec.measurements))
    if unknown:
        raise InvalidRequest(
            f"{product} has no measurement {', '.join(unknown)} "
            f"(it has {', '.join(spec.measurements)})"
        )
    southern = southern_hemisphere(crs_of(geobox))
    day_weather = weather(solar_day, seed, southern)
    platform = plans[0].platform.name if plans else spec.platforms[0].name
    values: dict[str, np.ndarray] = {}
    surface: dict[str, np.ndarray] = {}
    masks: Rendered | None = None
    for resolution, group in measurement_groups(spec).items():
        chosen = [m for m in group if m in wanted]
        has_qa = spec.qa_band in group
        if not chosen and not has_qa:
            continue
        xs, ys = _snapped_centres(geobox, resolution)
        bands = tuple(band for band in group if band != spec.qa_band)
        land = make_land(xs, ys, resolution, bands, seed, SENSOR_GAIN.get(platform, 1.0))
        rendered = render(spec, plans, solar_day, group, xs, ys, land, day_weather, seed, southern)
        for measurement in chosen:
            values[measurement] = rendered.values[measurement]
            if measurement in rendered.surface:
                surface[measurement] = rendered.surface[measurement]
        if has_qa:
            masks = rendered
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
    )


def _snapped_centres(geobox: GeoBox, resolution: int) -> tuple[Floats, Floats]:
    """Centres of the native `resolution` pixels that hold each of the geobox's pixel centres."""
    affine = geobox.affine
    if affine.b != 0 or affine.d != 0:
        raise InvalidRequest("truth needs a north-up grid (no rotation)")
    height, width = geobox.shape
    xs = affine.c + (np.arange(width) + 0.5) * affine.a
    ys = affine.f + (np.arange(height) + 0.5) * affine.e
    return (
        (np.floor(xs / resolution) + 0.5) * resolution,
        (np.floor(ys / resolution) + 0.5) * resolution,
    )

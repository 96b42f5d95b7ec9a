"""Scene files read straight with rasterio onto an output grid, one array per solar day.

Nothing here uses datacube or the worker: scenes are found by walking the archive's eo3
documents, grouped by solar day (acquisition time plus the footprint centre's longitude / 15
hours, as datacube groups them), reprojected with GDAL's warper (`rasterio.warp.reproject`)
and fused first-valid in acquisition order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import yaml
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject
from shapely.geometry import shape


@dataclass(frozen=True)
class Scene:
    dataset_id: str
    acquired: datetime
    solar_day: date
    crs: str
    files: dict[str, Path]


@dataclass(frozen=True)
class Grid:
    """A north-up grid: CRS, transform and shape (rows, columns)."""

    crs: str
    transform: Affine
    shape: tuple[int, int]

    def window(self, row: int, column: int, rows: int, columns: int) -> Grid:
        return Grid(self.crs, self.transform * Affine.translation(column, row), (rows, columns))


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def scene_of(document_path: Path) -> Scene:
    document = yaml.safe_load(document_path.read_text("utf-8"))
    crs = str(document["crs"])
    footprint = shape(document["geometry"])
    centre = footprint.representative_point() if not footprint.is_empty else None
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    longitude = to_lonlat.transform(centre.x, centre.y)[0] if centre is not None else 0.0
    acquired = _parse_time(str(document["properties"]["datetime"]))
    solar = acquired + timedelta(hours=longitude / 15.0)
    return Scene(
        dataset_id=str(document["id"]),
        acquired=acquired,
        solar_day=solar.date(),
        crs=crs,
        files={
            name: document_path.parent / entry["path"]
            for name, entry in document["measurements"].items()
        },
    )


def index_archive(archive: Path) -> dict[str, Path]:
    """Dataset id -> eo3 document, for every dataset document under `archive`."""
    found: dict[str, Path] = {}
    for path in archive.rglob("*.odc-metadata.yaml"):
        try:
            document = yaml.safe_load(path.read_text("utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(document, dict) and "id" in document:
            found[str(document["id"])] = path
    return found


def days_of(scenes: Iterable[Scene]) -> dict[date, list[Scene]]:
    grouped: dict[date, list[Scene]] = {}
    for scene in sorted(scenes, key=lambda scene: scene.acquired):
        grouped.setdefault(scene.solar_day, []).append(scene)
    return dict(sorted(grouped.items()))


def read_band(
    scenes: Sequence[Scene], band: str, grid: Grid, resampling: Resampling
) -> tuple[np.ndarray[Any, Any], float]:
    """One day's `band` on `grid`: each scene reprojected, the first valid value kept."""
    fused: np.ndarray[Any, Any] | None = None
    nodata = 0.0
    for scene in scenes:
        with rasterio.open(scene.files[band]) as source:
            nodata = source.nodata if source.nodata is not None else 0
            layer = np.full(grid.shape, nodata, dtype=source.dtypes[0])
            reproject(
                source=rasterio.band(source, 1),
                destination=layer,
                src_nodata=nodata,
                dst_transform=grid.transform,
                dst_crs=CRS.from_user_input(grid.crs),
                dst_nodata=nodata,
                resampling=resampling,
            )
        fused = layer if fused is None else np.where(fused == nodata, layer, fused)
    assert fused is not None
    return fused, nodata


def read_stack(
    days: dict[date, list[Scene]],
    bands: Sequence[str],
    grid: Grid,
    resampling: dict[str, Resampling],
) -> tuple[dict[str, np.ndarray[Any, Any]], dict[str, float]]:
    """(time, y, x) arrays of `bands` on `grid`, one layer per solar day, and their nodata."""
    stacks: dict[str, np.ndarray[Any, Any]] = {}
    nodatas: dict[str, float] = {}
    for band in bands:
        layers = []
        for scenes in days.values():
            layer, nodata = read_band(scenes, band, grid, resampling.get(band, Resampling.nearest))
            layers.append(layer)
            nodatas[band] = nodata
        stacks[band] = np.stack(layers)
    return stacks, nodatas

"""A scene on disk: one Cloud-Optimised GeoTIFF per measurement and an eo3 dataset document.

The document is written last (after every band), so a scene folder with a document is whole.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import yaml
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry

EO3_SCHEMA = "https://schemas.opendatacube.org/dataset"
# Bump when the generator changes what it writes: ids change with it.
GENERATOR_VERSION = "1"
DATASET_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "odc-conveyor:synthetic-archive")


@dataclass(frozen=True)
class CogOptions:
    """Fast by default: ZSTD level 1, no predictor (GDAL's costs more time than it saves space
    here) and no overviews (pass `overviews=True` for archives meant for map browsing)."""

    compression: str = "ZSTD"
    level: int = 1
    blocksize: int = 512
    overviews: bool = False
    predictor: bool = False
    threads: int = 2  # GDAL compression threads


@dataclass(frozen=True)
class SceneRecord:
    """One dataset of the archive, as written."""

    dataset_id: uuid.UUID
    product: str
    label: str
    platform: str
    region_code: str
    solar_day: date
    acquired: datetime
    cloud_cover: float
    geobox: GeoBox
    metadata_path: Path
    measurement_paths: Mapping[str, Path] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return self.metadata_path.resolve().as_uri()


def dataset_id(product: str, label: str, geobox: GeoBox, seed: int) -> uuid.UUID:
    """Stable across runs and machines: the same scene, window and seed give the same id."""
    box = geobox.boundingbox
    name = (
        f"{product}|{label}|{seed}|{geobox.crs}|{box.left:.3f},{box.bottom:.3f},"
        f"{box.right:.3f},{box.top:.3f}|{GENERATOR_VERSION}"
    )
    return uuid.uuid5(DATASET_NAMESPACE, name)


def write_cog(path: Path, pixels: np.ndarray, geobox: GeoBox, nodata: int, cog: CogOptions) -> None:
    """One band as a Cloud-Optimised GeoTIFF: tiled, compressed, header first.

    Without overviews, GDAL's GTiff driver writing the whole raster in one call already lays
    the file out as a COG (IFD at the start, tiles in order) and is faster than the COG driver,
    which copies through a temporary file. No temporary name: the dataset document, written
    after every band, is what makes a scene visible.
    """
    height, width = pixels.shape
    profile: dict[str, Any] = {
        "width": width,
        "height": height,
        "count": 1,
        "dtype": pixels.dtype.name,
        "crs": str(geobox.crs),
        "transform": geobox.affine,
        "nodata": nodata,
        "compress": cog.compression,
        "predictor": 2 if cog.predictor else 1,
        "num_threads": cog.threads,
    }
    if cog.overviews:
        profile |= {
            "driver": "COG",
            "level": cog.level,
            "blocksize": cog.blocksize,
            "overviews": "AUTO",
            "overview_resampling": "nearest",
        }
    else:
        profile |= {
            "driver": "GTiff",
            "tiled": True,
            "blockxsize": cog.blocksize,
            "blockysize": cog.blocksize,
            f"{cog.compression.lower()}_level": cog.level,
        }
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(pixels[np.newaxis], [1])


def eo3_document(
    record: SceneRecord,
    *,
    instrument: str,
    footprint: Geometry,
    grids: Mapping[str, GeoBox],
    measurement_grids: Mapping[str, str],
    extra_properties: Mapping[str, Any],
) -> dict[str, Any]:
    """The eo3 dataset document, with paths relative to the document's folder."""
    grid_docs = {
        name: {"shape": list(grid.shape), "transform": [*list(grid.affine)[:6], 0.0, 0.0, 1.0]}
        for name, grid in grids.items()
    }
    measurements: dict[str, dict[str, str]] = {}
    for band, path in record.measurement_paths.items():
        entry = {"path": path.name}
        if measurement_grids.get(band, "default") != "default":
            entry["grid"] = measurement_grids[band]
        measurements[band] = entry
    crs = record.geobox.crs
    assert crs is not None
    epsg = crs.epsg
    return {
        "$schema": EO3_SCHEMA,
        "id": str(record.dataset_id),
        "label": record.label,
        "product": {"name": record.product},
        "crs": f"epsg:{epsg}" if epsg else crs.to_wkt(),
        "geometry": footprint.json,
        "grids": grid_docs,
        "properties": {
            "datetime": _iso(record.acquired),
            "eo:platform": record.platform,
            "eo:instrument": instrument,
            "eo:cloud_cover": round(record.cloud_cover, 2),
            "odc:file_format": "GeoTIFF",
            "odc:processing_datetime": _iso(
                datetime.combine(record.solar_day, datetime.min.time(), tzinfo=UTC)
            ),
            "odc:product_family": "ard",
            "odc:region_code": record.region_code,
            **extra_properties,
        },
        "measurements": measurements,
        "lineage": {},
    }


def write_document(path: Path, document: Mapping[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(
        yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=None), "utf-8"
    )
    os.replace(partial, path)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

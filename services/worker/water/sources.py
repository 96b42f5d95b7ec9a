"""The scenes a water classification reads: found in the datacube index, described, loaded.

A request names its scenes by product, area and period (`find_scenes`) or by dataset id
(`scene_by_id`). The index is searched by time and latitude only, then each footprint is
intersected with the area in the dataset's own CRS: datacube 1.9 stores a longitude range for a
dataset that crosses the antimeridian (as Fiji's do) that spans the wrong way round the globe,
so a longitude search would miss it (the product runner searches the same way).

These functions block (the index is PostgreSQL); the runner calls them from threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as day_time
from typing import Any

from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry, box
from rasterio.transform import Affine

from shared.catalogue import (
    INPUT_PRODUCTS,
    Sensor,
    input_product,
    water_classification_product,
)
from shared.errors import InvalidRequest, Permanent
from shared.limits import LimitExceeded, setting_name
from shared.messages import WaterClassificationRequest

#: Properties of the source dataset a classification carries over (eo3 and STAC alike).
CARRIED_PROPERTIES = (
    "eo:platform",
    "eo:instrument",
    "eo:cloud_cover",
    "odc:region_code",
    "landsat:wrs_path",
    "landsat:wrs_row",
    "landsat:landsat_scene_id",
    "landsat:landsat_product_id",
    "s2:mgrs_tile",
    "sat:relative_orbit",
)


class DatasetNotFound(Permanent):
    """The item names a dataset the index does not have (or has archived)."""

    reason = "dataset_not_found"


class NotClassifiable(InvalidRequest):
    """The dataset is not a scene of an input product (e.g. a product's output)."""

    reason = "invalid_request"


@dataclass(frozen=True)
class SourceScene:
    """One scene of an input product, as its indexed document describes it."""

    dataset_id: str
    product: str
    label: str
    time: datetime
    geobox: GeoBox
    footprint: Geometry
    uri: str | None
    properties: Mapping[str, Any] = field(default_factory=dict)
    #: The `datacube.model.Dataset` itself, for `dc.load`.
    dataset: Any = field(default=None, repr=False, compare=False)

    @property
    def sensor(self) -> Sensor:
        return input_product(self.product)

    @property
    def output_product(self) -> str:
        """e.g. `ls8_water_classification`."""
        return water_classification_product(self.product)


def native_grid(document: Mapping[str, Any], what: str) -> GeoBox:
    """The `default` grid of an eo3 document: the grid its classification is made on (a
    Sentinel-2 granule's 10 m grid; a Landsat scene's 30 m grid)."""
    try:
        grid = document["grids"]["default"]
        shape = tuple(int(size) for size in grid["shape"])
        transform = Affine(*(float(value) for value in grid["transform"][:6]))
        crs = str(document["crs"])
    except (KeyError, TypeError, ValueError, IndexError):
        raise Permanent(
            f"{what} has no eo3 `grids.default` (shape and transform) with a `crs`: only eo3 "
            "datasets can be classified here"
        ) from None
    if len(shape) != 2 or min(shape) < 1:
        raise Permanent(f"{what} has an empty default grid {list(shape)}")
    return GeoBox(shape, transform, crs)


def describe(dataset: Any) -> SourceScene:
    """A `datacube.model.Dataset` of an input product as a `SourceScene`."""
    dataset_id = str(dataset.id)
    product = dataset.product.name
    if product not in INPUT_PRODUCTS:
        raise NotClassifiable(
            f"dataset {dataset_id} is a {product} dataset; water classification reads scenes "
            f"of {', '.join(INPUT_PRODUCTS)}"
        )
    document = dataset.metadata_doc
    geobox = native_grid(document, f"dataset {dataset_id} ({product})")
    footprint = dataset.extent if dataset.extent is not None else geobox.extent
    properties = document.get("properties") or {}
    time = dataset.center_time
    if time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    uris = list(dataset.uris or [])
    return SourceScene(
        dataset_id=dataset_id,
        product=product,
        label=str(document.get("label") or dataset_id),
        time=time.astimezone(UTC),
        geobox=geobox,
        footprint=footprint,
        uri=uris[0] if uris else None,
        properties={key: properties[key] for key in CARRIED_PROPERTIES if key in properties},
        dataset=dataset,
    )


def scene_by_id(datacube: Any, dataset_id: str) -> SourceScene:
    dataset = datacube.index.datasets.get(dataset_id)
    if dataset is None:
        raise DatasetNotFound(
            f"the datacube index has no dataset {dataset_id}: index the scene first (or check "
            "the id: `datacube dataset info`)"
        )
    if dataset.is_archived:
        raise DatasetNotFound(f"dataset {dataset_id} is archived in the datacube index")
    return describe(dataset)


def request_area(request: WaterClassificationRequest) -> Geometry:
    """The request's area as a polygon in its own CRS."""
    left, bottom, right, top = request.area_bounds
    return box(left, bottom, right, top, request.area_crs)


def find_scenes(
    datacube: Any, request: WaterClassificationRequest, limit: int
) -> list[SourceScene]:
    """The request's product's datasets whose footprint meets its area within its period,
    oldest first; `LimitExceeded` as soon as there are more than `limit`."""
    assert request.product is not None and request.time_from and request.time_to
    area = request_area(request)
    latitudes = area.to_crs("EPSG:4326").boundingbox
    start = datetime.combine(request.time_from, day_time.min, tzinfo=UTC)
    end = datetime.combine(request.time_to, day_time.max, tzinfo=UTC)
    found: list[SourceScene] = []
    candidates = datacube.find_datasets_lazy(
        product=request.product, time=(start, end), lat=(latitudes.bottom, latitudes.top)
    )
    for dataset in candidates:
        if dataset.extent is None or dataset.is_archived:
            continue
        if not area.to_crs(dataset.extent.crs).intersects(dataset.extent):
            continue
        found.append(describe(dataset))
        if len(found) > limit:
            raise LimitExceeded(
                f"the request's area and period hold more than {limit:,} {request.product} "
                f"scenes; the limit is {limit:,} ({setting_name('max_jobs_per_request')}): "
                "send a smaller area or a shorter period"
            )
    return sorted(found, key=lambda scene: (scene.time, scene.dataset_id))

"""The eo3 dataset document and STAC item of one Landsat ARD scene.

Both say where and when the scene was seen and how (acquisition time, WRS-2 path and row, sun
angles, cloud cover, processing level, collection number and category, USGS's product and
scene ids), all read from the MTL, and point back to the USGS product: eo3 through `lineage`
(a uuid5 of the USGS product id; it is not itself a datacube dataset) and
`conveyor:source_url`, STAC through a `derived_from` link to the tarball it was fetched as.

Geometry comes from the MTL's corner coordinates: the eo3 `geometry` is the scene's grid on its
native UTM (or polar) CRS; the STAC footprint is that outline in lon/lat, split at the
antimeridian as product footprints are (Fiji's scenes straddle 180 degrees), with STAC's
west > east bounding box when it is split.

Every band shares one 30 m grid (`default`); paths in both documents are relative file names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

import pystac
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from pystac.extensions.view import ViewExtension

from services.worker.ard.bands import ConvertedBand
from services.worker.ard.landsat_bands import LandsatBand
from services.worker.ard.landsat_mtl import LandsatMetadata
from services.worker.ard.metadata import (
    DATASET_VERSION,
    LINEAGE_CLASSIFIER,
    PROCESSING_EXTENSION,
    PRODUCT_FAMILY,
)
from services.worker.outputs.cog import COG_MEDIA_TYPE
from services.worker.outputs.metadata import (
    EO3_SCHEMA,
    YAML_MEDIA_TYPE,
    apply_projection,
    crs_text,
    iso_utc,
    plain,
    wgs84_footprint,
)

# Ids of the USGS products ARD scenes are made from, stable across runs and workers.
USGS_PRODUCT_NAMESPACE = UUID("5d0f1c6a-8e3b-5b7e-9f42-3c1a7e9b2d60")
LANDSAT_EXTENSION = "https://stac-extensions.github.io/landsat/v2.0.0/schema.json"
GSD = 30.0


def usgs_product_id(product_id: str) -> UUID:
    return uuid5(USGS_PRODUCT_NAMESPACE, product_id)


@dataclass(frozen=True)
class Accessory:
    """A file of the scene that is not a band: USGS's MTL, ESPA's XML."""

    path: str
    media_type: str


@dataclass(frozen=True)
class LandsatDocuments:
    """Everything both documents need, gathered once."""

    product: str
    scene: str
    dataset_id: UUID
    metadata: LandsatMetadata
    bands: Sequence[ConvertedBand]
    sources: Mapping[str, LandsatBand]  # by measurement
    file_names: Mapping[str, str]
    accessories: Mapping[str, Accessory]
    processed: datetime
    source_url: str
    #: The surface-reflectance code, e.g. `LaSRC_1.4.1` (ESPA) or `LPGS_15.3.1c` (C2).
    algorithm: str | None = None


def scene_properties(facts: LandsatDocuments) -> dict[str, Any]:
    """Properties both documents share (STAC names; eo3 takes them as they are)."""
    metadata = facts.metadata
    properties: dict[str, Any] = {
        "view:sun_azimuth": round(metadata.sun_azimuth, 6),
        "view:sun_elevation": round(metadata.sun_elevation, 6),
        "processing:level": metadata.processing_level,
        "landsat:collection_category": metadata.collection_category,
        "landsat:landsat_product_id": metadata.product_id,
    }
    if metadata.cloud_cover is not None:
        properties["eo:cloud_cover"] = round(metadata.cloud_cover, 4)
    if metadata.cloud_cover_land is not None:
        properties["landsat:cloud_cover_land"] = round(metadata.cloud_cover_land, 4)
    if metadata.scene_id:
        properties["landsat:landsat_scene_id"] = metadata.scene_id
    if metadata.software_version:
        properties["landsat:processing_software_version"] = metadata.software_version
    if facts.algorithm:
        properties["landsat:algorithm_source_surface_reflectance"] = facts.algorithm
    return properties


def eo3_document(facts: LandsatDocuments) -> dict[str, Any]:
    """The eo3 dataset document the datacube indexes."""
    metadata = facts.metadata
    geobox = metadata.geobox
    properties: dict[str, Any] = {
        "datetime": iso_utc(metadata.acquired),
        "eo:platform": metadata.platform,
        "eo:instrument": metadata.sensor,
        "eo:gsd": GSD,
        # eo3's own names for the sun angles, which datacube's eo3 type searches on.
        "eo:sun_azimuth": round(metadata.sun_azimuth, 6),
        "eo:sun_elevation": round(metadata.sun_elevation, 6),
        "landsat:wrs_path": metadata.wrs_path,
        "landsat:wrs_row": metadata.wrs_row,
        "landsat:collection_number": metadata.collection,
        "odc:processing_datetime": iso_utc(facts.processed, "seconds"),
        "odc:product_family": PRODUCT_FAMILY,
        "odc:dataset_version": DATASET_VERSION,
        "odc:region_code": metadata.region_code,
        "odc:file_format": "GeoTIFF",
        "conveyor:source_url": facts.source_url,
        **scene_properties(facts),
    }
    return plain(  # type: ignore[no-any-return]
        {
            "$schema": EO3_SCHEMA,
            "id": str(facts.dataset_id),
            "label": facts.scene,
            "product": {"name": facts.product},
            "crs": crs_text(geobox),
            "geometry": plain(geobox.extent.json),
            "grids": {
                "default": {
                    "shape": list(geobox.shape.yx),
                    "transform": plain(list(geobox.transform)),
                }
            },
            "properties": properties,
            "measurements": {
                converted.band.measurement: {"path": facts.file_names[converted.band.measurement]}
                for converted in facts.bands
            },
            "accessories": {
                name: {"path": accessory.path, "type": accessory.media_type}
                for name, accessory in facts.accessories.items()
            },
            "lineage": {LINEAGE_CLASSIFIER: [str(usgs_product_id(metadata.product_id))]},
        }
    )


def _add_asset(item: pystac.Item, converted: ConvertedBand, facts: LandsatDocuments) -> None:
    """A COG asset: its raster encoding (Collection 2 reflectance is value x 0.0000275 - 0.2,
    as USGS's own STAC says) and, for reflectance, its band's common name and wavelength."""
    measurement = converted.band.measurement
    source = facts.sources[measurement]
    spec = source.spec
    asset = pystac.Asset(
        href=facts.file_names[measurement], media_type=COG_MEDIA_TYPE, roles=["data"],
        title=source.source,
    )  # fmt: skip
    # Extensions need the asset's owner to declare them on.
    item.add_asset(measurement, asset)
    RasterExtension.ext(asset, add_if_missing=True).apply(
        bands=[
            RasterBand.create(
                nodata=spec.nodata,
                data_type=DataType(spec.dtype),
                spatial_resolution=GSD,
                scale=source.scale,
                offset=source.offset,
            )
        ]
    )
    if source.common_name is not None:
        EOExtension.ext(asset, add_if_missing=True).apply(
            bands=[
                Band.create(
                    name=source.source,
                    common_name=source.common_name,
                    center_wavelength=source.wavelength_um,
                )
            ]
        )


def stac_item(facts: LandsatDocuments, self_href: str, metadata_name: str) -> dict[str, Any]:
    """The STAC item: one asset per COG, the MTL (and ESPA XML), links to eo3 and the tarball."""
    metadata = facts.metadata
    geobox = metadata.geobox
    geometry, bbox = wgs84_footprint(geobox.extent)
    properties: dict[str, Any] = {
        "created": iso_utc(facts.processed, "seconds"),
        "platform": metadata.platform,
        "instruments": [part.lower() for part in metadata.sensor.split("_")],
        "gsd": GSD,
        "landsat:wrs_type": "2",
        "landsat:wrs_path": f"{metadata.wrs_path:03d}",
        "landsat:wrs_row": f"{metadata.wrs_row:03d}",
        "landsat:collection_number": f"{metadata.collection:02d}",
        "landsat:correction": metadata.processing_level,
        "odc:product": facts.product,
        "odc:product_family": PRODUCT_FAMILY,
        "odc:region_code": metadata.region_code,
        "odc:dataset_version": DATASET_VERSION,
        "odc:file_format": "GeoTIFF",
        **scene_properties(facts),
    }
    if metadata.scene_id:
        properties["landsat:scene_id"] = metadata.scene_id
    item = pystac.Item(
        id=facts.scene,
        geometry=geometry,
        bbox=bbox,
        datetime=metadata.acquired,
        properties=properties,
    )
    apply_projection(item, geobox)
    for extension in (EOExtension, ViewExtension):
        extension.add_to(item)
    item.stac_extensions.extend([LANDSAT_EXTENSION, PROCESSING_EXTENSION])
    for converted in facts.bands:
        _add_asset(item, converted, facts)
    for name, accessory in facts.accessories.items():
        item.add_asset(
            name.replace(":", "_"),
            pystac.Asset(
                href=accessory.path, media_type=accessory.media_type, roles=["metadata"],
                title=name,
            ),
        )  # fmt: skip
    item.add_link(pystac.Link(rel="odc_yaml", target=metadata_name, media_type=YAML_MEDIA_TYPE))
    item.add_link(
        pystac.Link(rel="derived_from", target=facts.source_url, title=metadata.product_id)
    )
    item.set_self_href(self_href)
    return plain(item.to_dict(include_self_link=True, transform_hrefs=False))  # type: ignore[no-any-return]

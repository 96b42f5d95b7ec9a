"""The eo3 dataset document and STAC item of one ARD scene.

A scene's bands live on three grids (10, 20 and 60 m), which the outputs package's single-grid
documents cannot describe, so the scene has its own: eo3 with one named grid per resolution
(`default` is 10 m), and a STAC item whose assets each carry their own projection. Both carry
the scene's properties (sensing time, MGRS tile, relative orbit, processing baseline, cloud
cover, sun and view angles) and point back to the ESA L2A product they were made from: eo3
through `lineage` (a uuid5 of the ESA product name) and the `s2:product_uri` property, STAC
through a `derived_from` link to where the product was fetched.

Paths inside both documents are relative: every file of a scene shares one folder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

import pystac
from odc.geo.geobox import GeoBox
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.mgrs import MgrsExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from pystac.extensions.sat import OrbitState, SatExtension
from pystac.extensions.view import ViewExtension

from services.worker.ard.bands import ConvertedBand
from services.worker.ard.safe import SceneMetadata
from services.worker.outputs.cog import COG_MEDIA_TYPE
from services.worker.outputs.metadata import (
    EO3_SCHEMA,
    YAML_MEDIA_TYPE,
    crs_text,
    iso_utc,
    plain,
    wgs84_footprint,
)

# Ids of ARD datasets and of the ESA products they come from, stable across runs and workers.
ARD_NAMESPACE = UUID("0b6f3d2e-5c64-5b0e-9a57-6e2f6b1f0c2a")
ESA_PRODUCT_NAMESPACE = UUID("8a7b7d52-3c0c-5a7e-8f1e-1d0c6b9f4e11")
LINEAGE_CLASSIFIER = "level2"
DATASET_VERSION = "1.0.0"
PRODUCT_FAMILY = "ard"
XML_MEDIA_TYPE = "application/xml"
SENTINEL2_EXTENSION = "https://stac-extensions.github.io/sentinel-2/v1.0.0/schema.json"
PROCESSING_EXTENSION = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"


def ard_dataset_id(product: str, scene: str, version: str = DATASET_VERSION) -> UUID:
    """The same scene made into the same product always gets the same id (idempotent indexing)."""
    return uuid5(ARD_NAMESPACE, f"{product}\n{scene}\n{version}".lower())


def esa_product_id(product_uri: str) -> UUID:
    return uuid5(ESA_PRODUCT_NAMESPACE, product_uri.removesuffix(".SAFE"))


def grid_name(resolution: int) -> str:
    return "default" if resolution == 10 else f"g{resolution}m"


@dataclass(frozen=True)
class SceneDocuments:
    """Everything both documents need, gathered once."""

    product: str
    scene: str
    dataset_id: UUID
    metadata: SceneMetadata
    bands: Sequence[ConvertedBand]
    file_names: Mapping[str, str]
    accessories: Mapping[str, str]
    processed: datetime
    source_url: str
    product_href: str | None = None

    @property
    def default_geobox(self) -> GeoBox:
        return min(self.bands, key=lambda converted: converted.band.resolution).geobox

    def grids(self) -> dict[int, GeoBox]:
        return {converted.band.resolution: converted.geobox for converted in self.bands}


def _mgrs(tile: str) -> dict[str, Any]:
    return {
        "mgrs:utm_zone": int(tile[:2]),
        "mgrs:latitude_band": tile[2],
        "mgrs:grid_square": tile[3:],
    }


_QUALITY_PROPERTIES = {
    "NODATA_PIXEL_PERCENTAGE": "s2:nodata_pixel_percentage",
    "SATURATED_DEFECTIVE_PIXEL_PERCENTAGE": "s2:saturated_defective_pixel_percentage",
    "DARK_FEATURES_PERCENTAGE": "s2:dark_features_percentage",
    "CLOUD_SHADOW_PERCENTAGE": "s2:cloud_shadow_percentage",
    "VEGETATION_PERCENTAGE": "s2:vegetation_percentage",
    "NOT_VEGETATED_PERCENTAGE": "s2:not_vegetated_percentage",
    "WATER_PERCENTAGE": "s2:water_percentage",
    "UNCLASSIFIED_PERCENTAGE": "s2:unclassified_percentage",
    "MEDIUM_PROBA_CLOUDS_PERCENTAGE": "s2:medium_proba_clouds_percentage",
    "HIGH_PROBA_CLOUDS_PERCENTAGE": "s2:high_proba_clouds_percentage",
    "THIN_CIRRUS_PERCENTAGE": "s2:thin_cirrus_percentage",
    "SNOW_ICE_PERCENTAGE": "s2:snow_ice_percentage",
}


def scene_properties(facts: SceneDocuments) -> dict[str, Any]:
    """Properties both documents share (STAC names, which eo3 takes as they are)."""
    metadata = facts.metadata
    properties: dict[str, Any] = {
        "eo:cloud_cover": round(metadata.cloud_cover, 4),
        "view:sun_azimuth": round(metadata.sun_azimuth, 6),
        "view:sun_elevation": round(90 - metadata.sun_zenith, 6),
        "view:incidence_angle": round(metadata.view_zenith, 6),
        "view:azimuth": round(metadata.view_azimuth, 6),
        "sat:relative_orbit": metadata.relative_orbit,
        **_mgrs(metadata.mgrs_tile),
        "s2:product_uri": metadata.product_uri,
        "s2:product_type": metadata.product_type,
        "s2:processing_baseline": metadata.processing_baseline,
        "s2:generation_time": iso_utc(metadata.generation_time),
        "s2:datatake_id": metadata.datatake_id,
        "s2:granule_id": metadata.granule_id,
        "s2:datastrip_id": metadata.datastrip_id,
        "s2:tile_id": metadata.tile_id,
        "s2:mgrs_tile": metadata.mgrs_tile,
        "s2:boa_quantification_value": metadata.quantification_value,
        # Already applied to every band: the COGs hold reflectance x 10000, offset or not.
        "conveyor:boa_add_offset_applied": min(metadata.boa_add_offsets.values(), default=0),
    }
    if metadata.absolute_orbit is not None:
        properties["sat:absolute_orbit"] = metadata.absolute_orbit
    if metadata.orbit_direction:
        properties["sat:orbit_state"] = metadata.orbit_direction.lower()
    for source, target in _QUALITY_PROPERTIES.items():
        if source in metadata.image_quality:
            properties[target] = round(metadata.image_quality[source], 6)
    return properties


def eo3_document(facts: SceneDocuments) -> dict[str, Any]:
    """The eo3 dataset document the datacube indexes."""
    metadata = facts.metadata
    default = facts.default_geobox
    product: dict[str, Any] = {"name": facts.product}
    if facts.product_href:
        product["href"] = facts.product_href
    properties: dict[str, Any] = {
        "datetime": iso_utc(metadata.sensing_time),
        "eo:platform": metadata.platform,
        "eo:instrument": "MSI",
        "eo:constellation": "sentinel-2",
        "eo:gsd": 10.0,
        # eo3's own names for the sun angles, which datacube's eo3 type searches on.
        "eo:sun_azimuth": round(metadata.sun_azimuth, 6),
        "eo:sun_elevation": round(90 - metadata.sun_zenith, 6),
        "odc:processing_datetime": iso_utc(facts.processed, "seconds"),
        "odc:product_family": PRODUCT_FAMILY,
        "odc:dataset_version": DATASET_VERSION,
        "odc:region_code": metadata.mgrs_tile,
        "odc:file_format": "GeoTIFF",
        "conveyor:source_url": facts.source_url,
        **scene_properties(facts),
    }
    document: dict[str, Any] = {
        "$schema": EO3_SCHEMA,
        "id": str(facts.dataset_id),
        "label": facts.scene,
        "product": product,
        "crs": crs_text(default),
        "geometry": plain(default.extent.json),
        "grids": {
            grid_name(resolution): {
                "shape": list(geobox.shape.yx),
                "transform": plain(list(geobox.transform)),
            }
            for resolution, geobox in sorted(facts.grids().items())
        },
        "properties": properties,
        "measurements": {
            converted.band.measurement: _measurement(converted, facts.file_names)
            for converted in facts.bands
        },
        "accessories": {
            name: {"path": path, "type": XML_MEDIA_TYPE} for name, path in facts.accessories.items()
        },
        "lineage": {LINEAGE_CLASSIFIER: [str(esa_product_id(metadata.product_uri))]},
    }
    return plain(document)  # type: ignore[no-any-return]


def _measurement(converted: ConvertedBand, file_names: Mapping[str, str]) -> dict[str, str]:
    entry = {"path": file_names[converted.band.measurement]}
    if converted.band.resolution != 10:
        entry["grid"] = grid_name(converted.band.resolution)
    return entry


def _raster_nodata(nodata: float | int | None) -> float | str | None:
    if isinstance(nodata, float) and math.isnan(nodata):
        return "nan"
    return nodata


def _add_band_asset(item: pystac.Item, converted: ConvertedBand, href: str) -> None:
    band = converted.band
    asset = pystac.Asset(href=href, media_type=COG_MEDIA_TYPE, roles=["data"], title=band.label)
    item.add_asset(band.measurement, asset)
    raster = RasterBand.create(
        nodata=_raster_nodata(band.spec.nodata),  # type: ignore[arg-type]
        data_type=DataType(band.spec.dtype),
        spatial_resolution=float(band.resolution),
        scale=band.scale,
    )
    RasterExtension.ext(asset, add_if_missing=True).apply(bands=[raster])
    geobox = converted.geobox
    epsg = geobox.crs.epsg if geobox.crs is not None else None
    ProjectionExtension.ext(asset, add_if_missing=True).apply(
        code=f"EPSG:{epsg}" if epsg is not None else None,
        shape=list(geobox.shape.yx),
        transform=plain(list(geobox.transform)[:6]),
    )
    if band.common_name is not None:
        EOExtension.ext(asset, add_if_missing=True).apply(
            bands=[
                Band.create(
                    name=band.label.split("_")[0],
                    common_name=band.common_name,
                    center_wavelength=band.wavelength_um,
                )
            ]
        )


def stac_item(facts: SceneDocuments, self_href: str, metadata_name: str) -> dict[str, Any]:
    """The STAC item: one asset per COG, the ESA metadata, links to eo3 and the source."""
    metadata = facts.metadata
    # Split at the antimeridian as every product's footprint is (an MGRS tile may straddle it).
    geometry, bbox = wgs84_footprint(facts.default_geobox.extent)
    properties = {
        "created": iso_utc(facts.processed, "seconds"),
        "platform": metadata.platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "gsd": 10.0,
        "processing:level": "L2A",
        "odc:product": facts.product,
        "odc:product_family": PRODUCT_FAMILY,
        "odc:region_code": metadata.mgrs_tile,
        "odc:dataset_version": DATASET_VERSION,
        "odc:file_format": "GeoTIFF",
        **scene_properties(facts),
    }
    item = pystac.Item(
        id=facts.scene,
        geometry=geometry,
        bbox=bbox,
        datetime=metadata.sensing_time,
        properties=properties,
    )
    epsg = facts.default_geobox.crs.epsg if facts.default_geobox.crs is not None else None
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        code=f"EPSG:{epsg}" if epsg is not None else None,
        wkt2=None if epsg is not None else crs_text(facts.default_geobox),
    )
    for extension in (EOExtension, ViewExtension, SatExtension, MgrsExtension):
        extension.add_to(item)
    # The `s2:` and `processing:` fields: extensions pystac has no class for.
    item.stac_extensions.extend([SENTINEL2_EXTENSION, PROCESSING_EXTENSION])
    if metadata.orbit_direction:
        SatExtension.ext(item).orbit_state = OrbitState(metadata.orbit_direction.lower())
    for converted in facts.bands:
        _add_band_asset(item, converted, facts.file_names[converted.band.measurement])
    for name, path in facts.accessories.items():
        item.add_asset(
            name.replace(":", "_"),
            pystac.Asset(href=path, media_type=XML_MEDIA_TYPE, roles=["metadata"], title=name),
        )
    item.add_link(pystac.Link(rel="odc_yaml", target=metadata_name, media_type=YAML_MEDIA_TYPE))
    item.add_link(
        pystac.Link(
            rel="derived_from", target=facts.source_url, title=metadata.product_uri,
        )
    )  # fmt: skip
    item.set_self_href(self_href)
    return plain(item.to_dict(include_self_link=True, transform_hrefs=False))  # type: ignore[no-any-return]

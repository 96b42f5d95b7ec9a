"""The eo3 dataset document and STAC item of one scene's water classification.

Both describe one band, `water` (uint8 bit flags, nodata 1), on the source scene's own grid,
with the scene's time, footprint and platform, and point back to the scene: eo3 through
`lineage.inputs` (the source dataset's id, which the index has), STAC through a `derived_from`
link to the source's metadata document. Paths inside both are relative file names: every file
of a classification shares one folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import pystac
from pystac.extensions.raster import DataType, RasterBand, RasterExtension

from services.worker.outputs.cog import COG_MEDIA_TYPE
from services.worker.outputs.metadata import (
    EO3_SCHEMA,
    LINEAGE_CLASSIFIER,
    YAML_MEDIA_TYPE,
    apply_projection,
    crs_text,
    iso_utc,
    plain,
    wgs84_footprint,
)
from services.worker.water.layer import VERSION, WATER_BAND, WATER_SPEC
from services.worker.water.sources import SourceScene

PRODUCT_FAMILY = "wo"
#: eo3 labels and file stems: letters, digits, `_` and `-` (a label may hold anything).
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def safe_name(text: str) -> str:
    return "".join(char if char in _SAFE else "-" for char in text) or "scene"


@dataclass(frozen=True)
class Classification:
    """What both documents say about one scene's classification."""

    dataset_id: UUID
    product: str
    source: SourceScene
    file_name: str
    processed: datetime

    @property
    def label(self) -> str:
        return f"{self.product}_{safe_name(self.source.label)}"

    def properties(self) -> dict[str, Any]:
        """Properties both documents share (STAC names, which eo3 takes as they are)."""
        return {
            **self.source.properties,
            "odc:product_family": PRODUCT_FAMILY,
            "odc:dataset_version": VERSION,
            "odc:file_format": "GeoTIFF",
            "odc:processing_datetime": iso_utc(self.processed, "seconds"),
            "gsd": abs(self.source.geobox.resolution.x),
        }


def eo3_document(facts: Classification) -> dict[str, Any]:
    """The eo3 dataset document the datacube indexes."""
    geobox = facts.source.geobox
    footprint = facts.source.footprint
    if geobox.crs is not None and footprint.crs != geobox.crs:
        footprint = footprint.to_crs(geobox.crs)
    document: dict[str, Any] = {
        "$schema": EO3_SCHEMA,
        "id": str(facts.dataset_id),
        "label": facts.label,
        "product": {"name": facts.product},
        "crs": crs_text(geobox),
        "geometry": plain(footprint.json),
        "grids": {
            "default": {"shape": list(geobox.shape.yx), "transform": plain(list(geobox.transform))}
        },
        "properties": {"datetime": iso_utc(facts.source.time), **facts.properties()},
        "measurements": {WATER_BAND: {"path": facts.file_name}},
        "lineage": {LINEAGE_CLASSIFIER: [facts.source.dataset_id]},
    }
    return plain(document)  # type: ignore[no-any-return]


def stac_item(facts: Classification, self_href: str, metadata_name: str) -> dict[str, Any]:
    """The STAC item: the `water` asset, links to the eo3 document and to the source scene."""
    geobox = facts.source.geobox
    geometry, bbox = wgs84_footprint(facts.source.footprint)
    properties = {
        "created": iso_utc(facts.processed, "seconds"),
        "odc:product": facts.product,
        **facts.properties(),
    }
    platform = properties.pop("eo:platform", None)
    instrument = properties.pop("eo:instrument", None)
    if platform:
        properties["platform"] = platform
    if instrument:
        properties["instruments"] = [str(instrument).lower()]
    item = pystac.Item(
        id=facts.label,
        geometry=geometry,
        bbox=bbox,
        datetime=facts.source.time,
        properties=properties,
    )
    apply_projection(item, geobox)
    asset = pystac.Asset(
        href=facts.file_name, media_type=COG_MEDIA_TYPE, roles=["data"], title=WATER_BAND
    )
    item.add_asset(WATER_BAND, asset)
    RasterExtension.ext(asset, add_if_missing=True).apply(
        bands=[
            RasterBand.create(
                nodata=WATER_SPEC.nodata,
                data_type=DataType(WATER_SPEC.dtype),
                unit=WATER_SPEC.units,
                spatial_resolution=abs(geobox.resolution.x),
            )
        ]
    )
    item.add_link(pystac.Link(rel="odc_yaml", target=metadata_name, media_type=YAML_MEDIA_TYPE))
    item.add_link(
        pystac.Link(
            rel="derived_from",
            target=facts.source.uri or f"urn:uuid:{facts.source.dataset_id}",
            title=facts.source.dataset_id,
        )
    )
    item.set_self_href(self_href)
    return plain(item.to_dict(include_self_link=True, transform_hrefs=False))  # type: ignore[no-any-return]

"""The eo3 dataset document and the STAC item of a product dataset, and its eo3 product definition.

Paths inside both documents are relative (every file of a dataset shares one folder), so a
product can be copied or served from elsewhere without rewriting them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from uuid import UUID

import numpy as np
import pystac
import yaml
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension

from services.worker.outputs.cog import COG_MEDIA_TYPE
from services.worker.outputs.identity import source_uuids
from services.worker.outputs.naming import ProductLayout, basename
from services.worker.outputs.spec import BandSpec, OutputSpec
from shared.catalogue import INPUT_PRODUCTS

EO3_SCHEMA = "https://schemas.opendatacube.org/dataset"
GEOJSON_MEDIA_TYPE = "application/geo+json"
YAML_MEDIA_TYPE = "text/yaml"
LINEAGE_CLASSIFIER = "inputs"

# (eo:platform, eo:instrument) as eo3 spells them, by the ODC product the outputs came from.
PLATFORMS: dict[str, tuple[str, str]] = {
    name: (product.platform, product.instrument) for name, product in INPUT_PRODUCTS.items()
}

# STAC eo common band names, where our band names have one.
COMMON_NAMES: dict[str, str] = {
    "coastal_aerosol": "coastal",
    "blue": "blue",
    "green": "green",
    "red": "red",
    "veg_red_edge_1": "rededge",
    "veg_red_edge_2": "rededge",
    "veg_red_edge_3": "rededge",
    "nir": "nir",
    "narrow_nir": "nir08",
    "water_vapour": "nir09",
    "swir1": "swir16",
    "swir2": "swir22",
}


@dataclass(frozen=True)
class DatasetFacts:
    """What both documents say about one dataset."""

    spec: OutputSpec
    layout: ProductLayout
    geobox: GeoBox
    dataset_id: UUID
    bands: Mapping[str, BandSpec]
    vectors: Sequence[str]
    processed: datetime
    product_href: str

    @property
    def start(self) -> datetime:
        return datetime.combine(self.spec.period.start, time.min, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.spec.period.end, time.max, tzinfo=UTC)

    @property
    def epsg(self) -> int | None:
        crs = self.geobox.crs
        return None if crs is None else crs.epsg

    @property
    def label(self) -> str:
        # eo3 labels are [A-Za-z0-9_-]: legacy stems hold '.' in their numbers.
        return "".join(char if char.isalnum() or char in "_-" else "-" for char in self.layout.stem)


def platform_and_instrument(spec: OutputSpec) -> tuple[str | None, str | None]:
    known_platform, known_instrument = PLATFORMS.get(spec.source_product, (None, None))
    return spec.platform or known_platform, spec.instrument or known_instrument


def iso_utc(moment: datetime, timespec: str = "microseconds") -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def plain(value: Any) -> Any:
    """Tuples to lists and numpy scalars to Python, so that YAML and JSON take the document."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def crs_text(geobox: GeoBox) -> str:
    """`epsg:3460` (lower case, as eo3 prefers), or WKT when the CRS has no EPSG code."""
    crs = geobox.crs
    if crs is None:
        raise ValueError("the result has no CRS")
    return f"epsg:{crs.epsg}" if crs.epsg is not None else crs.to_wkt()


def _properties(facts: DatasetFacts) -> dict[str, Any]:
    spec = facts.spec
    platform, instrument = platform_and_instrument(spec)
    properties: dict[str, Any] = {
        "datetime": iso_utc(facts.start),
        "dtr:start_datetime": iso_utc(facts.start),
        "dtr:end_datetime": iso_utc(facts.end),
        "odc:processing_datetime": iso_utc(facts.processed, "seconds"),
        "odc:product_family": spec.product_family or spec.job_code,
        "odc:dataset_version": spec.version,
        "odc:region_code": spec.tile,
        "odc:file_format": "GeoTIFF",
    }
    if spec.producer:
        properties["odc:producer"] = spec.producer
    if platform:
        properties["eo:platform"] = platform
    if instrument:
        properties["eo:instrument"] = instrument
    if facts.epsg is not None:
        properties["proj:epsg"] = facts.epsg
    properties.update(spec.properties)
    return properties


def eo3_document(facts: DatasetFacts) -> dict[str, Any]:
    """The eo3 dataset document (datacube indexes it; eodatasets3 validates it)."""
    geobox = facts.geobox
    document: dict[str, Any] = {
        "$schema": EO3_SCHEMA,
        "id": str(facts.dataset_id),
        "label": facts.label,
        "product": {"name": facts.spec.product_name, "href": facts.product_href},
        "crs": crs_text(geobox),
        "geometry": plain(geobox.extent.json),
        "grids": {
            "default": {"shape": list(geobox.shape.yx), "transform": plain(list(geobox.transform))}
        },
        "properties": _properties(facts),
        "measurements": {
            band: {"path": basename(facts.layout.band_key(band))} for band in facts.bands
        },
        "lineage": {
            LINEAGE_CLASSIFIER: [str(source) for source in source_uuids(facts.spec.sources)]
        },
    }
    if facts.vectors:
        document["accessories"] = {
            f"vector:{name}": {
                "path": basename(facts.layout.vector_key(name)),
                "type": GEOJSON_MEDIA_TYPE,
            }
            for name in facts.vectors
        }
    return plain(document)  # type: ignore[no-any-return]


def apply_projection(item: pystac.Item, geobox: GeoBox) -> None:
    """STAC's projection extension on `item`: the grid's EPSG code (or its WKT2), shape and
    transform."""
    epsg = geobox.crs.epsg if geobox.crs is not None else None
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        code=f"EPSG:{epsg}" if epsg is not None else None,
        wkt2=None if epsg is not None else crs_text(geobox),
        shape=list(geobox.shape.yx),
        transform=plain(list(geobox.transform)[:6]),
    )


def wgs84_footprint(outline: Geometry) -> tuple[dict[str, Any], list[float]]:
    """A projected outline as a STAC geometry and bbox: in lon/lat, its vertices as they are,
    split at the antimeridian when it crosses it (STAC's bbox then has west > east)."""
    footprint = outline.to_crs("EPSG:4326", resolution=math.inf, wrapdateline=True)
    box = footprint.boundingbox
    bbox = [box.left, box.bottom, box.right, box.top]
    parts = list(getattr(footprint.geom, "geoms", [footprint.geom]))
    eastern = [part.bounds for part in parts if part.bounds[0] >= 0]
    western = [part.bounds for part in parts if part.bounds[2] <= 0]
    if eastern and western:
        # STAC's form for a box across the antimeridian: west edge > east edge.
        bbox = [min(b[0] for b in eastern), box.bottom, max(b[2] for b in western), box.top]
    return plain(footprint.json), bbox


def _raster_nodata(nodata: float | int | None) -> float | str | None:
    if nodata is None:
        return None
    if isinstance(nodata, float) and math.isnan(nodata):
        return "nan"
    return nodata


def _add_band_asset(item: pystac.Item, facts: DatasetFacts, band: str, band_spec: BandSpec) -> None:
    asset = pystac.Asset(
        href=basename(facts.layout.band_key(band)),
        media_type=COG_MEDIA_TYPE,
        roles=["data"],
        title=band,
    )
    # Extensions need the asset's owner to declare them on.
    item.add_asset(band, asset)
    RasterExtension.ext(asset, add_if_missing=True).apply(
        bands=[
            RasterBand.create(
                nodata=_raster_nodata(band_spec.nodata),  # type: ignore[arg-type]
                data_type=DataType(band_spec.dtype),
                unit=band_spec.units,
                spatial_resolution=abs(facts.geobox.resolution.x),
                scale=band_spec.scale,
                offset=band_spec.offset,
            )
        ]
    )
    common_name = COMMON_NAMES.get(band)
    if common_name is not None:
        EOExtension.ext(asset, add_if_missing=True).apply(
            bands=[Band.create(name=band, common_name=common_name)]
        )


def source_href(spec: OutputSpec, source: UUID) -> str:
    """Where a source dataset's metadata is; a `urn:uuid:` name when the worker did not say."""
    return spec.source_locations.get(str(source)) or f"urn:uuid:{source}"


def stac_item(facts: DatasetFacts, self_href: str) -> dict[str, Any]:
    """The STAC item: an asset per band and vector, linked to the eo3 document and its sources."""
    spec = facts.spec
    geometry, bbox = wgs84_footprint(facts.geobox.extent)
    platform, instrument = platform_and_instrument(spec)
    properties: dict[str, Any] = {
        "created": iso_utc(facts.processed, "seconds"),
        "odc:processing_datetime": iso_utc(facts.processed, "seconds"),
        "odc:product": spec.product_name,
        "odc:product_family": spec.product_family or spec.job_code,
        "odc:dataset_version": spec.version,
        "odc:region_code": spec.tile,
        "odc:file_format": "GeoTIFF",
    }
    if platform:
        properties["platform"] = platform
    if instrument:
        properties["instruments"] = [instrument.lower()]
    if spec.producer:
        properties["odc:producer"] = spec.producer
    properties.update(plain(spec.properties))
    item = pystac.Item(
        id=str(facts.dataset_id),
        geometry=geometry,
        bbox=bbox,
        datetime=facts.start,
        start_datetime=facts.start,
        end_datetime=facts.end,
        properties=properties,
    )
    apply_projection(item, facts.geobox)
    for band, band_spec in facts.bands.items():
        _add_band_asset(item, facts, band, band_spec)
    for name in facts.vectors:
        item.add_asset(
            name,
            pystac.Asset(
                href=basename(facts.layout.vector_key(name)),
                media_type=GEOJSON_MEDIA_TYPE,
                roles=["data"],
                title=name,
            ),
        )
    item.add_link(
        pystac.Link(
            rel="odc_yaml", target=basename(facts.layout.metadata_key), media_type=YAML_MEDIA_TYPE
        )
    )
    item.add_link(pystac.Link(rel="product_overview", target=facts.product_href))
    for source in source_uuids(spec.sources):
        item.add_link(
            pystac.Link(rel="derived_from", target=source_href(spec, source), title=str(source))
        )
    item.set_self_href(self_href)
    return plain(item.to_dict(include_self_link=True, transform_hrefs=False))  # type: ignore[no-any-return]


def product_definition(
    spec: OutputSpec, bands: Mapping[str, BandSpec], description: str | None = None
) -> dict[str, Any]:
    """An eo3 product definition for the outputs, so they can be indexed as their own product."""
    platform, _instrument = platform_and_instrument(spec)
    measurements = []
    for band, band_spec in bands.items():
        measurement: dict[str, Any] = {
            "name": band,
            "dtype": band_spec.dtype,
            "units": band_spec.units,
        }
        nodata = band_spec.nodata
        if nodata is not None:
            measurement["nodata"] = (
                "NaN" if isinstance(nodata, float) and math.isnan(nodata) else nodata
            )
        # datacube's measurement definition: value = stored * scale_factor + add_offset.
        if band_spec.scale is not None:
            measurement["scale_factor"] = band_spec.scale
            measurement["add_offset"] = band_spec.offset or 0.0
        measurements.append(measurement)
    metadata: dict[str, Any] = {"product": {"name": spec.product_name}}
    if platform:
        metadata["properties"] = {"eo:platform": platform}
    return {
        "name": spec.product_name,
        "description": description or f"{spec.job_code} of {spec.source_product}",
        "metadata_type": "eo3",
        "license": "CC-BY-4.0",
        "metadata": metadata,
        "measurements": measurements,
    }


def dump_yaml(document: Mapping[str, Any]) -> str:
    return yaml.safe_dump(
        dict(document), sort_keys=False, default_flow_style=False, allow_unicode=True
    )


def dump_json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, allow_nan=False)

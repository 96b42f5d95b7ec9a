"""The eo3 document, STAC item and product definition, checked offline by their own validators."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pystac
import pytest
from datacube.model import Product
from eodatasets3.validate import Level, validate_dataset
from odc.geo.geobox import GeoBox
from stac_pydantic import Item

from services.worker.outputs.identity import dataset_id
from services.worker.outputs.metadata import (
    DatasetFacts,
    eo3_document,
    product_definition,
    stac_item,
)
from services.worker.outputs.naming import layout_for
from services.worker.outputs.spec import BandSpec, OutputSpec
from tests.test_outputs_support import SOURCES, geomedian_spec, seed_legacy_spec, tile_geobox

PROCESSED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def facts_for(
    spec: OutputSpec, geobox: GeoBox | None = None, vectors: tuple[str, ...] = ()
) -> DatasetFacts:
    return DatasetFacts(
        spec=spec,
        layout=layout_for(spec),
        geobox=geobox or tile_geobox(),
        dataset_id=dataset_id(spec),
        bands=spec.bands,
        vectors=vectors,
        processed=PROCESSED,
        product_href="s3://bucket/prefix/ls8_geomedian",
    )


def problems(document: dict[str, Any]) -> list[str]:
    return [
        f"{message.code}: {message.reason}"
        for message in validate_dataset(document)
        if message.level in (Level.error, Level.warning)
    ]


def test_the_eo3_document_is_valid_and_says_what_odc_needs() -> None:
    document = eo3_document(facts_for(geomedian_spec(), vectors=("shoreline",)))

    assert problems(document) == []
    assert document["crs"] == "epsg:3460"
    assert document["grids"]["default"]["shape"] == [64, 64]
    assert document["product"] == {
        "name": "ls8_geomedian",
        "href": "s3://bucket/prefix/ls8_geomedian",
    }
    properties = document["properties"]
    assert properties["datetime"].startswith("2019-01-01T00:00:00")
    assert properties["dtr:start_datetime"].startswith("2019-01-01T00:00:00")
    assert properties["dtr:end_datetime"].startswith("2019-12-31T23:59:59")
    assert properties["odc:processing_datetime"] == "2026-01-02T03:04:05Z"
    assert properties["odc:product_family"] == "geomedian"
    assert properties["odc:region_code"] == "x022y036"
    assert (properties["eo:platform"], properties["eo:instrument"]) == ("landsat-8", "OLI_TIRS")
    assert properties["proj:epsg"] == 3460
    assert document["lineage"] == {"inputs": sorted(SOURCES)}
    assert document["accessories"]["vector:shoreline"]["path"].endswith("_shoreline.geojson")
    for band, measurement in document["measurements"].items():
        assert "/" not in measurement["path"] and measurement["path"].endswith(f"_{band}.tif")


@pytest.mark.parametrize(
    ("source_product", "platform"),
    [
        ("ls5_usgs_sr_scene", "landsat-5"),
        ("ls7_usgs_sr_scene", "landsat-7"),
        ("s2_esa_sr_granule", "sentinel-2a,sentinel-2b"),
    ],
)
def test_every_source_sensor_gives_a_valid_document(source_product: str, platform: str) -> None:
    document = eo3_document(facts_for(geomedian_spec(source_product=source_product)))

    assert problems(document) == []
    assert document["properties"]["eo:platform"] == platform


def test_legacy_documents_are_valid_eo3_too() -> None:
    document = eo3_document(facts_for(seed_legacy_spec()))

    assert problems(document) == []
    assert document["label"].startswith("ls8_geomedian_2019-01-01_2019-12-31_epsg3460_2130000-0_")


def test_the_stac_item_validates_offline_and_links_its_sources() -> None:
    spec = geomedian_spec(source_locations={SOURCES[1]: "file:///archive/scene.odc-metadata.yaml"})
    self_href = "s3://bucket/prefix/item.stac-item.json"

    item = stac_item(facts_for(spec, vectors=("shoreline",)), self_href)

    Item.model_validate(item)
    assert pystac.Item.from_dict(item).id == str(dataset_id(spec))
    assert item["properties"]["start_datetime"] == "2019-01-01T00:00:00Z"
    assert item["properties"]["proj:code"] == "EPSG:3460"
    red = item["assets"]["red"]
    assert red["roles"] == ["data"]
    assert red["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert red["raster:bands"][0]["nodata"] == -9999
    assert red["raster:bands"][0]["data_type"] == "int16"
    assert red["eo:bands"][0]["common_name"] == "red"
    assert item["assets"]["swir1"]["eo:bands"][0]["common_name"] == "swir16"
    assert "eo:bands" not in item["assets"]["count"]
    assert item["assets"]["shoreline"]["type"] == "application/geo+json"
    links = [(link["rel"], link["href"]) for link in item["links"]]
    assert ("self", self_href) in links
    assert ("odc_yaml", layout_for(spec).metadata_key.rsplit("/", 1)[-1]) in links
    assert ("derived_from", "file:///archive/scene.odc-metadata.yaml") in links
    assert ("derived_from", f"urn:uuid:{SOURCES[0]}") in links


def test_a_tile_across_the_antimeridian_gets_a_valid_wgs84_footprint() -> None:
    # In EPSG:3460 the antimeridian runs near x = 2.13e6 (the seed box starts at 179.995 W).
    crossing = GeoBox.from_bbox(
        (2_050_000.0, 3_500_000.0, 2_250_000.0, 3_600_000.0), "EPSG:3460", resolution=1000
    )

    item = stac_item(facts_for(geomedian_spec(), geobox=crossing), "s3://bucket/item.json")

    Item.model_validate(item)
    assert item["geometry"]["type"] == "MultiPolygon"
    west, _south, east, _north = item["bbox"]
    assert 179.0 < west < 180.0 and -180.0 < east < -178.0  # west > east: across the antimeridian


def test_float_bands_with_nan_nodata_are_described_for_stac_and_odc() -> None:
    spec = geomedian_spec(bands={"ndvi": BandSpec(dtype="float32", nodata=float("nan"))})

    item = stac_item(facts_for(spec), "s3://bucket/item.json")
    definition = product_definition(spec, spec.bands)

    Item.model_validate(item)
    assert item["assets"]["ndvi"]["raster:bands"][0]["nodata"] == "nan"
    assert definition["measurements"] == [
        {"name": "ndvi", "dtype": "float32", "units": "1", "nodata": "NaN"}
    ]
    Product.validate(definition)


def test_the_product_definition_validates_and_matches_the_documents() -> None:
    spec = geomedian_spec()
    definition = product_definition(spec, spec.bands)

    Product.validate(definition)
    assert definition["metadata_type"] == "eo3"
    assert [measurement["name"] for measurement in definition["measurements"]] == list(spec.bands)
    messages = validate_dataset(eo3_document(facts_for(spec)), product_definition=definition)
    assert [message for message in messages if message.level is Level.error] == []

"""Writing a product: COGs, STAC and eo3 to a directory and to S3, committed once, crash-safe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dask.array
import numpy as np
import pytest
import rasterio
import xarray as xr
import yaml
from eodatasets3.validate import Level, validate_dataset
from rio_cogeo.cogeo import cog_validate
from stac_pydantic import Item

from services.worker.outputs import (
    LocalDestination,
    OutputSpec,
    S3Destination,
    S3Settings,
    is_committed,
    layout_for,
    product_definition,
    write_product,
)
from services.worker.outputs.identity import dataset_id
from shared.errors import Permanent
from tests.test_outputs_support import (
    REFLECTANCE,
    SOURCES,
    bucket_name,
    geomedian_result,
    geomedian_spec,
    new_bucket,
    seed_legacy_spec,
)

SHORELINE = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"time": "2019"},
            "geometry": {
                "type": "LineString",
                "coordinates": [[2130100.0, 3500000.0], [2131000.0, 3501000.0]],
            },
        }
    ],
}


def validation_problems(document: dict[str, Any], **options: Any) -> list[str]:
    """eodatasets3's offline validator: errors and warnings (infos are advice, not faults)."""
    return [
        f"{message.level.name} {message.code}: {message.reason}"
        for message in validate_dataset(document, **options)
        if message.level in (Level.error, Level.warning)
    ]


def files_named(root: Path, pattern: str) -> list[Path]:
    return sorted(root.rglob(pattern))


def assert_band_reads_back(path: Path | str, expected: xr.DataArray, nodata: float) -> None:
    valid, errors, warnings = cog_validate(path, quiet=True)
    assert valid and not errors and not warnings, (errors, warnings)
    with rasterio.open(path) as cog:
        assert cog.nodata == nodata
        np.testing.assert_array_equal(cog.read(1), expected.values)


async def test_a_product_round_trips_through_a_local_directory(tmp_path: Path) -> None:
    result, spec = geomedian_result(), geomedian_spec()
    destination = LocalDestination(tmp_path)

    written = await write_product(result, {"shoreline": SHORELINE}, spec, destination)

    layout = layout_for(spec)
    assert not written.already_done
    assert written.keys[-1] == layout.metadata_key  # the commit marker is written last
    assert written.keys[-2] == layout.stac_key
    assert written.bytes_written == sum((tmp_path / key).stat().st_size for key in written.keys)
    assert await is_committed(spec, destination)
    for band, band_spec in spec.bands.items():
        assert_band_reads_back(tmp_path / layout.band_key(band), result[band], band_spec.nodata)  # type: ignore[arg-type]
    assert json.loads((tmp_path / layout.vector_key("shoreline")).read_text()) == SHORELINE

    document_path = tmp_path / layout.metadata_key
    document = yaml.safe_load(document_path.read_text())
    assert document["id"] == str(dataset_id(spec)) == str(written.dataset_id)
    assert (
        validation_problems(
            document,
            thorough=True,
            readable_location=document_path.as_uri(),
            product_definition=product_definition(spec, spec.bands),
        )
        == []
    )
    assert document["properties"]["odc:region_code"] == "x022y036"
    assert document["lineage"] == {"inputs": sorted(SOURCES)}
    assert document["measurements"]["red"]["path"] == Path(layout.band_key("red")).name

    item = json.loads((tmp_path / layout.stac_key).read_text())
    Item.model_validate(item)
    assert item["id"] == document["id"]
    assert set(item["assets"]) == {*spec.bands, "shoreline"}
    links = {link["rel"]: link["href"] for link in item["links"]}
    assert links["odc_yaml"] == document_path.name
    assert links["self"] == (tmp_path / layout.stac_key).as_uri()
    derived = sorted(link["title"] for link in item["links"] if link["rel"] == "derived_from")
    assert derived == sorted(SOURCES)
    west, south, east, north = item["bbox"]
    assert -180.0 < west < east < -179.9 and -21.6 < south < north < -21.4


@pytest.mark.usefixtures("aws_credentials")
async def test_a_product_round_trips_through_s3(s3_endpoint: str, tmp_path: Path) -> None:
    result = geomedian_result()
    spec = geomedian_spec(source_locations={SOURCES[0]: "s3://archive/ls8/scene-1.yaml"})
    settings = S3Settings(aws_s3_endpoint_url=s3_endpoint, aws_virtual_hosting=False)  # type: ignore[call-arg]
    async with S3Destination.from_settings(
        bucket_name(), settings, prefix="outputs"
    ) as destination:
        await new_bucket(destination)

        written = await write_product(result, {}, spec, destination)

        layout = layout_for(spec)
        assert await is_committed(spec, destination)
        assert written.metadata_url == f"s3://{destination.bucket}/outputs/{layout.metadata_key}"
        assert written.keys[-1] == layout.metadata_key
        client = await destination.client()
        head = await client.head_object(
            Bucket=destination.bucket, Key=f"outputs/{layout.band_key('red')}"
        )
        assert head["ContentType"].startswith("image/tiff")
        for band in ("red", "count"):
            local = tmp_path / f"{band}.tif"
            local.write_bytes(await destination.read_bytes(layout.band_key(band)))
            assert_band_reads_back(local, result[band], spec.bands[band].nodata)  # type: ignore[arg-type]
        document = yaml.safe_load(await destination.read_text(layout.metadata_key))
        assert validation_problems(document) == []
        item = json.loads(await destination.read_text(layout.stac_key))
        Item.model_validate(item)
        hrefs = {
            link["title"]: link["href"] for link in item["links"] if link["rel"] == "derived_from"
        }
        assert hrefs[SOURCES[0]] == "s3://archive/ls8/scene-1.yaml"
        assert hrefs[SOURCES[1]] == f"urn:uuid:{SOURCES[1]}"


def never_computed(template: xr.Dataset) -> xr.Dataset:
    """A dask-backed result that fails if anything computes it."""

    def refuse(block: np.ndarray) -> np.ndarray:
        raise AssertionError("the committed product was computed again")

    return template.map(
        lambda layer: layer.copy(
            data=dask.array.from_array(layer.values, chunks=32).map_blocks(
                refuse, dtype=layer.dtype
            )
        )
    )


async def test_a_second_write_of_a_committed_product_is_a_cheap_no_op(tmp_path: Path) -> None:
    spec = geomedian_spec()
    destination = LocalDestination(tmp_path)
    first = await write_product(geomedian_result(seed=1), {}, spec, destination)
    before = {key: (tmp_path / key).stat().st_mtime_ns for key in first.keys}

    again = await write_product(never_computed(geomedian_result(seed=2)), {}, spec, destination)

    assert again.already_done
    assert again.files == ()
    assert again.dataset_id == first.dataset_id
    assert again.metadata_url == first.metadata_url
    assert {key: (tmp_path / key).stat().st_mtime_ns for key in first.keys} == before


async def test_a_dask_backed_result_is_computed_and_written(tmp_path: Path) -> None:
    result = geomedian_result(seed=3)
    spec = geomedian_spec()

    await write_product(result.chunk({"x": 32, "y": 32}), {}, spec, LocalDestination(tmp_path))

    with rasterio.open(tmp_path / layout_for(spec).band_key("nir")) as cog:
        np.testing.assert_array_equal(cog.read(1), result["nir"].values)


def two_band_spec() -> OutputSpec:
    return geomedian_spec(bands={"red": REFLECTANCE, "green": REFLECTANCE})


def failing_after_first_band(result: xr.Dataset) -> xr.Dataset:
    """A result whose second band cannot be stored as declared: the write fails midway."""
    return result.assign(green=result["green"].astype("float64") * 1000.0)


async def test_a_crash_mid_write_leaves_no_committed_product_and_a_rerun_completes(
    tmp_path: Path,
) -> None:
    destination = LocalDestination(tmp_path)
    spec = two_band_spec()
    broken = failing_after_first_band(geomedian_result(seed=4))
    layout = layout_for(spec)

    with pytest.raises(Permanent, match="green"):
        await write_product(broken, {}, spec, destination)

    assert (tmp_path / layout.band_key("red")).exists()  # the first band made it
    assert not (tmp_path / layout.metadata_key).exists()
    assert not await is_committed(spec, destination)
    assert files_named(tmp_path, "*.partial") == []

    rerun = geomedian_result(seed=5)
    written = await write_product(rerun, {}, spec, destination)

    assert not written.already_done
    assert await is_committed(spec, destination)
    with rasterio.open(tmp_path / layout.band_key("red")) as cog:
        np.testing.assert_array_equal(cog.read(1), rerun["red"].values)  # overwritten


@pytest.mark.usefixtures("aws_credentials")
async def test_a_crash_mid_write_to_s3_leaves_no_committed_product(s3_endpoint: str) -> None:
    settings = S3Settings(aws_s3_endpoint_url=s3_endpoint, aws_virtual_hosting=False)  # type: ignore[call-arg]
    spec = two_band_spec()
    broken = failing_after_first_band(geomedian_result(seed=6))
    async with S3Destination.from_settings(bucket_name(), settings) as destination:
        await new_bucket(destination)

        with pytest.raises(Permanent):
            await write_product(broken, {}, spec, destination)

        assert await destination.exists(layout_for(spec).band_key("red"))
        assert not await is_committed(spec, destination)
        written = await write_product(geomedian_result(seed=7), {}, spec, destination)
        assert await is_committed(spec, destination)
        assert written.keys[-1] == layout_for(spec).metadata_key


async def test_the_seed_job_with_legacy_names_writes_the_original_files(tmp_path: Path) -> None:
    spec = seed_legacy_spec()

    written = await write_product(geomedian_result(), {}, spec, LocalDestination(tmp_path))

    stem = (
        "commonsensing/fiji/landsat_8_geomedian/2019/ls8_geomedian_2019-01-01_2019-12-31_"
        "epsg3460_2130000.0_3499700.0_2233300.0_3600300.0"
    )
    assert set(written.keys) == {
        *(f"{stem}_{band}.tif" for band in spec.bands),
        f"{stem}_stac-item.json",
        f"{stem}_datacube-metadata.yaml",
    }
    assert written.keys[-1] == f"{stem}_datacube-metadata.yaml"
    document_path = tmp_path / f"{stem}_datacube-metadata.yaml"
    document = yaml.safe_load(document_path.read_text())
    assert (
        validation_problems(document, thorough=True, readable_location=document_path.as_uri()) == []
    )


async def test_bands_the_product_declares_must_be_in_the_result(tmp_path: Path) -> None:
    result = geomedian_result().drop_vars(["swir1", "swir2"])

    with pytest.raises(Permanent, match="lacks bands swir1, swir2"):
        await write_product(result, {}, geomedian_spec(), LocalDestination(tmp_path))
    assert files_named(tmp_path, "*.tif") == []


async def test_a_result_in_another_crs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Permanent, match="EPSG:32760"):
        await write_product(
            geomedian_result(), {}, geomedian_spec(crs="EPSG:32760"), LocalDestination(tmp_path)
        )


async def test_without_declared_bands_every_variable_is_written_as_it_is(tmp_path: Path) -> None:
    spec = geomedian_spec(bands={})
    result = geomedian_result()

    written = await write_product(result, {}, spec, LocalDestination(tmp_path))

    tifs = [key for key in written.keys if key.endswith(".tif")]
    assert len(tifs) == len(result.data_vars)
    with rasterio.open(tmp_path / layout_for(spec).band_key("count")) as cog:
        assert (cog.dtypes[0], cog.nodata) == ("int16", -999)

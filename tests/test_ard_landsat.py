"""Landsat scenes through the ARD runner in-process: USGS tarballs in; COGs, eo3, STAC, index out.

Scenes come from the synthetic archive, packaged as USGS ships them (`devtools.archive.usgs`);
real PostgreSQL for the datacube (a database of this module's own) and moto's S3 server.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import rasterio
import yaml
from eodatasets3.validate import Level, validate_dataset
from odc.geo.geobox import GeoBox
from rio_cogeo.cogeo import cog_validate
from stac_pydantic import Item

from devtools.archive.scene_files import SceneRecord
from devtools.archive.synthetic import generate_archive
from devtools.archive.usgs import UsgsScene, write_usgs_scene
from services.worker.ard.errors import (
    BadSceneRequest,
    CorruptScene,
    SceneNotFound,
    UnsupportedCollection,
)
from services.worker.ard.index import SceneIndexer
from services.worker.ard.metadata import ard_dataset_id
from services.worker.ard.runner import SceneRunner
from services.worker.outputs.settings import S3Settings
from services.worker.settings import WorkerSettings
from shared.catalogue import product_definition
from shared.datacube import DatacubeSettings, add_products, init_index, open_datacube
from shared.jobs import SceneJob, scene_job
from shared.messages import SceneRequest, parse_request

PRODUCTS = [
    "ls5_usgs_sr_scene", "ls7_usgs_sr_scene", "ls8_usgs_sr_scene",
    "ls5_c2l2_sr", "ls7_c2l2_sr", "ls8_c2l2_sr", "ls9_c2l2_sr",
]  # fmt: skip
# About 11 km square beside Viti Levu, and one astride the antimeridian off Taveuni.
FIJI = (178.30, -17.60, 178.40, -17.50)
ANTIMERIDIAN = (179.92, -16.90, 180.08, -16.78)
JANUARY = (date(2019, 1, 1), date(2019, 1, 31))


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SceneRecord]:
    """One synthetic Landsat 8 scene of each area (the least cloudy of January 2019)."""
    root = tmp_path_factory.mktemp("synthetic")
    chosen: dict[str, SceneRecord] = {}
    for label, box in (("fiji", FIJI), ("antimeridian", ANTIMERIDIAN)):
        found = generate_archive("ls8_usgs_sr_scene", box, *JANUARY, root, processes=1)
        chosen[label] = max(
            found, key=lambda r: (r.geobox.shape[0] * r.geobox.shape[1], -r.cloud_cover)
        )
    return chosen


@pytest.fixture(scope="module")
def datacube_settings(fresh_database: Any) -> DatacubeSettings:
    settings = DatacubeSettings(db_url=fresh_database("landsat_ard"))  # type: ignore[arg-type]
    init_index(settings)
    cube = open_datacube(settings)
    add_products(cube, PRODUCTS)
    cube.close()
    return settings


@pytest.fixture
def datacube(datacube_settings: DatacubeSettings) -> Iterator[Any]:
    cube = open_datacube(datacube_settings)
    yield cube
    cube.close()


@pytest.fixture
def indexer(datacube_settings: DatacubeSettings) -> Iterator[SceneIndexer]:
    scene_indexer = SceneIndexer(lambda: open_datacube(datacube_settings))
    yield scene_indexer
    scene_indexer.close()


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    folders = {name: tmp_path / name for name in ("archive", "scratch", "output")}
    for folder in folders.values():
        folder.mkdir()
    return folders


def runner_for(
    places: dict[str, Path], indexer: SceneIndexer | None = None, **overrides: Any
) -> SceneRunner:
    values: dict[str, Any] = {
        "pool": "ard",
        "scratch_root": places["scratch"],
        "ard_source": str(places["archive"]),
        "ard_output_url": str(places["output"]),
        "dask_threads": 2,
    }
    return SceneRunner(WorkerSettings(**(values | overrides)), indexer=indexer)


def job_for(name: str, places: dict[str, Path], **fields: str) -> SceneJob:
    body = {
        "in_scene": name,
        "inter_dir": str(places["scratch"]),
        "s3_dir": "fiji/landsat/",
        **fields,
    }
    request, _ignored = parse_request(body)
    assert isinstance(request, SceneRequest)
    return scene_job(request)


def folder_of(places: dict[str, Path], name: str) -> Path:
    return places["output"] / "fiji" / "landsat" / name


def leftovers(places: dict[str, Path]) -> list[str]:
    return sorted(str(path.relative_to(places["scratch"])) for path in places["scratch"].rglob("*"))


def loaded(cube: Any, dataset_id: str, scene: UsgsScene, measurement: str) -> np.ndarray:
    dataset = cube.index.datasets.get(dataset_id)
    data = cube.load(datasets=[dataset], measurements=[measurement], like=scene.geobox)
    return np.asarray(data[measurement][0])


def documents(folder: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    eo3 = yaml.safe_load((folder / f"{name}.odc-metadata.yaml").read_text())
    stac = json.loads((folder / f"{name}.stac-item.json").read_text())
    return eo3, stac


def assert_valid(eo3: dict[str, Any], stac: dict[str, Any]) -> None:
    errors = [
        message
        for message in validate_dataset(
            eo3, product_definition=product_definition(eo3["product"]["name"])
        )
        if message.level == Level.error
    ]
    assert not errors, errors
    Item.model_validate(stac)


async def test_a_collection_2_tarball_becomes_cogs_metadata_and_an_index_entry(
    records: dict[str, SceneRecord], places: dict[str, Path], indexer: SceneIndexer, datacube: Any
) -> None:
    scene = write_usgs_scene(
        records["fiji"], places["archive"], collection=2, processed=date(2020, 8, 1)
    )
    assert scene.path.name == f"{scene.name}.tar"

    outcome = await runner_for(places, indexer).run(job_for(scene.name, places))

    assert outcome.state == "done"
    folder = folder_of(places, scene.name)
    eo3, stac = documents(folder, scene.name)
    assert_valid(eo3, stac)
    assert eo3["product"]["name"] == "ls8_c2l2_sr"
    assert eo3["crs"] == "epsg:32660"  # USGS's northern zone, south of the equator
    properties = eo3["properties"]
    assert properties["odc:region_code"] == scene.region_code
    assert properties["landsat:wrs_path"] == int(scene.region_code[:3])
    assert properties["processing:level"] == "L2SP"
    assert properties["landsat:collection_category"] == "T1"
    assert properties["landsat:collection_number"] == 2
    assert properties["datetime"].startswith(scene.acquired.strftime("%Y-%m-%dT%H:%M:%S"))
    assert properties["eo:cloud_cover"] == pytest.approx(records["fiji"].cloud_cover, abs=0.01)
    assert set(eo3["measurements"]) == {
        "coastal", "blue", "green", "red", "nir08", "swir16", "swir22", "qa_pixel", "qa_radsat",
        "qa_aerosol",
    }  # fmt: skip
    assert eo3["accessories"]["metadata:mtl"]["path"] == f"{scene.name}_MTL.txt"
    red = stac["assets"]["red"]
    assert red["raster:bands"][0]["scale"] == 2.75e-05
    assert red["raster:bands"][0]["offset"] == -0.2
    assert red["eo:bands"][0]["common_name"] == "red"
    derived = [link for link in stac["links"] if link["rel"] == "derived_from"]
    assert derived[0]["href"].endswith(f"{scene.name}.tar")
    assert cog_validate(str(folder / f"{scene.name}_SR_B4.tif"))[0]

    dataset_id = str(ard_dataset_id("ls8_c2l2_sr", scene.name))
    assert datacube.index.datasets.has(dataset_id)
    for measurement, band in (("red", "SR_B4"), ("nir08", "SR_B5"), ("qa_pixel", "QA_PIXEL")):
        np.testing.assert_array_equal(
            loaded(datacube, dataset_id, scene, measurement), scene.values[band], err_msg=band
        )
    assert leftovers(places) == []


async def test_a_collection_1_espa_order_keeps_the_original_products_measurements(
    records: dict[str, SceneRecord], places: dict[str, Path], indexer: SceneIndexer, datacube: Any
) -> None:
    scene = write_usgs_scene(
        records["fiji"], places["archive"], collection=1, processed=date(2019, 3, 1)
    )
    assert scene.path.name == f"{scene.name}.tar.gz"

    outcome = await runner_for(places, indexer).run(job_for(scene.name, places))

    assert outcome.state == "done"
    folder = folder_of(places, scene.name)
    eo3, stac = documents(folder, scene.name)
    assert_valid(eo3, stac)
    assert eo3["product"]["name"] == "ls8_usgs_sr_scene"
    assert eo3["properties"]["processing:level"] == "L1TP"
    assert eo3["properties"]["landsat:algorithm_source_surface_reflectance"] == "LaSRC_1.4.1"
    assert {"coastal_aerosol", "radsat_qa", "sr_aerosol"} <= set(eo3["measurements"])
    assert (folder / f"{scene.name}.xml").is_file()
    dataset_id = str(ard_dataset_id("ls8_usgs_sr_scene", scene.name))
    # OLI: sr_band2 is blue, sr_band5 near infrared; values x 10000, nodata -9999, as delivered.
    for measurement, band in (("blue", "sr_band2"), ("nir", "sr_band5"), ("pixel_qa", "pixel_qa")):
        np.testing.assert_array_equal(
            loaded(datacube, dataset_id, scene, measurement), scene.values[band], err_msg=band
        )
    np.testing.assert_array_equal(scene.values["sr_band4"], scene.source_values["red"])


@pytest.mark.parametrize(
    ("platform", "collection", "product", "blue_file"),
    [
        ("landsat-7", 1, "ls7_usgs_sr_scene", "sr_band1"),
        ("landsat-5", 2, "ls5_c2l2_sr", "SR_B1"),
        ("landsat-9", 2, "ls9_c2l2_sr", "SR_B2"),
    ],
)
async def test_each_mission_goes_to_its_own_product_with_its_band_numbers(
    records: dict[str, SceneRecord], places: dict[str, Path], indexer: SceneIndexer, datacube: Any,
    platform: str, collection: int, product: str, blue_file: str,
) -> None:  # fmt: skip
    scene = write_usgs_scene(
        records["fiji"], places["archive"], collection=collection, platform=platform,
        processed=date(2021, 1, 1),
    )  # fmt: skip

    outcome = await runner_for(places, indexer).run(job_for(scene.name, places))

    assert outcome.state == "done"
    eo3, stac = documents(folder_of(places, scene.name), scene.name)
    assert_valid(eo3, stac)
    assert eo3["product"]["name"] == product
    assert eo3["properties"]["eo:platform"] == platform
    assert eo3["measurements"]["blue"]["path"] == f"{scene.name}_{blue_file}.tif"
    dataset_id = str(ard_dataset_id(product, scene.name))
    np.testing.assert_array_equal(
        loaded(datacube, dataset_id, scene, "blue"), scene.values[blue_file]
    )


async def test_a_scene_across_the_antimeridian_has_its_footprint_split_at_180_degrees(
    records: dict[str, SceneRecord], places: dict[str, Path], indexer: SceneIndexer, datacube: Any
) -> None:
    scene = write_usgs_scene(
        records["antimeridian"], places["archive"], collection=2, processed=date(2020, 8, 2)
    )

    outcome = await runner_for(places, indexer).run(job_for(scene.name, places))

    assert outcome.state == "done"
    eo3, stac = documents(folder_of(places, scene.name), scene.name)
    assert_valid(eo3, stac)
    assert eo3["crs"] == "epsg:32601"
    assert stac["geometry"]["type"] == "MultiPolygon"
    west, south, east, north = stac["bbox"]
    assert west > 179.8 and east < -179.8  # STAC's form for a box across the antimeridian
    longitudes = [lon for part in stac["geometry"]["coordinates"] for lon, _lat in part[0]]
    assert max(longitudes) == 180.0 and min(longitudes) == -180.0
    found = datacube.find_datasets(product="ls8_c2l2_sr", lat=(south, north))
    assert str(ard_dataset_id("ls8_c2l2_sr", scene.name)) in {str(d.id) for d in found}


async def test_an_unpacked_scene_folder_and_a_non_usgs_reflectance_scaling_are_handled(
    records: dict[str, SceneRecord], places: dict[str, Path]
) -> None:
    scene = write_usgs_scene(
        records["fiji"],
        places["archive"],
        collection=2,
        packaging="folder",
        processed=date(2020, 8, 3),
    )
    mtl = scene.path / f"{scene.name}_MTL.txt"
    # Band 4 as if stored at twice USGS's step: the same reflectance needs half the numbers.
    text = mtl.read_text().replace(
        "REFLECTANCE_MULT_BAND_4 = 2.75E-05", "REFLECTANCE_MULT_BAND_4 = 5.5E-05"
    )
    text = text.replace("REFLECTANCE_ADD_BAND_4 = -0.2", "REFLECTANCE_ADD_BAND_4 = -0.4")
    mtl.write_text(text)
    halved = scene.path / f"{scene.name}_SR_B4.TIF"
    with rasterio.open(halved, "r+") as band:
        numbers = band.read(1)
        band.write(
            np.where(numbers == 0, 0, (numbers.astype(np.int64) + 7273) // 2).astype("uint16"), 1
        )

    outcome = await runner_for(places).run(job_for(scene.name, places))

    assert outcome.state == "done"
    with rasterio.open(folder_of(places, scene.name) / f"{scene.name}_SR_B4.tif") as written:
        red = written.read(1)
    original = scene.values["SR_B4"].astype(np.int64)
    # Re-encoded to the product's 0.0000275 / -0.2; the coarser step loses at most one DN.
    assert np.abs(red - original).max() <= 1
    assert ((red == 0) == (original == 0)).all()


async def test_a_scene_in_an_s3_archive_is_fetched_as_a_tarball(
    records: dict[str, SceneRecord], places: dict[str, Path], s3_endpoint: str,
    aws_credentials: None, tmp_path: Path,
) -> None:  # fmt: skip
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="usgs-archive")
    scene = write_usgs_scene(
        records["fiji"], tmp_path / "made", collection=2, processed=date(2020, 8, 4)
    )
    s3.upload_file(str(scene.path), "usgs-archive", f"landsat/{scene.path.name}")
    runner = runner_for(places, ard_source="s3://usgs-archive/landsat")
    runner.s3_settings = S3Settings(aws_s3_endpoint_url=s3_endpoint, aws_region="us-east-1")

    outcome = await runner.run(job_for(scene.name, places))

    assert outcome.state == "done"
    eo3, _stac = documents(folder_of(places, scene.name), scene.name)
    assert eo3["properties"]["conveyor:source_url"] == f"s3://usgs-archive/landsat/{scene.name}.tar"
    assert leftovers(places) == []


# -- what cannot be made -------------------------------------------------------------------


async def test_a_scene_not_in_the_archive_names_what_was_looked_for_and_where(
    places: dict[str, Path],
) -> None:
    name = "LC08_L2SP_074072_20190110_20200801_02_T1"
    with pytest.raises(SceneNotFound) as raised:
        await runner_for(places).run(job_for(name, places))
    message = str(raised.value)
    assert f"{name}.tar or {name}.tar.gz" in message
    assert f"{name}/" in message
    assert str(places["archive"]) in message


async def test_a_level_1_collection_2_name_is_refused_before_anything_is_fetched(
    places: dict[str, Path],
) -> None:
    with pytest.raises(UnsupportedCollection) as raised:
        await runner_for(places).run(job_for("LC08_L1TP_074072_20190110_20190120_02_T1", places))
    message = str(raised.value)
    assert "Level-1 download" in message
    assert "LC08_L2SP_074072_20190110_<processing date>_02_<category>" in message
    assert leftovers(places) == []


async def test_a_level_1_only_collection_1_download_is_refused_after_looking_inside(
    records: dict[str, SceneRecord], places: dict[str, Path]
) -> None:
    scene = write_usgs_scene(
        records["fiji"], places["archive"], collection=1, level1=True, processed=date(2019, 3, 2)
    )
    with pytest.raises(UnsupportedCollection, match=r"no ESPA .*xml or sr_band files"):
        await runner_for(places).run(job_for(scene.name, places))
    assert leftovers(places) == []
    assert not list(places["output"].rglob("*.odc-metadata.yaml"))


@pytest.mark.parametrize(
    ("scene", "reason"),
    [
        ("LM05_L1TP_074072_19900110_20200801_02_T1", "MSS scene"),
        (
            "LT04_L2SP_074072_19900110_20200801_02_T1",
            "no surface-reflectance product here for Landsat 4",
        ),
        ("LC09_L1TP_074072_20220110_20220111_01_T1", "Landsat 9 Collection 1"),
        ("LT08_L2SP_074072_20190110_20200801_02_T1", "TIRS-only"),
    ],
)
async def test_missions_without_a_product_here_are_an_unsupported_collection(
    places: dict[str, Path], scene: str, reason: str
) -> None:
    with pytest.raises(UnsupportedCollection, match=reason):
        await runner_for(places).run(job_for(scene, places))


async def test_a_level_2_name_in_collection_1_is_an_invalid_request(
    places: dict[str, Path],
) -> None:
    with pytest.raises(BadSceneRequest, match="Level-2 \\(L2SP\\) is Collection 2"):
        await runner_for(places).run(job_for("LC08_L2SP_074072_20190110_20200801_01_T1", places))


async def test_a_corrupt_band_in_the_tarball_is_named(
    records: dict[str, SceneRecord], places: dict[str, Path]
) -> None:
    scene = write_usgs_scene(
        records["fiji"],
        places["archive"],
        collection=2,
        packaging="folder",
        processed=date(2020, 8, 5),
    )
    broken = scene.path / f"{scene.name}_SR_B5.TIF"
    broken.write_bytes(broken.read_bytes()[:300])
    with tarfile.open(places["archive"] / f"{scene.name}.tar", "w") as archive:
        for path in sorted(scene.path.iterdir()):
            archive.add(path, arcname=path.name)
    # The tarball comes first among the candidates; the folder must not be what is read.
    (scene.path / f"{scene.name}_SR_B5.TIF").unlink()

    with pytest.raises(CorruptScene, match=f"{scene.name}_SR_B5.TIF is corrupt"):
        await runner_for(places).run(job_for(scene.name, places))
    assert leftovers(places) == []


async def test_a_truncated_tarball_and_a_missing_mtl_are_corrupt_scenes(
    records: dict[str, SceneRecord], places: dict[str, Path]
) -> None:
    cut = write_usgs_scene(
        records["fiji"], places["archive"], collection=1, processed=date(2019, 3, 3)
    )
    cut.path.write_bytes(cut.path.read_bytes()[:5000])
    with pytest.raises(CorruptScene, match=f"{cut.name}.tar.gz is not a readable tar archive"):
        await runner_for(places).run(job_for(cut.name, places))

    bare = write_usgs_scene(
        records["fiji"],
        places["archive"],
        collection=2,
        packaging="folder",
        processed=date(2020, 8, 6),
    )
    (bare.path / f"{bare.name}_MTL.txt").unlink()
    with pytest.raises(CorruptScene, match=f"the product has no {bare.name}_MTL.txt"):
        await runner_for(places).run(job_for(bare.name, places))
    assert leftovers(places) == []


def hostile_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(path, "w") as archive:
        archive.addfile(member, io.BytesIO(data) if data else None)


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (tarfile.TarInfo("../escaped_MTL.txt"), "would be written outside the scene"),
        (tarfile.TarInfo("/etc/escaped"), "would be written outside the scene"),
    ],
)
async def test_tarball_members_outside_the_scene_are_refused(
    places: dict[str, Path], member: tarfile.TarInfo, reason: str
) -> None:
    name = "LC08_L2SP_074072_20190110_20200807_02_T1"
    member.size = 4
    hostile_tar(places["archive"] / f"{name}.tar", member, b"evil")
    with pytest.raises(CorruptScene, match=reason):
        await runner_for(places).run(job_for(name, places))
    assert not (places["scratch"].parent / "escaped_MTL.txt").exists()
    assert leftovers(places) == []


async def test_a_tarball_with_a_link_member_is_refused_whole(places: dict[str, Path]) -> None:
    name = "LC08_L2SP_074072_20190110_20200808_02_T1"
    link = tarfile.TarInfo(f"{name}_MTL.txt")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    hostile_tar(places["archive"] / f"{name}.tar", link)
    with pytest.raises(CorruptScene, match=f"member {name}_MTL.txt is a link, not a file"):
        await runner_for(places).run(job_for(name, places))
    assert leftovers(places) == []


def test_the_geobox_of_the_written_scene_is_the_mtls(
    records: dict[str, SceneRecord], tmp_path: Path
) -> None:
    scene = write_usgs_scene(records["fiji"], tmp_path, collection=2, packaging="folder")
    with rasterio.open(scene.path / f"{scene.name}_SR_B4.TIF") as band:
        assert GeoBox(band.shape, band.transform, band.crs) == scene.geobox
    left, top = scene.geobox.transform.c, scene.geobox.transform.f
    assert left % 30 == 0 and top % 30 == 0  # USGS's whole cells of the northern zone

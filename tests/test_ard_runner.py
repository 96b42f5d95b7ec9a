"""The ARD scene runner in-process: synthetic SAFE scenes in, COGs + eo3 + STAC + index out.

Real PostgreSQL for the datacube and moto's S3 server; scenes are 60-240 px so each runs in a
second or two.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from collections.abc import Iterator
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

from devtools.archive.catalogue import product_definition
from devtools.archive.safe import (
    SEED_SCENE_NAME,
    SyntheticScene,
    variant_name,
    write_safe,
    zip_safe,
)
from services.worker.ard.errors import (
    BadSceneRequest,
    CorruptScene,
    SceneNotFound,
    Sen2CorNotConfigured,
)
from services.worker.ard.index import SceneIndexer
from services.worker.ard.metadata import ard_dataset_id
from services.worker.ard.runner import SceneRunner
from services.worker.outputs.settings import S3Settings
from services.worker.settings import WorkerSettings
from shared.datacube import DatacubeSettings, add_products, init_index, open_datacube
from shared.destinations import NotAllowed
from shared.errors import InvalidRequest, Permanent
from shared.jobs import SceneJob, scene_job
from shared.messages import SceneRequest, parse_request

REPO = Path(__file__).resolve().parents[1]
PRODUCT = "s2_esa_sr_granule"
SIZE = 120


def unique_name(number: int, *, level: str = "L2A", baseline: str = "0213") -> str:
    """Scene names distinct per test: dataset ids follow names, and the index is shared."""
    return variant_name(
        SEED_SCENE_NAME, level=level, baseline=baseline, discriminator=f"20190813T01{number:02d}08"
    )


ARD_DATABASE = "ard_tests"


@pytest.fixture(scope="module")
def ard_db_url(postgres_url: str) -> str:
    """A database of its own on the test server: ARD datasets never meet other tests' queries."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(postgres_url)
    with psycopg.connect(
        server.set(drivername="postgresql").render_as_string(hide_password=False),
        autocommit=True,
    ) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (ARD_DATABASE,)
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{ARD_DATABASE}"')
    return server.set(database=ARD_DATABASE).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def datacube_settings(ard_db_url: str) -> DatacubeSettings:
    settings = DatacubeSettings(db_url=ard_db_url)  # type: ignore[arg-type]
    init_index(settings)
    cube = open_datacube(settings)
    add_products(cube, [PRODUCT])
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


def worker_settings(places: dict[str, Path], **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "pool": "ard",
        "scratch_root": places["scratch"],
        "ard_source": str(places["archive"]),
        "ard_output_url": str(places["output"]),
        "dask_threads": 2,
        "sen2cor_command": None,
    }
    values.update(overrides)
    return WorkerSettings(**values)


def job_for(name: str, inter_dir: Path | str, **fields: str) -> SceneJob:
    request, _ignored = parse_request({"in_scene": name, "inter_dir": str(inter_dir), **fields})
    assert isinstance(request, SceneRequest)
    return scene_job(request)


def scene_folder(places: dict[str, Path], name: str) -> Path:
    return places["output"] / "fiji" / "Sentinel_2_test" / name


def leftovers(places: dict[str, Path]) -> list[str]:
    return sorted(str(p.relative_to(places["scratch"])) for p in places["scratch"].rglob("*"))


def load_like(
    cube: Any, dataset_id: str, truth_scene: SyntheticScene, resolution: int, bands: list[str]
) -> Any:
    truth = truth_scene.truth
    shape = truth.at(bands[0]).shape
    geobox = GeoBox(shape, truth.transforms[resolution], truth.crs)
    dataset = cube.index.datasets.get(dataset_id)
    return cube.load(datasets=[dataset], measurements=bands, like=geobox)


async def test_l2a_scene_with_offsets_becomes_cogs_documents_and_an_index_entry_equal_to_truth(
    places: dict[str, Path], indexer: SceneIndexer, datacube: Any
) -> None:
    name = unique_name(1, baseline="0509")
    scene = write_safe(places["archive"], name=name, size=SIZE, seed=11)
    runner = SceneRunner(worker_settings(places), indexer=indexer)

    outcome = await runner.run(job_for(name, places["scratch"] / "intermediate"))

    assert outcome.state == "done"
    folder = scene_folder(places, name)
    assert (folder / f"{name}_B04_10m.tif").is_file()
    assert (folder / f"{name}_NDVI_10m.tif").is_file()
    assert (folder / f"{name}_SCL_20m.tif").is_file()
    assert (folder / f"{name}.odc-metadata.yaml").is_file()
    assert leftovers(places) == ["intermediate"]

    is_cog, problems, _warnings = cog_validate(str(folder / f"{name}_B8A_20m.tif"))
    assert is_cog, problems
    with rasterio.open(folder / f"{name}_B8A_20m.tif") as band:
        assert band.nodata == 0
        assert band.res == (20.0, 20.0)
        assert np.array_equal(band.read(1), scene.truth.at("narrow_nir"))

    dataset_id = str(ard_dataset_id(PRODUCT, name))
    assert outcome.detail["dataset_id"] == dataset_id
    ten = load_like(datacube, dataset_id, scene, 10, ["blue", "green", "red", "nir"])
    for band in ("blue", "green", "red", "nir"):
        assert np.array_equal(ten[band].values[0], scene.truth.at(band)), band
    twenty = load_like(
        datacube,
        dataset_id,
        scene,
        20,
        ["veg_red_edge_1", "swir1", "swir2", "scene_classification"],
    )
    for band in ("veg_red_edge_1", "swir1", "swir2", "scene_classification"):
        assert np.array_equal(twenty[band].values[0], scene.truth.at(band)), band
    sixty = load_like(datacube, dataset_id, scene, 60, ["coastal_aerosol", "water_vapour"])
    assert np.array_equal(sixty.coastal_aerosol.values[0], scene.truth.at("coastal_aerosol"))

    red = scene.truth.at("red").astype(float)
    nir = scene.truth.at("nir").astype(float)
    with rasterio.open(folder / f"{name}_NDVI_10m.tif") as band:
        stored = band.read(1)
        assert band.nodata == -9999
    valid = (red > 0) & (nir > 0)
    expected = np.rint((nir - red) / np.where(valid, nir + red, 1) * 10000)
    assert np.array_equal(stored[valid], expected[valid])
    assert (stored[~valid] == -9999).all()


async def test_documents_carry_the_scene_properties_and_validate(
    places: dict[str, Path],
) -> None:
    name = unique_name(2)
    scene = write_safe(places["archive"], name=name, size=60, seed=12)
    await SceneRunner(worker_settings(places), indexer=None).run(job_for(name, places["scratch"]))

    folder = scene_folder(places, name)
    document = yaml.safe_load((folder / f"{name}.odc-metadata.yaml").read_text())
    properties = document["properties"]
    facts = scene.facts
    assert properties["datetime"].startswith(facts.sensing_time.strftime("%Y-%m-%dT%H:%M:%S"))
    assert properties["odc:region_code"] == "56LRR"
    assert properties["sat:relative_orbit"] == 30
    assert properties["s2:processing_baseline"] == "02.13"
    assert properties["eo:cloud_cover"] == pytest.approx(facts.cloud_cover)
    assert properties["eo:sun_elevation"] == pytest.approx(90 - facts.sun_zenith)
    assert properties["view:incidence_angle"] == pytest.approx(facts.view_zenith)
    assert properties["s2:product_uri"] == f"{name}.SAFE"
    assert document["lineage"]["level2"]
    assert document["measurements"]["swir1"]["grid"] == "g20m"
    assert document["measurements"]["coastal_aerosol"]["grid"] == "g60m"
    definition = product_definition(PRODUCT)
    errors = [
        message
        for message in validate_dataset(document, product_definition=definition)
        if message.level == Level.error
    ]
    assert not errors, errors

    item = json.loads((folder / f"{name}.stac-item.json").read_text())
    Item.model_validate(item)
    assert item["id"] == name
    assert item["properties"]["sat:relative_orbit"] == 30
    assert item["properties"]["mgrs:grid_square"] == "RR"
    assert item["assets"]["swir1"]["proj:shape"] == [30, 30]
    assert item["assets"]["red"]["raster:bands"][0]["scale"] == 0.0001
    derived = [link for link in item["links"] if link["rel"] == "derived_from"]
    assert derived[0]["href"].endswith(f"{name}.SAFE")
    assert (folder / f"{name}_MTD_MSIL2A.xml").is_file()


async def test_the_same_scene_twice_is_made_once_and_indexed_once(
    places: dict[str, Path], indexer: SceneIndexer, datacube: Any
) -> None:
    name = unique_name(3)
    write_safe(places["archive"], name=name, size=60, seed=13)
    runner = SceneRunner(worker_settings(places), indexer=indexer)
    first = await runner.run(job_for(name, places["scratch"]))
    band = scene_folder(places, name) / f"{name}_B02_10m.tif"
    written_at = band.stat().st_mtime_ns

    # Another request for the same scene (another inter_dir, so another job id).
    second = await runner.run(job_for(name, places["scratch"] / "elsewhere"))

    assert (first.state, second.state) == ("done", "skipped")
    assert band.stat().st_mtime_ns == written_at
    found = list(datacube.index.datasets.search(product=PRODUCT, region_code="56LRR"))
    assert [str(d.id) for d in found].count(str(ard_dataset_id(PRODUCT, name))) == 1


async def test_a_committed_scene_missing_from_the_index_is_indexed_when_seen_again(
    places: dict[str, Path], indexer: SceneIndexer, datacube: Any
) -> None:
    name = unique_name(4)
    write_safe(places["archive"], name=name, size=60, seed=14)
    # A worker that died between the commit and the index.
    await SceneRunner(worker_settings(places), indexer=None).run(job_for(name, places["scratch"]))
    dataset_id = str(ard_dataset_id(PRODUCT, name))
    assert not datacube.index.datasets.has(dataset_id)

    outcome = await SceneRunner(worker_settings(places), indexer=indexer).run(
        job_for(name, places["scratch"])
    )

    assert outcome.state == "skipped"
    assert datacube.index.datasets.has(dataset_id)


async def test_files_left_without_metadata_are_not_a_finished_scene_and_not_indexed(
    places: dict[str, Path], indexer: SceneIndexer, datacube: Any
) -> None:
    name = unique_name(5)
    write_safe(places["archive"], name=name, size=60, seed=15)
    folder = scene_folder(places, name)
    folder.mkdir(parents=True)
    # What a worker killed halfway through writing leaves behind.
    (folder / f"{name}_B02_10m.tif").write_bytes(b"half a file")
    dataset_id = str(ard_dataset_id(PRODUCT, name))
    assert not datacube.index.datasets.has(dataset_id)

    outcome = await SceneRunner(worker_settings(places), indexer=indexer).run(
        job_for(name, places["scratch"])
    )

    assert outcome.state == "done"
    with rasterio.open(folder / f"{name}_B02_10m.tif") as band:
        assert band.shape == (60, 60)
    assert datacube.index.datasets.has(dataset_id)


async def test_zipped_scene_in_an_s3_archive_goes_to_the_items_bucket_and_folder(
    places: dict[str, Path], s3_endpoint: str, aws_credentials: None, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="scene-archive")
    s3.create_bucket(Bucket="ard-bucket")
    zipped_name = unique_name(6, baseline="0400")
    folder_name = unique_name(7)
    zipped = write_safe(tmp_path / "made", name=zipped_name, size=60, seed=16)
    s3.upload_file(
        str(zip_safe(zipped.path, tmp_path / "zips")), "scene-archive", f"s2/{zipped_name}.zip"
    )
    as_folder = write_safe(tmp_path / "made", name=folder_name, size=60, seed=17)
    for path in as_folder.path.rglob("*"):
        if path.is_file():
            key = f"s2/{as_folder.path.name}/{path.relative_to(as_folder.path).as_posix()}"
            s3.upload_file(str(path), "scene-archive", key)

    s3_settings = S3Settings(aws_s3_endpoint_url=s3_endpoint, aws_region="us-east-1")
    settings = worker_settings(
        places, ard_source="s3://scene-archive/s2", ard_output_url=None,
        allowed_output_buckets=["ard-bucket"],
    )  # fmt: skip
    runner = SceneRunner(settings, indexer=None, s3_settings=s3_settings)
    outcomes = [
        await runner.run(
            job_for(name, places["scratch"], s3_bucket="ard-bucket", s3_dir="pacific/s2/")
        )
        for name in (zipped_name, folder_name)
    ]

    assert [outcome.state for outcome in outcomes] == ["done", "done"]
    assert outcomes[0].destination == "s3"
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket="ard-bucket")["Contents"]}
    for name in (zipped_name, folder_name):
        assert f"pacific/s2/{name}/{name}.odc-metadata.yaml" in keys
        assert f"pacific/s2/{name}/{name}_B04_10m.tif" in keys
    red = s3.get_object(
        Bucket="ard-bucket", Key=f"pacific/s2/{zipped_name}/{zipped_name}_B04_10m.tif"
    )
    local = tmp_path / "red.tif"
    local.write_bytes(red["Body"].read())
    with rasterio.open(local) as band:
        assert np.array_equal(band.read(1), zipped.truth.at("red"))
    assert leftovers(places) == []


def stand_in_sen2cor(folder: Path) -> Path:
    """An executable that answers like Sen2Cor's L2A_Process: it writes the L2A twin."""
    program = folder / "Sen2Cor-02.08.00-Linux64" / "bin" / "L2A_Process"
    program.parent.mkdir(parents=True)
    program.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import sys
            from pathlib import Path
            sys.path.insert(0, {str(REPO)!r})
            from devtools.archive.safe import variant_name, write_safe
            l1c, output = Path(sys.argv[1]), Path(sys.argv[sys.argv.index("--output_dir") + 1])
            name = variant_name(l1c.name.removesuffix(".SAFE"), level="L2A", baseline="9999",
                                discriminator="20240101T000000")
            write_safe(output, name=name, size=60, seed=99)
            print("Progress[%]: 100.00 : Application terminated successfully.")
            """
        )
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program


async def test_l1c_scene_is_corrected_by_the_configured_sen2cor_and_delivered_as_l2a(
    places: dict[str, Path], tmp_path: Path
) -> None:
    name = unique_name(8, level="L1C", baseline="0208")
    write_safe(places["archive"], name=name, size=60, seed=18)
    sen2cor_home = stand_in_sen2cor(tmp_path).parents[1]
    settings = worker_settings(places, sen2cor_command=str(sen2cor_home))

    outcome = await SceneRunner(settings, indexer=None).run(job_for(name, places["scratch"]))

    assert outcome.state == "done"
    delivered = name.replace("_MSIL1C_", "_MSIL2A_")
    truth = write_safe(
        tmp_path / "truth",
        name=variant_name(name, level="L2A", baseline="9999", discriminator="20240101T000000"),
        size=60,
        seed=99,
    )
    folder = scene_folder(places, delivered)
    with rasterio.open(folder / f"{delivered}_B04_10m.tif") as band:
        assert np.array_equal(band.read(1), truth.truth.at("red"))
    document = yaml.safe_load((folder / f"{delivered}.odc-metadata.yaml").read_text())
    assert document["properties"]["s2:processing_baseline"] == "99.99"
    assert leftovers(places) == []


def corrupt_band(scene: SyntheticScene, measurement: str) -> Path:
    path = scene.band_files[measurement]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


@pytest.mark.parametrize(
    ("case", "error", "says"),
    [
        ("outside scratch", BadSceneRequest, "outside the scratch root"),
        ("l1c without sen2cor", Sen2CorNotConfigured, "set SEN2COR_8"),
        ("malformed name", InvalidRequest, "is not a scene name any plugin here accepts"),
        ("not in archive", SceneNotFound, "looked for"),
        ("corrupt band", CorruptScene, "_B03_10m.jp2 is corrupt"),
        ("band file missing", CorruptScene, "_B11_20m.jp2 is missing"),
        ("l1c output asked", BadSceneRequest, "send prodlevel L2A"),
    ],
)
async def test_scenes_that_cannot_be_made_fail_for_good_with_a_reason_and_leave_no_scratch(
    places: dict[str, Path], case: str, error: type[Exception], says: str
) -> None:
    name = unique_name(20)
    inter_dir: Path | str = places["scratch"] / "intermediate"
    fields: dict[str, str] = {}
    job: SceneJob | None = None
    if case == "outside scratch":
        inter_dir = "/data/intermediate/"
    elif case == "l1c without sen2cor":
        name = unique_name(21, level="L1C", baseline="0208")
    elif case == "l1c output asked":
        name = unique_name(22, level="L1C", baseline="0208")
        fields["prodlevel"] = "L1C"
    elif case == "malformed name":
        # Past the dispatcher's own check, as a hand-made stream entry would be.
        request = SceneRequest.model_construct(
            in_scene="S2A_MSIL2A_2019_BROKEN", inter_dir=str(inter_dir), s3_bucket="public-eo-data",
            s3_dir="fiji/Sentinel_2_test/", prodlevel="L2A", source=None,
        )  # fmt: skip
        job = SceneJob(job_id="f" * 32, request_id="e" * 32, scene=request)
    if case not in ("not in archive", "malformed name"):
        scene = write_safe(places["archive"], name=name, size=60, seed=20)
        if case == "corrupt band":
            corrupt_band(scene, "green")
        if case == "band file missing":
            scene.band_files["swir1"].unlink()

    runner = SceneRunner(worker_settings(places), indexer=None)
    with pytest.raises(error) as raised:
        await runner.run(job or job_for(name, inter_dir, **fields))

    assert isinstance(raised.value, (InvalidRequest, Permanent))
    assert says in str(raised.value)
    if case == "not in archive":
        assert str(places["archive"]) in str(raised.value)
    assert not list(places["scratch"].rglob("*.*"))
    assert not (places["output"] / "fiji").exists() or not list(
        (places["output"] / "fiji").rglob("*.odc-metadata.yaml")
    )


async def test_an_item_may_name_an_allowed_archive_as_source_and_no_other(
    places: dict[str, Path], tmp_path: Path
) -> None:
    name = unique_name(9)
    other = tmp_path / "other-archive"
    write_safe(other, name=name, size=60, seed=19)
    settings = worker_settings(
        places, allowed_ard_sources=[str(places["archive"]), f"{other}/", "gcloud"]
    )
    runner = SceneRunner(settings, indexer=None)

    done = await runner.run(job_for(name, places["scratch"], source=str(other)))
    with pytest.raises(SceneNotFound):
        await runner.run(job_for(unique_name(10), places["scratch"], source="gcloud"))
    with pytest.raises(NotAllowed) as refused:
        await runner.run(job_for(unique_name(11), places["scratch"], source=str(tmp_path)))

    assert done.state == "done"
    assert "is not an allowed scene archive" in str(refused.value)
    assert os.listdir(places["scratch"]) == []

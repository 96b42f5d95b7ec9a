"""Synthetic SAFE scenes and how the ARD pool reads them: layout, metadata, offsets, policies."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.archive.safe import (
    SEED_SCENE_NAME,
    digital_numbers,
    prepare_demo_scene,
    write_safe,
    zip_safe,
)
from services.worker.ard.bands import CLOUD_MASK_CODES, cloud_mask, ndvi, to_reflectance
from services.worker.ard.errors import BadSceneRequest, CorruptScene
from services.worker.ard.fetch import unpack_zip
from services.worker.ard.index import indexing_enabled
from services.worker.ard.runner import output_folder
from services.worker.ard.safe import L2A_BANDS, read_safe
from services.worker.ard.scratch import scratch_directory
from services.worker.settings import WorkerSettings

OFFSET_SCENE = "S2B_MSIL2A_20230105T235741_N0509_R030_T56LRR_20230105T014708"


def test_synthetic_scene_has_esa_layout_and_metadata_the_reader_understands(
    tmp_path: Path,
) -> None:
    scene = write_safe(tmp_path, name=SEED_SCENE_NAME, size=60, seed=4)

    assert scene.path.name == f"{SEED_SCENE_NAME}.SAFE"
    granules = list((scene.path / "GRANULE").iterdir())
    assert [g.name.split("_")[:2] for g in granules] == [["L2A", "T56LRR"]]
    r10m = sorted(p.name for p in (granules[0] / "IMG_DATA" / "R10m").iterdir())
    assert r10m == [
        f"T56LRR_20190812T235741_{code}_10m.jp2" for code in ("B02", "B03", "B04", "B08")
    ]
    assert (granules[0] / "IMG_DATA" / "R20m" / "T56LRR_20190812T235741_SCL_20m.jp2").is_file()

    product = read_safe(tmp_path, SEED_SCENE_NAME)
    metadata, facts = product.metadata, scene.facts
    assert metadata.name == SEED_SCENE_NAME
    assert metadata.processing_baseline == "02.13"
    assert metadata.boa_add_offsets == {}
    assert metadata.quantification_value == 10000
    assert metadata.mgrs_tile == "56LRR"
    assert metadata.relative_orbit == 30
    assert metadata.platform == "sentinel-2a"
    assert metadata.crs == "EPSG:32756"
    assert metadata.sensing_time == facts.sensing_time
    assert metadata.cloud_cover == pytest.approx(facts.cloud_cover)
    assert metadata.sun_zenith == pytest.approx(facts.sun_zenith)
    assert metadata.sun_azimuth == pytest.approx(facts.sun_azimuth)
    assert metadata.view_zenith == pytest.approx(facts.view_zenith)
    assert metadata.view_azimuth == pytest.approx(facts.view_azimuth)
    assert {band.measurement for band in L2A_BANDS} <= set(product.band_files)


def test_bands_are_lossless_jpeg2000_holding_the_truth(tmp_path: Path) -> None:
    scene = write_safe(tmp_path, name=SEED_SCENE_NAME, size=60, seed=5)
    for measurement, path in scene.band_files.items():
        with rasterio.open(path) as band:
            assert band.driver == "JP2OpenJPEG"
            stored = band.read(1)
        assert np.array_equal(stored, scene.truth.at(measurement)), measurement
    classes = scene.truth.scene_classification
    assert {0, 3, 4, 5, 6, 8, 9} <= set(np.unique(classes).tolist())


def test_baseline_04_scene_declares_its_offsets_and_stores_shifted_numbers(tmp_path: Path) -> None:
    scene = write_safe(tmp_path, name=OFFSET_SCENE, size=60, seed=6)
    product = read_safe(tmp_path, OFFSET_SCENE)
    assert product.metadata.processing_baseline == "05.09"
    assert set(product.metadata.boa_add_offsets.values()) == {-1000}

    truth = scene.truth.reflectance["red"]
    with rasterio.open(scene.band_files["red"]) as band:
        stored = band.read(1)
    valid = truth > 0
    assert np.array_equal(stored[valid], truth[valid] + 1000)
    assert not stored[~valid].any()
    assert np.array_equal(to_reflectance(stored, -1000, 10000), truth)


def test_zipped_scene_unpacks_to_the_same_product(tmp_path: Path) -> None:
    scene = write_safe(tmp_path / "made", name=OFFSET_SCENE, size=60, seed=7)
    archive = zip_safe(scene.path, tmp_path / "archive")
    assert archive.name == f"{OFFSET_SCENE}.zip"
    assert zipfile.ZipFile(archive).namelist()[0].startswith(f"{OFFSET_SCENE}.SAFE/")

    unpack_zip(archive, tmp_path / "scratch")
    product = read_safe(tmp_path / "scratch", OFFSET_SCENE)
    with rasterio.open(product.band_files["swir1"]) as band:
        assert np.array_equal(to_reflectance(band.read(1), -1000, 10000), scene.truth.at("swir1"))


def test_a_zip_whose_members_would_escape_scratch_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("../../outside.txt", b"x")
    with pytest.raises(CorruptScene, match="outside the scene"):
        unpack_zip(archive, tmp_path / "scratch")
    assert not (tmp_path / "outside.txt").exists()


def test_a_file_that_is_not_a_zip_is_a_corrupt_scene_naming_it(tmp_path: Path) -> None:
    archive = tmp_path / f"{OFFSET_SCENE}.zip"
    archive.write_bytes(b"this is not a zip archive")
    with pytest.raises(CorruptScene, match=f"{OFFSET_SCENE}.zip is not a readable zip"):
        unpack_zip(archive, tmp_path / "scratch")


def test_demo_scene_is_the_seed_scene_in_the_source_directory(tmp_path: Path) -> None:
    name = prepare_demo_scene(tmp_path / "source", size=60)
    assert name == SEED_SCENE_NAME
    assert (tmp_path / "source" / f"{name}.SAFE" / "MTD_MSIL2A.xml").is_file()


@settings(max_examples=200, deadline=None)
@given(
    reflectance=st.lists(st.integers(0, 15000), min_size=1, max_size=50),
    baseline_4=st.booleans(),
    quantification=st.sampled_from([10000, 20000]),
)
def test_offset_and_quantification_round_trip_to_reflectance(
    reflectance: list[int], baseline_4: bool, quantification: int
) -> None:
    truth = np.array(reflectance, dtype=np.uint16).reshape(1, -1)
    offset = -1000 if baseline_4 else 0
    numbers = digital_numbers(truth, quantification, offset)
    assert np.array_equal(to_reflectance(numbers, offset, quantification), truth)


@given(numbers=st.lists(st.integers(0, 65535), min_size=1, max_size=50))
def test_reflectance_keeps_nodata_and_saturation_and_never_invents_nodata(
    numbers: list[int],
) -> None:
    stored = np.array(numbers, dtype=np.uint16)
    reflectance = to_reflectance(stored, -1000, 10000)
    assert np.array_equal(reflectance == 0, stored == 0)
    assert np.array_equal(reflectance[stored == 65535], stored[stored == 65535])


def test_ndvi_is_scaled_int16_with_nodata_where_either_band_is_missing() -> None:
    red = np.array([[1000, 0, 500, 3000]], dtype=np.uint16)
    nir = np.array([[3000, 2000, 0, 1000]], dtype=np.uint16)
    assert ndvi(red, nir).tolist() == [[5000, -9999, -9999, -5000]]


def test_cloud_mask_maps_every_scl_class_to_fmask_codes() -> None:
    scl = np.arange(14, dtype=np.uint8).reshape(1, -1)
    assert cloud_mask(scl).tolist() == [[0, 0, 1, 3, 1, 1, 5, 1, 2, 2, 2, 4, 0, 0]]
    assert len(CLOUD_MASK_CODES) == 12


path_parts = st.lists(
    st.sampled_from(["a", "b", "..", ".", "intermediate", "", "~"]), min_size=0, max_size=6
)


@given(parts=path_parts, absolute=st.booleans())
def test_scratch_directory_is_always_under_the_scratch_root(
    parts: list[str], absolute: bool
) -> None:
    root = Path("/srv/scratch-root")
    text = ("/" if absolute else "") + "/".join(parts)
    try:
        chosen = scratch_directory(text, root)
    except BadSceneRequest as error:
        assert "scratch root" in str(error) or "not a directory path" in str(error)
        return
    assert chosen == root or chosen.is_relative_to(root)


def test_inter_dir_outside_the_scratch_root_is_refused_with_the_root_named() -> None:
    with pytest.raises(BadSceneRequest, match="outside the scratch root /srv/scratch"):
        scratch_directory("/data/intermediate/", Path("/srv/scratch"))
    assert scratch_directory("/data/intermediate/", Path("/data/intermediate")) == Path(
        "/data/intermediate"
    )
    assert scratch_directory("intermediate", Path("/srv/scratch")) == Path(
        "/srv/scratch/intermediate"
    )


def test_a_symlink_out_of_the_scratch_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "scratch"
    root.mkdir()
    (root / "escape").symlink_to(tmp_path)
    with pytest.raises(BadSceneRequest):
        scratch_directory(str(root / "escape" / "elsewhere"), root)


@given(parts=path_parts)
def test_output_folder_is_always_a_plain_relative_path(parts: list[str]) -> None:
    s3_dir = "/".join(parts)
    try:
        folder = output_folder(s3_dir, SEED_SCENE_NAME)
    except BadSceneRequest:
        assert any(part in ("..", ".") for part in parts) or "" in s3_dir.strip("/").split("/")
        return
    assert folder.endswith(SEED_SCENE_NAME)
    assert all(part not in ("", ".", "..") for part in folder.split("/"))


def test_ard_is_indexed_unless_indexing_is_switched_off_explicitly() -> None:
    assert indexing_enabled(WorkerSettings(pool="ard"))
    assert indexing_enabled(WorkerSettings(pool="ard", index_outputs=True))
    assert not indexing_enabled(WorkerSettings(pool="ard", index_outputs=False))

"""The archive in a real datacube index (PostgreSQL): loads return the generator's truth."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from datacube.utils.masking import make_mask
from odc.geo.geom import BoundingBox
from pydantic import SecretStr

from devtools.archive import (
    DatacubeSettings,
    SceneRecord,
    add_products,
    archive_grid,
    generate_archive,
    index_datasets,
    init_index,
    locate_index,
    open_datacube,
    truth,
)
from shared.catalogue import INPUT_PRODUCTS
from shared.errors import InvalidRequest, Permanent, Retryable

# A 9 km box inside the seed's Fiji box (EPSG:3460), queried the way the seed's work items do.
BOX = (2166000.0, 3581000.0, 2175000.0, 3590000.0)
CRS = "EPSG:3460"
TIME = ("2019-01-01", "2019-02-10")
FIRST, LAST = date(2019, 1, 1), date(2019, 2, 10)
SEED = 2019
PRODUCT = "ls8_usgs_sr_scene"


@dataclass
class Archive:
    settings: DatacubeSettings
    datacube: Any
    records: list[SceneRecord]
    directory: Path


@pytest.fixture(scope="module")
def archive(
    fresh_database: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Archive]:
    settings = DatacubeSettings(db_url=SecretStr(fresh_database("archive")))
    assert init_index(settings) is True
    datacube = open_datacube(settings)
    add_products(datacube)
    directory = tmp_path_factory.mktemp("archive")
    records = generate_archive(PRODUCT, BOX, FIRST, LAST, directory, SEED, crs=CRS)
    index_datasets(datacube, [directory])
    yield Archive(settings, datacube, records, directory)
    datacube.close()


def _dataset_ids(datacube: Any) -> set[uuid.UUID]:
    return {dataset.id for dataset in datacube.index.datasets.search(product=PRODUCT)}


def _load_days(archive: Archive, **query: Any) -> Any:
    return archive.datacube.load(
        product=PRODUCT,
        time=TIME,
        output_crs=CRS,
        resolution=(-30, 30),
        group_by="solar_day",
        **query,
    )


def _days(loaded: Any, archive: Archive) -> list[date]:
    days = sorted({record.solar_day for record in archive.records})
    assert len(days) == loaded.time.size
    return days


def test_every_scene_is_indexed_once(archive: Archive) -> None:
    assert _dataset_ids(archive.datacube) == {record.dataset_id for record in archive.records}


def test_initialising_adding_and_indexing_again_change_nothing(archive: Archive) -> None:
    before = _dataset_ids(archive.datacube)
    assert init_index(archive.settings) is False
    assert set(add_products(archive.datacube).values()) == {"unchanged"}
    report = index_datasets(archive.datacube, [archive.directory])
    assert report.added == []
    assert set(report.already_indexed) == before
    assert _dataset_ids(archive.datacube) == before


def test_seed_query_in_projected_form_loads_the_generators_values_exactly(
    archive: Archive,
) -> None:
    loaded = _load_days(archive, x=(BOX[0], BOX[2]), y=(BOX[1], BOX[3]), crs=CRS)
    assert loaded.odc.geobox == archive_grid(PRODUCT, BOX, CRS)
    for index, day in enumerate(_days(loaded, archive)):
        expected = truth(PRODUCT, day, loaded.odc.geobox, SEED)
        for band, values in expected.values.items():
            assert np.array_equal(loaded[band].isel(time=index).values, values), (day, band)


def test_seed_query_in_lat_lon_form_loads_the_generators_values_exactly(
    archive: Archive,
) -> None:
    inner = BoundingBox(BOX[0] + 1500, BOX[1] + 1500, BOX[2] - 1500, BOX[3] - 1500, crs=CRS)
    lonlat = inner.to_crs("EPSG:4326")
    loaded = _load_days(
        archive, latitude=(lonlat.bottom, lonlat.top), longitude=(lonlat.left, lonlat.right)
    )
    geobox = loaded.odc.geobox
    assert archive_grid(PRODUCT, BOX, CRS).extent.contains(geobox.extent)
    for index, day in enumerate(_days(loaded, archive)):
        expected = truth(PRODUCT, day, geobox, SEED)
        for band in ("red", "nir", "swir2", "pixel_qa"):
            assert np.array_equal(loaded[band].isel(time=index).values, expected.values[band])


def test_pixel_qa_decodes_with_datacube_flags_to_the_generators_masks(archive: Archive) -> None:
    loaded = _load_days(archive, x=(BOX[0], BOX[2]), y=(BOX[1], BOX[3]), crs=CRS)
    clouds = shadows = 0
    for index, day in enumerate(_days(loaded, archive)):
        qa = loaded.pixel_qa.isel(time=index)
        expected = truth(PRODUCT, day, loaded.odc.geobox, SEED, ["pixel_qa"])
        assert np.array_equal(make_mask(qa, cloud="cloud").values, expected.cloud)
        assert np.array_equal(make_mask(qa, cloud_shadow="cloud_shadow").values, expected.shadow)
        assert np.array_equal(make_mask(qa, water="water").values, expected.water)
        assert np.array_equal(make_mask(qa, nodata=True).values, expected.nodata)
        clear = make_mask(qa, clear="clear_land").values | make_mask(qa, water="water").values
        assert np.array_equal(clear, expected.clear)
        clouds += int(expected.cloud.sum())
        shadows += int(expected.shadow.sum())
    assert clouds > 0 and shadows > 0  # the box was chosen to have both


def test_an_unknown_product_is_refused_naming_the_known_ones(
    archive: Archive, tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequest, match="ls8_usgs_sr_scene") as refused:
        add_products(archive.datacube, ["ls9_usgs_sr_scene"])
    assert "ls9_usgs_sr_scene" in str(refused.value)
    stray = _copy_scene(archive.records[0], tmp_path)
    document = yaml.safe_load(stray.read_text())
    document["product"]["name"] = "ls9_usgs_sr_scene"
    stray.write_text(yaml.safe_dump(document))
    before = _dataset_ids(archive.datacube)
    with pytest.raises(InvalidRequest, match=r"ls9_usgs_sr_scene.*s2_esa_sr_granule"):
        index_datasets(archive.datacube, [stray])
    assert _dataset_ids(archive.datacube) == before


def _copy_scene(record: SceneRecord, directory: Path) -> Path:
    """A copy of a scene with a new dataset id: a dataset the index has not seen."""
    target = directory / record.metadata_path.parent.name
    shutil.copytree(record.metadata_path.parent, target)
    document_path = target / record.metadata_path.name
    document = yaml.safe_load(document_path.read_text())
    document["id"] = str(uuid.uuid4())
    document_path.write_text(yaml.safe_dump(document))
    return document_path


def test_a_missing_path_is_refused_by_name_and_nothing_is_indexed(
    archive: Archive, tmp_path: Path
) -> None:
    new_scene = _copy_scene(archive.records[0], tmp_path)
    missing = tmp_path / "nowhere" / "scene.odc-metadata.yaml"
    before = _dataset_ids(archive.datacube)
    with pytest.raises(InvalidRequest, match=str(missing)):
        index_datasets(archive.datacube, [new_scene, missing])
    assert _dataset_ids(archive.datacube) == before


def test_a_missing_band_file_is_refused_by_name_and_nothing_is_indexed(
    archive: Archive, tmp_path: Path
) -> None:
    good = _copy_scene(archive.records[0], tmp_path / "good")
    broken = _copy_scene(archive.records[1], tmp_path / "broken")
    band = next(broken.parent.glob("*_nir.tif"))
    band.unlink()
    before = _dataset_ids(archive.datacube)
    with pytest.raises(Permanent, match=str(band)):
        index_datasets(archive.datacube, [good, broken])
    assert _dataset_ids(archive.datacube) == before


@pytest.mark.parametrize("damage", ["document", "band"])
def test_a_corrupt_file_is_refused_by_name_and_nothing_is_indexed(
    archive: Archive, tmp_path: Path, damage: str
) -> None:
    good = _copy_scene(archive.records[0], tmp_path / "good")
    broken = _copy_scene(archive.records[1], tmp_path / "broken")
    if damage == "document":
        victim = broken
        victim.write_text("id: [unclosed\nproduct: {name: \n")
    else:
        victim = next(broken.parent.glob("*_red.tif"))
        victim.write_bytes(b"II*\x00 this is not a GeoTIFF any more" * 10)
    before = _dataset_ids(archive.datacube)
    with pytest.raises(Permanent, match=str(victim)):
        index_datasets(archive.datacube, [good, broken])
    assert _dataset_ids(archive.datacube) == before


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://conveyor:s3cret-pass@db.invalid:5432/datacube",
        "postgresql://conveyor:s3cret-pass@127.0.0.1:1/datacube",
    ],
)
def test_a_broken_database_url_names_the_host_but_not_the_password(url: str) -> None:
    settings = DatacubeSettings(db_url=SecretStr(url))
    host = url.split("@")[1].split(":")[0]
    for attempt in (lambda: open_datacube(settings), lambda: init_index(settings)):
        with pytest.raises(Retryable) as failed:
            attempt()
        assert host in str(failed.value)
        assert "s3cret-pass" not in str(failed.value)


def test_a_url_that_is_not_postgresql_is_refused_without_echoing_the_password() -> None:
    settings = DatacubeSettings(db_url=SecretStr("mysql://root:s3cret-pass@db:3306/datacube"))
    with pytest.raises(InvalidRequest, match="not a PostgreSQL URL") as refused:
        open_datacube(settings)
    assert "s3cret-pass" not in str(refused.value)


def test_two_indexes_in_one_process_do_not_leak_into_each_other(
    archive: Archive, fresh_database: Callable[[str], str]
) -> None:
    other = DatacubeSettings(db_url=SecretStr(fresh_database("other")))
    init_index(other)
    second = open_datacube(other)
    try:
        add_products(second, ["s2_esa_sr_granule"])
        assert [p.name for p in second.index.products.get_all()] == ["s2_esa_sr_granule"]
        assert len(list(archive.datacube.index.products.get_all())) == len(INPUT_PRODUCTS)
        assert _dataset_ids(second) == set()
    finally:
        second.close()
    assert not [name for name in os.environ if name.startswith("ODC_")]


def test_datacubes_own_configuration_is_used_when_no_url_is_given(
    archive: Archive, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = archive.settings.db_url.get_secret_value()  # type: ignore[union-attr]
    monkeypatch.setenv("ODC_DEFAULT_DB_URL", url)
    monkeypatch.setenv("ODC_DEFAULT_INDEX_DRIVER", "postgres")
    monkeypatch.delenv("CONVEYOR_DB_URL", raising=False)
    location = locate_index(DatacubeSettings(state_dir=tmp_path))
    assert location.source == "datacube-config"
    datacube = open_datacube(DatacubeSettings(state_dir=tmp_path))
    try:
        assert _dataset_ids(datacube) == _dataset_ids(archive.datacube)
    finally:
        datacube.close()
    # A URL given to us wins over datacube's configuration.
    assert locate_index(archive.settings).source == "url"


def test_the_postgis_driver_indexes_and_loads_the_same_archive(
    archive: Archive, postgis_url: str
) -> None:
    settings = DatacubeSettings(db_url=SecretStr(postgis_url), index_driver="postgis")
    assert init_index(settings) is True
    assert init_index(settings) is False
    datacube = open_datacube(settings)
    try:
        assert set(add_products(datacube, [PRODUCT]).values()) == {"added"}
        report = index_datasets(datacube, [archive.directory])
        assert len(report.added) == len(archive.records)
        assert index_datasets(datacube, [archive.directory]).added == []
        loaded = datacube.load(
            product=PRODUCT, x=(BOX[0], BOX[2]), y=(BOX[1], BOX[3]), crs=CRS, time=TIME,
            output_crs=CRS, resolution=(-30, 30), group_by="solar_day",
            measurements=["red", "pixel_qa"],
        )  # fmt: skip
        day = sorted({record.solar_day for record in archive.records})[1]
        expected = truth(PRODUCT, day, loaded.odc.geobox, SEED, ["red", "pixel_qa"])
        assert np.array_equal(loaded.red.isel(time=1).values, expected.values["red"])
        assert np.array_equal(loaded.pixel_qa.isel(time=1).values, expected.values["pixel_qa"])
    finally:
        datacube.close()


def test_postgis_without_a_database_url_is_refused_with_what_to_do(tmp_path: Path) -> None:
    settings = DatacubeSettings(index_driver="postgis", state_dir=tmp_path)
    if settings.db_url is not None:
        pytest.skip("CONVEYOR_DB_URL is set in this environment")
    with pytest.raises(InvalidRequest, match="PostGIS"):
        locate_index(settings)

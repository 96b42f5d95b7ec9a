"""The archive in a real datacube index (PostgreSQL): loads return the generator's truth.

Loads on a scene's own grid (UTM, aligned on USGS's 15 m offsets) return exactly what was
written. Loads onto another CRS go through GDAL's warper: nearest neighbour matches the truth
but for a few pixels where GDAL's approximate transformer lands a hair's breadth on the other
side of a pixel edge, and bilinear matches the truth interpolated on the native grid within a
unit of rounding.
"""

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
    acquisition_days,
    add_products,
    archive_grid,
    generate_archive,
    index_datasets,
    init_index,
    locate_index,
    open_datacube,
    truth,
)
from devtools.archive.synthetic import geobox_longitude, load_transformer
from services.worker.loading import solar_day_grouping
from shared.catalogue import INPUT_PRODUCTS
from shared.errors import InvalidRequest, Permanent, Retryable
from shared.solar_day import solar_day_at

# A 9 km box inside the seed's Fiji box (EPSG:3460), queried the way the seed's work items do:
# scenes of paths 72 (UTM 1S) and 73 (UTM 60S), passes whose two rows overlap over it.
BOX = (2166000.0, 3560000.0, 2175000.0, 3569000.0)
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
    """Load onto the seed's CRS, each pass one observation (solar days at the box's centre)."""
    grid = archive_grid(PRODUCT, BOX, CRS)
    return archive.datacube.load(
        product=PRODUCT,
        time=TIME,
        output_crs=CRS,
        resolution=(-30, 30),
        group_by=solar_day_grouping(geobox_longitude(grid)),
        **query,
    )


def _days(loaded: Any) -> list[date]:
    days = list(acquisition_days(PRODUCT, loaded.odc.geobox, FIRST, LAST))
    assert len(days) == loaded.time.size
    return days


def _inside_box(geobox: Any) -> np.ndarray:
    """Pixels of `geobox` whose centres lie in BOX: where the archive was written."""
    from pyproj import Transformer

    height, width = geobox.shape
    xs = geobox.affine.c + (np.arange(width) + 0.5) * geobox.affine.a
    ys = geobox.affine.f + (np.arange(height) + 0.5) * geobox.affine.e
    to_box = Transformer.from_crs(geobox.crs.to_wkt(), CRS, always_xy=True)
    x, y = to_box.transform(*np.meshgrid(xs, ys))
    inside: np.ndarray = (x > BOX[0]) & (x < BOX[2]) & (y > BOX[1]) & (y < BOX[3])
    return inside


def _zone_records(archive: Archive, epsg: int) -> list[SceneRecord]:
    return [record for record in archive.records if record.geobox.crs.epsg == epsg]


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


@pytest.mark.parametrize("epsg", [32760, 32701])
def test_a_load_on_the_scenes_own_utm_grid_returns_the_generators_values_exactly(
    archive: Archive, epsg: int
) -> None:
    records = _zone_records(archive, epsg)
    datasets = [archive.datacube.index.datasets.get(record.dataset_id) for record in records]
    grid = archive_grid(PRODUCT, BOX, CRS, grid_crs=f"EPSG:{epsg}")
    loaded = archive.datacube.load(
        datasets=datasets,
        like=grid,
        group_by=solar_day_grouping(geobox_longitude(grid)),
    )
    # USGS grids: pixel corners on 15 + 30k metres.
    assert loaded.odc.geobox.affine.c % 30 == 15 and loaded.odc.geobox.affine.f % 30 == 15
    labels = [record.label for record in records]
    days = [day for day, plans in acquisition_days(PRODUCT, grid, FIRST, LAST).items()
            if {plan.label for plan in plans} & set(labels)]  # fmt: skip
    assert len(days) == loaded.time.size
    inside = _inside_box(grid)
    for index, day in enumerate(days):
        expected = truth(PRODUCT, day, grid, SEED, scenes=labels)
        for band, values in expected.values.items():
            got = loaded[band].isel(time=index).values
            assert np.array_equal(got[inside], values[inside]), (day, band)


def test_a_load_in_the_seed_crs_matches_the_truth_but_for_pixels_on_native_pixel_edges(
    archive: Archive,
) -> None:
    loaded = _load_days(
        archive, x=(BOX[0], BOX[2]), y=(BOX[1], BOX[3]), crs=CRS, measurements=["red", "pixel_qa"]
    )
    assert loaded.odc.geobox == archive_grid(PRODUCT, BOX, CRS)
    for index, day in enumerate(_days(loaded)):
        expected = truth(PRODUCT, day, loaded.odc.geobox, SEED, ["red", "pixel_qa"])
        for band in ("red", "pixel_qa"):
            same = loaded[band].isel(time=index).values == expected.values[band]
            assert same.mean() > 0.995, (day, band, same.mean())


def test_seed_query_in_lat_lon_form_loads_what_the_projected_form_loads(
    archive: Archive,
) -> None:
    inner = BoundingBox(BOX[0] + 1500, BOX[1] + 1500, BOX[2] - 1500, BOX[3] - 1500, crs=CRS)
    lonlat = inner.to_crs("EPSG:4326")
    loaded = _load_days(
        archive,
        latitude=(lonlat.bottom, lonlat.top),
        longitude=(lonlat.left, lonlat.right),
        measurements=["red", "pixel_qa"],
    )
    geobox = loaded.odc.geobox
    assert archive_grid(PRODUCT, BOX, CRS).extent.contains(geobox.extent)
    for index, day in enumerate(_days(loaded)):
        expected = truth(PRODUCT, day, geobox, SEED, ["red", "pixel_qa"])
        same = loaded.pixel_qa.isel(time=index).values == expected.values["pixel_qa"]
        assert same.mean() > 0.995


def test_bilinear_reflectance_is_the_native_truth_interpolated(archive: Archive) -> None:
    """What the worker loads: reflectance bilinear onto the output grid. GDAL interpolates the
    native pixels around each output centre; so does this, from the truth on the native grid."""
    output = archive_grid(PRODUCT, BOX, CRS)
    for record in archive.records[:3]:
        native = record.geobox
        day = solar_day_at(record.acquired, geobox_longitude(output))
        scene = truth(PRODUCT, day, native, SEED, ["red", "pixel_qa"], scenes=[record.label])
        dataset = archive.datacube.index.datasets.get(record.dataset_id)
        loaded = (
            archive.datacube.load(
                datasets=[dataset], like=output, measurements=["red"], resampling="bilinear"
            )
            .red.isel(time=0)
            .values
        )
        # Output pixel centres in native pixel units (0 at the first pixel's centre).
        height, width = output.shape
        xs = output.affine.c + (np.arange(width) + 0.5) * 30
        ys = output.affine.f - (np.arange(height) + 0.5) * 30
        nx, ny = load_transformer(output, native.crs).transform(*np.meshgrid(xs, ys))
        column = (nx - native.affine.c) / 30 - 0.5
        row = (native.affine.f - ny) / 30 - 0.5
        left, top = np.floor(column).astype(int), np.floor(row).astype(int)
        inside = (
            (left >= 0) & (top >= 0) & (left < native.shape[1] - 1) & (top < native.shape[0] - 1)
        )
        left, top = np.where(inside, left, 0), np.where(inside, top, 0)
        fx, fy = column - left, row - top
        red = scene.values["red"].astype(float)
        corners = [red[top, left], red[top, left + 1], red[top + 1, left], red[top + 1, left + 1]]
        whole = inside & ~np.any([corner == -9999 for corner in corners], axis=0)
        expected = (
            corners[0] * (1 - fx) * (1 - fy) + corners[1] * fx * (1 - fy)
            + corners[2] * (1 - fx) * fy + corners[3] * fx * fy
        )  # fmt: skip
        difference = np.abs(loaded[whole] - expected[whole])
        assert whole.sum() > 1000
        assert np.quantile(difference, 0.99) <= 1.0, record.label
        # And not what a nearest load gives: neighbouring pixels differ by their texture.
        nearest = red[np.round(row).astype(int).clip(0, native.shape[0] - 1),
                      np.round(column).astype(int).clip(0, native.shape[1] - 1)]  # fmt: skip
        assert np.abs(loaded[whole] - nearest[whole]).mean() > 4 * difference.mean()


def test_pixel_qa_decodes_with_datacube_flags_to_the_generators_masks(archive: Archive) -> None:
    grid = archive_grid(PRODUCT, BOX, CRS, grid_crs="EPSG:32701")
    records = _zone_records(archive, 32701)
    labels = [record.label for record in records]
    loaded = archive.datacube.load(
        datasets=[archive.datacube.index.datasets.get(r.dataset_id) for r in records],
        like=grid,
        measurements=["pixel_qa"],
        group_by=solar_day_grouping(geobox_longitude(grid)),
    )
    days = [day for day, plans in acquisition_days(PRODUCT, grid, FIRST, LAST).items()
            if {plan.label for plan in plans} & set(labels)]  # fmt: skip
    clouds = shadows = 0
    inside = _inside_box(grid)
    for index, day in enumerate(days):
        qa = loaded.pixel_qa.isel(time=index)
        expected = truth(PRODUCT, day, grid, SEED, ["pixel_qa"], scenes=labels)

        def same(flags: Any, wanted: np.ndarray) -> bool:
            return bool(np.array_equal(flags.values[inside], wanted[inside]))

        assert same(make_mask(qa, cloud="cloud"), expected.cloud)
        assert same(make_mask(qa, cloud_shadow="cloud_shadow"), expected.shadow)
        assert same(make_mask(qa, water="water"), expected.water)
        assert same(make_mask(qa, nodata=True), expected.nodata)
        clear = make_mask(qa, clear="clear_land") | make_mask(qa, water="water")
        assert same(clear, expected.clear)
        clouds += int(expected.cloud[inside].sum())
        shadows += int(expected.shadow[inside].sum())
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
        records = _zone_records(archive, 32701)
        grid = archive_grid(PRODUCT, BOX, CRS, grid_crs="EPSG:32701")
        loaded = datacube.load(
            datasets=[datacube.index.datasets.get(r.dataset_id) for r in records],
            like=grid, measurements=["red", "pixel_qa"],
            group_by=solar_day_grouping(geobox_longitude(grid)),
        )  # fmt: skip
        day = solar_day_at(records[0].acquired, geobox_longitude(grid))
        labels = [record.label for record in records]
        expected = truth(PRODUCT, day, grid, SEED, ["red", "pixel_qa"], scenes=labels)
        first = loaded.isel(time=0)
        inside = _inside_box(grid)
        assert np.array_equal(first.red.values[inside], expected.values["red"][inside])
        assert np.array_equal(first.pixel_qa.values[inside], expected.values["pixel_qa"][inside])
    finally:
        datacube.close()


def test_postgis_without_a_database_url_is_refused_with_what_to_do(tmp_path: Path) -> None:
    settings = DatacubeSettings(index_driver="postgis", state_dir=tmp_path)
    if settings.db_url is not None:
        pytest.skip("CONVEYOR_DB_URL is set in this environment")
    with pytest.raises(InvalidRequest, match="PostGIS"):
        locate_index(settings)

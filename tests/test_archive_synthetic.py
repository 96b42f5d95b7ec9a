"""The synthetic archive: deterministic, realistic, and its truth recomputes what it wrote."""

from __future__ import annotations

from datetime import date
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox
from rio_cogeo.cogeo import cog_validate

from devtools.archive import SceneRecord, acquisition_days, archive_grid, generate_archive, truth
from devtools.archive.landcover import Cover
from devtools.archive.render import QA_FILL
from shared.errors import InvalidRequest

# A 9 km box inside the seed's Fiji box: sea, islands, clouds, and a WRS-2 row edge.
BOX = (2166000.0, 3581000.0, 2175000.0, 3590000.0)
CRS = "EPSG:3460"
FIRST, LAST = date(2019, 1, 1), date(2019, 2, 10)
SEED = 2019
L8_CLEAR = {322, 386, 834, 898, 1346}
L8_WATER = {324, 388, 836, 900, 1348}


@pytest.fixture(scope="module")
def landsat8(tmp_path_factory: pytest.TempPathFactory) -> list[SceneRecord]:
    out = tmp_path_factory.mktemp("ls8")
    return generate_archive("ls8_usgs_sr_scene", BOX, FIRST, LAST, out, SEED, crs=CRS)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(1)


def _window(record: SceneRecord, grid: GeoBox) -> tuple[slice, slice]:
    left = round((record.geobox.boundingbox.left - grid.boundingbox.left) / 30)
    top = round((grid.boundingbox.top - record.geobox.boundingbox.top) / 30)
    height, width = record.geobox.shape
    return slice(top, top + height), slice(left, left + width)


def test_scenes_follow_the_landsat_16_day_revisit_on_each_path(
    landsat8: list[SceneRecord],
) -> None:
    by_path: dict[str, list[date]] = {}
    for record in landsat8:
        by_path.setdefault(record.region_code[:3], []).append(record.solar_day)
    assert len(by_path) >= 1
    for days in by_path.values():
        unique = sorted(set(days))
        assert all((later - earlier).days == 16 for earlier, later in pairwise(unique))
    assert all(FIRST <= record.solar_day <= LAST for record in landsat8)


def test_generating_again_gives_the_same_ids_and_pixels(
    landsat8: list[SceneRecord], tmp_path: Path
) -> None:
    again = generate_archive("ls8_usgs_sr_scene", BOX, FIRST, LAST, tmp_path, SEED, crs=CRS)
    assert [r.dataset_id for r in again] == [r.dataset_id for r in landsat8]
    first, second = landsat8[0], again[0]
    for band in ("red", "pixel_qa"):
        assert np.array_equal(
            _read(first.measurement_paths[band]), _read(second.measurement_paths[band])
        )


def test_another_seed_gives_another_archive(landsat8: list[SceneRecord], tmp_path: Path) -> None:
    other = generate_archive(
        "ls8_usgs_sr_scene", BOX, FIRST, date(2019, 1, 8), tmp_path, SEED + 1, crs=CRS
    )
    assert {r.dataset_id for r in other}.isdisjoint({r.dataset_id for r in landsat8})
    assert not np.array_equal(
        _read(other[0].measurement_paths["red"]), _read(landsat8[0].measurement_paths["red"])
    )


def test_files_are_cloud_optimised_geotiffs_with_an_eo3_document(
    landsat8: list[SceneRecord],
) -> None:
    record = landsat8[0]
    for path in record.measurement_paths.values():
        valid, errors, _warnings = cog_validate(str(path))
        assert valid, errors
    document = yaml.safe_load(record.metadata_path.read_text())
    assert document["$schema"] == "https://schemas.opendatacube.org/dataset"
    assert document["id"] == str(record.dataset_id)
    assert document["product"]["name"] == "ls8_usgs_sr_scene"
    assert document["crs"] == "epsg:3460"
    assert set(document["measurements"]) == {*record.measurement_paths}
    assert document["properties"]["eo:platform"] == "landsat-8"


def test_written_pixels_equal_the_truth_recomputed_for_the_whole_area(
    landsat8: list[SceneRecord],
) -> None:
    grid = archive_grid("ls8_usgs_sr_scene", BOX, CRS)
    for record in landsat8:
        expected = truth("ls8_usgs_sr_scene", record.solar_day, grid, SEED)
        rows, columns = _window(record, grid)
        qa = _read(record.measurement_paths["pixel_qa"])
        seen = qa != QA_FILL
        for band in ("blue", "nir", "swir2", "pixel_qa"):
            written = _read(record.measurement_paths[band])
            assert np.array_equal(written[seen], expected.values[band][rows, columns][seen])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    left=st.integers(0, 250),
    top=st.integers(0, 250),
    width=st.integers(1, 50),
    height=st.integers(1, 50),
    day_index=st.integers(0, 4),
)
def test_truth_of_any_window_is_the_same_window_of_a_larger_truth(
    left: int, top: int, width: int, height: int, day_index: int
) -> None:
    grid = archive_grid("ls8_usgs_sr_scene", BOX, CRS)
    day = list(acquisition_days("ls8_usgs_sr_scene", grid, FIRST, LAST))[day_index]
    whole = truth("ls8_usgs_sr_scene", day, grid, SEED, measurements=["red", "pixel_qa"])
    window = grid[top : top + height, left : left + width]
    part = truth("ls8_usgs_sr_scene", day, window, SEED, measurements=["red", "pixel_qa"])
    rows, columns = slice(top, top + height), slice(left, left + width)
    assert np.array_equal(part.values["red"], whole.values["red"][rows, columns])
    assert np.array_equal(part.values["pixel_qa"], whole.values["pixel_qa"][rows, columns])
    assert np.array_equal(part.cloud, whole.cloud[rows, columns])


def test_quality_values_are_the_usgs_collection1_ones(landsat8: list[SceneRecord]) -> None:
    seen: set[int] = set()
    for record in landsat8:
        seen |= set(np.unique(_read(record.measurement_paths["pixel_qa"])).tolist())
    cloud = {416, 480, 992, 928}  # cloud, medium/high confidence, cirrus low/high
    shadow = {328, 392, 840, 904}
    assert seen <= L8_CLEAR | L8_WATER | cloud | shadow | {QA_FILL}
    assert {322, 324, QA_FILL} <= seen
    assert seen & cloud and seen & shadow


def test_clear_pixels_hold_the_clear_sky_surface_and_clouds_are_bright(
    landsat8: list[SceneRecord],
) -> None:
    grid = archive_grid("ls8_usgs_sr_scene", BOX, CRS)
    clouds_seen = 0
    for day in acquisition_days("ls8_usgs_sr_scene", grid, FIRST, LAST):
        expected = truth("ls8_usgs_sr_scene", day, grid, SEED)
        clear = expected.clear
        assert np.array_equal(expected.values["red"][clear], expected.surface["red"][clear])
        if expected.cloud.sum() > 100:
            clouds_seen += 1
            assert expected.values["blue"][expected.cloud].mean() > 2500
        if expected.shadow.sum() > 100:
            shaded = expected.shadow
            assert (expected.values["nir"][shaded] < expected.surface["nir"][shaded]).all()
        assert (expected.values["red"][expected.nodata] == -9999).all()
    assert clouds_seen >= 1


def test_shadows_lie_beside_their_clouds_not_under_them() -> None:
    grid = archive_grid("ls8_usgs_sr_scene", BOX, CRS)
    days = acquisition_days("ls8_usgs_sr_scene", grid, FIRST, LAST)
    shaded_days = [
        t for t in (truth("ls8_usgs_sr_scene", d, grid, SEED, ["pixel_qa"]) for d in days)
        if t.shadow.sum() > 50
    ]  # fmt: skip
    assert shaded_days
    for expected in shaded_days:
        assert not (expected.shadow & expected.cloud).any()


def test_vegetation_greens_up_in_the_wet_season_and_water_stays_dark() -> None:
    grid = archive_grid("ls8_usgs_sr_scene", BOX, CRS)
    wet = truth("ls8_usgs_sr_scene", date(2019, 2, 21), grid, SEED, ["red", "nir", "pixel_qa"])
    dry = truth("ls8_usgs_sr_scene", date(2019, 8, 16), grid, SEED, ["red", "nir", "pixel_qa"])

    def ndvi(t: object, where: np.ndarray) -> float:
        red = t.surface["red"][where].astype(float)  # type: ignore[attr-defined]
        nir = t.surface["nir"][where].astype(float)  # type: ignore[attr-defined]
        return float(np.mean((nir - red) / (nir + red)))

    vegetation = wet.cover == Cover.VEGETATION
    water = (wet.cover == Cover.SEA) | (wet.cover == Cover.LAKE)
    assert vegetation.sum() > 1000 and water.sum() > 1000
    assert ndvi(wet, vegetation) > ndvi(dry, vegetation) + 0.03
    assert ndvi(wet, vegetation) > 0.5
    assert ndvi(wet, water) < 0


def test_landsat7_after_2003_has_scan_line_gaps(tmp_path: Path) -> None:
    grid = archive_grid("ls7_usgs_sr_scene", BOX, CRS)
    days = list(acquisition_days("ls7_usgs_sr_scene", grid, FIRST, LAST))
    truths = [truth("ls7_usgs_sr_scene", day, grid, SEED, ["pixel_qa"]) for day in days]
    expected = min(truths, key=lambda t: t.nodata.mean())  # the day the box is all in the swath
    gaps = expected.nodata.mean()
    assert 0.02 < gaps < 0.6
    # Stripes: most rows have both data and gaps.
    assert (expected.nodata.any(axis=1) & (~expected.nodata).any(axis=1)).mean() > 0.5
    assert set(np.unique(expected.values["pixel_qa"]).tolist()) <= {1, 66, 68, 72, 130, 132, 136,
                                                                    160, 224}  # fmt: skip


def test_sentinel2_scenes_have_native_10_20_60_m_grids_and_scl(tmp_path: Path) -> None:
    area = (-179.60, -18.05, -179.58, -18.03)  # about 2 km, lat/lon
    records = generate_archive(
        "s2_esa_sr_granule", area, date(2019, 1, 1), date(2019, 1, 15), tmp_path, SEED
    )
    assert records
    days = sorted({record.solar_day for record in records})
    assert all((b - a).days % 5 == 0 for a, b in pairwise(days))
    record = records[0]
    shapes = {band: _read(path).shape for band, path in record.measurement_paths.items()}
    height, width = shapes["red"]
    assert shapes["veg_red_edge_1"] == (height // 2, width // 2)
    assert shapes["scene_classification"] == (height // 2, width // 2)
    assert shapes["coastal_aerosol"] == (height // 6, width // 6)
    scl = _read(record.measurement_paths["scene_classification"])
    assert set(np.unique(scl).tolist()) <= set(range(12))
    document = yaml.safe_load(record.metadata_path.read_text())
    assert document["measurements"]["scene_classification"]["grid"] == "20m"
    assert record.geobox.crs.epsg == 32701  # UTM zone 1 south


def test_an_empty_area_or_period_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="empty"):
        generate_archive("ls8_usgs_sr_scene", (1, 1, 1, 2), FIRST, LAST, tmp_path, crs=CRS)
    with pytest.raises(InvalidRequest, match="before"):
        generate_archive("ls8_usgs_sr_scene", BOX, LAST, FIRST, tmp_path, crs=CRS)
    with pytest.raises(InvalidRequest, match="ls8_usgs_sr_scene"):
        generate_archive("landsat9", BOX, FIRST, LAST, tmp_path, crs=CRS)

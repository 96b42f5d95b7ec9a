"""The synthetic archive: deterministic, gridded as USGS and ESA grid scenes, and its truth
recomputes what it wrote."""

from __future__ import annotations

import functools
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
from odc.geo.geom import BoundingBox
from rio_cogeo.cogeo import cog_validate

from devtools.archive import (
    SceneRecord,
    Truth,
    acquisition_days,
    archive_grid,
    generate_archive,
    truth,
)
from devtools.archive.catalogue import product_spec
from devtools.archive.footprints import plan_scenes
from devtools.archive.landcover import Cover
from devtools.archive.render import QA_FILL
from devtools.archive.synthetic import geobox_longitude
from shared.errors import InvalidRequest
from shared.seed import SEED_BOX_EPSG3460
from shared.solar_day import solar_day_at

# A 9 km box inside the seed's Fiji box: sea and land, clouds, scenes of paths 72 (UTM zone 1)
# and 73 (zone 60), and passes whose two rows overlap over it.
BOX = (2166000.0, 3560000.0, 2175000.0, 3569000.0)
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
    assert document["crs"] == f"epsg:{record.geobox.crs.epsg}"
    assert set(document["measurements"]) == {*record.measurement_paths}
    assert document["properties"]["eo:platform"] == "landsat-8"


def test_landsat_scenes_are_on_usgs_utm_grids_with_pixel_corners_on_15_m_offsets(
    landsat8: list[SceneRecord],
) -> None:
    for record in landsat8:
        for path in record.measurement_paths.values():
            with rasterio.open(path) as dataset:
                assert dataset.crs.to_epsg() in (32760, 32701)  # UTM 60S and 1S, as USGS grids
                assert dataset.res == (30.0, 30.0)
                assert dataset.transform.c % 30 == 15 and dataset.transform.f % 30 == 15
    assert {record.geobox.crs.epsg for record in landsat8} == {32760, 32701}


def test_written_pixels_equal_the_truth_recomputed_on_each_scenes_own_grid(
    landsat8: list[SceneRecord],
) -> None:
    for record in landsat8:
        day = solar_day_at(record.acquired, geobox_longitude(record.geobox))
        expected = truth("ls8_usgs_sr_scene", day, record.geobox, SEED, scenes=[record.label])
        for band in ("blue", "nir", "swir2", "pixel_qa"):
            written = _read(record.measurement_paths[band])
            assert np.array_equal(written, expected.values[band]), (record.label, band)
        assert (expected.nodata == (_read(record.measurement_paths["pixel_qa"]) == QA_FILL)).all()


@functools.cache
def _whole_truth(day_index: int) -> Truth:
    grid = archive_grid("ls8_usgs_sr_scene", BOX, CRS)
    day = list(acquisition_days("ls8_usgs_sr_scene", grid, FIRST, LAST))[day_index]
    return truth("ls8_usgs_sr_scene", day, grid, SEED, measurements=["red", "pixel_qa"])


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
    whole = _whole_truth(day_index)
    window = whole.geobox[top : top + height, left : left + width]
    part = truth("ls8_usgs_sr_scene", whole.day, window, SEED, measurements=["red", "pixel_qa"])
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
    wet_day = next(iter(acquisition_days("ls8_usgs_sr_scene", grid, date(2019, 2, 15), LAST_WET)))
    dry_day = next(iter(acquisition_days("ls8_usgs_sr_scene", grid, date(2019, 8, 10), LAST_DRY)))
    wet = truth("ls8_usgs_sr_scene", wet_day, grid, SEED, ["red", "nir", "pixel_qa"])
    dry = truth("ls8_usgs_sr_scene", dry_day, grid, SEED, ["red", "nir", "pixel_qa"])

    def ndvi(t: object, where: np.ndarray) -> float:
        red = t.surface["red"][where].astype(float)  # type: ignore[attr-defined]
        nir = t.surface["nir"][where].astype(float)  # type: ignore[attr-defined]
        return float(np.mean((nir - red) / (nir + red)))

    vegetation = (wet.cover == Cover.VEGETATION) & (dry.cover == Cover.VEGETATION)
    water = (wet.cover == Cover.SEA) | (wet.cover == Cover.LAKE)
    assert vegetation.sum() > 1000 and water.sum() > 1000
    assert ndvi(wet, vegetation) > ndvi(dry, vegetation) + 0.03
    assert ndvi(wet, vegetation) > 0.5
    assert ndvi(wet, water) < 0


LAST_WET, LAST_DRY = date(2019, 3, 15), date(2019, 9, 10)


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


def test_sentinel2_granules_are_mgrs_tiles_of_both_zones_with_10_20_60_m_grids_and_scl(
    tmp_path: Path,
) -> None:
    area = (-179.60, -18.05, -179.58, -18.03)  # about 2 km, lat/lon, just east of 180
    records = generate_archive(
        "s2_esa_sr_granule", area, date(2019, 1, 1), date(2019, 1, 15), tmp_path, SEED
    )
    assert records
    days = sorted({record.solar_day for record in records})
    assert all((b - a).days % 5 == 0 for a, b in pairwise(days))
    # One relative orbit, two UTM zones: ESA's tiles of zone 60 reach past longitude 180.
    assert {record.geobox.crs.epsg for record in records} == {32701, 32760}
    assert {record.region_code[:2] for record in records} == {"01", "60"}
    for record in records:
        shapes = {band: _read(path).shape for band, path in record.measurement_paths.items()}
        height, width = shapes["red"]
        assert shapes["veg_red_edge_1"] == (height // 2, width // 2)
        assert shapes["scene_classification"] == (height // 2, width // 2)
        assert shapes["coastal_aerosol"] == (height // 6, width // 6)
        left, _bottom, _right, top = record.geobox.boundingbox
        assert left % 60 == 0 and top % 60 == 0  # MGRS tile grids nest at 10, 20 and 60 m
        scl = _read(record.measurement_paths["scene_classification"])
        assert set(np.unique(scl).tolist()) <= set(range(12))
        day = solar_day_at(record.acquired, geobox_longitude(record.geobox))
        expected = truth(
            "s2_esa_sr_granule", day, record.geobox, SEED, ["red"], scenes=[record.label]
        )
        assert np.array_equal(_read(record.measurement_paths["red"]), expected.values["red"])
    document = yaml.safe_load(records[0].metadata_path.read_text())
    assert document["measurements"]["scene_classification"]["grid"] == "20m"


def test_scenes_of_one_pass_in_two_zones_see_the_same_ground_and_clouds() -> None:
    # Around 19.4 S on the antimeridian, rows 73 (UTM 1S) and 74 (UTM 60S) of path 73 overlap.
    grid = archive_grid("ls8_usgs_sr_scene", ANTIMERIDIAN_BOX, CRS)
    days = acquisition_days("ls8_usgs_sr_scene", grid, FIRST, LAST)
    passes = {day: plans for day, plans in days.items() if len({p.crs for p in plans}) == 2}
    assert passes
    for day, plans in passes.items():
        north, south = (
            truth("ls8_usgs_sr_scene", day, grid, SEED, scenes=[plan.label]) for plan in plans
        )
        both = ~north.nodata & ~south.nodata
        assert both.mean() > 0.9
        # Each zone's pixels sample the one ground raster: classes and clouds agree but for
        # pixels on class edges, which the two grids cut differently; a pixel's reflectance is
        # the ground pixel's under it, which for about half of them is the same ground pixel.
        assert (north.cover[both] == south.cover[both]).mean() > 0.99
        assert (north.cloud[both] == south.cloud[both]).mean() > 0.99
        red = north.values["red"][both], south.values["red"][both]
        assert (red[0] == red[1]).mean() > 0.3
        assert np.corrcoef(*red)[0, 1] > 0.95


# 9 km on the antimeridian at 19.4 S, in the seed's CRS.
ANTIMERIDIAN_BOX = (2126500.0, 3728000.0, 2135500.0, 3737000.0)


def test_wrs2_rows_overlap_along_track_and_paths_across_track() -> None:
    spec = product_spec("ls8_usgs_sr_scene")
    seed_box = BoundingBox(*SEED_BOX_EPSG3460, crs=CRS).polygon
    plans = plan_scenes(spec, seed_box, date(2019, 1, 1), date(2019, 1, 31))
    outlines = {}
    for plan in plans:
        outline = plan.track.strip(-plan.half_length, plan.half_length)  # type: ignore[operator]
        outlines[(plan.path, plan.row)] = outline.assign_crs(plan.crs).to_crs(CRS)
    along = [
        (outlines[(path, row)], outlines[(path, row + 1)])
        for path, row in outlines
        if (path, row + 1) in outlines
    ]
    across = [
        (outlines[(path, row)], outlines[(path + 1, row)])
        for path, row in outlines
        if (path + 1, row) in outlines
    ]
    assert along and across
    for first, second in along:
        # Rows 161 km apart, scenes 180 km long: about 19 km shared along the track.
        shared = first.intersection(second).area / (185_000.0 * 19_000.0)
        assert 0.7 < shared < 1.3
    for first, second in across:
        assert first.intersection(second).area > 0.05 * first.area


def test_the_seed_box_has_landsat_scenes_in_utm_zones_60_and_1_across_the_antimeridian() -> None:
    spec = product_spec("ls8_usgs_sr_scene")
    seed_box = BoundingBox(*SEED_BOX_EPSG3460, crs=CRS).polygon
    plans = plan_scenes(spec, seed_box, date(2019, 1, 1), date(2019, 12, 31))
    assert {plan.crs.epsg for plan in plans} == {32760, 32701}
    crossing = [plan for plan in plans if plan.crs.epsg == 32760 and _crosses_antimeridian(plan)]
    assert crossing, "zone-60 scenes reach across longitude 180 into the seed box"


def _crosses_antimeridian(plan: object) -> bool:
    from pyproj import Transformer

    footprint = plan.footprint  # type: ignore[attr-defined]
    to_lonlat = Transformer.from_crs(footprint.crs.to_wkt(), "EPSG:4326", always_xy=True)
    lons = [to_lonlat.transform(x, y)[0] for x, y in footprint.exterior.coords]
    return min(lons) < -179 and max(lons) > 179


def test_an_empty_area_or_period_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="empty"):
        generate_archive("ls8_usgs_sr_scene", (1, 1, 1, 2), FIRST, LAST, tmp_path, crs=CRS)
    with pytest.raises(InvalidRequest, match="before"):
        generate_archive("ls8_usgs_sr_scene", BOX, LAST, FIRST, tmp_path, crs=CRS)
    with pytest.raises(InvalidRequest, match="ls8_usgs_sr_scene"):
        generate_archive("landsat9", BOX, FIRST, LAST, tmp_path, crs=CRS)

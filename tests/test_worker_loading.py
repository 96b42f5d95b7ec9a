"""How a product job loads its inputs, against a real datacube index of native-UTM scenes.

The box straddles the antimeridian at 19.4 S, where rows 73 (UTM 1S) and 74 (UTM 60S) of WRS-2
path 73 overlap: every pass is two scenes in two zones, each crossing longitude 180. A pass
there is at 22:01 UTC: 10:01 the next day at 179.9 E, 10:01 the same day at 179.9 W.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from hypothesis import given
from hypothesis import strategies as st

from devtools.archive import acquisition_days, archive_grid
from services.dispatcher.planning import plan_jobs
from services.worker.loading import search_times
from services.worker.product_runner import ProductRunner
from services.worker.settings import WorkerSettings
from shared.catalogue import sensor_for
from shared.jobs import Period, ProductJob, TileArea, product_job
from shared.messages import parse_request
from shared.solar_day import solar_day_at
from tests.archive_support import ArchiveFixture, build_archive

PRODUCT = "ls8_usgs_sr_scene"
CRS = "EPSG:3460"
# 9 km on the antimeridian (longitude 180 runs through it, about 2131000 in EPSG:3460).
ACROSS_180 = (2126500.0, 3728000.0, 2135500.0, 3737000.0)
# 4.5 km at 179.9 E (west of the antimeridian), where the local solar day is a day ahead of
# the UTC date of a 22:01 UTC pass.
AT_179_9_E = (2121000.0, 3730000.0, 2125500.0, 3734500.0)
FIRST, LAST = date(2019, 1, 1), date(2019, 2, 10)


@pytest.fixture(scope="module")
def archive(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> ArchiveFixture:
    margin = 3000.0
    _left, bottom, right, top = ACROSS_180
    return build_archive(
        postgres_url,
        Path(tmp_path_factory.mktemp("antimeridian")),
        PRODUCT,
        (AT_179_9_E[0] - margin, bottom - margin, right + margin, top + margin),
        FIRST,
        LAST,
    )


@pytest.fixture
def runner(archive: ArchiveFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProductRunner]:
    for name, value in archive.environment.items():
        monkeypatch.setenv(name, value)
    runner = ProductRunner(WorkerSettings())
    yield runner
    if runner._datacube is not None:
        runner._datacube.close()


def job_over(
    bounds: tuple[float, float, float, float], time_from: date, time_to: date, code: str = "ndvi"
) -> ProductJob:
    """A job over exactly `bounds` (not a grid cell: the loader takes any area)."""
    request, _ = parse_request(
        {
            "job_code": code,
            "product": PRODUCT,
            "query_x_from": bounds[0],
            "query_y_from": bounds[1],
            "query_x_to": bounds[2],
            "query_y_to": bounds[3],
            "query_crs": CRS,
            "time_from": time_from.isoformat(),
            "time_to": time_to.isoformat(),
            "output_crs": CRS,
            "prefix": "test",
        }
    )
    area = TileArea(tile="test", crs=CRS, resolution=30.0, **dict(zip(
        ("left", "bottom", "right", "top"), bounds, strict=True)))  # fmt: skip
    return product_job(request, area, Period(start=time_from, end=time_to))  # type: ignore[arg-type]


def passes_over(bounds: tuple[float, float, float, float], first: date, last: date) -> int:
    return len(acquisition_days(PRODUCT, archive_grid(PRODUCT, bounds, CRS), first, last))


def test_two_scenes_of_one_pass_across_the_antimeridian_load_as_one_observation(
    runner: ProductRunner,
) -> None:
    job = job_over(ACROSS_180, FIRST, LAST)
    datasets = runner._find_datasets(job)
    zones = {dataset.crs.epsg for dataset in datasets}
    assert zones == {32701, 32760}
    passes = passes_over(ACROSS_180, FIRST, LAST)
    assert passes >= 2 and len(datasets) == 2 * passes
    cube = runner._load(job, datasets, ["red", "nir", "pixel_qa"])
    assert cube.time.size == passes
    for index in range(passes):
        seen = cube.pixel_qa.isel(time=index).values != 1
        assert seen.mean() > 0.99  # both scenes cover the box: fused, not split


def test_a_period_is_counted_in_solar_days_at_the_cell(runner: ProductRunner) -> None:
    grid = archive_grid(PRODUCT, AT_179_9_E, CRS)
    days = list(acquisition_days(PRODUCT, grid, FIRST, LAST))
    first_day = days[0]
    job = job_over(AT_179_9_E, first_day, first_day)
    datasets = runner._find_datasets(job)
    assert datasets
    # Acquired the evening before in UTC: a search by UTC date would miss the pass.
    assert {dataset.center_time.date() for dataset in datasets} == {first_day - timedelta(days=1)}
    cube = runner._load(job, datasets, ["red", "pixel_qa"])
    assert cube.time.size == 1
    # The day before has no pass here: nothing, not the same pass again.
    assert runner._find_datasets(job_over(AT_179_9_E, days[0] - timedelta(days=1),
                                          days[0] - timedelta(days=1))) == []  # fmt: skip


def test_masks_load_nearest_and_reflectance_interpolated(
    runner: ProductRunner, archive: ArchiveFixture
) -> None:
    job = job_over(ACROSS_180, FIRST, LAST)
    datasets = runner._find_datasets(job)
    cube = runner._load(job, datasets, ["red", "pixel_qa"]).compute()
    written: set[int] = set()
    for record in archive.records:
        with rasterio.open(record.measurement_paths["pixel_qa"]) as band:
            written |= set(np.unique(band.read(1)).tolist())
    # Bit flags are never averaged: every loaded code is one the scenes hold.
    assert set(np.unique(cube.pixel_qa.values).tolist()) <= written
    nearest = (
        archive.datacube()
        .load(
            datasets=datasets, like=cube.odc.geobox, measurements=["red"],
            group_by=_grouping(cube),
        )
        .red.values
    )  # fmt: skip
    both = (cube.red.values != -9999) & (nearest != -9999)
    assert (cube.red.values[both] != nearest[both]).mean() > 0.3
    assert abs(float(cube.red.values[both].mean()) - float(nearest[both].mean())) < 5


def _grouping(cube: Any) -> Any:
    from services.worker.loading import cell_longitude, solar_day_grouping

    return solar_day_grouping(cell_longitude(cube.odc.geobox))


def test_a_grid_cell_job_reads_exactly_its_cells_pixels(runner: ProductRunner) -> None:
    request, _ = parse_request(
        json.loads(
            '{"job_code": "ndvi", "product": "ls8_usgs_sr_scene", "query_x_from": "2127000",'
            ' "query_y_from": "3729000", "query_x_to": "2128000", "query_y_to": "3730000",'
            ' "query_crs": "EPSG:3460", "time_from": "2019-01-01", "time_to": "2019-02-10",'
            ' "output_crs": "EPSG:32760", "prefix": "test"}'
        )
    )
    (job,) = plan_jobs(request, tile_size=None, tile_size_pixels=640)
    assert isinstance(job, ProductJob)
    cube = runner._load(job, runner._find_datasets(job), ["red", "pixel_qa"])
    geobox = cube.odc.geobox
    # The cell's own grid, in UTM on USGS's pixel corners: a zone-60 scene's pixels are copied.
    assert geobox.shape == (640, 640)
    assert (geobox.affine.c % 30, geobox.affine.f % 30) == (15.0, 15.0)


def test_masks_are_nearest_and_every_other_band_takes_the_products_resampling() -> None:
    from services.worker.products import get_product

    landsat = sensor_for(PRODUCT)
    assert get_product("ndvi").load_resampling(landsat) == {"pixel_qa": "nearest", "*": "bilinear"}
    sentinel2 = sensor_for("s2_esa_sr_granule")
    assert get_product("shoreline").load_resampling(sentinel2) == {
        "scene_classification": "nearest", "*": "cubic",
    }  # fmt: skip


@given(
    day=st.dates(date(2000, 1, 1), date(2030, 12, 31)),
    hours=st.floats(0, 24, exclude_max=True),
    longitude=st.floats(-180, 180),
)
def test_the_search_window_holds_every_moment_whose_solar_day_is_in_the_period(
    day: date, hours: float, longitude: float
) -> None:
    moment = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=hours)
    solar = solar_day_at(moment, longitude)
    start, end = search_times(solar, solar)
    assert start <= moment <= end
    assert abs((solar - moment.date()).days) <= 1


def test_solar_day_at_agrees_with_datacube_at_a_right_longitude() -> None:
    from datacube.api.query import _convert_to_solar_time

    moment = datetime(2019, 1, 4, 22, 1, tzinfo=UTC)
    for longitude in (-179.9, -20.0, 0.0, 20.0, 179.9):
        assert solar_day_at(moment, longitude) == _convert_to_solar_time(moment, longitude).date()
    assert solar_day_at(moment, 179.9) == date(2019, 1, 5)
    assert solar_day_at(moment, -179.9) == date(2019, 1, 4)

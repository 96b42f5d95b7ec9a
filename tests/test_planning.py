"""Planning: counted before made, within limits people can read, the same jobs every time."""

from __future__ import annotations

import json
import tracemalloc
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from odc.geo import XY
from odc.geo.crs import CRS
from odc.geo.gridspec import GridSpec

from services.dispatcher.planning import check_limits, plan_jobs, plan_request
from shared.jobs import TileArea, count_periods, split_periods
from shared.limits import LimitExceeded, RequestLimits
from shared.messages import ProductRequest, parse_request
from shared.seed import SEED_PRODUCT_ITEM, SEED_SCENE_ITEM
from shared.tiling import plan_tiles

SEED = json.loads(SEED_PRODUCT_ITEM)
LIMITS = RequestLimits()
# 11 x 6 whole 96 km tiles of EPSG:3460 at 30 m: 66 tiles.
SIXTY_SIX_TILES = {
    "query_x_from": "2112000", "query_x_to": "3168000",
    "query_y_from": "3456000", "query_y_to": "4032000",
}  # fmt: skip


def request(**changes: Any) -> ProductRequest:
    parsed, _ignored = parse_request(SEED | changes)
    assert isinstance(parsed, ProductRequest)
    return parsed


def plan(**changes: Any) -> Any:
    return plan_request(request(**changes), tile_size=None, tile_size_pixels=3200)


def reference_tiles(
    bounds: tuple[float, float, float, float], resolution: float, tile_size: float
) -> list[TileArea]:
    """The whole cells the area meets, as odc-geo finds them (`GridSpec.tiles_from_geopolygon`,
    less those it only touches along an edge), row by row and west to east."""
    from odc.geo import geom

    wanted = geom.box(*bounds, crs=CRS("EPSG:3460"))
    grid = GridSpec(
        CRS("EPSG:3460"),
        tile_shape=(round(tile_size / resolution),) * 2,
        resolution=resolution,
        origin=XY(0.0, 0.0),
    )
    cells = []
    for (ix, iy), cell in grid.tiles_from_geopolygon(wanted):
        overlap = cell.extent.intersection(wanted)
        if overlap.is_empty:
            continue
        west, south, east, north = overlap.boundingbox
        if min(east - west, north - south) <= 1e-6 * resolution:  # touching, not overlapping
            continue
        left, bottom, right, top = cell.boundingbox
        cells.append(
            (
                (iy, ix),
                TileArea(
                    tile=f"x{ix:+04d}y{iy:+04d}".replace("+", ""),
                    crs="EPSG:3460",
                    resolution=resolution,
                    left=left,
                    bottom=bottom,
                    right=right,
                    top=top,
                ),
            )
        )
    return [area for _order, area in sorted(cells, key=lambda pair: pair[0])]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=st.floats(-2e6, 4e6),
    y=st.floats(-2e6, 4e6),
    resolution=st.sampled_from([10.0, 30.0, 25.0, 7.5, 0.3]),
    tile_pixels=st.sampled_from([16, 37, 100, 3200]),
    width_tiles=st.floats(0.001, 4.5),
    height_tiles=st.floats(0.001, 4.5),
)
def test_counted_tiles_are_the_grids_tiles_in_the_grids_order(
    x: float,
    y: float,
    resolution: float,
    tile_pixels: int,
    width_tiles: float,
    height_tiles: float,
) -> None:
    tile_size = resolution * tile_pixels
    bounds = (x, y, x + width_tiles * tile_size, y + height_tiles * tile_size)
    expected = reference_tiles(bounds, resolution, tile_size)
    tiles = plan_tiles(bounds, "EPSG:3460", "EPSG:3460", resolution, tile_size)
    assert tiles.count == len(expected)
    assert list(tiles) == expected
    for skip in {0, 1, len(expected) // 2, len(expected) - 1}:
        assert list(tiles.areas(skip)) == expected[skip:]
    if expected:
        assert tiles.largest_tile_pixels == tile_pixels * tile_pixels


@given(
    start=st.dates(date(1970, 1, 1), date(2099, 12, 31)),
    days=st.integers(0, 3000),
    step=st.from_regex(r"[1-9][0-9]{0,2}[YMWD]", fullmatch=True),
)
def test_periods_are_counted_without_being_made(start: date, days: int, step: str) -> None:
    end = min(start + timedelta(days=days), date(2099, 12, 31))
    periods = split_periods(start, end, step)
    assert count_periods(start, end, step) == len(periods)
    assert periods[0].start == start and periods[-1].end == end


@settings(max_examples=30, deadline=None)
@given(start=st.integers(0, 11), step=st.sampled_from(["1M", "2W", "6M", "1Y"]))
def test_jobs_from_any_point_are_the_rest_of_the_same_jobs(start: int, step: str) -> None:
    job_plan = plan(time_step=step)
    every = list(job_plan.jobs())
    assert len(every) == job_plan.count
    assert [job.job_id for job in job_plan.jobs(start)] == [job.job_id for job in every[start:]]


def test_the_seed_request_becomes_the_whole_cells_the_readme_quotes() -> None:
    jobs = plan_jobs(request(), tile_size=None, tile_size_pixels=640)
    # 7 x 6 whole 19.2 km cells, row by row from the south-west: x110y182 ... x116y187.
    assert [job.area.tile for job in jobs] == [  # type: ignore[union-attr]
        f"x{x}y{y}" for y in range(182, 188) for x in range(110, 117)
    ]
    # With 96 km cells the same box meets the 2 x 2 cells around it, whole.
    jobs = plan_jobs(request(), tile_size=None, tile_size_pixels=3200)
    assert [job.area.tile for job in jobs] == ["x022y036", "x023y036", "x022y037", "x023y037"]  # type: ignore[union-attr]


def test_a_request_over_the_job_limit_is_refused_with_the_figure_and_the_setting() -> None:
    big = plan(
        **SIXTY_SIX_TILES, job_code="shoreline", time_from="2015-01-01", time_to="2019-12-31",
        time_step="1D",
    )  # fmt: skip
    with pytest.raises(LimitExceeded) as raised:
        check_limits(big, LIMITS)
    assert str(raised.value) == (
        "the request makes 120,516 jobs; the limit is 10,000 (CONVEYOR_MAX_JOBS_PER_REQUEST)"
    )
    assert raised.value.reason == "over_limit"


def test_a_request_is_counted_and_refused_without_making_its_jobs() -> None:
    tracemalloc.start()
    try:
        big = plan(
            **SIXTY_SIX_TILES, job_code="shoreline", time_from="2015-01-01",
            time_to="2019-12-31", time_step="1D", resolution="0.5",
        )  # fmt: skip
        with pytest.raises(LimitExceeded, match="the request makes 433,857,600 jobs"):
            check_limits(big, LIMITS)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 433 million jobs were counted; a few MiB is what parsing and the CRS lookups take.
    assert peak < 8 * 1024 * 1024


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"time_step": "1D", "time_from": "2015-01-01", "time_to": "2019-12-31"},
            "the request splits into 1,826 periods; the limit is 1,000 "
            "(CONVEYOR_MAX_PERIODS_PER_REQUEST)",
        ),
        (
            {"naming": "legacy", "query_x_from": "-10000000", "query_x_to": "10000000"},
            "the request's legacy-named job covers its whole box, 2,236,004,472 pixels; the "
            "limit is 100,000,000 (CONVEYOR_MAX_PIXELS_PER_JOB)",
        ),
        (
            {"dask_x_chunk_size": "1"},
            "the request asks for Dask chunks of 1 pixels along x; the smallest allowed is 64 "
            "(CONVEYOR_MIN_DASK_CHUNK)",
        ),
        (
            {"dask_chunk_size": "8"},
            "the request asks for Dask chunks of 8 pixels along x",
        ),
    ],
)
def test_each_limit_names_the_figure_the_limit_and_its_setting(
    changes: dict[str, str], expected: str
) -> None:
    job_plan = plan(**{"job_code": "shoreline"} | changes)
    with pytest.raises(LimitExceeded) as raised:
        check_limits(job_plan, LIMITS)
    assert str(raised.value) == expected or str(raised.value).startswith(expected)


def test_limits_are_settings() -> None:
    job_plan = plan(**SIXTY_SIX_TILES)
    check_limits(job_plan, LIMITS)
    with pytest.raises(LimitExceeded, match="the limit is 65 "):
        check_limits(job_plan, RequestLimits(max_jobs_per_request=65))


def test_a_box_outside_the_output_crs_is_refused_not_retried() -> None:
    from shared.errors import InvalidRequest

    lat_lon = {k: v for k, v in SEED.items() if not k.startswith("query_")} | {
        "latitude_from": "-89.9", "latitude_to": "89.9",
        "longitude_from": "-179.9", "longitude_to": "179.9", "output_crs": "EPSG:3857",
    }  # fmt: skip
    parsed, _ = parse_request(lat_lon)
    try:
        job_plan = plan_request(parsed, tile_size=None, tile_size_pixels=3200)
    except InvalidRequest:
        return  # refused for its extent: fine
    with pytest.raises(LimitExceeded):
        check_limits(job_plan, LIMITS)


def test_a_scene_request_is_one_job() -> None:
    parsed, _ = parse_request(json.loads(SEED_SCENE_ITEM))
    job_plan = plan_request(parsed, tile_size=None, tile_size_pixels=3200)
    check_limits(job_plan, LIMITS)
    assert job_plan.count == 1 and len(list(job_plan.jobs())) == 1
    assert list(job_plan.jobs(1)) == []

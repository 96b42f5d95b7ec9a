"""One product, one grid: requests become whole cells of a fixed grid per output CRS."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from odc.geo.geom import box

from services.dispatcher.planning import plan_jobs
from services.worker.outputs import BandSpec, layout_for, output_spec_for_job
from shared.jobs import ProductJob
from shared.messages import parse_request
from shared.seed import SEED_BOX_EPSG3460, SEED_LATLON_ITEM, SEED_PRODUCT_ITEM
from shared.tiling import area_geobox, grid_anchor, tile_areas, whole_area

CELL = 640 * 30.0  # the default cell: 640 px at 30 m, 19.2 km
SEED_LEFT, SEED_BOTTOM, SEED_RIGHT, SEED_TOP = SEED_BOX_EPSG3460


def jobs_for(item: str = SEED_PRODUCT_ITEM, **fields: str) -> list[ProductJob]:
    request, _unknown = parse_request({**json.loads(item), **fields})
    return [
        job
        for job in plan_jobs(request, tile_size=None, tile_size_pixels=640)
        if isinstance(job, ProductJob)
    ]


def metadata_key(job: ProductJob) -> str:
    spec = output_spec_for_job(
        job,
        product_name="ls8_geomedian",
        bands={"red": BandSpec(dtype="int16", nodata=-9999)},
        sources=(),
    )
    return layout_for(spec).metadata_key


def test_two_requests_over_parts_of_one_cell_name_the_same_whole_cell() -> None:
    # Two different boxes inside cell x111y182 (2131200..2150400, 3494400..3513600).
    first = jobs_for(
        query_x_from="2132000", query_x_to="2138000", query_y_from="3499700", query_y_to="3504200"
    )
    second = jobs_for(
        query_x_from="2140000", query_x_to="2149000", query_y_from="3495000", query_y_to="3512000"
    )
    assert [job.area for job in first] == [job.area for job in second]
    (cell,) = (job.area for job in first)
    assert cell.tile == "x111y182"
    assert cell.bounds == (2131200.0, 3494400.0, 2150400.0, 3513600.0)
    # Same files, so the second request finds the first's dataset committed.
    assert metadata_key(first[0]) == metadata_key(second[0])
    assert first[0].job_id != second[0].job_id  # each request still counts its own job


boxes = st.tuples(
    st.floats(2_050_000, 2_300_000),
    st.floats(3_450_000, 3_700_000),
    st.floats(500, 60_000),
    st.floats(500, 60_000),
)


@settings(max_examples=60, deadline=None)
@given(corner=boxes)
def test_cells_are_whole_disjoint_cover_the_area_and_each_meets_it(
    corner: tuple[float, float, float, float],
) -> None:
    left, bottom, width, height = corner
    bounds = (left, bottom, left + width, bottom + height)
    cells = tile_areas(bounds, "EPSG:3460", "EPSG:3460", 30.0, CELL)
    wanted = box(*bounds, crs="EPSG:3460")
    assert cells
    union = None
    for cell in cells:
        assert cell.shape == (640, 640)
        assert cell.left % CELL == 0 and cell.bottom % CELL == 0
        assert cell.tile == f"x{int(cell.left // CELL):03d}y{int(cell.bottom // CELL):03d}"
        outline = box(*cell.bounds, crs="EPSG:3460")
        assert outline.intersection(wanted).area > 0
        union = outline if union is None else union.union(outline)
    assert union is not None and union.contains(wanted)
    assert union.area == len(cells) * CELL * CELL  # no two cells overlap
    assert len({cell.tile for cell in cells}) == len(cells)


@settings(max_examples=40, deadline=None)
@given(corner=boxes)
def test_a_request_smaller_than_a_cell_pays_for_at_most_four_cells(
    corner: tuple[float, float, float, float],
) -> None:
    left, bottom, width, height = corner
    bounds = (left, bottom, left + min(width, CELL), bottom + min(height, CELL))
    assert len(tile_areas(bounds, "EPSG:3460", "EPSG:3460", 30.0, CELL)) <= 4


def test_a_lat_lon_request_is_the_cells_its_area_meets_not_those_of_its_envelope() -> None:
    # The seed box in lat/lon: the same cells as the projected box, not more.
    projected = {job.area.tile for job in jobs_for()}
    latlon = jobs_for(SEED_LATLON_ITEM)
    assert {job.area.tile for job in latlon} == projected
    assert len(projected) == 42  # 7 x 6 cells of 19.2 km over the 103 x 101 km box


def test_landsat_cells_in_utm_are_anchored_on_usgs_pixel_corners() -> None:
    landsat = jobs_for(output_crs="EPSG:32701")
    assert {(job.area.left % 30, job.area.top % 30) for job in landsat} == {(15.0, 15.0)}
    assert grid_anchor("ls8_usgs_sr_scene", "EPSG:32760") == 15.0
    # Sentinel-2's MGRS grids have corners on multiples of 60 m; other CRSs are anchored at 0.
    assert grid_anchor("s2_esa_sr_granule", "EPSG:32701") == 0.0
    assert grid_anchor("ls8_usgs_sr_scene", "EPSG:3460") == 0.0
    geobox = area_geobox(landsat[0].area)
    assert (geobox.affine.c, geobox.affine.f) == (landsat[0].area.left, landsat[0].area.top)
    assert geobox.shape == (640, 640)


def test_a_legacy_request_is_still_one_area_over_its_whole_box() -> None:
    (job,) = jobs_for(naming="legacy")
    assert job.area.tile == "whole"
    assert job.area.bounds == (2130000.0, 3499680.0, 2233320.0, 3600300.0)
    assert whole_area(SEED_BOX_EPSG3460, "EPSG:3460", "EPSG:3460", 30.0) == job.area

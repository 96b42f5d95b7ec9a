"""Output names: the odc-stats layout, and the original worker's flat names for the seed job."""

from __future__ import annotations

import json
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.dispatcher.planning import plan_jobs
from services.worker.outputs.destination import check_key
from services.worker.outputs.job_spec import output_spec_for_job
from services.worker.outputs.naming import layout_for, sensor_short_name, tile_path
from services.worker.outputs.spec import OutputSpec
from shared.jobs import Period, ProductJob
from shared.messages import ProductRequest, parse_request
from shared.seed import SEED_PRODUCT_ITEM
from tests.test_outputs_support import REFLECTANCE, SOURCES, geomedian_spec, seed_legacy_spec

SEED_PREFIX = "commonsensing/fiji/landsat_8_geomedian/2019"
SEED_STEM = "ls8_geomedian_2019-01-01_2019-12-31_epsg3460_2130000.0_3499700.0_2233300.0_3600300.0"


def test_odc_layout_puts_each_tile_and_period_in_its_own_folder() -> None:
    layout = layout_for(geomedian_spec())

    folder = f"{SEED_PREFIX}/ls8_geomedian/x022/y036/2019--P1Y"
    assert layout.band_key("red") == f"{folder}/ls8_geomedian_x022y036_2019--P1Y_red.tif"
    assert layout.vector_key("shoreline") == (
        f"{folder}/ls8_geomedian_x022y036_2019--P1Y_shoreline.geojson"
    )
    assert layout.stac_key == f"{folder}/ls8_geomedian_x022y036_2019--P1Y_final.stac-item.json"
    assert layout.metadata_key == (
        f"{folder}/ls8_geomedian_x022y036_2019--P1Y_final.odc-metadata.yaml"
    )


def test_legacy_names_reproduce_the_seed_jobs_files() -> None:
    layout = layout_for(seed_legacy_spec())

    assert layout.band_key("red") == f"{SEED_PREFIX}/{SEED_STEM}_red.tif"
    assert layout.band_key("swir2") == f"{SEED_PREFIX}/{SEED_STEM}_swir2.tif"
    assert layout.metadata_key == f"{SEED_PREFIX}/{SEED_STEM}_datacube-metadata.yaml"
    assert layout.stac_key == f"{SEED_PREFIX}/{SEED_STEM}_stac-item.json"


def test_legacy_names_built_from_the_seed_work_item_match() -> None:
    request = ProductRequest.model_validate(json.loads(SEED_PRODUCT_ITEM))
    spec = geomedian_spec(
        naming="legacy",
        prefix=request.prefix,
        crs=request.output_crs,
        legacy_bounds=request.area_bounds,
        period=Period(start=request.time_from, end=request.time_to),
    )

    assert layout_for(spec).band_key("blue") == f"{SEED_PREFIX}/{SEED_STEM}_blue.tif"


@pytest.mark.parametrize(
    ("source_product", "short_name"),
    [
        ("ls5_usgs_sr_scene", "ls5"),
        ("ls7_usgs_sr_scene", "ls7"),
        ("ls8_usgs_sr_scene", "ls8"),
        ("s2_esa_sr_granule", "s2"),
    ],
)
def test_legacy_names_start_with_the_sensor_short_name(
    source_product: str, short_name: str
) -> None:
    assert sensor_short_name(source_product) == short_name
    layout = layout_for(seed_legacy_spec(source_product=source_product))
    assert layout.band_key("red").split("/")[-1].startswith(f"{short_name}_geomedian_2019-01-01_")


def test_legacy_names_without_request_bounds_use_the_tile() -> None:
    layout = layout_for(geomedian_spec(naming="legacy"))

    assert layout.band_key("red").endswith(
        "_epsg3460_2130000.0_3499680.0_2131920.0_3501600.0_red.tif"
    )


def test_legacy_epsg4326_naming_puts_longitude_and_latitude_in_names() -> None:
    name = layout_for(seed_legacy_spec(epsg4326_naming=True)).band_key("red").split("/")[-1]

    x_from, y_from, x_to, y_to = (float(part) for part in name.split("_")[5:9])
    assert -180.0 < x_from < x_to < -178.9
    assert -21.6 < y_from < y_to < -20.5
    assert "_epsg3460_" in name  # the original kept the output CRS's label


def test_periods_other_than_a_year_are_labelled_as_odc_stats_does() -> None:
    quarter = geomedian_spec(period=Period(start=date(2019, 3, 1), end=date(2019, 5, 31)))
    odd = geomedian_spec(period=Period(start=date(2019, 1, 5), end=date(2019, 2, 20)))

    assert "/2019-03--P3M/" in layout_for(quarter).metadata_key
    assert "/2019-01-05--2019-02-20/" in layout_for(odd).metadata_key


@pytest.mark.parametrize(
    ("tile", "path"),
    [("x022y036", "x022/y036"), ("x-005y036", "x-005/y036"), ("x-12y-3", "x-12/y-3"), ("t7", "t7")],
)
def test_tile_ids_split_into_x_and_y_folders(tile: str, path: str) -> None:
    assert tile_path(tile) == path


tiles = st.builds(
    lambda x, y: f"x{x:03d}y{y:03d}".replace("+", ""),
    st.integers(-999, 999),
    st.integers(-999, 999),
)
band_names = st.lists(
    st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True), min_size=1, max_size=8, unique=True
)


@given(tile=tiles, bands=band_names, legacy=st.booleans())
def test_every_file_of_a_dataset_has_its_own_safe_key_in_one_folder(
    tile: str, bands: list[str], legacy: bool
) -> None:
    layout = layout_for(geomedian_spec(tile=tile, naming="legacy" if legacy else "odc"))

    keys = [layout.band_key(name) for name in bands] + [layout.stac_key, layout.metadata_key]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert check_key(key) == key
        assert key.rsplit("/", 1)[0] == layout.folder


def seed_jobs(tile_size: float, **fields: str) -> list[ProductJob]:
    request, _unknown = parse_request({**json.loads(SEED_PRODUCT_ITEM), **fields})
    jobs = plan_jobs(request, tile_size=tile_size, tile_size_pixels=3200)
    return [job for job in jobs if isinstance(job, ProductJob)]


def spec_for(job: ProductJob) -> OutputSpec:
    return output_spec_for_job(
        job, product_name="ls8_geomedian", bands={"red": REFLECTANCE}, sources=SOURCES
    )


def test_a_legacy_job_covering_the_whole_seed_request_gets_the_original_names() -> None:
    (job,) = seed_jobs(tile_size=1_000_000, naming="legacy")

    layout = layout_for(spec_for(job))

    assert layout.band_key("red") == f"{SEED_PREFIX}/{SEED_STEM}_red.tif"
    assert layout.metadata_key == f"{SEED_PREFIX}/{SEED_STEM}_datacube-metadata.yaml"


def test_a_legacy_request_is_one_job_named_after_its_box_whatever_the_tile_size() -> None:
    (job,) = seed_jobs(tile_size=96_000, naming="legacy")

    assert layout_for(spec_for(job)).metadata_key == (
        f"{SEED_PREFIX}/{SEED_STEM}_datacube-metadata.yaml"
    )


def test_legacy_naming_by_default_names_split_tiles_after_their_tiles() -> None:
    jobs = seed_jobs(tile_size=96_000)

    keys = {
        layout_for(
            output_spec_for_job(
                job, product_name="ls8_geomedian", bands={"red": REFLECTANCE}, sources=SOURCES,
                default_naming="legacy",
            )
        ).metadata_key
        for job in jobs
    }  # fmt: skip

    assert len(jobs) > 1
    assert len(keys) == len(jobs)
    assert all(
        key.startswith(f"{SEED_PREFIX}/ls8_geomedian_2019-01-01_2019-12-31_") for key in keys
    )


def test_jobs_without_a_naming_choice_use_the_odc_layout() -> None:
    jobs = seed_jobs(tile_size=96_000)

    specs = [spec_for(job) for job in jobs]

    assert {spec.naming for spec in specs} == {"odc"}
    assert {spec.tile for spec in specs} == {job.area.tile for job in jobs}
    assert layout_for(specs[0]).metadata_key.startswith(f"{SEED_PREFIX}/ls8_geomedian/x")

"""Cloud and shadow buffering: options parse or are refused with a reason; the morphology equals
scipy's disk morphology on the whole tile, however the cube is chunked."""

from __future__ import annotations

import dask.array
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.validate.references import buffer
from services.worker.products.masks import buffered
from shared.catalogue import check_request, job_code, sensor_for
from shared.errors import InvalidRequest
from shared.mask_filters import (
    LANDSAT_FILTERS,
    MAX_REACH,
    OPERATIONS,
    SENTINEL2_FILTERS,
    UNBUFFERED,
    format_filter,
    parse_filter,
    reach,
)

steps = st.lists(
    st.tuples(st.sampled_from(OPERATIONS), st.integers(min_value=0, max_value=8)), max_size=4
).map(tuple)


@given(steps)
def test_a_filter_written_as_text_parses_back_to_itself(mask_filter: tuple) -> None:
    assert parse_filter("cloud_filter", format_filter(mask_filter)) == mask_filter


@given(st.text(max_size=30))
def test_any_text_parses_or_is_refused_naming_the_option(text: str) -> None:
    try:
        parsed = parse_filter("shadow_filter", text)
    except InvalidRequest as refused:
        assert "shadow_filter" in str(refused)
    else:
        assert all(operation in OPERATIONS and radius >= 0 for operation, radius in parsed)
        assert reach(parsed) <= MAX_REACH


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("dilate:5", "operations opening, closing, dilation, erosion"),
        ("dilation", "operation:radius"),
        ("dilation:five", "whole number"),
        ("dilation:-1", "out of range"),
        ("dilation:33", "out of range"),
        ("opening:20,dilation:30", "reaches 70 pixels"),
    ],
)
def test_the_dispatcher_refuses_a_bad_filter_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        check_request("ndvi", "ls8_usgs_sr_scene", {"cloud_filter": text})


def test_defaults_follow_the_reference_products_and_none_turns_them_off() -> None:
    landsat, sentinel2 = sensor_for("ls8_usgs_sr_scene"), sensor_for("s2_esa_sr_granule")
    water = job_code("water")
    assert water.mask_filters(landsat, {}) == LANDSAT_FILTERS
    assert LANDSAT_FILTERS.cloud == (("dilation", 6),)
    assert water.mask_filters(sentinel2, {}) == SENTINEL2_FILTERS
    assert SENTINEL2_FILTERS.cloud == (("opening", 2), ("dilation", 5))
    unbuffered = {"cloud_filter": "none", "shadow_filter": "none"}
    assert water.mask_filters(landsat, unbuffered) == UNBUFFERED
    # The geomedian keeps the scene's masks unless asked (see its module).
    assert job_code("geomedian").mask_filters(landsat, {}) == UNBUFFERED
    assert job_code("geomedian").mask_filters(landsat, {"cloud_filter": "dilation:6"}).cloud == (
        ("dilation", 6),
    )


def random_clouds(seed: int, shape: tuple[int, int, int] = (3, 70, 90)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    clouds = rng.random(shape) < 0.02  # specks
    for t in range(shape[0]):
        for _ in range(4):  # and blobs, some touching the edges
            y, x = rng.integers(-5, shape[1]), rng.integers(-5, shape[2])
            clouds[t, max(y, 0) : y + rng.integers(3, 20), max(x, 0) : x + rng.integers(3, 20)] = 1
    if shape[0] > 2:
        clouds[2] = True  # a day cloudy throughout
    return clouds


@pytest.mark.parametrize(
    "mask_filter",
    [
        (("dilation", 6),),
        (("opening", 2), ("dilation", 5)),
        (("closing", 2), ("opening", 3), ("dilation", 5)),
        (("erosion", 1),),
    ],
    ids=format_filter,
)
@pytest.mark.parametrize("chunk", [7, 32, 200])
def test_buffering_equals_scipy_disk_morphology_whatever_the_chunks(
    mask_filter: tuple, chunk: int
) -> None:
    clouds = random_clouds(seed=chunk)
    mask = xr.DataArray(
        dask.array.from_array(clouds, chunks=(1, chunk, chunk)), dims=("time", "y", "x")
    )

    got = buffered(mask, mask_filter).values

    np.testing.assert_array_equal(got, buffer(clouds, mask_filter))


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=10**6), steps)
def test_buffering_a_numpy_mask_equals_the_reference(seed: int, mask_filter: tuple) -> None:
    clouds = random_clouds(seed, shape=(1, 40, 40))
    mask = xr.DataArray(clouds, dims=("time", "y", "x"))
    np.testing.assert_array_equal(buffered(mask, mask_filter).values, buffer(clouds, mask_filter))

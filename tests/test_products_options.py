"""Options arrive as strings from the legacy work items; they parse as numbers or are refused."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.worker.products import TideRange, parse_tide_range, parse_time_step
from shared.errors import InvalidRequest
from shared.options import check_known_options, parse_number

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(finite)
def test_any_finite_number_written_as_text_parses_to_itself(value: float) -> None:
    assert parse_number("tide_range_from", repr(value)) == value
    assert parse_number("tide_range_from", f" {value!r} ") == value


@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_whole_numbers_parse_as_numbers(value: int) -> None:
    assert parse_number("tide_range_to", str(value)) == float(value)


@given(st.text().filter(lambda text: not _is_finite_number(text)))
def test_text_that_is_not_a_finite_number_is_refused_naming_the_option(text: str) -> None:
    with pytest.raises(InvalidRequest, match="tide_range_from"):
        parse_number("tide_range_from", text)


@pytest.mark.parametrize("text", ["nan", "inf", "-Infinity", "", "10m", "1,5", "ten"])
def test_typical_mistakes_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(repr(text))):
        parse_number("tide_range_to", text)


@given(finite, finite, finite)
def test_tide_range_compares_as_numbers_not_text(low: float, high: float, height: float) -> None:
    if not low < high:
        with pytest.raises(InvalidRequest, match="must be less than"):
            parse_tide_range({"tide_range_from": repr(low), "tide_range_to": repr(high)})
        return
    tide_range = parse_tide_range({"tide_range_from": repr(low), "tide_range_to": repr(high)})
    assert tide_range == TideRange(low=low, high=high)
    assert bool(tide_range.contains([height])[0]) == (low <= height <= high)


def test_ten_lies_between_nine_and_a_half_and_ten_and_a_half() -> None:
    # As text, "10" sorts before "9.5": the original worker kept the wrong observations.
    tide_range = parse_tide_range({"tide_range_from": "9.5", "tide_range_to": "10.5"})
    assert tide_range is not None
    assert tide_range.contains([9.4, 9.5, 10, 10.5, 10.6]).tolist() == [
        False,
        True,
        True,
        True,
        False,
    ]


def test_an_unknown_tide_height_is_outside_every_range() -> None:
    assert not TideRange(low=-100.0, high=100.0).contains([math.nan])[0]


@pytest.mark.parametrize("given_option", ["tide_range_from", "tide_range_to"])
def test_half_a_tide_range_is_refused(given_option: str) -> None:
    with pytest.raises(InvalidRequest, match="give both tide_range_from and tide_range_to"):
        parse_tide_range({given_option: "1.0"})


def test_no_tide_range_means_no_filter() -> None:
    assert parse_tide_range({"time_step": "1Y"}) is None


@given(st.integers(min_value=1, max_value=999), st.sampled_from("YMWDymwd"))
def test_time_steps_parse_in_either_case(count: int, unit: str) -> None:
    assert parse_time_step(f"{count}{unit}") == f"{count}{unit.upper()}"


@given(st.text().filter(lambda text: re.fullmatch(r"\s*[1-9]\d*[YMWDymwd]\s*", text) is None))
def test_anything_else_is_not_a_time_step(text: str) -> None:
    with pytest.raises(InvalidRequest, match="is not a time step"):
        parse_time_step(text)


def test_options_a_product_does_not_take_are_refused_by_name() -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_known_options("geomedian", {"tide_range_from": "1", "colour": "red"}, ())
    message = str(refused.value)
    assert "colour" in message and "tide_range_from" in message and "geomedian" in message


def _is_finite_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False

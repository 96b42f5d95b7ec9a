"""Work items: the original ones accepted as they are, anything else rejected with a reason."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import InvalidRequest
from shared.jobs import split_periods
from shared.limits import LimitExceeded
from shared.messages import (
    ProductRequest,
    SceneRequest,
    decode_fields,
    parse_request,
)
from shared.seed import SEED_LATLON_ITEM, SEED_PRODUCT_ITEM, SEED_SCENE_ITEM

SEED = json.loads(SEED_PRODUCT_ITEM)
REQUIRED_PRODUCT_FIELDS = ("job_code", "product", "time_from", "time_to", "output_crs", "prefix")
NUMERIC_FIELDS = ("query_x_from", "query_y_from", "query_x_to", "query_y_to")


def parse(body: dict[str, Any]) -> ProductRequest | SceneRequest:
    return parse_request(body)[0]


def test_the_original_product_item_is_accepted_with_numbers_as_strings() -> None:
    request = parse(SEED)
    assert isinstance(request, ProductRequest)
    assert request.area_bounds == (2130000.0, 3499700.0, 2233300.0, 3600300.0)
    assert request.area_crs == "EPSG:3460"
    assert (request.time_from, request.time_to) == (date(2019, 1, 1), date(2019, 12, 31))
    assert request.bucket == "public-eo-data"
    assert request.output_resolution == 30.0


def test_the_lat_lon_form_is_accepted_in_place_of_the_projected_box() -> None:
    request = parse(json.loads(SEED_LATLON_ITEM))
    assert isinstance(request, ProductRequest)
    assert request.area_crs == "EPSG:4326"
    assert request.area_bounds == (-179.995, -21.5155, -178.9984, -20.597)


def test_the_original_scene_item_and_its_optional_fields_are_accepted() -> None:
    request = parse(json.loads(SEED_SCENE_ITEM))
    assert isinstance(request, SceneRequest)
    assert (request.s3_bucket, request.s3_dir, request.prodlevel) == (
        "public-eo-data", "fiji/Sentinel_2_test/", "L2A",
    )  # fmt: skip
    assert request.scene_level == "L2A"
    full = json.loads(SEED_SCENE_ITEM) | {
        "s3_bucket": "my-bucket", "s3_dir": "out/", "prodlevel": "l2a", "source": "esa_scihub",
    }  # fmt: skip
    assert parse(full).prodlevel == "L2A"  # type: ignore[union-attr]


def test_the_original_optional_fields_are_accepted_with_their_meaning() -> None:
    request = parse(
        SEED
        | {
            "job_code": "shoreline",
            "bucket": "other-bucket",
            "epsg4326_naming": "True",
            "cogeo_output": "False",
            "dask_chunk_size": "1000",
            "dask_time_chunk_size": "1",
            "dask_x_chunk_size": "512",
            "time_step": "1Y",
            "tide_range_from": "-0.5",
            "tide_range_to": "1.25",
        }
    )
    assert isinstance(request, ProductRequest)
    assert request.bucket == "other-bucket"
    assert request.epsg4326_naming is True and request.cogeo_output is False
    assert request.dask_chunks() == {"time": 1, "x": 512, "y": 1000}
    assert request.product_options() == {
        "time_step": "1Y", "tide_range_from": "-0.5", "tide_range_to": "1.25",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"time_from": "2019-13-01"},
            "time_from: '2019-13-01' is not a date (expected YYYY-MM-DD)",
        ),
        ({"query_x_from": "21300OO.0"}, "query_x_from: '21300OO.0' is not a number"),
        (
            {"product": "ls9_sr"},
            "'ls9_sr' is not a known product (expected one of ls5_usgs_sr_scene",
        ),
        ({"query_crs": "EPSG:0"}, "query_crs: 'EPSG:0' is not a known CRS"),
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"time_from": "2020-01-01"}, "time_from 2020-01-01 is after time_to 2019-12-31"),
        (
            {"query_x_to": "2000000"},
            "query_x_from 2130000.0 must be less than query_x_to 2000000.0",
        ),
        ({"latitude_from": "-21"}, "either as query_x_from"),
        ({"time_step": "yearly"}, "'yearly' is not a time step (expected e.g. 1Y"),
        ({"prefix": "../etc"}, "is not a relative output path"),
        ({"tide_range_from": "1"}, "give both tide_range_from and tide_range_to"),
        ({"epsg4326_naming": "maybe"}, "epsg4326_naming: 'maybe' is not true or false"),
    ],
)
def test_rejections_name_the_field_and_what_was_expected(
    change: dict[str, str], expected: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse(SEED | change)
    assert expected in str(raised.value)


def test_a_missing_field_is_named() -> None:
    body = {k: v for k, v in SEED.items() if k != "time_to"}
    with pytest.raises(InvalidRequest, match="field 'time_to' is required"):
        parse(body)


def test_an_item_that_is_neither_kind_says_what_it_expected() -> None:
    with pytest.raises(InvalidRequest, match=r"neither job_code .* nor in_scene"):
        parse({"product": "ls8_usgs_sr_scene"})


def test_unknown_fields_can_be_ignored_as_the_original_did() -> None:
    request, ignored = parse_request(SEED | {"colour": "red"}, strict_fields=False)
    assert ignored == ["colour"] and isinstance(request, ProductRequest)


def test_flat_fields_and_a_json_payload_decode_to_the_same_request() -> None:
    from_json = parse(decode_fields({"payload": SEED_PRODUCT_ITEM, "_source": "jobProduct"}))
    from_flat = parse(decode_fields(SEED | {"_source": "stream"}))
    assert from_json.request_id == from_flat.request_id


def test_shoreline_time_steps_split_the_period() -> None:
    periods = split_periods(date(2015, 1, 1), date(2019, 12, 31), "1Y")
    assert [period.label for period in periods] == [f"{y}--P1Y" for y in range(2015, 2020)]
    halves = split_periods(date(2019, 1, 1), date(2019, 12, 31), "6M")
    assert [(p.start, p.end) for p in halves] == [
        (date(2019, 1, 1), date(2019, 6, 30)), (date(2019, 7, 1), date(2019, 12, 31)),
    ]  # fmt: skip


# -- properties -------------------------------------------------------------------------------

spelled_numbers = st.sampled_from([str, float, lambda v: f"{float(v):.3f}", lambda v: f" {v} "])


@given(spell=spelled_numbers)
def test_numbers_spelled_as_strings_or_numbers_give_the_same_request_id(spell: Any) -> None:
    respelled = SEED | {name: spell(float(SEED[name])) for name in NUMERIC_FIELDS}
    assert parse(respelled).request_id == parse(SEED).request_id


@given(
    x_from=st.floats(-1e7, 1e7, allow_nan=False),
    width=st.floats(1, 1e6, allow_nan=False),
    y_from=st.floats(-1e7, 1e7, allow_nan=False),
    height=st.floats(1, 1e6, allow_nan=False),
)
def test_any_ordered_box_is_accepted_and_kept_exactly(
    x_from: float, width: float, y_from: float, height: float
) -> None:
    x_to, y_to = x_from + width, y_from + height
    if not (x_from < x_to and y_from < y_to):
        return
    body = SEED | {
        "query_x_from": repr(x_from), "query_x_to": repr(x_to),
        "query_y_from": repr(y_from), "query_y_to": repr(y_to),
    }  # fmt: skip
    assert parse(body).area_bounds == (x_from, y_from, x_to, y_to)  # type: ignore[union-attr]


def _not_a_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


def _not_a_date(text: str) -> bool:
    try:
        date.fromisoformat(text.strip())
    except ValueError:
        return True
    return False


KNOWN = set(ProductRequest.model_fields) | set(SceneRequest.model_fields)

#: Spellings of numbers no field may hold: not finite, or far beyond every field's range.
HOSTILE_NUMBERS = st.one_of(
    st.sampled_from(["nan", "NaN", " -nan ", "inf", "-inf", "Infinity", "1e400", "-1e400"]),
    st.floats(min_value=1e9, max_value=1e308).map(lambda v: repr(v)),
    st.floats(min_value=1e9, max_value=1e308).map(lambda v: repr(-v)),
    st.integers(min_value=10**9, max_value=10**400).map(str),
    st.integers(min_value=10**9, max_value=10**400),
    st.sampled_from([float("nan"), float("inf"), -float("inf")]),
)
HOSTILE_NUMERIC_FIELDS = (*NUMERIC_FIELDS, "resolution", "dask_chunk_size", "dask_x_chunk_size")


@st.composite
def malformed_items(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A work item invalid in exactly one way a person (or an attacker) could make, and the
    field its refusal must name."""
    base = dict(SEED)
    mutation = draw(st.integers(0, 8))
    if mutation == 0:
        field = draw(st.sampled_from(REQUIRED_PRODUCT_FIELDS))
        del base[field]
    elif mutation == 1:
        field = draw(st.sampled_from(NUMERIC_FIELDS))
        base[field] = draw(st.text(max_size=12).filter(_not_a_number))
    elif mutation == 2:
        field = draw(st.sampled_from(("time_from", "time_to")))
        base[field] = draw(
            st.one_of(
                st.text(max_size=12).filter(_not_a_date),
                st.sampled_from(["1969-12-31", "2100-01-01", "9999-12-31", "20190101"]),
            )
        )
    elif mutation == 3:
        # A leading underscore marks envelope metadata, so an unknown field starts with a letter.
        field = draw(st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True).filter(
            lambda n: n not in KNOWN
        ))  # fmt: skip
        base[field] = draw(st.text(max_size=8))
    elif mutation == 4:
        field = "product"
        base[field] = draw(st.text(max_size=20).filter(lambda p: not p.endswith("_scene")))
    elif mutation == 5:
        field = "in_scene"
        base = {field: draw(st.text(max_size=40)), "inter_dir": "/tmp/x"}
    elif mutation == 6:
        field = "query_x_from"
        base["query_x_to"] = str(float(base["query_x_from"]) - draw(st.floats(0, 1e5)))
    elif mutation == 7:
        field = draw(st.sampled_from(HOSTILE_NUMERIC_FIELDS))
        base[field] = draw(HOSTILE_NUMBERS)
    else:
        field = draw(st.sampled_from(("prefix", "job_code", "product", "output_crs")))
        text = str(base.get(field, "x"))
        at = draw(st.integers(0, len(text)))
        bad = draw(st.sampled_from(["\n", "\x00", "\u202e", "\x1b", "\udcff"]))
        base[field] = text[:at] + bad + text[at:]
    return base, field


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(malformed=malformed_items())
def test_every_malformed_item_is_rejected_with_a_reason_naming_the_field(
    malformed: tuple[dict[str, Any], str],
) -> None:
    item, field = malformed
    with pytest.raises(InvalidRequest) as raised:
        parse(item)
    assert field in str(raised.value)


@pytest.mark.parametrize("field", (*HOSTILE_NUMERIC_FIELDS, "latitude_from", "tide_range_from"))
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", 10**400])
def test_non_finite_and_overflowing_numbers_are_refused_naming_the_field(
    field: str, value: object
) -> None:
    item = SEED | {field: value}
    if field == "latitude_from":
        item = {k: v for k, v in SEED.items() if not k.startswith("query_")} | {
            "latitude_from": value, "latitude_to": "-20", "longitude_from": "-179",
            "longitude_to": "-178",
        }  # fmt: skip
    if field == "tide_range_from":
        item = SEED | {"job_code": "shoreline", field: value, "tide_range_to": "1"}
    with pytest.raises(InvalidRequest) as raised:
        parse(item)
    message = str(raised.value)
    assert message.startswith(f"{field}: ")
    why = "is too large a number" if isinstance(value, int) else "is not a finite number"
    assert why in message


def test_a_name_matches_whole_so_a_trailing_newline_is_not_part_of_it() -> None:
    from shared.messages import SENTINEL2_SCENE

    name = json.loads(SEED_SCENE_ITEM)["in_scene"]
    assert SENTINEL2_SCENE.match(name) is not None
    assert SENTINEL2_SCENE.match(name + "\n") is None
    with pytest.raises(InvalidRequest, match=r"in_scene: .* contains U\+000A"):
        parse(json.loads(SEED_SCENE_ITEM) | {"in_scene": name + "\n"})


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"time_to": "9999-12-31", "time_step": "1D"}, "time_to: 9999-12-31 is not between"),
        ({"prefix": "fiji//x"}, "it has an empty part ('//')"),
        ({"prefix": "fiji\\x"}, "it contains a backslash"),
        ({"output_crs": "+proj=longlat +datum=WGS84"}, "output_crs: '+proj=longlat"),
        ({"time_from": "2019-W01-1"}, "time_from: '2019-W01-1' is not a date"),
        ({"time_from": 0}, "time_from: 0 is not a date"),
        ({"bucket": "a..b"}, "bucket: 'a..b' is not an S3 bucket name"),
        ({"time_step": "99999D"}, "time_step: '99999D' is not a time step"),
        ({"options": {"Tide": "1"}}, "option name 'Tide' is not a name"),
        ({"resolution": "0"}, "resolution: "),
    ],
)
def test_hostile_values_are_refused_with_a_reason(change: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse(SEED | change)
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"inter_dir": "/data/../etc"}, "inter_dir: '/data/../etc' is not a scratch directory"),
        ({"inter_dir": "~/x"}, "starts with '~'"),
        ({"s3_dir": "fiji//x"}, "s3_dir: 'fiji//x' is not a relative output folder"),
        ({"source": "http://example.org/archive"}, "source: 'http://example.org/archive'"),
        ({"source": "s3://bucket/../other"}, "it has a '..' part"),
        ({"prodlevel": "L3"}, "prodlevel"),
    ],
)
def test_hostile_scene_fields_are_refused_with_a_reason(
    change: dict[str, Any], expected: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse(json.loads(SEED_SCENE_ITEM) | change)
    assert expected in str(raised.value)


def test_the_seed_items_keep_their_request_ids() -> None:
    """The dedupe key is the request id: a change here would re-dispatch every known request."""
    assert parse(SEED).request_id == "6743df70433bb8176e79d942e29b7616"
    assert parse(json.loads(SEED_SCENE_ITEM)).request_id == "efb7d86b096be8ed3ba681eb4c1f02d3"


# -- the event's edge: bytes, size, nesting ------------------------------------------------------


def test_bytes_that_are_not_utf8_are_refused_naming_the_byte() -> None:
    from shared.wire import from_raw

    with pytest.raises(InvalidRequest) as raised:
        decode_fields({"payload": from_raw(b'{"job_code": "\xff\xfe"}')})
    assert "field 'payload' holds bytes that are not UTF-8 (0xff at byte 14)" in str(raised.value)
    with pytest.raises(InvalidRequest, match="a field name holds bytes that are not UTF-8"):
        decode_fields({from_raw(b"job\xc3"): "geomedian"})


def test_an_event_over_the_size_limit_is_refused_with_the_figure_and_the_setting() -> None:
    with pytest.raises(LimitExceeded) as raised:
        decode_fields({"payload": json.dumps(SEED | {"prefix": "x" * 70_000})})
    assert "the limit is 65,536 (CONVEYOR_MAX_EVENT_BYTES)" in str(raised.value)
    assert raised.value.reason == "over_limit"


@pytest.mark.parametrize(
    "payload",
    ["[" * 100_000, '{"options": {"a": {"b": {"c": {"d": 1}}}}}', '{"a": [[[[[1]]]]]}'],
)
def test_deeply_nested_json_is_refused_before_it_is_parsed(payload: str) -> None:
    with pytest.raises(LimitExceeded, match="nests JSON more than 4 levels deep"):
        decode_fields({"payload": payload}, max_bytes=1_000_000)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ('{"query_x_from": NaN}', "NaN is not a JSON number"),
        ('{"query_x_from": Infinity}', "Infinity is not a JSON number"),
        ('{"query_x_from": ' + "9" * 5000 + "}", "not valid JSON"),
        ("[1, 2]", "holds a JSON list, expected a JSON object"),
        ("{not json", "is not valid JSON"),
    ],
)
def test_json_that_is_not_one_plain_object_is_refused(payload: str, expected: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        decode_fields({"payload": payload})
    assert expected in str(raised.value)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\ab', max_size=4), children, max_size=3)
    ),
    max_leaves=20,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    return 0


@given(value=JSON_VALUES)
def test_json_depth_counts_nesting_and_ignores_brackets_inside_strings(value: Any) -> None:
    from shared.messages import json_depth

    text = json.dumps(value)
    assert json_depth(text, 100) == _depth(value)

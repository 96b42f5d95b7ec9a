"""Work requests as they arrive: the original `jobProduct`/`jobS2` items, the `jobLS` and
`jobWater` items, and their stream forms.

Numbers and booleans may arrive as strings (the original work items send `"2130000.0"`).
Every rejection is an `InvalidRequest` whose message names the field and what was expected.

Items are untrusted: anyone who can `XADD` or `RPUSH` writes them. So, once, here:

- an event's size and its JSON's nesting are capped, and bytes that are not UTF-8 are refused
  (they arrive as lone surrogates, see `shared.wire`), before any JSON is parsed;
- numbers are finite and in range, dates are `YYYY-MM-DD` between `MIN_DATE` and `MAX_DATE`;
- names match whole (a trailing newline is not part of a scene name), CRSs are `EPSG:code`;
- no text holds control, format or surrogate characters; paths pass `shared.paths`.

The worker validates its jobs with the same models, so a job added to a jobs stream by hand
meets the same rules.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from datetime import date
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.catalogue import INPUT_PRODUCTS, WATER_CLASSIFICATION, water_classification_product
from shared.errors import InvalidRequest
from shared.limits import LimitExceeded, RequestLimits, check_limit, setting_name
from shared.options import TIME_STEP
from shared.paths import describe_character, directory_path, relative_path, unsafe_character
from shared.wire import first_bad_byte, is_utf8, raw_bytes

KNOWN_PRODUCTS: tuple[str, ...] = tuple(INPUT_PRODUCTS)
# `\Z`, not `$`: `$` also matches before a trailing newline.
SENTINEL2_SCENE = re.compile(
    r"^S2[ABCD]_MSI(?P<level>L1C|L2A)_(?P<sensing>\d{8}T\d{6})_N(?P<baseline>\d{4})"
    r"_R(?P<orbit>\d{3})_T(?P<tile>\d{2}[C-X][A-Z]{2})_(?P<discriminator>\d{8}T\d{6})\Z"
)
#: USGS Landsat product identifiers (Collection 1 and 2): LXSS_LLLL_PPPRRR_YYYYMMDD_yyyymmdd_CC_TX,
#: sensor (C OLI/TIRS, O OLI, T TM or TIRS, E ETM+, M MSS), satellite, processing level, WRS-2
#: path and row, acquisition and processing dates, collection number and category.
LANDSAT_SCENE = re.compile(
    r"^L(?P<sensor>[COTEM])(?P<satellite>0[1-9])_(?P<level>L1TP|L1GT|L1GS|L2SP|L2SR)"
    r"_(?P<path>\d{3})(?P<row>\d{3})_(?P<acquired>\d{8})_(?P<processed>\d{8})"
    r"_(?P<collection>0[12])_(?P<category>RT|T1|T2)\Z"
)
#: What a scene name may carry from its archive file: `.SAFE`/`.zip` (ESA), `.tar`/`.tar.gz` (USGS).
SCENE_SUFFIXES = (".SAFE.zip", ".SAFE", ".zip", ".tar.gz", ".tgz", ".tar")
PAYLOAD_FIELDS = ("payload", "json", "data", "body")
META_PREFIX = "_"
DEFAULT_BUCKET = "public-eo-data"
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"

#: The defaults of `RequestLimits`, for callers without settings (the CLI's `validate`).
DEFAULT_MAX_EVENT_BYTES: int = RequestLimits.model_fields["max_event_bytes"].default
DEFAULT_MAX_JSON_DEPTH: int = RequestLimits.model_fields["max_json_depth"].default

#: Dates a request may name: Landsat 1 flew in 1972; nothing is planned past 2099.
MIN_DATE = date(1970, 1, 1)
MAX_DATE = date(2099, 12, 31)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: Projected coordinates, in CRS units: far beyond any real CRS's extent, far below overflow.
MAX_COORDINATE = 1e8
MAX_TEXT = 1024
MAX_NUMBER_TEXT = 64
MAX_OPTIONS = 32
MAX_OPTION_TEXT = 256
OPTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
CRS_NAME = re.compile(r"(?P<authority>EPSG|ESRI):(?P<code>[0-9]{1,6})", re.IGNORECASE)
LEGACY_SOURCE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
#: A datacube dataset id as datacube writes it: a UUID in its 8-4-4-4-12 hexadecimal form.
DATASET_ID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE
)

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


#: How a number may be spelt: decimal, with an optional sign, point and exponent (`float` also
#: takes underscores, `nan`, `infinity` and surrounding whitespace of every kind).
_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _number(value: Any) -> Any:
    """A finite float from a number or its spelling; NaN, infinities and overflow refused."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, str):
        # Only spaces around a number: `float` would also drop control characters (`"0\x1f"`),
        # which no number spelling holds.
        text = value.strip(" ")
        if len(text) > MAX_NUMBER_TEXT:
            raise ValueError(f"{_shown(value)} is not a number (too long)")
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{_shown(value)} is not a number") from None
        if math.isfinite(number) and not _NUMBER_TEXT.fullmatch(text):
            raise ValueError(f"{_shown(value)} is not a number (expected e.g. 2130000.0)")
    elif isinstance(value, int):
        try:
            number = float(value)
        except OverflowError:
            raise ValueError(f"{_shown(value)} is too large a number") from None
    elif isinstance(value, float):
        number = value
    else:
        return value  # pydantic says what it expected
    if not math.isfinite(number):
        raise ValueError(f"{_shown(value)} is not a finite number (expected e.g. 2130000.0)")
    return number


def _integer(value: Any) -> Any:
    number = _number(value)
    if isinstance(number, float):
        if not number.is_integer():
            raise ValueError(f"{value!r} is not a whole number")
        return int(number)
    return number


def _boolean(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"{value!r} is not true or false")
    return value


def _date(value: Any) -> Any:
    """`YYYY-MM-DD` only (Python would also take `20190101` and `2019-W01-1`), in range."""
    if isinstance(value, date):
        day = value
    elif isinstance(value, str) and _ISO_DATE.fullmatch(value.strip()):
        try:
            day = date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a date (expected YYYY-MM-DD)") from None
    else:
        raise ValueError(f"{_shown(value)} is not a date (expected YYYY-MM-DD)")
    if not MIN_DATE <= day <= MAX_DATE:
        raise ValueError(f"{day.isoformat()} is not between {MIN_DATE} and {MAX_DATE}")
    return day


def _shown(value: Any, limit: int = 60) -> str:
    """`repr(value)`, cut short: a refusal quotes the input, not 64 KiB of it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 4]}...{text[0]}"


Number = Annotated[float, BeforeValidator(_number)]
Integer = Annotated[int, BeforeValidator(_integer)]
Flag = Annotated[bool, BeforeValidator(_boolean)]
Day = Annotated[date, BeforeValidator(_date)]


def _check_crs(value: str, field: str) -> str:
    """An `EPSG:code` (or `ESRI:code`) the projection database knows; nothing else is parsed."""
    from odc.geo.crs import CRS, CRSError

    if not CRS_NAME.fullmatch(value.strip()):
        raise ValueError(f"{_shown(value)} is not a known CRS (expected e.g. EPSG:3460)")
    try:
        return str(CRS(value.strip().upper()))
    except (CRSError, ValueError, TypeError):
        raise ValueError(f"{value!r} is not a known CRS (expected e.g. EPSG:3460)") from None


def _check_text(name: str, value: Any) -> None:
    """No control, format or surrogate character in any text an item sends, at any depth."""
    if isinstance(value, str):
        character = unsafe_character(value)
        if character is not None:
            raise InvalidRequest(
                f"{name}: {_shown(value)} contains {describe_character(character)}; "
                "send plain UTF-8 text"
            )
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_text(f"{name} key", key)
            _check_text(f"{name}.{key}", item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_text(f"{name}[{index}]", item)


AREA_FIELDS: tuple[str, ...] = (
    "query_x_from", "query_y_from", "query_x_to", "query_y_to", "query_crs",
    "latitude_from", "latitude_to", "longitude_from", "longitude_to",
)  # fmt: skip


def _given_area(request: Any) -> bool:
    return any(getattr(request, name) is not None for name in AREA_FIELDS)


def _check_area(request: Any) -> None:
    """The area of a request is given one way, whole: projected with its CRS, or in lat/lon."""
    projected = [request.query_x_from, request.query_y_from, request.query_x_to, request.query_y_to]
    geographic = [
        request.latitude_from, request.latitude_to, request.longitude_from, request.longitude_to
    ]  # fmt: skip
    has_projected = any(v is not None for v in projected) or request.query_crs is not None
    has_geographic = any(v is not None for v in geographic)
    if has_projected and has_geographic:
        raise ValueError(
            "give the area either as query_x_from/query_x_to/query_y_from/query_y_to with "
            "query_crs, or as latitude_from/latitude_to/longitude_from/longitude_to, not both"
        )
    if has_projected:
        missing = [name for name in AREA_FIELDS[:5] if getattr(request, name) is None]
        if missing:
            raise ValueError(f"the projected area is missing {', '.join(missing)}")
    elif has_geographic:
        missing = [name for name in AREA_FIELDS[5:] if getattr(request, name) is None]
        if missing:
            raise ValueError(f"the lat/lon area is missing {', '.join(missing)}")
    else:
        raise ValueError(
            "no area: give query_x_from/query_x_to/query_y_from/query_y_to with query_crs, "
            "or latitude_from/latitude_to/longitude_from/longitude_to"
        )


def _area_crs(request: Any) -> str:
    return str(request.query_crs) if request.query_crs is not None else "EPSG:4326"


def _area_bounds(request: Any) -> tuple[float, float, float, float]:
    if request.query_crs is not None:
        return (request.query_x_from, request.query_y_from, request.query_x_to, request.query_y_to)
    return (
        request.longitude_from,
        request.latitude_from,
        request.longitude_to,
        request.latitude_to,
    )


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @cached_property
    def request_id(self) -> str:
        """Deterministic: the same request, however it was spelled, has the same id."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:32]


class ProductRequest(_Request):
    """A product over an area and period, from `jobProduct` or the events stream."""

    kind: Literal["product"] = "product"
    job_code: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    product: str = Field(max_length=64)
    query_x_from: Number | None = Field(default=None, ge=-MAX_COORDINATE, le=MAX_COORDINATE)
    query_y_from: Number | None = Field(default=None, ge=-MAX_COORDINATE, le=MAX_COORDINATE)
    query_x_to: Number | None = Field(default=None, ge=-MAX_COORDINATE, le=MAX_COORDINATE)
    query_y_to: Number | None = Field(default=None, ge=-MAX_COORDINATE, le=MAX_COORDINATE)
    query_crs: str | None = Field(default=None, max_length=32)
    latitude_from: Number | None = Field(default=None, ge=-90, le=90)
    latitude_to: Number | None = Field(default=None, ge=-90, le=90)
    longitude_from: Number | None = Field(default=None, ge=-180, le=180)
    longitude_to: Number | None = Field(default=None, ge=-180, le=180)
    time_from: Day
    time_to: Day
    output_crs: str = Field(max_length=32)
    # From a millimetre in degrees to 100 km: anything else is a typo, not a product.
    resolution: Number | None = Field(default=None, ge=1e-8, le=100_000)
    prefix: str = Field(min_length=1, max_length=1024)
    bucket: str = Field(default=DEFAULT_BUCKET, pattern=BUCKET_PATTERN)
    naming: Literal["odc", "legacy"] | None = None
    epsg4326_naming: Flag = False
    cogeo_output: Flag = True
    dask_chunk_size: Integer | None = Field(default=None, gt=0, le=100_000)
    dask_time_chunk_size: Integer | None = Field(default=None, gt=0, le=100_000)
    dask_x_chunk_size: Integer | None = Field(default=None, gt=0, le=100_000)
    dask_y_chunk_size: Integer | None = Field(default=None, gt=0, le=100_000)
    time_step: str | None = Field(default=None, max_length=16)
    tide_range_from: Number | None = Field(default=None, ge=-10_000, le=10_000)
    tide_range_to: Number | None = Field(default=None, ge=-10_000, le=10_000)
    options: dict[str, str] = Field(default_factory=dict, max_length=MAX_OPTIONS)

    @field_validator("product")
    @classmethod
    def _known_product(cls, value: str) -> str:
        if value not in KNOWN_PRODUCTS:
            raise ValueError(
                f"{value!r} is not a known product (expected one of {', '.join(KNOWN_PRODUCTS)})"
            )
        return value

    @field_validator("query_crs", "output_crs")
    @classmethod
    def _crs(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else _check_crs(value, info.field_name)

    @field_validator("prefix")
    @classmethod
    def _relative_prefix(cls, value: str) -> str:
        return relative_path(value, what="a relative output path")

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        return _check_bucket(value)

    @field_validator("time_step")
    @classmethod
    def _time_step(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not TIME_STEP.fullmatch(value.upper()):
            raise ValueError(
                f"{_shown(value)} is not a time step (expected e.g. 1Y, 6M, 2W or 16D)"
            )
        return value.upper()

    @field_validator("options")
    @classmethod
    def _option_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not OPTION_NAME.fullmatch(name):
                raise ValueError(
                    f"option name {_shown(name)} is not a name (expected lower-case letters, "
                    "digits and _, e.g. tide_range_from)"
                )
            if len(text) > MAX_OPTION_TEXT:
                raise ValueError(
                    f"option {name} is {len(text):,} characters; the limit is {MAX_OPTION_TEXT}"
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ProductRequest:
        _check_area(self)
        if (self.tide_range_from is None) != (self.tide_range_to is None):
            raise ValueError("give both tide_range_from and tide_range_to, or neither")
        for low, high in self._ranges():
            low_value, high_value = getattr(self, low), getattr(self, high)
            if low_value is not None and high_value is not None and low_value >= high_value:
                raise ValueError(
                    f"{low} {getattr(self, low)} must be less than {high} {getattr(self, high)}"
                )
        if self.time_from > self.time_to:
            raise ValueError(f"time_from {self.time_from} is after time_to {self.time_to}")
        return self

    @staticmethod
    def _ranges() -> tuple[tuple[str, str], ...]:
        return (
            ("query_x_from", "query_x_to"),
            ("query_y_from", "query_y_to"),
            ("latitude_from", "latitude_to"),
            ("longitude_from", "longitude_to"),
            ("tide_range_from", "tide_range_to"),
        )

    @property
    def pool(self) -> str:
        return "product"

    @property
    def area_crs(self) -> str:
        return _area_crs(self)

    @property
    def area_bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in `area_crs`."""
        return _area_bounds(self)

    @property
    def output_resolution(self) -> float:
        if self.resolution is not None:
            return self.resolution
        return INPUT_PRODUCTS[self.product].resolution

    def dask_chunks(self) -> dict[str, int]:
        """Chunks for `dc.load` from the original fields; the worker fills in its defaults."""
        chunks: dict[str, int] = {}
        if self.dask_time_chunk_size:
            chunks["time"] = self.dask_time_chunk_size
        spatial = self.dask_chunk_size
        if self.dask_x_chunk_size or spatial:
            chunks["x"] = self.dask_x_chunk_size or spatial  # type: ignore[assignment]
        if self.dask_y_chunk_size or spatial:
            chunks["y"] = self.dask_y_chunk_size or spatial  # type: ignore[assignment]
        return chunks

    def product_options(self) -> dict[str, str]:
        """Per-product options: the original's shoreline fields plus `options`."""
        merged = dict(self.options)
        if self.time_step is not None:
            merged["time_step"] = self.time_step
        if self.tide_range_from is not None:
            merged["tide_range_from"] = repr(self.tide_range_from)
            merged["tide_range_to"] = repr(self.tide_range_to)
        return merged


class SceneRequest(_Request):
    """One scene to turn into analysis-ready data: a Sentinel-2 product from `jobS2`, or a USGS
    Landsat product from `jobLS` (`prodlevel` is Sentinel-2's and ignored for Landsat)."""

    kind: Literal["scene"] = "scene"
    in_scene: str = Field(max_length=128)
    inter_dir: str = Field(min_length=1, max_length=1024)
    s3_bucket: str = Field(default=DEFAULT_BUCKET, pattern=BUCKET_PATTERN)
    s3_dir: str = Field(default="fiji/Sentinel_2_test/", max_length=1024)
    prodlevel: Literal["L1C", "L2A"] = "L2A"
    source: str | None = Field(default=None, max_length=1024)

    @field_validator("in_scene")
    @classmethod
    def _scene_name(cls, value: str) -> str:
        name = next((value.removesuffix(s) for s in SCENE_SUFFIXES if value.endswith(s)), value)
        if not (SENTINEL2_SCENE.fullmatch(name) or LANDSAT_SCENE.fullmatch(name)):
            raise ValueError(
                f"{_shown(value)} is not a Sentinel-2 product name (expected e.g. "
                "S2A_MSIL2A_20190812T235741_N0213_R030_T56LRR_20190813T014708) nor a USGS "
                "Landsat product name (e.g. LC08_L2SP_072074_20190214_20200829_02_T1)"
            )
        return name

    @field_validator("inter_dir")
    @classmethod
    def _scratch_directory(cls, value: str) -> str:
        return directory_path(value, what="a scratch directory")

    @field_validator("s3_dir")
    @classmethod
    def _output_folder(cls, value: str) -> str:
        # Checked, not rewritten: the worker strips the slashes when it writes.
        relative_path(value, what="a relative output folder", allow_empty=True)
        return value

    @field_validator("s3_bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        return _check_bucket(value)

    @field_validator("source")
    @classmethod
    def _archive(cls, value: str | None) -> str | None:
        if value is None or not value:
            return value
        if "://" in value:
            scheme, _, rest = value.partition("://")
            if scheme.lower() not in ("s3", "file"):
                raise ValueError(
                    f"{_shown(value)} is not an archive (expected s3://bucket/prefix, an "
                    "absolute directory, or one of the original's names such as gcloud)"
                )
            relative_path(rest, what="an archive path", allow_empty=True)
        elif value.startswith("/"):
            directory_path(value, what="an archive directory")
        elif not LEGACY_SOURCE_NAME.fullmatch(value):
            raise ValueError(
                f"{_shown(value)} is not an archive (expected s3://bucket/prefix, an absolute "
                "directory, or one of the original's names such as gcloud)"
            )
        return value

    @field_validator("prodlevel", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @property
    def pool(self) -> str:
        return "ard"

    @property
    def scene_level(self) -> str:
        """`L1C`/`L2A` for Sentinel-2, the processing level (`L1TP`, `L2SP`, ...) for Landsat."""
        match = SENTINEL2_SCENE.fullmatch(self.in_scene) or LANDSAT_SCENE.fullmatch(self.in_scene)
        assert match is not None
        return match.group("level")


class WaterClassificationRequest(_Request):
    """Water classification of scenes already in the datacube index (`jobWater`): every dataset
    of `product` whose footprint meets the area within `time_from`..`time_to`, or one dataset by
    its `dataset_id`. Each scene becomes its `lsN_water_classification` dataset."""

    kind: Literal["water_classification"] = "water_classification"
    job_code: Literal["water_classification"]
    product: str | None = Field(default=None, max_length=64)
    dataset_id: str | None = Field(default=None, max_length=64)
    query_x_from: Number | None = Field(default=None, ge=-MAX_COORDINATE, le=MAX_COORDINATE)
    query_y_from: Number | None = Field(default=None, ge=-MAX_COORDINATE, le=MAX_COORDINATE)
    query_x_to: Number | None = Field(default=None, ge=-MAX_COORDINATE, le=MAX_COORDINATE)
    query_y_to: Number | None = Field(default=None, ge=-MAX_COORDINATE, le=MAX_COORDINATE)
    query_crs: str | None = Field(default=None, max_length=32)
    latitude_from: Number | None = Field(default=None, ge=-90, le=90)
    latitude_to: Number | None = Field(default=None, ge=-90, le=90)
    longitude_from: Number | None = Field(default=None, ge=-180, le=180)
    longitude_to: Number | None = Field(default=None, ge=-180, le=180)
    time_from: Day | None = None
    time_to: Day | None = None
    prefix: str = Field(default="", max_length=1024)
    bucket: str = Field(default=DEFAULT_BUCKET, pattern=BUCKET_PATTERN)

    @field_validator("job_code", mode="before")
    @classmethod
    def _our_job_code(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("product")
    @classmethod
    def _classifiable_product(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value not in KNOWN_PRODUCTS:
            raise ValueError(
                f"{value!r} is not a known product (expected one of {', '.join(KNOWN_PRODUCTS)})"
            )
        try:
            water_classification_product(value)
        except InvalidRequest as error:
            raise ValueError(str(error)) from None
        return value

    @field_validator("dataset_id")
    @classmethod
    def _dataset_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not DATASET_ID.fullmatch(value):
            raise ValueError(
                f"{_shown(value)} is not a dataset id (expected a UUID such as "
                "3fa85f64-5717-4562-b3fc-2c963f66afa6)"
            )
        return value.lower()

    @field_validator("query_crs")
    @classmethod
    def _crs(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else _check_crs(value, info.field_name)

    @field_validator("prefix")
    @classmethod
    def _relative_prefix(cls, value: str) -> str:
        return relative_path(value, what="a relative output path", allow_empty=True)

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        return _check_bucket(value)

    @model_validator(mode="after")
    def _consistent(self) -> WaterClassificationRequest:
        searched = [
            name for name in ("product", "time_from", "time_to") if getattr(self, name) is not None
        ]
        if self.dataset_id is not None:
            given = searched + [name for name in AREA_FIELDS if getattr(self, name) is not None]
            if given:
                raise ValueError(
                    f"give either dataset_id (one scene), or product with an area and "
                    f"time_from/time_to (every scene there), not both: {', '.join(given)} "
                    "given with dataset_id"
                )
            return self
        if self.product is None:
            raise ValueError(
                "name the scenes: give dataset_id, or product (e.g. ls8_usgs_sr_scene) with an "
                "area and time_from/time_to"
            )
        missing = [name for name in ("time_from", "time_to") if getattr(self, name) is None]
        if missing:
            raise ValueError(f"the period is missing {', '.join(missing)}")
        _check_area(self)
        for low, high in ProductRequest._ranges()[:4]:
            low_value, high_value = getattr(self, low), getattr(self, high)
            if low_value is not None and high_value is not None and low_value >= high_value:
                raise ValueError(f"{low} {low_value} must be less than {high} {high_value}")
        assert self.time_from is not None and self.time_to is not None
        if self.time_from > self.time_to:
            raise ValueError(f"time_from {self.time_from} is after time_to {self.time_to}")
        return self

    @property
    def pool(self) -> str:
        return "ard"

    @property
    def area_crs(self) -> str:
        return _area_crs(self)

    @property
    def area_bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in `area_crs`; only for a request by product and area."""
        return _area_bounds(self)

    @property
    def subject(self) -> str:
        """What the request names, for people: the dataset, or the product and period."""
        if self.dataset_id is not None:
            return f"dataset {self.dataset_id}"
        return f"{self.product} {self.time_from}..{self.time_to}"


def _check_bucket(value: str) -> str:
    if ".." in value or value.startswith("xn--") or re.fullmatch(r"[0-9.]+", value):
        raise ValueError(f"{_shown(value)} is not an S3 bucket name")
    return value


Request = ProductRequest | SceneRequest | WaterClassificationRequest

_PRODUCT_FIELDS = frozenset(ProductRequest.model_fields) - {"kind"}
_SCENE_FIELDS = frozenset(SceneRequest.model_fields) - {"kind"}
_WATER_FIELDS = frozenset(WaterClassificationRequest.model_fields) - {"kind"}


def decode_fields(
    fields: Mapping[str, str],
    *,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    max_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> dict[str, Any]:
    """An event's body: JSON in one payload field, or the flat fields themselves.

    Fields starting with `_` are envelope metadata (source, queue time) and never part of it.
    Checked before anything is parsed: the event's size (`max_bytes`, names and values), that
    every field is UTF-8, and how deeply its JSON nests (`max_depth`).
    """
    size = sum(len(raw_bytes(name)) + len(raw_bytes(value)) for name, value in fields.items())
    check_limit("the event is {} bytes", size, max_bytes, "max_event_bytes")
    for name, value in fields.items():
        for text, what in ((name, "a field name"), (value, f"field {readable_name(name)!r}")):
            if not is_utf8(text):
                offset, byte = first_bad_byte(text) or (0, 0)
                raise InvalidRequest(
                    f"{what} holds bytes that are not UTF-8 (0x{byte:02x} at byte {offset}); "
                    "send UTF-8 text (the original bytes are kept in the dead letter)"
                )
    body = {name: value for name, value in fields.items() if not name.startswith(META_PREFIX)}
    payload_fields = [name for name in PAYLOAD_FIELDS if name in body]
    if len(body) == 1 and payload_fields:
        name = payload_fields[0]
        decoded = _load_json(name, body[name], max_depth)
        if not isinstance(decoded, dict):
            raise InvalidRequest(
                f"field {name!r} holds a JSON {type(decoded).__name__}, expected a JSON object"
            )
        return decoded
    if not body:
        raise InvalidRequest("the event has no fields; expected a work item")
    return dict(body)


def readable_name(name: str, limit: int = 40) -> str:
    shown = name if is_utf8(name) else raw_bytes(name).decode("utf-8", "replace")
    return shown if len(shown) <= limit else shown[:limit] + "..."


_JSON_STRUCTURE = re.compile(r'["\\\[\]{}]')


def json_depth(text: str, stop_above: int) -> int:
    """How deeply `text` nests arrays and objects (strings skipped); stops counting past
    `stop_above`, so that a million `[` cost no more than the first few."""
    depth = deepest = 0
    in_string = False
    escaped_position = -1
    for match in _JSON_STRUCTURE.finditer(text):
        character, position = match.group(), match.start()
        if in_string:
            if position == escaped_position:
                continue
            if character == "\\":
                escaped_position = position + 1
            elif character == '"':
                in_string = False
        elif character == '"':
            in_string = True
        elif character in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_above:
                    return deepest
        elif character in "]}":
            depth -= 1
    return deepest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _load_json(field: str, raw: str, max_depth: int) -> Any:
    if json_depth(raw, max_depth) > max_depth:
        raise LimitExceeded(
            f"field {field!r} nests JSON more than {max_depth} levels deep; the limit is "
            f"{max_depth} ({setting_name('max_json_depth')})"
        )
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, TypeError, RecursionError) as error:
        # ValueError covers a malformed document, NaN/Infinity and integers too long to read.
        raise InvalidRequest(
            f"field {field!r} is not valid JSON ({_shown(str(error), 120)}); expected one JSON "
            'object such as {"job_code": "geomedian", ...}'
        ) from None


def parse_request(
    body: Mapping[str, Any], *, strict_fields: bool = True
) -> tuple[Request, list[str]]:
    """Validate a work item; returns the request and the unknown fields ignored (non-strict)."""
    model: type[ProductRequest] | type[SceneRequest] | type[WaterClassificationRequest]
    if "in_scene" in body:
        model = SceneRequest
        known = _SCENE_FIELDS
    elif isinstance(body.get("job_code"), str) and body["job_code"].strip() == WATER_CLASSIFICATION:
        model = WaterClassificationRequest
        known = _WATER_FIELDS
    elif "job_code" in body:
        model = ProductRequest
        known = _PRODUCT_FIELDS
    else:
        raise InvalidRequest(
            "neither job_code (a product request, or water_classification) nor in_scene (an ARD "
            "scene request) is present; "
            f"fields given: {', '.join(sorted(map(str, body))) or 'none'}"
        )
    unknown = sorted(str(name) for name in body if name not in known)
    if unknown and strict_fields:
        shown = ", ".join(_shown(name, 40) for name in unknown[:10])
        more = f" and {len(unknown) - 10:,} more" if len(unknown) > 10 else ""
        raise InvalidRequest(
            f"unknown field{'s' if len(unknown) > 1 else ''} {shown}{more} "
            f"for a {model.__name__}; known fields: {', '.join(sorted(known))}"
        )
    cleaned = {name: value for name, value in body.items() if name in known}
    for name, value in cleaned.items():
        _check_text(name, value)
    try:
        return model.model_validate(cleaned), unknown
    except ValidationError as error:
        raise InvalidRequest(describe_validation_error(error)) from None


def describe_validation_error(error: ValidationError) -> str:
    """Pydantic's errors as sentences naming the field and what was expected."""
    sentences: list[str] = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"])
        message = str(item["msg"])
        for noise in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(noise)
        if item["type"] == "missing":
            sentences.append(f"field {location!r} is required")
        elif location:
            given = item.get("input")
            shown = (
                f" (got {_shown(given)})"
                if given is not None and not isinstance(given, dict)
                else ""
            )
            if repr(given) in message or _shown(given) in message:
                shown = ""
            sentences.append(f"{location}: {message}{shown}")
        else:
            sentences.append(message)
    return "; ".join(sentences)

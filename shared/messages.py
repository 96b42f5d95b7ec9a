"""Work requests as they arrive: the original `jobProduct`/`jobS2` items and their stream forms.

Numbers and booleans may arrive as strings (the original work items send `"2130000.0"`).
Every rejection is an `InvalidRequest` whose message names the field and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import date
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

from shared.catalogue import INPUT_PRODUCTS
from shared.errors import InvalidRequest
from shared.options import TIME_STEP

KNOWN_PRODUCTS: tuple[str, ...] = tuple(INPUT_PRODUCTS)
SENTINEL2_SCENE = re.compile(
    r"^S2[ABCD]_MSI(?P<level>L1C|L2A)_(?P<sensing>\d{8}T\d{6})_N(?P<baseline>\d{4})"
    r"_R(?P<orbit>\d{3})_T(?P<tile>\d{2}[C-X][A-Z]{2})_(?P<discriminator>\d{8}T\d{6})$"
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

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


def _number(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    return value


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
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a date (expected YYYY-MM-DD)") from None
    return value


Number = Annotated[float, BeforeValidator(_number)]
Integer = Annotated[int, BeforeValidator(_integer)]
Flag = Annotated[bool, BeforeValidator(_boolean)]
Day = Annotated[date, BeforeValidator(_date)]


def _check_crs(value: str, field: str) -> str:
    from odc.geo.crs import CRS, CRSError

    try:
        return str(CRS(value.strip()))
    except (CRSError, ValueError, TypeError):
        raise ValueError(f"{value!r} is not a known CRS (expected e.g. EPSG:3460)") from None


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @property
    def request_id(self) -> str:
        """Deterministic: the same request, however it was spelled, has the same id."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:32]


class ProductRequest(_Request):
    """A product over an area and period, from `jobProduct` or the events stream."""

    kind: Literal["product"] = "product"
    job_code: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    product: str
    query_x_from: Number | None = None
    query_y_from: Number | None = None
    query_x_to: Number | None = None
    query_y_to: Number | None = None
    query_crs: str | None = None
    latitude_from: Number | None = Field(default=None, ge=-90, le=90)
    latitude_to: Number | None = Field(default=None, ge=-90, le=90)
    longitude_from: Number | None = Field(default=None, ge=-180, le=180)
    longitude_to: Number | None = Field(default=None, ge=-180, le=180)
    time_from: Day
    time_to: Day
    output_crs: str
    resolution: Number | None = Field(default=None, gt=0)
    prefix: str = Field(min_length=1, max_length=1024)
    bucket: str = Field(default="public-eo-data", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    naming: Literal["odc", "legacy"] | None = None
    epsg4326_naming: Flag = False
    cogeo_output: Flag = True
    dask_chunk_size: Integer | None = Field(default=None, gt=0)
    dask_time_chunk_size: Integer | None = Field(default=None, gt=0)
    dask_x_chunk_size: Integer | None = Field(default=None, gt=0)
    dask_y_chunk_size: Integer | None = Field(default=None, gt=0)
    time_step: str | None = None
    tide_range_from: Number | None = None
    tide_range_to: Number | None = None
    options: dict[str, str] = Field(default_factory=dict)

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
        cleaned = value.strip("/")
        if not cleaned or any(part in ("..", ".") for part in cleaned.split("/")):
            raise ValueError(f"{value!r} is not a relative output path (no '..' parts)")
        return cleaned

    @field_validator("time_step")
    @classmethod
    def _time_step(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not TIME_STEP.match(value.upper()):
            raise ValueError(f"{value!r} is not a time step (expected e.g. 1Y, 6M, 2W or 16D)")
        return value.upper()

    @model_validator(mode="after")
    def _consistent(self) -> ProductRequest:
        projected = [self.query_x_from, self.query_y_from, self.query_x_to, self.query_y_to]
        geographic = [self.latitude_from, self.latitude_to, self.longitude_from, self.longitude_to]
        has_projected = any(v is not None for v in projected) or self.query_crs is not None
        has_geographic = any(v is not None for v in geographic)
        if has_projected and has_geographic:
            raise ValueError(
                "give the area either as query_x_from/query_x_to/query_y_from/query_y_to with "
                "query_crs, or as latitude_from/latitude_to/longitude_from/longitude_to, not both"
            )
        if has_projected:
            missing = [
                name
                for name in (
                    "query_x_from",
                    "query_y_from",
                    "query_x_to",
                    "query_y_to",
                    "query_crs",
                )
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"the projected area is missing {', '.join(missing)}")
        elif has_geographic:
            missing = [
                name
                for name in ("latitude_from", "latitude_to", "longitude_from", "longitude_to")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"the lat/lon area is missing {', '.join(missing)}")
        else:
            raise ValueError(
                "no area: give query_x_from/query_x_to/query_y_from/query_y_to with query_crs, "
                "or latitude_from/latitude_to/longitude_from/longitude_to"
            )
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
        return self.query_crs if self.query_crs is not None else "EPSG:4326"

    @property
    def area_bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in `area_crs`."""
        if self.query_crs is not None:
            return (self.query_x_from, self.query_y_from, self.query_x_to, self.query_y_to)  # type: ignore[return-value]
        return (self.longitude_from, self.latitude_from, self.longitude_to, self.latitude_to)  # type: ignore[return-value]

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
    in_scene: str
    inter_dir: str = Field(min_length=1)
    s3_bucket: str = Field(default="public-eo-data", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    s3_dir: str = "fiji/Sentinel_2_test/"
    prodlevel: Literal["L1C", "L2A"] = "L2A"
    source: str | None = None

    @field_validator("in_scene")
    @classmethod
    def _scene_name(cls, value: str) -> str:
        name = next((value.removesuffix(s) for s in SCENE_SUFFIXES if value.endswith(s)), value)
        if not (SENTINEL2_SCENE.fullmatch(name) or LANDSAT_SCENE.fullmatch(name)):
            raise ValueError(
                f"{value!r} is not a Sentinel-2 product name (expected e.g. "
                "S2A_MSIL2A_20190812T235741_N0213_R030_T56LRR_20190813T014708) nor a USGS "
                "Landsat product name (e.g. LC08_L2SP_072074_20190214_20200829_02_T1)"
            )
        return name

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


Request = ProductRequest | SceneRequest

_PRODUCT_FIELDS = frozenset(ProductRequest.model_fields) - {"kind"}
_SCENE_FIELDS = frozenset(SceneRequest.model_fields) - {"kind"}


def decode_fields(fields: Mapping[str, str]) -> dict[str, Any]:
    """An event's body: JSON in one payload field, or the flat fields themselves.

    Fields starting with `_` are envelope metadata (source, queue time) and never part of it.
    """
    body = {name: value for name, value in fields.items() if not name.startswith(META_PREFIX)}
    payload_fields = [name for name in PAYLOAD_FIELDS if name in body]
    if len(body) == 1 and payload_fields:
        raw = body[payload_fields[0]]
        try:
            decoded = json.loads(raw)
        except (json.JSONDecodeError, TypeError) as error:
            raise InvalidRequest(
                f"field {payload_fields[0]!r} is not valid JSON ({error}); "
                "expected one JSON object "
                'such as {"job_code": "geomedian", ...}'
            ) from None
        if not isinstance(decoded, dict):
            raise InvalidRequest(
                f"field {payload_fields[0]!r} holds a JSON {type(decoded).__name__}, "
                "expected a JSON object"
            )
        return decoded
    if not body:
        raise InvalidRequest("the event has no fields; expected a work item")
    return dict(body)


def parse_request(
    body: Mapping[str, Any], *, strict_fields: bool = True
) -> tuple[Request, list[str]]:
    """Validate a work item; returns the request and the unknown fields ignored (non-strict)."""
    if "in_scene" in body:
        model: type[ProductRequest] | type[SceneRequest] = SceneRequest
        known = _SCENE_FIELDS
    elif "job_code" in body:
        model = ProductRequest
        known = _PRODUCT_FIELDS
    else:
        raise InvalidRequest(
            "neither job_code (a product request) nor in_scene (an ARD scene request) is present; "
            f"fields given: {', '.join(sorted(map(str, body))) or 'none'}"
        )
    unknown = sorted(str(name) for name in body if name not in known)
    if unknown and strict_fields:
        raise InvalidRequest(
            f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for a {model.__name__}; known fields: {', '.join(sorted(known))}"
        )
    cleaned = {name: value for name, value in body.items() if name in known}
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
            shown = f" (got {given!r})" if given is not None and not isinstance(given, dict) else ""
            if repr(given) in message:
                shown = ""
            sentences.append(f"{location}: {message}{shown}")
        else:
            sentences.append(message)
    return "; ".join(sentences)

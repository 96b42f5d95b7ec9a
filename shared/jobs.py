"""Jobs as they travel on the jobs streams: one tile and period of a product, one scene to make
into ARD, or one scene of the index to classify for water (or a search for such scenes)."""

from __future__ import annotations

import calendar
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.messages import BUCKET_PATTERN, ProductRequest, SceneRequest, WaterClassificationRequest
from shared.options import TIME_STEP
from shared.paths import RelativePath

JOB_FIELD = "job"


class TileArea(BaseModel):
    """A whole cell of the output grid (`shared.tiling`), or, for legacy naming, the request's
    box snapped to whole pixels."""

    model_config = ConfigDict(frozen=True)

    tile: str = Field(
        description="Cell index, e.g. x110y182; `whole` for a legacy request's box",
        pattern=r"^[a-z0-9-]{1,64}$",
    )
    crs: str = Field(max_length=32)
    resolution: float = Field(gt=0, allow_inf_nan=False)
    left: float = Field(allow_inf_nan=False)
    bottom: float = Field(allow_inf_nan=False)
    right: float = Field(allow_inf_nan=False)
    top: float = Field(allow_inf_nan=False)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.left, self.bottom, self.right, self.top)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return (
            round((self.top - self.bottom) / self.resolution),
            round((self.right - self.left) / self.resolution),
        )


class Period(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: date
    end: date

    @property
    def label(self) -> str:
        """odc-stats style: `2019--P1Y`, `2019-03--P1M`, else `2019-01-05--2019-02-20`."""
        last_day = calendar.monthrange(self.end.year, self.end.month)[1]
        if (self.start.month, self.start.day, self.end.month, self.end.day) == (1, 1, 12, 31):
            years = self.end.year - self.start.year + 1
            return f"{self.start.year}--P{years}Y"
        if self.start.day == 1 and self.end.day == last_day:
            months = (self.end.year - self.start.year) * 12 + self.end.month - self.start.month + 1
            return f"{self.start:%Y-%m}--P{months}M"
        return f"{self.start.isoformat()}--{self.end.isoformat()}"


class ProductJob(BaseModel):
    """A product for one tile and one period; its id hashes everything that shapes the output."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["product"] = "product"
    job_id: str
    request_id: str
    job_code: str
    product: str
    area: TileArea
    period: Period
    prefix: RelativePath
    bucket: str = Field(pattern=BUCKET_PATTERN)
    naming: Literal["odc", "legacy"] | None = None
    epsg4326_naming: bool = False
    cogeo_output: bool = True
    dask_chunks: dict[str, int] = Field(default_factory=dict)
    options: dict[str, str] = Field(default_factory=dict)
    request_bounds: tuple[float, float, float, float]
    request_crs: str

    @property
    def pool(self) -> str:
        return "product"


class SceneJob(BaseModel):
    """One scene to turn into analysis-ready data."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["scene"] = "scene"
    job_id: str
    request_id: str
    scene: SceneRequest

    @property
    def pool(self) -> str:
        return "ard"


@dataclass(frozen=True)
class JobSubject:
    """What a job record shows as the job's scene (`conveyor job`, `conveyor status`)."""

    in_scene: str


class WaterJob(BaseModel):
    """Water classification on the `ard` pool: one dataset of the index to classify
    (`dataset_id`), or, without one, the request's search, which the worker expands into a job
    per dataset found."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["water"] = "water"
    job_id: str
    request_id: str
    request: WaterClassificationRequest
    dataset_id: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$"
    )
    #: The dataset's label, when known, for people reading the job's record.
    label: str | None = Field(default=None, max_length=256)

    @property
    def pool(self) -> str:
        return "ard"

    @property
    def job_code(self) -> str:
        return self.request.job_code

    @property
    def expands(self) -> bool:
        """A search to expand into per-dataset jobs, rather than one dataset to classify."""
        return self.dataset_id is None

    @property
    def scene(self) -> JobSubject:
        """The job's record names this as its scene: the dataset (its label when known), or
        the search."""
        if self.dataset_id is None:
            return JobSubject(f"search {self.request.subject}")
        return JobSubject(self.label or self.dataset_id)


Job = ProductJob | SceneJob | WaterJob


def encode_job(job: Job) -> dict[str, str]:
    return {JOB_FIELD: job.model_dump_json()}


def decode_job(fields: dict[str, str]) -> Job:
    data = json.loads(fields[JOB_FIELD])
    if data.get("kind") == "scene":
        return SceneJob.model_validate(data)
    if data.get("kind") == "water":
        return WaterJob.model_validate(data)
    return ProductJob.model_validate(data)


def stable_hash(*parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def split_periods(time_from: date, time_to: date, time_step: str | None) -> list[Period]:
    """The request's period, or consecutive periods of `time_step` (e.g. 1Y, 6M, 16D)."""
    return list(iter_periods(time_from, time_to, time_step))


def iter_periods(time_from: date, time_to: date, time_step: str | None) -> Iterator[Period]:
    """`split_periods` one at a time, so a long split never sits in memory at once."""
    if time_step is None:
        yield Period(start=time_from, end=time_to)
        return
    count, unit = _step(time_step)
    start: date | None = time_from
    while start is not None and start <= time_to:
        following = _advance(start, count, unit)
        end = time_to if following is None else min(following - timedelta(days=1), time_to)
        yield Period(start=start, end=end)
        start = following


def count_periods(time_from: date, time_to: date, time_step: str | None) -> int:
    """How many periods `split_periods` makes, without making them."""
    if time_step is None:
        return 1
    count, unit = _step(time_step)
    if unit in ("D", "W"):
        days = count * (7 if unit == "W" else 1)
        return (time_to - time_from).days // days + 1
    # Months drift with short months (31 Jan, 28 Feb, 28 Mar...): step as the split does.
    periods = 0
    start: date | None = time_from
    while start is not None and start <= time_to:
        periods += 1
        start = _advance(start, count, unit)
    return periods


def _step(time_step: str) -> tuple[int, str]:
    match = TIME_STEP.fullmatch(time_step)
    if match is None:
        raise ValueError(f"{time_step!r} is not a time step")
    return int(match.group("count")), match.group("unit")


def _advance(day: date, count: int, unit: str) -> date | None:
    """`day` plus `count` units, or None past the last date Python can hold."""
    try:
        if unit == "D":
            return day + timedelta(days=count)
        if unit == "W":
            return day + timedelta(weeks=count)
        months = count * 12 if unit == "Y" else count
        month_index = day.month - 1 + months
        year, month = day.year + month_index // 12, month_index % 12 + 1
        return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))
    except (OverflowError, ValueError):
        return None


def scene_job(request: SceneRequest) -> SceneJob:
    # The same scene pushed again under another request is caught by its committed output.
    job_id = stable_hash("scene", request.request_id)
    return SceneJob(job_id=job_id, request_id=request.request_id, scene=request)


def water_job(request: WaterClassificationRequest) -> WaterJob:
    """The request's one job: its dataset's classification, or the search that finds them."""
    return WaterJob(
        job_id=stable_hash("water", request.request_id),
        request_id=request.request_id,
        request=request,
        dataset_id=request.dataset_id,
    )


def water_dataset_job(search: WaterJob, dataset_id: str, label: str | None = None) -> WaterJob:
    """The job classifying one dataset a search found; its id follows from the search's
    request and the dataset, so finding the same dataset again makes the same job."""
    return WaterJob(
        job_id=stable_hash("water", search.request_id, dataset_id),
        request_id=search.request_id,
        request=search.request,
        dataset_id=dataset_id,
        label=label,
    )


def product_job(request: ProductRequest, area: TileArea, period: Period) -> ProductJob:
    naming_inputs = (request.naming, request.epsg4326_naming, request.bucket, request.prefix)
    job_id = stable_hash(
        "product", request.request_id, request.job_code, request.product, area.model_dump(),
        period.model_dump(),
        sorted(request.product_options().items()), naming_inputs,
    )  # fmt: skip
    return ProductJob(
        job_id=job_id,
        request_id=request.request_id,
        job_code=request.job_code,
        product=request.product,
        area=area,
        period=period,
        prefix=request.prefix,
        bucket=request.bucket,
        naming=request.naming,
        epsg4326_naming=request.epsg4326_naming,
        cogeo_output=request.cogeo_output,
        dask_chunks=request.dask_chunks(),
        options=request.product_options(),
        request_bounds=request.area_bounds,
        request_crs=request.area_crs,
    )

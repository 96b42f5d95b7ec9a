"""How much one work item may ask for: settings people can read, and the error that names them.

Each limit is a setting (`CONVEYOR_` + its name in capitals). A request over one is dead-lettered
on its first delivery with a reason naming the figure, the limit and the setting:

    the request makes 120,516 jobs; the limit is 10,000 (CONVEYOR_MAX_JOBS_PER_REQUEST)
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import InvalidRequest

KIB = 1024
#: Shown instead of a figure too large to read (a request can ask for 10^300 tiles).
LARGEST_SHOWN = 10**15


class LimitExceeded(InvalidRequest):
    """The request is well formed but asks for more than the operator allows."""

    reason = "over_limit"


class RequestLimits(BaseSettings):
    """The bounds on one work item; the dispatcher's settings extend this."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore", populate_by_name=True)

    max_event_bytes: int = Field(
        default=64 * KIB,
        ge=KIB,
        description="Bytes of one event (all its field names and values); larger is refused "
        "unread.",
    )
    max_json_depth: int = Field(
        default=4,
        ge=2,
        le=64,
        description="How deeply a JSON payload may nest (a work item is 2: its `options`).",
    )
    max_jobs_per_request: int = Field(
        default=10_000, ge=1, description="Tile jobs one request may make (tiles x periods)."
    )
    max_periods_per_request: int = Field(
        default=1_000, ge=1, description="Periods one request may split into with time_step."
    )
    max_pixels_per_job: int = Field(
        default=100_000_000,
        ge=1,
        description="Pixels of one job's output grid, whole-box legacy jobs included "
        "(100,000,000 is 10,000 x 10,000).",
    )
    min_dask_chunk: int = Field(
        default=64, ge=1, description="Smallest x/y Dask chunk a request may ask for, in pixels."
    )
    dispatch_batch_bytes: int = Field(
        default=512 * KIB,
        ge=4 * KIB,
        le=4096 * KIB,
        description="Largest script call when dispatching a request's jobs; a larger request goes "
        "out in several calls, still exactly once.",
    )


def setting_name(field: str) -> str:
    """The environment variable of a `RequestLimits` field."""
    return f"CONVEYOR_{field.upper()}"


def figure(value: int) -> str:
    """`120,516`, or `more than 1,000,000,000,000,000` for an absurd figure."""
    if value >= LARGEST_SHOWN:
        return f"more than {LARGEST_SHOWN:,}"
    return f"{value:,}"


def check_limit(sentence: str, value: int, limit: int, field: str) -> None:
    """`LimitExceeded` when `value` > `limit`.

    `sentence` holds `{}` where the figure goes: `check_limit("the request makes {} jobs", ...)`
    says `the request makes 120,516 jobs; the limit is 10,000 (CONVEYOR_MAX_JOBS_PER_REQUEST)`.
    """
    if value > limit:
        stated = sentence.format(figure(value))
        raise LimitExceeded(f"{stated}; the limit is {limit:,} ({setting_name(field)})")

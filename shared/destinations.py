"""Where work is read from and written to: the operator's choice, never an item's.

A work item may pick among allowed places and nothing else:

- an output bucket (`bucket` of a product or water classification request, `s3_bucket` of a
  scene request) must be in
  `CONVEYOR_ALLOWED_OUTPUT_BUCKETS`; by default the request default `public-eo-data` and the
  buckets `CONVEYOR_OUTPUT_URL` and `CONVEYOR_ARD_OUTPUT_URL` name;
- a scene archive (`source` of a scene request) must be in `CONVEYOR_ALLOWED_ARD_SOURCES`; by
  default `CONVEYOR_ARD_SOURCE` and the original deployment's names that mean "the configured
  archive" (`LEGACY_ARD_SOURCES`). No `source` at all always means the configured archive.

The dispatcher refuses an item naming anything else, with a reason; the worker checks its job
again with the same function (`check_destinations`) and dead-letters it rather than retrying.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.errors import InvalidRequest
from shared.jobs import ProductJob, SceneJob, WaterJob
from shared.messages import (
    DEFAULT_BUCKET,
    ProductRequest,
    SceneRequest,
    WaterClassificationRequest,
)

#: The original's download APIs; each meant "the archive this deployment reads".
LEGACY_ARD_SOURCES = frozenset({"gcloud", "esahub", "sedas", "default"})


class NotAllowed(InvalidRequest):
    """The item names a bucket or archive the operator has not allowed."""

    reason = "not_allowed"


def normalise_source(source: str) -> str:
    """Compare archives by what they name: `s3://a/b/` is `s3://a/b`; legacy names any case."""
    text = source.strip()
    if text.lower() in LEGACY_ARD_SOURCES:
        return text.lower()
    return text.rstrip("/") if text.rstrip("/") else text


def _bucket_of(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url.strip())
    if parts.scheme.lower() == "s3" and parts.netloc:
        return parts.netloc
    return None


def _split_list(value: Any) -> Any:
    """`a,b` or `["a", "b"]` from the environment; a list as it is; blank is unset."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.startswith("["):
            import json

            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


@dataclass(frozen=True)
class DestinationPolicy:
    """The allowed output buckets and scene archives (normalised)."""

    output_buckets: frozenset[str]
    ard_sources: frozenset[str]

    def check_bucket(self, bucket: str, field: str) -> None:
        if bucket not in self.output_buckets:
            allowed = ", ".join(sorted(self.output_buckets)) or "none"
            raise NotAllowed(
                f"{field} {bucket!r} is not an allowed output bucket (allowed: {allowed}); "
                "leave it out for the default, or ask the operator to add it to "
                "CONVEYOR_ALLOWED_OUTPUT_BUCKETS"
            )

    def check_source(self, source: str | None) -> None:
        if source is None or not source.strip():
            return
        if normalise_source(source) not in self.ard_sources:
            allowed = ", ".join(sorted(self.ard_sources)) or "none"
            raise NotAllowed(
                f"source {source!r} is not an allowed scene archive (allowed: {allowed}); "
                "leave it out to use the configured archive, or ask the operator to add it to "
                "CONVEYOR_ALLOWED_ARD_SOURCES"
            )


class DestinationSettings(BaseSettings):
    """The configured places and the allow-lists; the dispatcher's and worker's settings extend
    this, so both build the same `DestinationPolicy` from the same environment."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore", populate_by_name=True)

    output_url: str = Field(
        default="demo-output",
        description="file:///path, a plain directory, or s3://bucket[/prefix].",
    )
    ard_source: str | None = Field(
        default=None, description="Archive of SAFE scenes: a directory or s3://bucket/prefix."
    )
    ard_output_url: str | None = Field(
        default=None, description="Where ARD goes; default s3://{s3_bucket}/{s3_dir} of the item."
    )
    allowed_output_buckets: Annotated[list[str] | None, NoDecode] = Field(
        default=None,
        description="Buckets an item may name (comma-separated); default public-eo-data and the "
        "buckets of CONVEYOR_OUTPUT_URL and CONVEYOR_ARD_OUTPUT_URL.",
    )
    allowed_ard_sources: Annotated[list[str] | None, NoDecode] = Field(
        default=None,
        description="Scene archives an item may name as `source` (comma-separated); default "
        "CONVEYOR_ARD_SOURCE and the original's names for it (gcloud, esahub, sedas, default).",
    )

    @field_validator("allowed_output_buckets", "allowed_ard_sources", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_list(value)

    def destination_policy(self) -> DestinationPolicy:
        if self.allowed_output_buckets is not None:
            buckets = {bucket.strip() for bucket in self.allowed_output_buckets}
        else:
            configured = (_bucket_of(self.output_url), _bucket_of(self.ard_output_url))
            buckets = {DEFAULT_BUCKET, *(bucket for bucket in configured if bucket)}
        if self.allowed_ard_sources is not None:
            sources = {normalise_source(source) for source in self.allowed_ard_sources}
        else:
            sources = set(LEGACY_ARD_SOURCES)
            if self.ard_source:
                sources.add(normalise_source(self.ard_source))
        return DestinationPolicy(frozenset(buckets), frozenset(sources))


def check_destinations(
    item: ProductRequest
    | SceneRequest
    | WaterClassificationRequest
    | ProductJob
    | SceneJob
    | WaterJob,
    policy: DestinationPolicy,
) -> None:
    """`NotAllowed` when a request or job names a bucket or archive outside the allow-lists."""
    if isinstance(item, ProductRequest | ProductJob | WaterClassificationRequest):
        policy.check_bucket(item.bucket, "bucket")
        return
    if isinstance(item, WaterJob):
        policy.check_bucket(item.request.bucket, "bucket")
        return
    scene = item.scene if isinstance(item, SceneJob) else item
    policy.check_bucket(scene.s3_bucket, "s3_bucket")
    policy.check_source(scene.source)

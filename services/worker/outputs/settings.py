"""Where products go and how S3 is reached, read from the environment the original deployment used.

`CONVEYOR_OUTPUT_URL` names the destination root: `file:///data/products`, a plain directory path,
or `s3://bucket/optional/prefix`. S3 takes `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
(both secrets, never shown), `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION`, `AWS_S3_ENDPOINT_URL`
(any S3-compatible store) and `AWS_VIRTUAL_HOSTING` (`FALSE` for path-style addressing, as
GDAL reads it). Without keys, botocore's own chain applies (instance profile, web identity).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024
# S3 refuses parts under 5 MiB, except the last one.
S3_MINIMUM_PART_BYTES = 5 * MIB


class S3Credentials(BaseModel):
    """Static keys; the secret parts never appear in repr, logs or errors."""

    model_config = ConfigDict(frozen=True)

    access_key_id: SecretStr
    secret_access_key: SecretStr
    session_token: SecretStr | None = None


class S3Settings(BaseSettings):
    """How to reach S3 or an S3-compatible store, from the original `AWS_*` variables."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore", populate_by_name=True)

    aws_access_key_id: SecretStr | None = Field(
        description="S3 credentials (leave out with IRSA or workload identity).",
        default=None,
        validation_alias=AliasChoices("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
    )
    aws_secret_access_key: SecretStr | None = Field(
        description="S3 credentials.",
        default=None,
        validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
    )
    aws_session_token: SecretStr | None = Field(
        description="S3 session token, with temporary credentials.",
        default=None,
        validation_alias=AliasChoices("AWS_SESSION_TOKEN", "aws_session_token"),
    )
    aws_region: str | None = Field(
        description="S3 region.",
        default=None,
        validation_alias=AliasChoices("AWS_DEFAULT_REGION", "AWS_REGION", "aws_region"),
    )
    aws_s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_S3_ENDPOINT_URL", "aws_s3_endpoint_url"),
        description="e.g. http://minio:9000 for an S3-compatible store; AWS when unset",
    )
    aws_virtual_hosting: bool | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_VIRTUAL_HOSTING", "aws_virtual_hosting"),
        description="FALSE: path-style URLs (endpoint/bucket/key); unset: botocore decides",
    )
    s3_multipart_threshold_bytes: int = Field(
        default=16 * MIB, ge=1, description="Objects at least this large go up in parts"
    )
    s3_multipart_part_bytes: int = Field(
        default=16 * MIB,
        ge=S3_MINIMUM_PART_BYTES,
        description="Size of each part.",
    )
    s3_max_concurrent_parts: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Parts of one object uploaded at once.",
    )
    s3_max_attempts: int = Field(
        default=3, ge=1, description="Tries per request, botocore's own retries included"
    )

    @field_validator("aws_s3_endpoint_url", "aws_region", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("aws_virtual_hosting", mode="before")
    @classmethod
    def _blank_flag_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def credentials(self) -> S3Credentials | None:
        """Static keys when both are set; None leaves it to botocore's credential chain."""
        if self.aws_access_key_id is None or self.aws_secret_access_key is None:
            return None
        return S3Credentials(
            access_key_id=self.aws_access_key_id,
            secret_access_key=self.aws_secret_access_key,
            session_token=self.aws_session_token,
        )


@dataclass(frozen=True)
class OutputLocation:
    """A parsed output URL: a local directory, or an S3 bucket (None: the job's) and prefix."""

    scheme: Literal["file", "s3"]
    path: Path | None = None
    bucket: str | None = None
    prefix: str = ""


def parse_output_url(url: str) -> OutputLocation:
    """`file:///abs/dir`, `some/dir`, `s3://bucket/prefix` or `s3://`; anything else is an error."""
    text = url.strip()
    if not text:
        raise ValueError(
            "the output URL is empty (expected file:///path, a path, or s3://bucket/prefix)"
        )
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "":
        return OutputLocation(scheme="file", path=Path(text).expanduser())
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise ValueError(f"file URL {url!r} is not file:///absolute/path")
        return OutputLocation(scheme="file", path=Path(unquote(parts.path)))
    if scheme == "s3":
        if parts.query or parts.fragment:
            raise ValueError(f"S3 URL {url!r} has a query or fragment; expected s3://bucket/prefix")
        bucket = parts.netloc or None
        prefix = unquote(parts.path).strip("/")
        if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
            raise ValueError(f"S3 prefix {prefix!r} has empty, '.' or '..' parts")
        return OutputLocation(scheme="s3", bucket=bucket, prefix=prefix)
    raise ValueError(
        f"output URL scheme {parts.scheme!r} is not supported "
        "(expected file:///path, a directory path, or s3://bucket/prefix)"
    )

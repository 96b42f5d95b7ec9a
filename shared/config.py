"""Settings shared by every service: the queue, the namespace, logging and metrics.

Each service has one pydantic-settings model built at start-up and handed down. The original
deployment's environment (`REDIS_SERVICE_HOST`/`REDIS_SERVICE_PORT`) keeps working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogFormat = Literal["json", "console"]


class QueueSettings(BaseSettings):
    """Where the queue is and how keys are named; every service's settings extend this."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore", populate_by_name=True)

    redis_url: SecretStr | None = Field(
        default=None,
        description="redis:// or rediss:// URL, ACL user and password allowed. "
        "None (and no REDIS_SERVICE_HOST) starts the embedded valkey-server.",
    )
    redis_password: SecretStr | None = Field(
        default=None, description="Password when it is not in the URL (e.g. from a Secret)."
    )
    redis_username: str | None = None
    redis_service_host: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_SERVICE_HOST", "redis_service_host")
    )
    redis_service_port: int = Field(
        default=6379, validation_alias=AliasChoices("REDIS_SERVICE_PORT", "redis_service_port")
    )
    redis_tls_ca_file: Path | None = None
    redis_tls_insecure: bool = Field(
        default=False, description="Skip certificate verification for rediss:// (testing only)."
    )
    namespace: str = Field(default="conveyor", pattern=r"^[A-Za-z0-9_.-]+$")
    state_dir: Path = Field(
        default=Path(".conveyor"),
        description="Embedded servers' data (queue AOF, PostgreSQL) and scratch space.",
    )
    log_format: LogFormat = "json"
    log_level: str = "INFO"

    @field_validator("redis_service_port", mode="before")
    @classmethod
    def _kubernetes_port_form(cls, value: object) -> object:
        # Kubernetes injects REDIS_SERVICE_PORT as "6379" but a linked container may see "tcp://h:6379".
        if isinstance(value, str) and value.startswith("tcp://"):
            return value.rsplit(":", 1)[-1]
        return value

    def configured_redis_url(self) -> str | None:
        """The URL to connect to, or None when the embedded server should be started."""
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        if self.redis_service_host:
            return f"redis://{self.redis_service_host}:{self.redis_service_port}/0"
        return None


def scrub_url(url: str) -> str:
    """The URL with any password replaced, fit for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = quote(parts.username or "", safe="")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" if user else f":***@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class DispatcherSettings(QueueSettings):
    """`python -m services.dispatcher`."""

    consumer_name: str | None = Field(
        default=None, description="Defaults to hostname-pid, unique per process."
    )
    batch_size: int = Field(default=100, ge=1, le=10_000)
    block_ms: int = Field(default=2000, ge=1)
    lease_seconds: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    tile_size: float | None = Field(
        default=None,
        gt=0,
        description="Edge of the output grid's cells in output CRS units; default "
        "tile_size_pixels at the job's resolution. Fixed per product: see shared.tiling.",
    )
    tile_size_pixels: int = Field(
        default=640,
        ge=16,
        description="Cell edge in pixels (640: 19.2 km at 30 m, 6.4 km at 10 m; five to odc-stats' "
        "96 km tile).",
    )
    dedupe_ttl_seconds: int = Field(
        default=7 * 24 * 3600,
        ge=1,
        description="How long an identical request is recognised and not dispatched again.",
    )
    strict_fields: bool = Field(
        default=True,
        description="Reject events with unknown fields; False logs a warning and ignores them "
        "as the original worker did.",
    )
    plugin_modules: list[str] = Field(
        default_factory=list,
        description="The operator's product modules (as the workers import them), so that their "
        "job codes are accepted.",
    )
    legacy_bridge: bool = True
    legacy_lists: dict[str, str] = Field(
        default_factory=lambda: {"jobProduct": "product", "jobS2": "ard"},
        description="Redis lists of the original deployment moved into the events stream.",
    )
    events_maxlen: int = Field(
        default=1_000_000, ge=1, description="Approximate cap, applied only past what all read."
    )
    metrics_port: int = 9101
    metrics_host: str = "0.0.0.0"

"""Settings shared by every service: the queue, the namespace, logging and metrics.

Each service has one pydantic-settings model built at start-up and handed down. The original
deployment's environment (`REDIS_SERVICE_HOST`/`REDIS_SERVICE_PORT`) keeps working.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.acl import read_password_file
from shared.destinations import DestinationSettings
from shared.keys import LEGACY_LISTS
from shared.limits import RequestLimits

LogFormat = Literal["json", "console"]


def _module_names(value: object) -> object:
    """`my_products`, `a.products,b.products` (commas or spaces) or a JSON list of names."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{text!r} is not a JSON list of module names ({error}); or give them "
                "separated by commas, e.g. my_products,more_products"
            ) from None
    return [name for name in re.split(r"[,\s]+", text) if name]


#: Python modules to import, from one environment variable as an operator writes a list there.
ModuleNames = Annotated[list[str], NoDecode, BeforeValidator(_module_names)]


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
    redis_password_file: Path | None = Field(
        default=None,
        description="File holding the password (a mounted Secret); used when "
        "CONVEYOR_REDIS_PASSWORD is unset. A final newline is not part of the password.",
    )
    redis_username: str | None = Field(
        default=None,
        description="ACL user when it is not in the URL.",
    )
    redis_service_host: str | None = Field(
        description="The original deployment's queue host (used when there is no "
        "CONVEYOR_REDIS_URL).",
        default=None,
        validation_alias=AliasChoices("REDIS_SERVICE_HOST", "redis_service_host"),
    )
    redis_service_port: int = Field(
        description="The original deployment's queue port.",
        default=6379,
        validation_alias=AliasChoices("REDIS_SERVICE_PORT", "redis_service_port"),
    )
    redis_tls_ca_file: Path | None = Field(
        default=None,
        description="CA bundle for rediss:// (default: the system's).",
    )
    redis_tls_insecure: bool = Field(
        default=False, description="Skip certificate verification for rediss:// (testing only)."
    )
    namespace: str = Field(
        default="conveyor",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Prefix of every key.",
    )
    state_dir: Path = Field(
        default=Path(".conveyor"),
        description="Embedded servers' data (queue AOF, PostgreSQL) and scratch space.",
    )
    embedded_maxmemory: str = Field(
        default="1gb",
        pattern=r"^[0-9]+([kmg]b?)?$",
        description="maxmemory of the embedded valkey-server (policy noeviction: a full queue "
        "refuses writes).",
    )
    log_format: LogFormat = Field(
        default="json",
        description="json (services) or console.",
    )
    log_level: str = Field(
        default="INFO",
        description="DEBUG, INFO, WARNING or ERROR.",
    )

    @field_validator("redis_service_port", mode="before")
    @classmethod
    def _kubernetes_port_form(cls, value: object) -> object:
        # Kubernetes injects REDIS_SERVICE_PORT as "6379" but a linked container may see "tcp://h:6379".
        if isinstance(value, str) and value.startswith("tcp://"):
            return value.rsplit(":", 1)[-1]
        return value

    def redis_password_value(self) -> str | None:
        """The password from CONVEYOR_REDIS_PASSWORD, else from CONVEYOR_REDIS_PASSWORD_FILE."""
        if self.redis_password is not None:
            return self.redis_password.get_secret_value()
        if self.redis_password_file is not None:
            return read_password_file(self.redis_password_file)
        return None

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


class ConsumerSettings(QueueSettings):
    """How a consumer of a stream holds its entries: the one place for leases and retries.

    The consumer group (`shared.streams.ConsumerGroup`) owns the lease, its renewal, reclaiming
    and the dead-letter rule; these settings say how long and how often. Derived values
    (renewal and reclaim intervals, retry backoff) scale with the lease unless given, and a
    combination that cannot be honoured is refused when the settings are built, saying why.
    """

    consumer_name: str | None = Field(
        default=None, description="Defaults to hostname-pid, unique per process."
    )
    lease_seconds: float = Field(
        default=120.0,
        gt=0,
        description="An entry idle this long (its holder stopped renewing) is taken over.",
    )
    renew_interval_seconds: float | None = Field(
        default=None, gt=0, description="How often a holder renews; default a third of the lease."
    )
    reclaim_interval_seconds: float | None = Field(
        default=None,
        gt=0,
        description="How often a reader looks for entries whose lease lapsed; default a quarter "
        "of the lease, at most 5 s.",
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Deliveries before an entry is dead-lettered."
    )
    retry_backoff_seconds: float | None = Field(
        default=None,
        ge=0,
        description="First retry delay, doubled each attempt; default min(5 s, lease / 4).",
    )
    retry_backoff_max_seconds: float | None = Field(
        default=None, ge=0, description="Longest retry delay; default half the lease."
    )
    batch_size: int = Field(default=100, ge=1, le=10_000, description="Entries per read.")
    block_ms: int = Field(
        default=2000,
        ge=1,
        description="How long a read waits for entries at most (never past the next reclaim).",
    )
    consumer_idle_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="A consumer not seen for this long, holding nothing, is removed from its "
        "group by housekeeping.",
    )
    record_retention_seconds: float = Field(
        default=30 * 24 * 3600.0,
        gt=0,
        description="How long finished job and request records are kept.",
    )
    dead_letters_max: int = Field(
        default=100_000,
        ge=1,
        description="Cap of the dead-letter stream; past it the oldest is dropped (the "
        "ConveyorDeadLettersNearCap alert fires well before).",
    )
    results_maxlen: int = Field(
        default=100_000, ge=1, description="Approximate cap of the results stream."
    )

    @property
    def renew_interval(self) -> float:
        return self.renew_interval_seconds or self.lease_seconds / 3

    @property
    def reclaim_interval(self) -> float:
        if self.reclaim_interval_seconds is not None:
            return self.reclaim_interval_seconds
        return min(self.lease_seconds / 4, 5.0)

    @property
    def retry_backoff(self) -> float:
        if self.retry_backoff_seconds is not None:
            return self.retry_backoff_seconds
        return min(5.0, self.lease_seconds / 4)

    @property
    def retry_backoff_max(self) -> float:
        if self.retry_backoff_max_seconds is not None:
            return self.retry_backoff_max_seconds
        return max(self.retry_backoff, self.lease_seconds / 2)

    def backoff_for(self, attempt: int) -> float:
        """Delay before retrying after failed attempt number `attempt` (from 1)."""
        return min(self.retry_backoff * 2 ** max(0, attempt - 1), self.retry_backoff_max)

    @property
    def local_deadline_margin(self) -> float:
        """A holder that could not renew stops this long before its lease lapses on the server."""
        return self.lease_seconds / 6

    @model_validator(mode="after")
    def _honourable(self) -> Self:
        problems = consumer_setting_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def consumer_setting_problems(settings: ConsumerSettings) -> list[str]:
    """Why these lease, renewal, reclaim and backoff values cannot be honoured (empty: fine)."""
    lease = settings.lease_seconds
    problems = []
    if settings.renew_interval > lease / 3:
        problems.append(
            f"CONVEYOR_RENEW_INTERVAL_SECONDS ({settings.renew_interval:g}) must be at most a "
            f"third of CONVEYOR_LEASE_SECONDS ({lease:g}), so that a renewal can fail twice "
            "before the lease lapses"
        )
    if settings.reclaim_interval > lease:
        problems.append(
            f"CONVEYOR_RECLAIM_INTERVAL_SECONDS ({settings.reclaim_interval:g}) must not exceed "
            f"CONVEYOR_LEASE_SECONDS ({lease:g}): an orphan would wait more than two leases"
        )
    for name, value in (
        ("CONVEYOR_RETRY_BACKOFF_SECONDS", settings.retry_backoff),
        ("CONVEYOR_RETRY_BACKOFF_MAX_SECONDS", settings.retry_backoff_max),
    ):
        if value > lease:
            problems.append(
                f"{name} ({value:g}) is longer than CONVEYOR_LEASE_SECONDS ({lease:g}): a failed "
                "entry waits for its retry by its idle time, which reaches the lease first; "
                "lower the backoff or raise the lease"
            )
    if settings.retry_backoff_max < settings.retry_backoff:
        problems.append(
            f"CONVEYOR_RETRY_BACKOFF_MAX_SECONDS ({settings.retry_backoff_max:g}) is shorter "
            f"than CONVEYOR_RETRY_BACKOFF_SECONDS ({settings.retry_backoff:g})"
        )
    return problems


class DispatcherSettings(ConsumerSettings, RequestLimits, DestinationSettings):
    """`python -m services.dispatcher`; the limits and allow-lists of `RequestLimits` and
    `DestinationSettings` too."""

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
    plugin_modules: ModuleNames = Field(
        default_factory=list,
        description="The operator's product modules (as the workers import them), so that their "
        "job codes are accepted.",
    )
    legacy_bridge: bool = Field(
        default=True,
        description="Move the CONVEYOR_LEGACY_LISTS into the events stream.",
    )
    legacy_lists: dict[str, str] = Field(
        default_factory=lambda: dict(LEGACY_LISTS),
        description="Redis lists of the original deployment moved into the events stream.",
    )
    events_maxlen: int = Field(
        default=1_000_000, ge=1, description="Approximate cap, applied only past what all read."
    )
    metrics_port: int = Field(
        default=9101,
        description="Port of /metrics and /healthz.",
    )
    metrics_host: str = Field(
        default="0.0.0.0",
        description="Address /metrics and /healthz listen on.",
    )

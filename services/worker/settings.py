"""Settings of `python -m services.worker`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator

from services.worker.outputs.settings import parse_output_url
from services.worker.outputs.spec import CogOptions, Compression
from shared.config import ConsumerSettings, ModuleNames
from shared.destinations import DestinationSettings


class WorkerSettings(ConsumerSettings, DestinationSettings):
    """Leases, retries and reads come from `ConsumerSettings`; these are the worker's own."""

    pool: Literal["product", "ard"] = Field(
        default="product",
        description="Pool a worker serves: product or ard.",
    )
    concurrency: int = Field(default=1, ge=1, le=64, description="Jobs at once per process.")
    processes: int = Field(default=1, ge=1, le=64, description="Worker processes in this pod.")
    job_timeout_seconds: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="A job running longer fails its attempt with reason timeout (then it is "
        "retried, and dead-lettered after max_attempts).",
    )
    job_timeouts: dict[str, float] = Field(
        default_factory=dict,
        description='Per job_code timeouts in seconds, e.g. {"geomedian": 3600}.',
    )
    drain_seconds: float = Field(
        default=600.0,
        ge=0,
        description="On SIGTERM, how long running jobs may finish before they are handed back; "
        "keep it below the pod's terminationGracePeriodSeconds.",
    )
    output_url: str = Field(
        default="demo-output",
        description="file:///path, a plain directory, or s3://bucket[/prefix].",
    )
    output_naming: Literal["odc", "legacy"] = Field(
        default="odc",
        description="Naming of requests that do not choose: odc or legacy.",
    )
    cog_compression: Compression = Field(
        default="DEFLATE", description="Every band's compression: DEFLATE or ZSTD."
    )
    cog_level: int = Field(
        default=6, ge=1, le=22, description="Compression level: DEFLATE 1-9, ZSTD 1-22."
    )
    producer: str | None = Field(
        default=None, description="odc:producer of every product written, a domain name."
    )
    index_outputs: bool = Field(
        default=False, description="Index products back into the datacube as their own product."
    )
    scratch_root: Path = Field(
        default=Path("/tmp/conveyor-scratch"),
        description="ARD scenes' inter_dir must lie under this directory.",
    )
    ard_source: str | None = Field(
        default=None, description="Archive of SAFE scenes: a directory or s3://bucket/prefix."
    )
    ard_output_url: str | None = Field(
        default=None, description="Where ARD goes; default s3://{s3_bucket}/{s3_dir} of the item."
    )
    sen2cor_command: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CONVEYOR_SEN2COR_COMMAND", "SEN2COR_8"),
        description="Sen2Cor's L2A_Process (or its directory), for L1C scenes.",
    )
    tide_table: Path | None = Field(
        default=None, description="CSV of time,height for shoreline tide filtering."
    )
    dask_scheduler_host: str | None = Field(
        description="host[:port] or tcp://... of a shared Dask scheduler; unset: the worker "
        "computes in its own threads.",
        default=None,
        validation_alias=AliasChoices("DASK_SCHEDULER_HOST", "CONVEYOR_DASK_SCHEDULER_HOST"),
    )
    dask_threads: int = Field(
        default=2,
        ge=1,
        description="Threads computing products in a worker process (shared by its jobs), "
        "when there is no DASK_SCHEDULER_HOST.",
    )
    default_chunk_pixels: int = Field(
        default=2048,
        ge=64,
        description="x/y Dask chunk of a load when the request names none.",
    )
    plugin_modules: ModuleNames = Field(
        default_factory=list,
        description="Extra modules to import that register products (comma-separated).",
    )
    metrics_port: int = Field(
        default=9102,
        description="Port of /metrics and /healthz.",
    )
    metrics_host: str = Field(
        default="0.0.0.0",
        description="Address /metrics and /healthz listen on.",
    )

    @field_validator("job_timeouts")
    @classmethod
    def _positive_timeouts(cls, timeouts: dict[str, float]) -> dict[str, float]:
        wrong = sorted(code for code, seconds in timeouts.items() if seconds <= 0)
        if wrong:
            raise ValueError(
                f"CONVEYOR_JOB_TIMEOUTS gives {', '.join(wrong)} a timeout of 0 or less; "
                "give seconds above 0 (or leave the job code out to use "
                "CONVEYOR_JOB_TIMEOUT_SECONDS)"
            )
        return timeouts

    @field_validator("output_url")
    @classmethod
    def _known_location(cls, value: str) -> str:
        parse_output_url(value)
        return value

    @model_validator(mode="after")
    def _cog_options_valid(self) -> WorkerSettings:
        # Refused at start-up, not at the first write.
        try:
            self.cog_options()
        except ValidationError as error:
            reason = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
            raise ValueError(
                f"CONVEYOR_COG_COMPRESSION={self.cog_compression} "
                f"CONVEYOR_COG_LEVEL={self.cog_level}: {reason}"
            ) from None
        return self

    def cog_options(self) -> CogOptions:
        """How every band this worker writes is compressed."""
        return CogOptions(compression=self.cog_compression, level=self.cog_level)

    def timeout_for(self, job_code: str) -> float:
        """Seconds a job of `job_code` may run before its attempt fails with reason timeout."""
        return self.job_timeouts.get(job_code, self.job_timeout_seconds)

"""Settings of `python -m services.worker`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field

from shared.config import ModuleNames, QueueSettings
from shared.destinations import DestinationSettings


class WorkerSettings(QueueSettings, DestinationSettings):
    pool: Literal["product", "ard"] = "product"
    consumer_name: str | None = Field(default=None, description="Default hostname-pid.")
    concurrency: int = Field(default=1, ge=1, le=64, description="Jobs at once per process.")
    processes: int = Field(default=1, ge=1, le=64, description="Worker processes in this pod.")
    lease_seconds: float = Field(
        default=120.0, gt=0, description="A job idle this long is taken over by another worker."
    )
    max_attempts: int = Field(default=3, ge=1)
    retry_backoff_seconds: float = Field(default=5.0, ge=0)
    retry_backoff_max_seconds: float = Field(default=300.0, ge=0)
    block_ms: int = Field(default=2000, ge=1)
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
    output_naming: Literal["odc", "legacy"] = "odc"
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
        default=None,
        validation_alias=AliasChoices("DASK_SCHEDULER_HOST", "CONVEYOR_DASK_SCHEDULER_HOST"),
    )
    dask_threads: int = Field(default=2, ge=1)
    dask_memory_limit: str = "auto"
    default_chunk_pixels: int = Field(default=2048, ge=64)
    plugin_modules: ModuleNames = Field(
        default_factory=list,
        description="Extra modules to import that register products (comma-separated).",
    )
    metrics_port: int = 9102
    metrics_host: str = "0.0.0.0"

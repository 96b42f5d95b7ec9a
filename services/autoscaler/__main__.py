"""`python -m services.autoscaler`: scale the worker pools from stream lag until SIGTERM."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from services.autoscaler.settings import AutoscalerSettings
from shared.logging import configure_logging
from shared.service import settings_or_exit


def settings_from(**overrides: Any) -> AutoscalerSettings:
    """The environment's settings with the given overrides; invalid ones end the command."""
    return settings_or_exit(AutoscalerSettings, **overrides)


def main(
    backend: Annotated[
        str | None, typer.Option(help="kubernetes, local or dry-run (default: $CONVEYOR_BACKEND).")
    ] = None,
    pool: Annotated[
        list[str] | None, typer.Option("--pool", help="Pool to scale (repeat); default all.")
    ] = None,
    poll_interval: Annotated[float | None, typer.Option(help="Seconds between polls (2).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Port of /metrics (9103).")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="Upper bound per pool (20).")] = None,
) -> None:
    """Run the autoscaler service until SIGTERM (same as `python -m services.autoscaler`)."""
    from services.autoscaler.service import serve

    settings = settings_from(
        backend=backend,
        pools=pool or None,
        poll_interval_seconds=poll_interval,
        metrics_port=metrics_port,
        max_replicas=max_replicas,
    )
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    typer.run(main)

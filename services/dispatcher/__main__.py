"""`python -m services.dispatcher`: run one dispatcher until SIGTERM."""

from __future__ import annotations

import asyncio

import typer

from services.dispatcher.service import Dispatcher
from shared.catalogue import import_plugin_modules
from shared.config import DispatcherSettings
from shared.logging import configure_logging
from shared.service import serve, settings_or_exit


def main(
    metrics_port: int | None = typer.Option(None, help="Port of /metrics (default 9101)."),
    consumer: str | None = typer.Option(None, help="Consumer name (default hostname-pid)."),
) -> None:
    settings = settings_or_exit(
        DispatcherSettings, metrics_port=metrics_port, consumer_name=consumer
    )
    configure_logging(settings.log_format, settings.log_level)
    import_plugin_modules(settings.plugin_modules)
    asyncio.run(serve(settings, lambda redis: Dispatcher(redis, settings), role="dispatcher"))


if __name__ == "__main__":
    typer.run(main)

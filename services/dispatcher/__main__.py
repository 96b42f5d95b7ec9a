"""`python -m services.dispatcher`: run one dispatcher until SIGTERM."""

from __future__ import annotations

import asyncio

import typer

from services.dispatcher.service import Dispatcher, install_signal_handlers
from shared.catalogue import import_plugin_modules
from shared.config import DispatcherSettings
from shared.logging import configure_logging
from shared.redis_connection import open_queue


async def serve(settings: DispatcherSettings) -> None:
    async with open_queue(settings, "dispatcher") as redis:
        dispatcher = Dispatcher(redis, settings)
        install_signal_handlers(dispatcher.stop)
        await dispatcher.run()


def main(
    metrics_port: int | None = typer.Option(None, help="Port of /metrics (default 9101)."),
    consumer: str | None = typer.Option(None, help="Consumer name (default hostname-pid)."),
) -> None:
    overrides: dict[str, object] = {}
    if metrics_port is not None:
        overrides["metrics_port"] = metrics_port
    if consumer is not None:
        overrides["consumer_name"] = consumer
    settings = DispatcherSettings(**overrides)  # type: ignore[arg-type]
    configure_logging(settings.log_format, settings.log_level)
    import_plugin_modules(settings.plugin_modules)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    typer.run(main)

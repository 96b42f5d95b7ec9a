"""Prometheus metrics: each service owns a registry and serves it on /metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
STAGE_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 3600)


@dataclass
class StreamGauges:
    """Length, lag and pending of the streams a service reads, refreshed periodically."""

    registry: CollectorRegistry
    length: Gauge = field(init=False)
    lag: Gauge = field(init=False)
    pending: Gauge = field(init=False)

    def __post_init__(self) -> None:
        self.length = Gauge(
            "conveyor_stream_length", "Entries in the stream", ["stream"], registry=self.registry
        )
        self.lag = Gauge(
            "conveyor_stream_lag",
            "Entries not yet delivered to the group (-1 when the server cannot tell)",
            ["stream", "group"],
            registry=self.registry,
        )
        self.pending = Gauge(
            "conveyor_stream_pending",
            "Entries delivered but not acknowledged",
            ["stream", "group"],
            registry=self.registry,
        )


def dead_letter_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "conveyor_dead_letters",
        "Entries sent to the dead-letter stream",
        ["service", "reason"],
        registry=registry,
    )


def stage_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "conveyor_stage_duration_seconds",
        "Time spent per job stage",
        ["job_code", "stage"],
        buckets=STAGE_BUCKETS,
        registry=registry,
    )


async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> web.AppRunner:
    """Serve `/metrics` (and `/healthz`) until the returned runner is cleaned up."""

    async def metrics(_request: web.Request) -> web.Response:
        body = generate_latest(registry)
        response = web.Response(body=body)
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner

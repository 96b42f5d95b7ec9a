"""The dispatcher: events -> validated requests -> tile jobs on the pool streams.

Several dispatchers may run in the group `dispatcher`. Each event is handled with one atomic
Lua step that adds its jobs (unless the same request was dispatched before) and acknowledges it.
Invalid events go to the dead-letter stream with a reason; nothing invalid reaches a worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.dispatcher.bridge import LegacyBridge
from services.dispatcher.planning import RequestCheck, plan_jobs
from shared.catalogue import check_request
from shared.config import DispatcherSettings
from shared.errors import InvalidRequest
from shared.jobs import encode_job
from shared.jobstate import Command, queued_commands
from shared.keys import DISPATCHER_GROUP, POOLS, WORKER_GROUP, Keys
from shared.lifecycle import sleep_unless_stopped
from shared.messages import ProductRequest, decode_fields, parse_request
from shared.metrics import LATENCY_BUCKETS, StreamGauges, dead_letter_counter, serve_metrics
from shared.redis_connection import TRANSIENT_ERRORS
from shared.streams import ConsumerGroup, Delivery, entry_time, group_stats, trim

log = structlog.get_logger(__name__)

HOUSEKEEPING_SECONDS = 5.0


class DispatcherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events = Counter(
            "conveyor_events_consumed",
            "Events read from the events stream",
            ["source"],
            registry=registry,
        )
        self.dispatched = Counter(
            "conveyor_jobs_dispatched", "Jobs added to a pool stream", ["pool"], registry=registry
        )
        self.dead_letters = dead_letter_counter(registry)
        self.latency = Histogram(
            "conveyor_dispatch_latency_seconds",
            "From an event entering the stream to its jobs being dispatched",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.streams = StreamGauges(registry)


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def catalogue_check(request: ProductRequest) -> None:
    """The product contract, so an unservable job code or option never reaches a worker."""
    check_request(request.job_code, request.product, request.product_options())


class Dispatcher:
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: DispatcherSettings,
        *,
        registry: CollectorRegistry | None = None,
        check: RequestCheck | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.consumer = settings.consumer_name or default_consumer_name()
        self.metrics = DispatcherMetrics(registry or CollectorRegistry())
        self.check = check if check is not None else catalogue_check
        self.clock = clock
        self.group = ConsumerGroup(
            redis,
            stream=self.keys.events,
            group=DISPATCHER_GROUP,
            consumer=self.consumer,
            keys=self.keys,
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
            service="dispatcher",
        )
        self.bridge = LegacyBridge(
            redis, lists=list(settings.legacy_lists), events_stream=self.keys.events
        )
        self.stopping = asyncio.Event()
        self.handled = 0

    async def handle(self, delivery: Delivery) -> int:
        """Dispatch one event; returns the number of jobs added (0 for a duplicate or reject)."""
        source = delivery.fields.get("_source", "stream")
        self.metrics.events.labels(source=source).inc()
        bound = log.bind(entry_id=delivery.entry_id, source=source)
        try:
            body = decode_fields(delivery.fields)
            request, ignored = parse_request(body, strict_fields=self.settings.strict_fields)
            if ignored:
                bound.warning("ignored unknown fields", fields=ignored)
            jobs = plan_jobs(
                request,
                tile_size=self.settings.tile_size,
                tile_size_pixels=self.settings.tile_size_pixels,
                check=self.check,
            )
        except InvalidRequest as error:
            await self.group.dead_letter(delivery, reason=error.reason, error=str(error))
            self.metrics.dead_letters.labels(service="dispatcher", reason=error.reason).inc()
            return 0
        bound = bound.bind(request_id=request.request_id)
        now = self.clock()
        commands: list[Command] = [
            ("XADD", self.keys.jobs(job.pool), "*", *encode_job(job).popitem()) for job in jobs
        ]
        commands.extend(queued_commands(self.keys, request, jobs, now))
        applied = await self.group.apply_once_then_ack(
            delivery,
            idempotency_key=self.keys.dispatched(request.request_id),
            ttl_seconds=self.settings.dedupe_ttl_seconds,
            commands=commands,
        )
        if not applied:
            bound.info("duplicate request: already dispatched", jobs=len(jobs))
            return 0
        self.metrics.latency.observe(max(0.0, now - entry_time(delivery.entry_id)))
        self.metrics.dispatched.labels(pool=request.pool).inc(len(jobs))
        bound.info("dispatched", pool=request.pool, jobs=len(jobs), kind=request.kind)
        return len(jobs)

    async def handle_safely(self, delivery: Delivery) -> None:
        try:
            await self.handle(delivery)
        except TRANSIENT_ERRORS:
            raise
        except Exception as error:  # a bug must not lose the event nor stop the service
            log.exception("event failed; will retry", entry_id=delivery.entry_id)
            await self.group.retry_later(
                delivery, f"{type(error).__name__}: {error}", backoff_seconds=1.0
            )
        self.handled += 1

    async def consume(self) -> None:
        backoff = 0.1
        while not self.stopping.is_set():
            try:
                deliveries = await self.group.read(self.settings.batch_size, self.settings.block_ms)
                for delivery in deliveries:
                    await self.handle_safely(delivery)
                backoff = 0.1
            except TRANSIENT_ERRORS as error:
                log.warning("queue unavailable; retrying", error=str(error), retry_in=backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def bridge_legacy_lists(self) -> None:
        backoff = 0.1
        while not self.stopping.is_set():
            try:
                await self.bridge.run(self.stopping)
            except TRANSIENT_ERRORS as error:
                log.warning("bridge: queue unavailable", error=str(error), retry_in=backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def housekeeping(self) -> None:
        """Refresh stream gauges and trim what every group has finished with."""
        while not self.stopping.is_set():
            try:
                await self.refresh_gauges()
                await trim(self.redis, self.keys.events)
                for pool in POOLS:
                    await trim(self.redis, self.keys.jobs(pool))
            except TRANSIENT_ERRORS as error:
                log.warning("housekeeping: queue unavailable", error=str(error))
            await self._sleep(HOUSEKEEPING_SECONDS)

    async def refresh_gauges(self) -> None:
        watched = [(self.keys.events, DISPATCHER_GROUP)] + [
            (self.keys.jobs(pool), WORKER_GROUP) for pool in POOLS
        ]
        for stream, group in watched:
            stats = await group_stats(self.redis, stream, group)
            self.metrics.streams.length.labels(stream=stream).set(stats.length)
            self.metrics.streams.lag.labels(stream=stream, group=group).set(
                -1 if stats.lag is None else stats.lag
            )
            self.metrics.streams.pending.labels(stream=stream, group=group).set(stats.pending)

    async def _sleep(self, seconds: float) -> None:
        await sleep_unless_stopped(self.stopping, seconds)

    def stop(self) -> None:
        self.stopping.set()

    async def run(self, *, serve_http: bool = True) -> None:
        await self.group.ensure_when_reachable()
        runner = None
        if serve_http:
            runner = await serve_metrics(
                self.metrics.registry, self.settings.metrics_host, self.settings.metrics_port
            )
        log.info("dispatcher started", consumer=self.consumer, stream=self.keys.events)
        tasks = [asyncio.create_task(self.consume()), asyncio.create_task(self.housekeeping())]
        if self.settings.legacy_bridge:
            tasks.append(asyncio.create_task(self.bridge_legacy_lists()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if runner is not None:
                await runner.cleanup()
            log.info("dispatcher stopped", handled=self.handled)


def install_signal_handlers(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)

"""The dispatcher: events -> validated requests -> tile jobs on the pool streams.

Several dispatchers may run in the group `dispatcher`. Each event is validated and planned
(pure, bounded: `planning`), then its jobs are added exactly once in bounded batches, the last of
which acknowledges it (`batches`). Invalid events, requests over a limit and requests naming a
place the operator has not allowed go to the dead-letter stream on their first delivery with a
reason; nothing invalid reaches a worker and nothing invalid is retried.
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

from services.dispatcher.batches import BatchedDispatch
from services.dispatcher.bridge import LegacyBridge
from services.dispatcher.events import EventGroup
from services.dispatcher.planning import JobPlan, RequestCheck, check_limits, plan_request
from shared.catalogue import check_request
from shared.config import DispatcherSettings
from shared.destinations import NotAllowed, check_destinations
from shared.errors import InvalidRequest
from shared.keys import DISPATCHER_GROUP, POOLS, WORKER_GROUP, Keys
from shared.lifecycle import sleep_unless_stopped
from shared.limits import LimitExceeded
from shared.messages import ProductRequest, Request, decode_fields, parse_request
from shared.metrics import LATENCY_BUCKETS, StreamGauges, dead_letter_counter, serve_metrics
from shared.redis_connection import TRANSIENT_ERRORS
from shared.streams import Delivery, entry_time, group_stats, trim

log = structlog.get_logger(__name__)

HOUSEKEEPING_SECONDS = 5.0
#: Longest reason a dead letter states (a refusal may quote a field).
MAX_REASON_CHARACTERS = 2000
#: `source` label of events added straight to the stream (no `_source`).
STREAM_SOURCE = "stream"
#: `source` label of every other `_source` an event claims: labels come from sets the code
#: knows, so 300 made-up sources make one series, not 300.
OTHER_SOURCE = "other"


class RequestInFlight(InvalidRequest):
    """The request's previous run is still running: a new run would double its jobs."""

    reason = "in_flight"


class PlanningFailed(InvalidRequest):
    """Validating or planning raised where it should have refused with a reason: a bug. Planning
    is pure, so a retry would fail the same way; the event is dead-lettered at once."""

    reason = "planning_failed"


#: Every `reason` label the dispatcher's dead-letter counter can carry.
DEAD_LETTER_REASONS = frozenset(
    error.reason
    for error in (InvalidRequest, LimitExceeded, NotAllowed, RequestInFlight, PlanningFailed)
)


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
        self.destinations = settings.destination_policy()
        self.known_sources = frozenset({STREAM_SOURCE, *settings.legacy_lists})
        self.group = EventGroup(
            redis,
            stream=self.keys.events,
            group=DISPATCHER_GROUP,
            consumer=self.consumer,
            keys=self.keys,
            max_event_bytes=settings.max_event_bytes,
            on_refused=self._count_unread_refusals,
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
            service="dispatcher",
        )
        self.step = BatchedDispatch(
            redis,
            self.keys,
            stream=self.keys.events,
            group=DISPATCHER_GROUP,
            consumer=self.consumer,
            errors_key=self.group.errors_key,
            ttl_seconds=settings.dedupe_ttl_seconds,
            batch_bytes=settings.dispatch_batch_bytes,
        )
        self.bridge = LegacyBridge(
            redis, lists=list(settings.legacy_lists), events_stream=self.keys.events
        )
        self.stopping = asyncio.Event()
        self.handled = 0

    def source_label(self, source: str | None) -> str:
        """The `source` metric label: the legacy list it came through, `stream`, or `other`."""
        if source is None:
            return STREAM_SOURCE
        return source if source in self.known_sources else OTHER_SOURCE

    def validate(self, fields: dict[str, str]) -> tuple[Request, JobPlan, list[str]]:
        """The request, its plan (counted, within every limit) and any fields ignored.

        Pure: any error here would recur on a retry, so every one ends as `InvalidRequest`.
        """
        settings = self.settings
        try:
            body = decode_fields(
                fields, max_bytes=settings.max_event_bytes, max_depth=settings.max_json_depth
            )
            request, ignored = parse_request(body, strict_fields=settings.strict_fields)
            plan = plan_request(
                request,
                tile_size=settings.tile_size,
                tile_size_pixels=settings.tile_size_pixels,
                check=self.check,
            )
            check_limits(plan, settings)
            check_destinations(request, self.destinations)
            # Make one job now: a job that cannot be made fails here, refused, not mid-dispatch.
            next(plan.jobs(), None)
        except InvalidRequest:
            raise
        except Exception as error:
            log.exception("validating an event failed where it should have refused it")
            raise PlanningFailed(
                f"the dispatcher could not validate this event ({type(error).__name__}: "
                f"{error}); this is a fault in the dispatcher, please report it with the event"
            ) from error
        return request, plan, ignored

    async def handle(self, delivery: Delivery) -> int:
        """Dispatch one event; returns the request's job count once its jobs are all in their
        stream (the same figure when the step is retried), 0 for a duplicate or a refusal."""
        source = self.source_label(delivery.fields.get("_source"))
        self.metrics.events.labels(source=source).inc()
        bound = log.bind(entry_id=delivery.entry_id, source=source)
        try:
            request, plan, ignored = self.validate(delivery.fields)
        except InvalidRequest as error:
            await self.refuse(delivery, error)
            return 0
        if ignored:
            bound.warning("ignored unknown fields", fields=ignored[:20])
        bound = bound.bind(request_id=request.request_id)
        now = self.clock()
        outcome = await self.step.dispatch(delivery, plan, now)
        if outcome.status == "in_flight":
            await self.refuse(
                delivery,
                RequestInFlight(
                    f"request {request.request_id} is still running its previous run "
                    f"({outcome.jobs_finished:,} of {outcome.jobs_total:,} jobs finished); "
                    f"submit it again once that run has finished "
                    f"(conveyor job {request.request_id})"
                ),
            )
            return 0
        if outcome.status == "duplicate":
            bound.info("duplicate request: already dispatched", jobs=plan.count)
            return 0
        if outcome.status != "dispatched":
            bound.info("event taken over by another dispatcher", status=outcome.status)
            return 0
        self.metrics.latency.observe(max(0.0, now - entry_time(delivery.entry_id)))
        self.metrics.dispatched.labels(pool=request.pool).inc(outcome.jobs_added)
        bound.info(
            "dispatched", pool=request.pool, jobs=outcome.jobs_total, added=outcome.jobs_added,
            batches=outcome.batches, kind=request.kind,
        )  # fmt: skip
        return outcome.jobs_total

    async def refuse(self, delivery: Delivery, error: InvalidRequest) -> None:
        """Dead-letter the event on this delivery with the reason; it is never retried."""
        text = str(error)
        if len(text) > MAX_REASON_CHARACTERS:
            text = text[: MAX_REASON_CHARACTERS - 3] + "..."
        await self.group.dead_letter(delivery, reason=error.reason, error=text)
        self._count_dead_letter(error.reason)

    def _count_dead_letter(self, reason: str) -> None:
        label = reason if reason in DEAD_LETTER_REASONS else OTHER_SOURCE
        self.metrics.dead_letters.labels(service="dispatcher", reason=label).inc()

    def _count_unread_refusals(self, count: int) -> None:
        self.metrics.dead_letters.labels(service="dispatcher", reason=LimitExceeded.reason).inc(
            count
        )

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

"""The dispatcher: events -> validated requests -> tile jobs on the pool streams.

Several dispatchers may run in the group `dispatcher`. Each event is validated and planned
(pure, bounded: `planning`), then its jobs are added exactly once in bounded batches, the last of
which acknowledges it (`batches`). Invalid events, requests over a limit and requests naming a
place the operator has not allowed go to the dead-letter stream on their first delivery with a
reason; nothing invalid reaches a worker and nothing invalid is retried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.dispatcher.batches import BatchedDispatch
from services.dispatcher.bridge import LegacyBridge
from services.dispatcher.events import EventGroup
from services.dispatcher.planning import JobPlan, RequestCheck, check_limits, plan_request
from shared.catalogue import check_request
from shared.config import DispatcherSettings
from shared.destinations import NotAllowed, check_destinations
from shared.errors import InvalidRequest
from shared.jobstate import JobStates
from shared.keys import DISPATCHER_GROUP, POOLS, WORKER_GROUP, Keys
from shared.limits import LimitExceeded
from shared.messages import ProductRequest, Request, decode_fields, parse_request
from shared.metrics import LATENCY_BUCKETS, StreamGauges, dead_letter_counter
from shared.outages import QUEUE_ERRORS, is_outage
from shared.service import (
    Backoff,
    Stoppable,
    default_consumer_name,
    install_stop_handlers,
    metrics_served,
    pause_for_outage,
)
from shared.streams import ConsumerGroup, Delivery, entry_time, group_stats, trim

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
        self.dead_letters_stored = Gauge(
            "conveyor_dead_letters_stored",
            "Dead letters waiting to be replayed or purged",
            registry=registry,
        )
        self.dead_letters_cap = Gauge(
            "conveyor_dead_letters_cap",
            "Most dead letters kept (CONVEYOR_DEAD_LETTERS_MAX); past it the oldest is dropped",
            registry=registry,
        )
        self.consumers_removed = Counter(
            "conveyor_consumers_removed",
            "Consumers removed from their group after idling with nothing pending",
            ["stream"],
            registry=registry,
        )


def catalogue_check(request: ProductRequest) -> None:
    """The product contract, so an unservable job code or option never reaches a worker."""
    check_request(request.job_code, request.product, request.product_options())


class Dispatcher(Stoppable):
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: DispatcherSettings,
        *,
        registry: CollectorRegistry | None = None,
        check: RequestCheck | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
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
            settings=settings,
            service="dispatcher",
            on_dead_letter=self._count_dead_letter,
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
            redis,
            lists=list(settings.legacy_lists),
            events_stream=self.keys.events,
            max_events=settings.events_maxlen,
        )
        self.states = JobStates(
            redis, self.keys, retention_seconds=settings.record_retention_seconds
        )
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

    def _count_dead_letter(self, reason: str, _delivery: Delivery | None = None) -> None:
        label = reason if reason in DEAD_LETTER_REASONS else OTHER_SOURCE
        self.metrics.dead_letters.labels(service="dispatcher", reason=label).inc()

    def _count_unread_refusals(self, count: int) -> None:
        self.metrics.dead_letters.labels(service="dispatcher", reason=LimitExceeded.reason).inc(
            count
        )

    async def handle_safely(self, delivery: Delivery) -> None:
        try:
            await self.handle(delivery)
        except QUEUE_ERRORS as error:
            if is_outage(error):
                raise
            await self._retry_later(delivery, error)
        except Exception as error:  # a bug must not lose the event nor stop the service
            await self._retry_later(delivery, error)
        self.handled += 1

    async def _retry_later(self, delivery: Delivery, error: BaseException) -> None:
        log.exception("event failed; will retry", entry_id=delivery.entry_id)
        await self.group.retry_later(delivery, f"{type(error).__name__}: {error}")

    async def consume(self) -> None:
        """Read events in batches and handle them, holding their leases while the batch lasts."""
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                deliveries = await self.group.read(self.settings.batch_size, self.settings.block_ms)
                if deliveries:
                    await self.handle_batch(deliveries)
                backoff.reset()
            except QUEUE_ERRORS as error:
                if not is_outage(error):
                    raise
                await pause_for_outage(self, backoff, error, "dispatching events")

    async def handle_batch(self, deliveries: list[Delivery]) -> None:
        claimed_at = min(delivery.claimed_at for delivery in deliveries)
        lease = self.group.hold([delivery.entry_id for delivery in deliveries], claimed_at)
        keeper = asyncio.create_task(lease.keep())
        try:
            for delivery in deliveries:
                if delivery.entry_id in lease.lost_ids:
                    # Another dispatcher reclaimed it while this batch ran: it is theirs now.
                    log.warning("event left to its new holder", entry_id=delivery.entry_id)
                    continue
                await self.handle_safely(delivery)
                lease.release(delivery.entry_id)
        finally:
            keeper.cancel()

    async def bridge_legacy_lists(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                await self.bridge.run(self.stopping)
            except QUEUE_ERRORS as error:
                if not is_outage(error):
                    raise
                await pause_for_outage(self, backoff, error, "bridging the legacy lists")

    async def housekeeping(self) -> None:
        """Every few seconds: gauges, trimming, idle consumers, expired records' index entries."""
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                await self.housekeeping_once()
                backoff.reset()
            except QUEUE_ERRORS as error:
                if not is_outage(error):
                    raise
                await pause_for_outage(self, backoff, error, "housekeeping")
                continue
            await self.sleep(HOUSEKEEPING_SECONDS)

    async def housekeeping_once(self) -> None:
        await self.refresh_gauges()
        await trim(self.redis, self.keys.events)
        for pool in POOLS:
            await trim(self.redis, self.keys.jobs(pool))
        for group in self.watched_groups():
            removed = await group.remove_idle_consumers(self.settings.consumer_idle_seconds)
            if removed:
                self.metrics.consumers_removed.labels(stream=group.stream).inc(len(removed))
        await self.states.forget_expired()

    def watched_groups(self) -> list[ConsumerGroup]:
        """The groups housekeeping looks after (this dispatcher's own and the workers')."""
        return [self.group] + [
            ConsumerGroup(
                self.redis,
                stream=self.keys.jobs(pool),
                group=WORKER_GROUP,
                consumer=self.consumer,
                keys=self.keys,
                settings=self.settings,
                service="housekeeping",
            )
            for pool in POOLS
        ]

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
        self.metrics.dead_letters_stored.set(await self.redis.xlen(self.keys.dead))
        self.metrics.dead_letters_cap.set(self.settings.dead_letters_max)

    async def _sleep(self, seconds: float) -> None:
        await self.sleep(seconds)

    async def run(self, *, serve_http: bool = True) -> None:
        if not await self.group.ensure_when_reachable(self.stopping):
            return
        async with metrics_served(
            self.metrics.registry, self.settings.metrics_host, self.settings.metrics_port,
            enabled=serve_http,
        ):  # fmt: skip
            log.info("dispatcher started", consumer=self.consumer, stream=self.keys.events)
            tasks = [asyncio.create_task(self.consume()), asyncio.create_task(self.housekeeping())]
            if self.settings.legacy_bridge:
                tasks.append(asyncio.create_task(self.bridge_legacy_lists()))
            try:
                await asyncio.gather(*tasks)
                await self.group.leave_on_stop()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                log.info("dispatcher stopped", handled=self.handled)


# The one skeleton's handlers, under the name `__main__` and tests use.
install_signal_handlers = install_stop_handlers
__all__ = ["Dispatcher", "default_consumer_name", "install_signal_handlers"]

"""The dispatcher: events -> validated requests -> tile jobs on the pool streams.

Several dispatchers may run in the group `dispatcher`. Each event is handled with one atomic
Lua step that adds its jobs (unless the same request was dispatched before) and acknowledges it.
Invalid events go to the dead-letter stream with a reason; nothing invalid reaches a worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.dispatcher.bridge import LegacyBridge
from services.dispatcher.planning import RequestCheck, plan_jobs
from shared.catalogue import check_request
from shared.config import DispatcherSettings
from shared.errors import InvalidRequest
from shared.jobs import encode_job
from shared.jobstate import Command, JobStates, queued_commands
from shared.keys import DISPATCHER_GROUP, POOLS, WORKER_GROUP, Keys
from shared.messages import ProductRequest, decode_fields, parse_request
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
        self.group = ConsumerGroup(
            redis,
            stream=self.keys.events,
            group=DISPATCHER_GROUP,
            consumer=self.consumer,
            keys=self.keys,
            settings=settings,
            service="dispatcher",
            on_dead_letter=self._count_dead_letter,
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

    def _count_dead_letter(self, reason: str, _delivery: Delivery | None) -> None:
        self.metrics.dead_letters.labels(service="dispatcher", reason=reason).inc()

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
                await self.leave_group()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                log.info("dispatcher stopped", handled=self.handled)

    async def leave_group(self) -> None:
        """A clean stop: remove this consumer from the group if it holds nothing."""
        try:
            if await self.group.leave():
                log.info("left the consumer group", consumer=self.consumer)
        except QUEUE_ERRORS as error:
            if not is_outage(error):
                raise
            log.warning("could not leave the consumer group; housekeeping removes it later",
                        error=str(error))  # fmt: skip


# The one skeleton's handlers, under the name `__main__` and tests use.
install_signal_handlers = install_stop_handlers
__all__ = ["Dispatcher", "default_consumer_name", "install_signal_handlers"]

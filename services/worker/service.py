"""The worker: claim jobs from a pool stream, run them, acknowledge; survive anything.

Each running job has a lease renewed by a background task, so a long job is never taken over
while its worker lives; a job whose worker died is reclaimed once its lease lapses. Failures are
retried with exponential backoff and dead-lettered with their last error after `max_attempts`.
On SIGTERM the worker stops reading, lets running jobs finish for `drain_seconds`, hands back
the rest and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as aioredis
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.worker.settings import WorkerSettings
from shared.errors import ConveyorError, InvalidRequest, NoData, Permanent
from shared.jobs import Job, decode_job
from shared.jobstate import JobStates
from shared.keys import WORKER_GROUP, Keys
from shared.lifecycle import sleep_unless_stopped
from shared.metrics import dead_letter_counter, serve_metrics, stage_histogram
from shared.redis_connection import TRANSIENT_ERRORS
from shared.streams import ConsumerGroup, Delivery

log = structlog.get_logger(__name__)


@dataclass
class JobOutcome:
    """What a runner reports; `state` is done, skipped (already committed) or nodata."""

    state: str = "done"
    outputs: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    bytes_written: int = 0
    destination: str = "local"
    detail: dict[str, str] = field(default_factory=dict)


class JobRunner(Protocol):
    async def run(self, job: Job) -> JobOutcome: ...


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.jobs = Counter(
            "conveyor_jobs", "Jobs finished, by outcome", ["pool", "job_code", "outcome"],
            registry=registry,
        )  # fmt: skip
        self.stages = stage_histogram(registry)
        self.in_flight = Gauge(
            "conveyor_jobs_in_flight", "Jobs running now", ["pool"], registry=registry
        )
        self.retries = Counter(
            "conveyor_job_retries", "Failed attempts that will be retried", ["pool", "job_code"],
            registry=registry,
        )  # fmt: skip
        self.dead_letters = dead_letter_counter(registry)
        self.bytes_written = Counter(
            "conveyor_bytes_written", "Bytes of products written", ["destination"],
            registry=registry,
        )  # fmt: skip


def job_code_of(job: Job) -> str:
    return job.job_code if job.kind == "product" else "ard"  # type: ignore[union-attr]


class Worker:
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: WorkerSettings,
        runners: Mapping[str, JobRunner],
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.runners = runners
        self.keys = Keys(settings.namespace)
        self.consumer = settings.consumer_name or f"{socket.gethostname()}-{os.getpid()}"
        self.group = ConsumerGroup(
            redis,
            stream=self.keys.jobs(settings.pool),
            group=WORKER_GROUP,
            consumer=self.consumer,
            keys=self.keys,
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
            service="worker",
        )
        self.states = JobStates(redis, self.keys)
        self.metrics = WorkerMetrics(registry or CollectorRegistry())
        self.stopping = asyncio.Event()
        self.running: dict[str, asyncio.Task[None]] = {}

    # -- one job --------------------------------------------------------------------------

    async def process(self, delivery: Delivery) -> None:
        bound = log.bind(entry_id=delivery.entry_id, attempt=delivery.attempt)
        try:
            job = decode_job(delivery.fields)
        except Exception as error:
            await self.group.dead_letter(
                delivery, reason="invalid_job", error=f"not a job this worker understands: {error}"
            )
            self.metrics.dead_letters.labels(service="worker", reason="invalid_job").inc()
            return
        code = job_code_of(job)
        bound = bound.bind(job_id=job.job_id, request_id=job.request_id, job_code=code)
        runner = self.runners.get(job.kind)
        if runner is None:
            await self._dead(delivery, job, "invalid_job", f"no runner for {job.kind} jobs here")
            return
        await self.states.started(job, attempt=delivery.attempt, worker=self.consumer)
        self.metrics.in_flight.labels(pool=self.settings.pool).inc()
        renewal = asyncio.create_task(self._keep_lease(delivery, bound))
        started = time.monotonic()
        bound.info("job started")
        try:
            outcome = await runner.run(job)
        except NoData as error:
            outcome = JobOutcome(state="nodata", detail={"reason": str(error)})
        except (InvalidRequest, Permanent) as error:
            await self._dead(delivery, job, error.reason, str(error))
            bound.warning("job cannot succeed", error=str(error))
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:  # anything else may pass: retry with backoff
            message = _describe(error)
            bound.warning(
                "job failed", error=message, exc_info=not isinstance(error, ConveyorError)
            )
            await self._failed(delivery, job, message)
            return
        finally:
            renewal.cancel()
            self.metrics.in_flight.labels(pool=self.settings.pool).dec()
        outcome.stages.setdefault("total", time.monotonic() - started)
        for stage, seconds in outcome.stages.items():
            if stage != "total":
                self.metrics.stages.labels(job_code=code, stage=stage).observe(seconds)
        self.metrics.bytes_written.labels(destination=outcome.destination).inc(
            outcome.bytes_written
        )
        self.metrics.jobs.labels(
            pool=self.settings.pool, job_code=code, outcome=outcome.state
        ).inc()
        # The state is recorded before the ack: a crash in between re-runs the job, which finds
        # its output committed and records nothing twice.
        await self.states.finished(
            job, state=outcome.state, stages=outcome.stages, outputs=outcome.outputs,
            extra=outcome.detail,
        )  # fmt: skip
        await self.group.ack([delivery])
        bound.info("job finished", state=outcome.state, seconds=round(outcome.stages["total"], 3))

    async def _dead(self, delivery: Delivery, job: Job, reason: str, error: str) -> None:
        await self.group.dead_letter(delivery, reason=reason, error=error)
        self.metrics.dead_letters.labels(service="worker", reason=reason).inc()
        self.metrics.jobs.labels(
            pool=self.settings.pool, job_code=job_code_of(job), outcome="dead"
        ).inc()
        await self.states.finished(job, state="dead", error=error)

    async def _failed(self, delivery: Delivery, job: Job, error: str) -> None:
        if delivery.attempt >= self.settings.max_attempts:
            await self._dead(
                delivery, job, "max_attempts",
                f"gave up after {delivery.attempt} attempts; last error: {error}",
            )  # fmt: skip
            return
        backoff = min(
            self.settings.retry_backoff_seconds * 2 ** (delivery.attempt - 1),
            self.settings.retry_backoff_max_seconds,
        )
        await self.group.retry_later(delivery, error, backoff)
        self.metrics.retries.labels(pool=self.settings.pool, job_code=job_code_of(job)).inc()
        self.metrics.jobs.labels(
            pool=self.settings.pool, job_code=job_code_of(job), outcome="failed"
        ).inc()
        await self.states.finished(job, state="failed", error=error)

    async def _keep_lease(
        self, delivery: Delivery, bound: structlog.typing.FilteringBoundLogger
    ) -> None:
        interval = max(0.05, self.settings.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                renewed = await self.group.renew([delivery.entry_id])
            except TRANSIENT_ERRORS as error:
                bound.warning("lease renewal failed; retrying", error=str(error))
                continue
            if not renewed:
                bound.warning("lease lost: another worker took this job over")
                return

    # -- the loop -------------------------------------------------------------------------

    async def consume(self) -> None:
        backoff = 0.1
        while not self.stopping.is_set():
            free = self.settings.concurrency - len(self.running)
            if free <= 0:
                stop_waiter = asyncio.create_task(self.stopping.wait())
                await asyncio.wait(
                    [*self.running.values(), stop_waiter], return_when=asyncio.FIRST_COMPLETED
                )
                stop_waiter.cancel()
                continue
            try:
                deliveries = await self.group.read(free, self.settings.block_ms)
                backoff = 0.1
            except TRANSIENT_ERRORS as error:
                log.warning("queue unavailable; retrying", error=str(error), retry_in=backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for delivery in deliveries:
                task = asyncio.create_task(self._process_safely(delivery))
                self.running[delivery.entry_id] = task
                task.add_done_callback(self._forget(delivery.entry_id))

    def _forget(self, entry_id: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(_task: asyncio.Task[None]) -> None:
            self.running.pop(entry_id, None)

        return forget

    async def _process_safely(self, delivery: Delivery) -> None:
        backoff = 0.5
        while True:
            try:
                await self.process(delivery)
                return
            except TRANSIENT_ERRORS as error:
                # The queue went away while recording the outcome: the entry stays pending, so
                # retrying here (or a reclaim elsewhere) finishes it; the job itself is idempotent.
                if self.stopping.is_set():
                    return
                log.warning("queue unavailable while finishing a job", error=str(error))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def drain(self) -> None:
        if not self.running:
            return
        log.info("draining", running=len(self.running), within=self.settings.drain_seconds)
        _done, unfinished = await asyncio.wait(
            list(self.running.values()), timeout=self.settings.drain_seconds
        )
        if unfinished:
            leftovers = [key for key, task in self.running.items() if task in unfinished]
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
            try:
                await self.group.hand_back(leftovers)
                log.warning("handed back unfinished jobs", entries=leftovers)
            except TRANSIENT_ERRORS:
                log.warning("could not hand back; they will be reclaimed after the lease")

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
        log.info(
            "worker started", consumer=self.consumer, pool=self.settings.pool,
            concurrency=self.settings.concurrency,
        )  # fmt: skip
        try:
            await self.consume()
            await self.drain()
        finally:
            if runner is not None:
                await runner.cleanup()
            log.info("worker stopped", consumer=self.consumer)


def _describe(error: BaseException) -> str:
    text = str(error) or repr(error)
    return text if isinstance(error, ConveyorError) else f"{type(error).__name__}: {text}"

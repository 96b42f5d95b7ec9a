"""The worker: claim jobs from a pool stream, run them, acknowledge; survive anything.

Each running job holds a lease on its entry (`shared.leases.Lease`), renewed in the background,
so a long job is never taken over while its worker lives; a job whose worker died is reclaimed
once its lease lapses. The job is stopped here, before anyone else can take it, when:

- its lease cannot be kept (renewals failed through an outage until shortly before it would
  lapse, or another worker holds the entry now): nothing is recorded, the new holder runs it;
- it runs past its timeout (`CONVEYOR_JOB_TIMEOUT_SECONDS`, per job code
  `CONVEYOR_JOB_TIMEOUTS`): the attempt fails with reason `timeout` and is retried;
- the worker drains on SIGTERM and the job is still running after `drain_seconds`: it is
  handed back, which does not use up an attempt.

Stopping waits until the computation has really stopped (compute threads and Dask futures),
so two executions of one job never overlap. Every execution logs `job execution started` and
`job execution ended` with its owner. The outcome and the acknowledgement are one step that
first checks this worker still holds the entry; a late result is dropped and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import redis.asyncio as aioredis
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.worker.settings import WorkerSettings
from shared.errors import ConveyorError, InvalidRequest, NoData, Permanent
from shared.jobs import Job, decode_job
from shared.jobstate import (
    FINAL_STATES,
    JobRef,
    JobStates,
    job_ref,
    outcome_fields,
    outcome_result,
)
from shared.keys import WORKER_GROUP, Keys
from shared.metrics import dead_letter_counter, stage_histogram
from shared.outages import QUEUE_ERRORS, is_outage
from shared.service import Backoff, Stoppable, consumer_name, metrics_served, pause_for_outage
from shared.streams import ConsumerGroup, Delivery, Settlement

log = structlog.get_logger(__name__)
T = TypeVar("T")


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


class JobStopped(Exception):
    """The job was stopped here before it finished; `reason` is lapsed, taken_over or timeout."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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
        self.renewal_failures = Counter(
            "conveyor_lease_renewal_failures",
            "Lease renewals that failed (the queue unavailable) and were retried",
            ["pool"],
            registry=registry,
        )
        self.stopped = Counter(
            "conveyor_jobs_stopped",
            "Jobs stopped here before they finished (lease lapsed or taken over, timeout)",
            ["pool", "reason"],
            registry=registry,
        )


def job_code_of(job: Job) -> str:
    return job.job_code if job.kind == "product" else "ard"  # type: ignore[union-attr]


def job_of_fields(fields: Mapping[str, str]) -> JobRef | None:
    """The job an entry carries, if it can be read."""
    try:
        return job_ref(decode_job(dict(fields)))
    except Exception:
        return None


@dataclass
class Held:
    """A delivery this worker is working on, and the task doing it."""

    delivery: Delivery
    task: asyncio.Task[None]
    job: JobRef | None = None


class Worker(Stoppable):
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: WorkerSettings,
        runners: Mapping[str, JobRunner],
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__()
        self.redis = redis
        self.settings = settings
        self.runners = runners
        self.keys = Keys(settings.namespace)
        self.consumer = consumer_name(settings.consumer_name)
        self.metrics = WorkerMetrics(registry or CollectorRegistry())
        self.group = ConsumerGroup(
            redis,
            stream=self.keys.jobs(settings.pool),
            group=WORKER_GROUP,
            consumer=self.consumer,
            keys=self.keys,
            settings=settings,
            service="worker",
            job_of=job_of_fields,
            on_dead_letter=self._count_dead_letter,
            on_renewal_failure=lambda _error: self.metrics.renewal_failures.labels(
                pool=settings.pool
            ).inc(),
        )
        self.states = JobStates(
            redis,
            self.keys,
            retention_seconds=settings.record_retention_seconds,
            results_maxlen=settings.results_maxlen,
        )
        self.running: dict[str, Held] = {}

    def _count_dead_letter(self, reason: str, delivery: Delivery | None) -> None:
        self.metrics.dead_letters.labels(service="worker", reason=reason).inc()
        code = "unknown"
        if delivery is not None:
            with contextlib.suppress(Exception):
                code = job_code_of(decode_job(delivery.fields))
        self.metrics.jobs.labels(pool=self.settings.pool, job_code=code, outcome="dead").inc()

    # -- one job --------------------------------------------------------------------------

    async def process(self, delivery: Delivery) -> None:
        bound = log.bind(entry_id=delivery.entry_id, attempt=delivery.attempt)
        try:
            job = decode_job(delivery.fields)
        except Exception as error:
            reason = f"not a job this worker understands: {error}"
            await self._recorded(
                lambda: self.group.dead_letter(delivery, reason="invalid_job", error=reason),
                bound,
            )
            self.metrics.dead_letters.labels(service="worker", reason="invalid_job").inc()
            return
        code = job_code_of(job)
        ref = job_ref(job)
        bound = bound.bind(job_id=job.job_id, request_id=job.request_id, job_code=code)
        held = self.running.get(delivery.entry_id)
        if held is not None:
            held.job = ref
        runner = self.runners.get(job.kind)
        if runner is None:
            await self._dead(delivery, job, "invalid_job", f"no runner for {job.kind} jobs here")
            return
        previous = await self._started(delivery, job, bound)
        if previous is None or previous == "lost":
            bound.warning("entry no longer held by this worker; left to its holder")
            return
        if previous in FINAL_STATES:
            # Delivered again after it finished (a lost ack, a replayed dead letter): its outcome
            # stands and was counted; acknowledge without running it again.
            await self._recorded(lambda: self.group.settle(delivery), bound)
            bound.info("job already finished; acknowledged without running it again",
                       state=previous)  # fmt: skip
            return
        self.metrics.in_flight.labels(pool=self.settings.pool).inc()
        started = time.monotonic()
        try:
            outcome = await self._run_within_lease(runner, job, delivery, bound)
        except NoData as error:
            outcome = JobOutcome(state="nodata", detail={"reason": str(error)})
        except (InvalidRequest, Permanent) as error:
            bound.warning("job cannot succeed", error=str(error))
            await self._dead(delivery, job, error.reason, str(error))
            return
        except JobStopped as stopped:
            self.metrics.stopped.labels(pool=self.settings.pool, reason=stopped.reason).inc()
            if stopped.reason == "timeout":
                bound.warning("job timed out", error=str(stopped))
                await self._failed(delivery, job, f"timeout: {stopped}", reason="timeout")
            elif stopped.reason == "deleted":
                bound.warning("job stopped: its entry was deleted from the stream")
                await self._recorded(
                    lambda: self.group.dead_letter_deleted(delivery.entry_id), bound
                )
            else:
                bound.warning("job stopped: its lease is not this worker's any more",
                              reason=stopped.reason)  # fmt: skip
            return
        except Exception as error:  # anything else may pass: retry with backoff
            message = _describe(error)
            bound.warning(
                "job failed", error=message, exc_info=not isinstance(error, ConveyorError)
            )
            await self._failed(delivery, job, message)
            return
        finally:
            self.metrics.in_flight.labels(pool=self.settings.pool).dec()
        outcome.stages.setdefault("total", time.monotonic() - started)
        for stage, seconds in outcome.stages.items():
            if stage != "total":
                self.metrics.stages.labels(job_code=code, stage=stage).observe(seconds)
        self.metrics.bytes_written.labels(destination=outcome.destination).inc(
            outcome.bytes_written
        )
        fields = outcome_fields(
            stages=outcome.stages, outputs=outcome.outputs, extra=outcome.detail
        )
        result = outcome_result(ref, outputs=outcome.outputs)
        settled = await self._recorded(
            lambda: self.group.settle(
                delivery, job=ref, state=outcome.state, fields=fields, result=result
            ),
            bound,
        )
        if settled is None or settled[0] is Settlement.LOST:
            bound.warning(
                "late result dropped: the lease lapsed and another worker holds the job now",
                state=outcome.state,
            )
            return
        self.metrics.jobs.labels(
            pool=self.settings.pool, job_code=code, outcome=outcome.state
        ).inc()
        bound.info("job finished", state=outcome.state, seconds=round(outcome.stages["total"], 3))

    async def _started(
        self, delivery: Delivery, job: Job, bound: structlog.typing.FilteringBoundLogger
    ) -> str | None:
        """Record the start (if this worker still holds the entry), retrying through outages
        until the lease would lapse; None when it could not be recorded in time."""
        backoff = Backoff(0.05, 1.0)
        deadline = (
            delivery.claimed_at + self.settings.lease_seconds - self.settings.local_deadline_margin
        )
        while True:
            try:
                return await self.states.started(
                    job, stream=self.group.stream, group=self.group.group,
                    consumer=self.consumer, entry_id=delivery.entry_id, attempt=delivery.attempt,
                )  # fmt: skip
            except QUEUE_ERRORS as error:
                if not is_outage(error) or time.monotonic() >= deadline:
                    if is_outage(error):
                        return None
                    raise
                bound.warning("queue unavailable while starting a job", error=str(error))
                await asyncio.sleep(backoff.next())

    async def _run_within_lease(
        self,
        runner: JobRunner,
        job: Job,
        delivery: Delivery,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> JobOutcome:
        """The runner's outcome; stopped (and waited for) when the lease or the timeout ends."""
        lease = self.group.hold([delivery.entry_id], delivery.claimed_at)
        keeper = asyncio.create_task(lease.keep())
        execution = asyncio.create_task(self._execute(runner, job, delivery, bound))
        lost = asyncio.create_task(lease.lost.wait())
        timeout = self.settings.timeout_for(job_code_of(job))
        try:
            done, _pending = await asyncio.wait(
                {execution, lost, keeper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if execution in done:
                return execution.result()
            await _stop(execution)
            if keeper in done and not lease.lost.is_set():
                keeper.result()  # renewing failed for a reason that is not an outage: surface it
            if lease.lost.is_set():
                raise JobStopped(lease.reason, f"lease {lease.reason}")
            raise JobStopped(
                "timeout",
                f"the job ran longer than {timeout:g} s (CONVEYOR_JOB_TIMEOUT_SECONDS, or "
                f"CONVEYOR_JOB_TIMEOUTS for {job_code_of(job)!r})",
            )
        except asyncio.CancelledError:
            await _stop(execution)  # draining: the hand-back waits for this
            raise
        finally:
            keeper.cancel()
            lost.cancel()

    async def _execute(
        self,
        runner: JobRunner,
        job: Job,
        delivery: Delivery,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> JobOutcome:
        # Logged where the execution really begins and ends (after its computation stopped),
        # with its owner, so that overlapping executions of one job could be seen in the logs.
        bound.info("job execution started", owner=self.consumer)
        ending = "failed"
        try:
            outcome = await runner.run(job)
            ending = outcome.state
            return outcome
        except asyncio.CancelledError:
            ending = "stopped"
            raise
        finally:
            bound.info("job execution ended", owner=self.consumer, ending=ending)

    async def _dead(self, delivery: Delivery, job: Job, reason: str, error: str) -> None:
        ref = job_ref(job)
        settled = await self._recorded(
            lambda: self.group.dead_letter(delivery, reason=reason, error=error, job=ref),
            log.bind(job_id=job.job_id, entry_id=delivery.entry_id),
        )
        if settled is Settlement.OK:
            self.metrics.dead_letters.labels(service="worker", reason=reason).inc()
            self.metrics.jobs.labels(
                pool=self.settings.pool, job_code=job_code_of(job), outcome="dead"
            ).inc()

    async def _failed(
        self, delivery: Delivery, job: Job, error: str, reason: str = "max_attempts"
    ) -> None:
        """Retry after the backoff, or dead-letter on the last attempt (the group decides)."""
        ref = job_ref(job)
        settled = await self._recorded(
            lambda: self.group.retry_later(
                delivery, error, job=ref, fields=outcome_fields(error=error), reason=reason
            ),
            log.bind(job_id=job.job_id, entry_id=delivery.entry_id),
        )
        if settled is Settlement.OK and delivery.attempt < self.settings.max_attempts:
            self.metrics.retries.labels(pool=self.settings.pool, job_code=job_code_of(job)).inc()
            self.metrics.jobs.labels(
                pool=self.settings.pool, job_code=job_code_of(job), outcome="failed"
            ).inc()

    async def _recorded(
        self, step: Callable[[], Awaitable[T]], bound: structlog.typing.FilteringBoundLogger
    ) -> T | None:
        """Run a recording step, retried through outages; None if the worker stopped first.

        Each step is idempotent (keyed by the entry), so a retry after a lost reply changes
        nothing; if the worker stops first the entry stays pending and is reclaimed, and the job
        finds its product committed.
        """
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                return await step()
            except QUEUE_ERRORS as error:
                if not is_outage(error):
                    raise
                if self.stopping.is_set():
                    bound.warning("queue unavailable while recording; left pending",
                                  error=str(error))  # fmt: skip
                    return None
                await pause_for_outage(self, backoff, error, "recording a job's outcome")

    # -- the loop -------------------------------------------------------------------------

    async def consume(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            free = self.settings.concurrency - len(self.running)
            if free <= 0:
                stop_waiter = asyncio.create_task(self.stopping.wait())
                await asyncio.wait(
                    [*(held.task for held in self.running.values()), stop_waiter],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                stop_waiter.cancel()
                continue
            try:
                deliveries = await self.group.read(free, self.settings.block_ms)
                backoff.reset()
            except QUEUE_ERRORS as error:
                if not is_outage(error):
                    raise
                await pause_for_outage(self, backoff, error, "reading jobs")
                continue
            for delivery in deliveries:
                task = asyncio.create_task(self._process_safely(delivery))
                self.running[delivery.entry_id] = Held(delivery, task)
                task.add_done_callback(self._forget(delivery.entry_id))

    def _forget(self, entry_id: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(_task: asyncio.Task[None]) -> None:
            self.running.pop(entry_id, None)

        return forget

    async def _process_safely(self, delivery: Delivery) -> None:
        try:
            await self.process(delivery)
        except asyncio.CancelledError:
            raise
        except QUEUE_ERRORS as error:
            if not is_outage(error):
                log.exception("job handling failed", entry_id=delivery.entry_id)
            # The entry stays pending: reclaimed after its lease, and the job is idempotent.
            log.warning("queue unavailable while handling a job; it stays pending",
                        entry_id=delivery.entry_id, error=str(error))  # fmt: skip
        except Exception:
            log.exception(
                "job handling failed; the entry stays pending", entry_id=delivery.entry_id
            )

    async def drain(self) -> None:
        if not self.running:
            return
        log.info("draining", running=len(self.running), within=self.settings.drain_seconds)
        held = list(self.running.values())
        _done, unfinished = await asyncio.wait(
            [h.task for h in held], timeout=self.settings.drain_seconds
        )
        if not unfinished:
            return
        leftovers = [h for h in held if h.task in unfinished]
        for h in leftovers:
            h.task.cancel()
        # Each task stops its computation before it ends: nothing is handed back while it runs.
        await asyncio.gather(*unfinished, return_exceptions=True)
        backoff = Backoff(0.1, 1.0)
        deadline = time.monotonic() + self.settings.lease_seconds
        while True:
            try:
                handed = await self.group.hand_back(
                    [h.delivery for h in leftovers], jobs=[h.job for h in leftovers]
                )
                log.warning("handed back unfinished jobs", entries=handed)
                return
            except QUEUE_ERRORS as error:
                if not is_outage(error) or time.monotonic() > deadline:
                    log.warning("could not hand back; they will be reclaimed after the lease",
                                error=str(error))  # fmt: skip
                    return
                await asyncio.sleep(backoff.next())

    async def run(self, *, serve_http: bool = True) -> None:
        if not await self.group.ensure_when_reachable(self.stopping):
            return
        async with metrics_served(
            self.metrics.registry, self.settings.metrics_host, self.settings.metrics_port,
            enabled=serve_http,
        ):  # fmt: skip
            log.info(
                "worker started", consumer=self.consumer, pool=self.settings.pool,
                concurrency=self.settings.concurrency, lease_seconds=self.settings.lease_seconds,
            )  # fmt: skip
            try:
                await self.consume()
                await self.drain()
                await self.group.leave_on_stop()
            finally:
                log.info("worker stopped", consumer=self.consumer)


async def _stop(execution: asyncio.Task[JobOutcome]) -> None:
    """Cancel an execution and wait until it has ended (its computation stopped)."""
    execution.cancel()
    while not execution.done():
        with contextlib.suppress(BaseException):
            await asyncio.shield(execution)


def _describe(error: BaseException) -> str:
    text = str(error) or repr(error)
    return text if isinstance(error, ConveyorError) else f"{type(error).__name__}: {text}"

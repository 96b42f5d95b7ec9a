"""The worker's delivery guarantees on real servers, with runners whose behaviour a test sets.

Each test runs `Worker` objects in this process against a real valkey-server (failovers and
crashes included); the runners stand in for products so that a job can be made to hang, fail
or compute with real Dask threads for as long as a test needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.exceptions import ResponseError

from services.worker.service import JobOutcome, Worker
from services.worker.settings import WorkerSettings
from shared.embedded import EmbeddedValkey
from shared.jobs import Job, ProductJob
from shared.jobstate import JobStates
from shared.keys import WORKER_GROUP, Keys
from shared.redis_connection import connect
from tests.queue_support import (
    Replica,
    dispatch_request,
    eventually,
    fail_over,
    holder,
    wait_replicating,
    worker_group,
)


@dataclass
class Execution:
    job_id: str
    owner: str
    started: float
    ended: float | None = None
    ending: str = ""


@dataclass
class ScriptedRunner:
    """Runs each job by calling `behave(job, execution)`; keeps every execution's span."""

    owner: str
    behave: Callable[[Job, Execution], Awaitable[JobOutcome]]
    executions: list[Execution] = field(default_factory=list)

    async def run(self, job: Job) -> JobOutcome:
        execution = Execution(job.job_id, self.owner, time.time())
        self.executions.append(execution)
        try:
            outcome = await self.behave(job, execution)
            execution.ending = outcome.state
            return outcome
        except asyncio.CancelledError:
            execution.ending = "cancelled"
            raise
        finally:
            execution.ended = time.time()


async def done(_job: Job, _execution: Execution) -> JobOutcome:
    return JobOutcome(state="done", outputs=["file:///x"])


async def hang(_job: Job, _execution: Execution) -> JobOutcome:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def settings(redis_url: str, namespace: str, name: str, **values: Any) -> WorkerSettings:
    base: dict[str, Any] = {
        "redis_url": redis_url, "namespace": namespace, "consumer_name": name, "block_ms": 50,
        "lease_seconds": 3.0, "retry_backoff_seconds": 0.1, "drain_seconds": 0.2,
    }  # fmt: skip
    return WorkerSettings(**(base | values))


@dataclass
class Running:
    worker: Worker
    runner: ScriptedRunner
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running_worker(
    redis: aioredis.Redis, worker_settings: WorkerSettings,
    behave: Callable[[Job, Execution], Awaitable[JobOutcome]],
) -> AsyncIterator[Running]:  # fmt: skip
    runner = ScriptedRunner(worker_settings.consumer_name or "w", behave)
    worker = Worker(redis, worker_settings, {"product": runner}, registry=CollectorRegistry())
    task = asyncio.create_task(worker.run(serve_http=False))
    try:
        yield Running(worker, runner, task)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


def metric(worker: Worker, name: str, **labels: str) -> float:
    return worker.metrics.registry.get_sample_value(name, labels) or 0.0


def overlapping(executions: list[Execution]) -> list[tuple[Execution, Execution]]:
    spans = sorted(executions, key=lambda e: e.started)
    return [
        (a, b)
        for i, a in enumerate(spans)
        for b in spans[i + 1 :]
        if a.job_id == b.job_id and (a.ended is None or b.started < a.ended)
    ]


async def test_an_entry_past_max_attempts_found_while_reclaiming_records_its_outcome(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    """Workers OOM-killed on the same tile each time: the reclaim that gives up records it."""
    keys = Keys(namespace)
    [job] = await dispatch_request(redis_client, redis_url, namespace, jobs=1)
    # Two workers each took it and were killed holding it.
    assert await worker_group(redis_client, namespace, "killed-1", lease_seconds=0.3).read(1, 10)
    await _reclaimed(worker_group(redis_client, namespace, "killed-2", lease_seconds=0.3))
    survivor = settings(redis_url, namespace, "survivor", lease_seconds=0.3, max_attempts=2)
    async with running_worker(redis_client, survivor, done) as running:

        async def dead_lettered() -> bool:
            return await redis_client.xlen(keys.dead) == 1

        await eventually(dead_lettered)
        states = JobStates(redis_client, keys)
        record = await states.get(job.job_id)
        assert record is not None and record["state"] == "dead"
        request = await states.request(job.request_id)
        assert request is not None and request["state"] == "finished"
        assert request["jobs_dead"] == "1"
        events = [fields for _id, fields in await redis_client.xrange(keys.results)]
        assert [(e["type"], e["state"]) for e in events] == [
            ("job", "dead"),
            ("request", "finished"),
        ]
        assert metric(running.worker, "conveyor_dead_letters_total", service="worker",
                      reason="max_attempts") == 1  # fmt: skip
        assert running.runner.executions == [], "given up without running it a third time"
    [(_id, dead)] = await redis_client.xrange(keys.dead)
    assert dead["attempts"] == "2" and dead["error"].startswith("gave up after 2 attempts")


async def _reclaimed(group: Any) -> bool:
    async def got() -> bool:
        return bool(await group.reclaim(1))

    await eventually(got)
    return True


async def test_a_finished_job_delivered_again_is_acknowledged_without_running(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    [job] = await dispatch_request(redis_client, redis_url, namespace, jobs=1)
    [(_id, entry)] = await redis_client.xrange(keys.jobs("product"))
    async with running_worker(redis_client, settings(redis_url, namespace, "w"), done) as running:

        async def finished() -> bool:
            record = await JobStates(redis_client, keys).get(job.job_id)
            return record is not None and record["state"] == "done"

        await eventually(finished)
        await redis_client.xadd(keys.jobs("product"), entry)  # the same job again

        async def nothing_pending() -> bool:
            pending = await redis_client.xpending(keys.jobs("product"), WORKER_GROUP)
            length = await redis_client.xlen(keys.jobs("product"))
            return length == 2 and pending["pending"] == 0 and _read_all(running.worker)

        await eventually(nothing_pending)
        assert len(running.runner.executions) == 1
    request = await JobStates(redis_client, keys).request(job.request_id)
    assert request is not None and (request["jobs_finished"], request["jobs_done"]) == ("1", "1")


def _read_all(worker: Worker) -> bool:
    return not worker.running


async def test_a_hung_job_times_out_is_retried_then_dead_lettered_with_reason_timeout(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    [job] = await dispatch_request(redis_client, redis_url, namespace, jobs=1)
    hung = settings(
        redis_url, namespace, "w", max_attempts=2, job_timeouts={"ndvi": 0.3},
        job_timeout_seconds=600,
    )  # fmt: skip
    async with running_worker(redis_client, hung, hang) as running:

        async def dead_lettered() -> bool:
            return await redis_client.xlen(keys.dead) == 1

        await eventually(dead_lettered)
        executions = running.runner.executions
        assert [e.ending for e in executions] == ["cancelled", "cancelled"]
        assert metric(running.worker, "conveyor_jobs_stopped_total", pool="product",
                      reason="timeout") == 2  # fmt: skip
    [(_id, dead)] = await redis_client.xrange(keys.dead)
    assert dead["reason"] == "timeout" and dead["attempts"] == "2"
    assert "timeout: the job ran longer than 0.3 s" in dead["error"]
    record = await JobStates(redis_client, keys).get(job.job_id)
    assert record is not None and record["state"] == "dead" and record["attempts"] == "2"


async def test_a_drained_job_stops_computing_before_it_is_handed_back_and_is_taken_at_once(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    """The compute threads stop before the hand-back; the next worker takes it without a lease
    lapsing, on the same attempt, and the two executions never overlap."""
    from services.worker.compute import DaskCompute

    keys = Keys(namespace)
    [job] = await dispatch_request(redis_client, redis_url, namespace, jobs=1)
    task_ends: list[float] = []
    compute = DaskCompute(settings(redis_url, namespace, "compute", dask_threads=1))

    async def computes_for_long(_job: Job, _execution: Execution) -> JobOutcome:
        import dask

        def slow_step(number: int) -> int:
            time.sleep(0.2)  # a task the thread cannot be interrupted in
            task_ends.append(time.time())
            return number

        await compute.compute([dask.delayed(slow_step)(n) for n in range(200)])
        return JobOutcome(state="done")

    long_lease = {"lease_seconds": 60.0}
    first = settings(redis_url, namespace, "first", **long_lease)
    async with running_worker(redis_client, first, computes_for_long) as draining:

        async def computing() -> bool:
            return len(task_ends) >= 2

        await eventually(computing)
        draining.worker.stop()
        await asyncio.wait_for(draining.task, 30)
    handed_back_at = float(
        await redis_client.hget(keys.job(job.job_id), "handed_back_at") or 0  # type: ignore[misc]
    )
    assert handed_back_at > 0, "the job was handed back"
    # Whatever the compute thread was still doing has ended once it runs this.
    await asyncio.wrap_future(compute.threads().submit(lambda: None))
    stopped_at = time.time()
    assert task_ends and max(task_ends) <= handed_back_at, "computed after the hand-back"
    [(entry_id, _fields)] = await redis_client.xrange(keys.jobs("product"))
    assert await holder(redis_client, keys.jobs("product"), WORKER_GROUP, entry_id) == "first"

    second = settings(redis_url, namespace, "second", **long_lease)
    async with running_worker(redis_client, second, done) as taking_over:

        async def finished() -> bool:
            record = await JobStates(redis_client, keys).get(job.job_id)
            return record is not None and record["state"] == "done"

        await eventually(finished, timeout=20)  # far inside the 60 s lease: taken at once
        assert time.time() - stopped_at < 60
    record = await JobStates(redis_client, keys).get(job.job_id)
    assert record is not None and record["attempts"] == "1", "a hand-back is not an attempt"
    executions = draining.runner.executions + taking_over.runner.executions
    assert [e.ending for e in executions] == ["cancelled", "done"]
    assert not overlapping(executions)
    await compute.close()


async def test_the_worker_rides_out_a_failover_and_a_busy_server(
    restartable_valkey: EmbeddedValkey, namespace: str, tmp_path: Path
) -> None:
    """READONLY, UNBLOCKED and BUSY are outages: the loop backs off and carries on."""
    keys = Keys(namespace)
    replica = Replica(restartable_valkey.port, tmp_path / "replica")
    redis = connect(restartable_valkey.url)
    admin = aioredis.Redis.from_url(restartable_valkey.url, decode_responses=True)
    try:
        await wait_replicating(replica)
        await dispatch_request(redis, restartable_valkey.url, namespace, 0, jobs=1)
        worker_settings = settings(restartable_valkey.url, namespace, "w", lease_seconds=1.5)
        release = asyncio.Event()

        async def done_or_wait(job: Job, execution: Execution) -> JobOutcome:
            if isinstance(job, ProductJob) and job.prefix == "tests/2":
                await release.wait()
            return await done(job, execution)

        async with running_worker(redis, worker_settings, done_or_wait) as running:

            async def finished(count: int) -> bool:
                return await admin.xlen(keys.results) >= count

            await eventually(lambda: finished(2))
            await fail_over(restartable_valkey.port, replica.port)  # reads now get READONLY
            await asyncio.sleep(1.0)  # the worker keeps trying against a replica for a while
            await fail_over(replica.port, restartable_valkey.port)
            await dispatch_request(admin, restartable_valkey.url, namespace, 1, jobs=1)
            await eventually(lambda: finished(4))

            # A script running long makes the server answer BUSY to everyone else, here to the
            # lease renewals of a job that runs meanwhile.
            await dispatch_request(admin, restartable_valkey.url, namespace, 2, jobs=1)
            await eventually(lambda: _running(running.runner))
            await admin.config_set("busy-reply-threshold", 100)
            busy = asyncio.create_task(admin.eval("while true do end", 0))
            await eventually(lambda: _logged_busy(running.worker))
            killer = aioredis.Redis.from_url(restartable_valkey.url, decode_responses=True)
            await killer.script_kill()
            await killer.aclose()
            with contextlib.suppress(Exception):
                await busy
            release.set()
            await eventually(lambda: finished(6))
            assert [e.ending for e in running.runner.executions] == ["done"] * 3
            assert not running.task.done(), "the worker is still serving"
    finally:
        await redis.aclose()
        await admin.aclose()
        replica.stop()


async def _running(runner: ScriptedRunner) -> bool:
    return any(e.ended is None for e in runner.executions)


async def _logged_busy(worker: Worker) -> bool:
    return metric(worker, "conveyor_lease_renewal_failures_total", pool="product") > 0


async def test_a_job_whose_lease_cannot_be_renewed_is_stopped_before_the_lease_lapses(
    restartable_valkey: EmbeddedValkey, namespace: str
) -> None:
    """The server dies for longer than the lease: the job stops here first, and after the
    restart it runs again, never beside its first execution."""
    keys = Keys(namespace)
    redis = connect(restartable_valkey.url)
    try:
        [job] = await dispatch_request(redis, restartable_valkey.url, namespace, jobs=1)
        calls = 0

        async def hang_then_succeed(job: Job, execution: Execution) -> JobOutcome:
            nonlocal calls
            calls += 1
            if calls == 1:
                return await hang(job, execution)
            return JobOutcome(state="done")

        lease = 3.0
        worker_settings = settings(restartable_valkey.url, namespace, "w", lease_seconds=lease)
        async with running_worker(redis, worker_settings, hang_then_succeed) as running:

            async def executing() -> bool:
                return len(running.runner.executions) == 1

            await eventually(executing)
            restartable_valkey.kill()
            killed_at = time.time()

            async def stopped() -> bool:
                return running.runner.executions[0].ended is not None

            await eventually(stopped, timeout=lease * 2)
            first = running.runner.executions[0]
            assert first.ending == "cancelled"
            # It stopped before the server could have let anyone else take it over.
            assert first.ended is not None and first.ended < first.started + lease
            assert metric(running.worker, "conveyor_jobs_stopped_total", pool="product",
                          reason="lapsed") == 1  # fmt: skip
            restartable_valkey.start()

            async def finished() -> bool:
                record = await JobStates(redis, keys).get(job.job_id)
                return record is not None and record["state"] == "done"

            await eventually(finished, timeout=lease * 6)
            assert not overlapping(running.runner.executions)
            assert killed_at < running.runner.executions[1].started
    finally:
        await redis.aclose()


@pytest.mark.parametrize("starts", [25])
async def test_workers_that_stop_cleanly_leave_their_group(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, starts: int
) -> None:
    keys = Keys(namespace)
    await dispatch_request(redis_client, redis_url, namespace, jobs=1)
    for number in range(starts):
        async with running_worker(
            redis_client, settings(redis_url, namespace, f"pod-{number}"), done
        ):

            async def joined(name: str = f"pod-{number}") -> bool:
                try:
                    consumers = await redis_client.xinfo_consumers(
                        keys.jobs("product"), WORKER_GROUP
                    )
                except ResponseError:  # the worker has not created the group yet
                    return False
                return any(consumer["name"] == name for consumer in consumers)

            await eventually(joined)
    consumers = await redis_client.xinfo_consumers(keys.jobs("product"), WORKER_GROUP)
    assert consumers == [], [c["name"] for c in consumers]


async def test_an_entry_deleted_while_its_job_runs_is_stopped_and_dead_lettered(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    """Renewing a deleted entry would drop it from the pending list without a trace."""
    keys = Keys(namespace)
    [job] = await dispatch_request(redis_client, redis_url, namespace, jobs=1)
    [(entry_id, _fields)] = await redis_client.xrange(keys.jobs("product"))
    worker_settings = settings(redis_url, namespace, "w", lease_seconds=1.5)
    async with running_worker(redis_client, worker_settings, hang) as running:

        async def executing() -> bool:
            return len(running.runner.executions) == 1

        await eventually(executing)
        await redis_client.xdel(keys.jobs("product"), entry_id)  # an operator's XDEL

        async def dead_lettered() -> bool:
            return await redis_client.xlen(keys.dead) == 1

        await eventually(dead_lettered)
        assert running.runner.executions[0].ending == "cancelled"
    [(_id, dead)] = await redis_client.xrange(keys.dead)
    assert (dead["reason"], dead["entry_id"], dead["job_id"]) == (
        "entry_deleted",
        entry_id,
        job.job_id,
    )
    record = await JobStates(redis_client, keys).get(job.job_id)
    assert record is not None and record["state"] == "dead"
    pending = await redis_client.xpending(keys.jobs("product"), WORKER_GROUP)
    assert pending["pending"] == 0


async def test_a_failed_entry_deleted_before_its_retry_is_dead_lettered_not_dropped(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    [job] = await dispatch_request(redis_client, redis_url, namespace, jobs=1)
    group = worker_group(redis_client, namespace, "w", lease_seconds=5)
    [delivery] = await group.read(1, 10)
    await redis_client.xdel(group.stream, delivery.entry_id)
    from shared.jobstate import job_ref

    await group.retry_later(delivery, "disk full", job=job_ref(job))
    [(_id, dead)] = await redis_client.xrange(keys.dead)
    assert dead["reason"] == "entry_deleted" and dead["job_id"] == job.job_id
    record = await JobStates(redis_client, keys).get(job.job_id)
    assert record is not None and record["state"] == "dead"

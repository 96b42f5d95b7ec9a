"""Job and request records on a real server: states only move forward, each job counts once."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.jobstate import FINAL_STATES, JobStates, job_ref
from shared.keys import Keys
from shared.streams import Settlement
from tests.queue_support import dispatch_request, worker_group


async def test_a_finished_job_delivered_again_is_not_set_back_to_running_nor_counted_twice(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    first_job, second_job = await dispatch_request(redis_client, redis_url, namespace, jobs=2)
    worker = worker_group(redis_client, namespace, "w", lease_seconds=5)
    states = JobStates(redis_client, keys)
    deliveries = {worker.job_of(d.fields).job_id: d for d in await worker.read(2, 10)}  # type: ignore[union-attr]
    delivery = deliveries[first_job.job_id]
    assert await states.started(
        first_job, stream=worker.stream, group=worker.group, consumer="w",
        entry_id=delivery.entry_id, attempt=1,
    ) == "queued"  # fmt: skip
    assert (await worker.settle(delivery, job=job_ref(first_job), state="done"))[0] is Settlement.OK

    # The same job arrives again (its ack was lost, its dead letter replayed, ...).
    await redis_client.xadd(worker.stream, delivery.fields)
    [again] = await worker.read(1, 10)
    previous = await states.started(
        first_job, stream=worker.stream, group=worker.group, consumer="w",
        entry_id=again.entry_id, attempt=1,
    )  # fmt: skip
    assert previous == "done", "the worker is told the job finished before"
    record = await states.get(first_job.job_id)
    assert record is not None and record["state"] == "done", "never set back to running"
    # Had it run again and found its product committed, its outcome would change nothing.
    await worker.settle(again, job=job_ref(first_job), state="skipped")
    request = await states.request(first_job.request_id)
    assert request is not None
    assert (request["jobs_finished"], request["jobs_done"], request.get("jobs_skipped")) == (
        "1", "1", None,
    )  # fmt: skip
    assert request["state"] != "finished", "its other job is still queued"

    second = deliveries[second_job.job_id]
    await worker.settle(second, job=job_ref(second_job), state="done")
    request = await states.request(first_job.request_id)
    assert request is not None
    assert (request["state"], request["jobs_finished"], request["jobs_done"]) == (
        "finished",
        "2",
        "2",
    )
    finished_events = [
        fields for _id, fields in await redis_client.xrange(keys.results)
        if fields["type"] == "request"
    ]  # fmt: skip
    assert len(finished_events) == 1


async def test_finished_records_expire_after_the_retention(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    [job] = await dispatch_request(redis_client, redis_url, namespace, jobs=1)
    retention = 7 * 24 * 3600
    states = JobStates(redis_client, keys, retention_seconds=retention)
    assert await redis_client.ttl(keys.job(job.job_id)) == -1, "running records do not expire"
    await states.finished(job, state="done")
    for key in (
        keys.job(job.job_id),
        keys.request(job.request_id),
        keys.request_jobs(job.request_id),
    ):
        assert 0 < await redis_client.ttl(key) <= retention, key
    # The index forgets records past the retention.
    await redis_client.zadd(keys.job_index, {"old-job": 1.0})
    assert await states.forget_expired() == 1
    assert await redis_client.zscore(keys.job_index, job.job_id) is not None


OUTCOMES = st.sampled_from(["running", "failed", "done", "nodata", "skipped", "dead"])


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    events=st.lists(st.tuples(st.integers(0, 3), OUTCOMES), min_size=1, max_size=25),
)
def test_whatever_the_order_of_outcomes_a_request_counts_each_job_once(
    redis_url: str, events: list[tuple[int, str]]
) -> None:
    """Outcomes recorded in any order, repeated, late: counters always match the job states."""

    async def scenario() -> None:
        redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        namespace = f"p{uuid.uuid4().hex[:8]}"
        keys = Keys(namespace)
        try:
            jobs = await dispatch_request(redis, redis_url, namespace, jobs=4)
            states = JobStates(redis, keys)
            first_final: dict[str, str] = {}
            for index, state in events:
                job = jobs[index]
                await states.finished(job, state=state)
                if state in FINAL_STATES:
                    first_final.setdefault(job.job_id, state)
                request = await states.request(job.request_id)
                assert request is not None
                counts = {s: int(request.get(f"jobs_{s}", 0)) for s in FINAL_STATES}
                assert int(request["jobs_finished"]) == sum(counts.values()) == len(first_final)
                expected = {s: list(first_final.values()).count(s) for s in FINAL_STATES}
                assert counts == expected
                assert (request["state"] == "finished") == (len(first_final) == len(jobs))
            for job in jobs:
                record = await states.get(job.job_id)
                assert record is not None
                if job.job_id in first_final:
                    assert record["state"] == first_final[job.job_id], "a final state changed"
        finally:
            await redis.aclose()

    asyncio.run(scenario())

"""A job added straight to a jobs stream (skipping the dispatcher) meets the same checks in the
worker: dead-lettered on its first attempt with the reason, never retried."""

from __future__ import annotations

import json
from pathlib import Path

import redis.asyncio as aioredis

from services.dispatcher.planning import plan_jobs
from shared.jobs import encode_job
from shared.keys import Keys
from shared.messages import parse_request
from tests.processes import running_service, service_env, wait_ready, wait_until
from tests.test_dispatcher import small_item


async def test_a_job_naming_a_bucket_or_path_the_dispatcher_would_refuse_is_dead_lettered_at_once(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    keys = Keys(namespace)
    request, _ignored = parse_request(json.loads(small_item(1)))
    [job] = plan_jobs(request, tile_size=None, tile_size_pixels=3200)
    elsewhere = job.model_copy(update={"bucket": "someone-elses-bucket"})
    traversal = json.loads(job.model_dump_json()) | {"prefix": "fiji/../../etc"}
    env = service_env(
        redis_url, namespace, CONVEYOR_BLOCK_MS="50", CONVEYOR_OUTPUT_URL=str(tmp_path / "out"),
        CONVEYOR_RETRY_BACKOFF_SECONDS="0.1",
    )  # fmt: skip
    with running_service("services.worker", env, tmp_path / "worker.log") as worker:
        await wait_ready(worker)
        not_allowed_id = await redis_client.xadd(keys.jobs("product"), encode_job(elsewhere))
        traversal_id = await redis_client.xadd(keys.jobs("product"), {"job": json.dumps(traversal)})

        async def both_dead() -> bool:
            return await redis_client.xlen(keys.dead) == 2

        await wait_until(both_dead, timeout=90)
        assert worker.terminate() == 0
    letters = {fields["entry_id"]: fields for _id, fields in await redis_client.xrange(keys.dead)}
    refused = letters[not_allowed_id]
    assert refused["reason"] == "not_allowed" and refused["attempts"] == "1"
    assert refused["error"].startswith(
        "bucket 'someone-elses-bucket' is not an allowed output bucket"
    )
    malformed = letters[traversal_id]
    assert malformed["reason"] == "invalid_job" and malformed["attempts"] == "1"
    assert "is not a relative path: it has a '..' part" in malformed["error"]
    assert not list((tmp_path / "out").rglob("*.tif")), "nothing was written"

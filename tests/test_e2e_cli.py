"""The `conveyor` command end to end, run as a user runs it (its own process) against running
services: `submit`, then `status`, `job` and `dead list` show what the README says they show,
and `dead replay ID` puts a worker's dead letter back once its cause is fixed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from shared.keys import DISPATCHER_GROUP, WORKER_GROUP, Keys
from tests.archive_support import ArchiveFixture
from tests.e2e_support import (
    S3_KEYS,
    Running,
    bucket_keys,
    conveyor,
    job_records,
    product_item,
    s3_client,
    wait_for_requests,
    worker_env,
)
from tests.processes import service_env, wait_until


def invalid_flat_fields() -> dict[str, str]:
    """A request added as flat fields (`XADD conveyor:events * job_code ndvi …`), bad date."""
    return {name: str(value) for name, value in product_item("ndvi", prefix="flat").items()} | {
        "time_from": "2019-13-01"
    }


def all_local_files(urls: list[str]) -> bool:
    return all(Path(url.removeprefix("file://")).is_file() for url in urls)


async def test_status_job_and_dead_list_show_what_happened_to_submitted_work(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, e2e_archive: ArchiveFixture,
    tmp_path: Path, running: Running,
) -> None:  # fmt: skip
    keys = Keys(namespace)
    output = tmp_path / "out"
    env = worker_env(redis_url, namespace, e2e_archive, str(output))
    running.dispatcher(env)
    running.worker(env)
    cli = service_env(redis_url, namespace)
    assert "submitted 1 item" in conveyor(cli, "submit", json.dumps(product_item("ndvi")))
    await redis_client.xadd(keys.events, invalid_flat_fields())  # type: ignore[arg-type]
    await wait_for_requests(redis_client, keys, 1, running)

    async def dead_lettered() -> bool:
        return bool(await redis_client.xlen(keys.dead) == 1)

    await wait_until(dead_lettered)
    [job] = await job_records(redis_client, keys)

    report = json.loads(conveyor(cli, "status", "--json"))
    streams = {(row["stream"], row["group"]): row for row in report["streams"]}
    events = streams[(keys.events, DISPATCHER_GROUP)]
    jobs = streams[(keys.jobs("product"), WORKER_GROUP)]
    for row in (events, jobs):  # all read, acknowledged (and maybe trimmed) by one consumer
        assert (row["lag"], row["pending"], row["consumers"]) == (0, 0, 1), row
        assert row["length"] == await redis_client.xlen(row["stream"])
    assert report["dead_letters"] == 1
    assert report["jobs_by_state"] == {"done": 1}
    assert [recent["job_id"] for recent in report["recent_jobs"]] == [job["job_id"]]

    table = conveyor(cli, "status")
    assert f"{keys.jobs('product')} │ {WORKER_GROUP}" in table
    assert "dead letters: 1" in table and "jobs: done 1" in table
    [row] = [line for line in table.splitlines() if job["job_id"][:12] in line]
    assert all(cell in row for cell in ("ndvi", job["tile"], job["period"], "done")), row

    shown = json.loads(conveyor(cli, "job", job["job_id"]))
    assert (shown["state"], shown["attempts"], shown["error"]) == ("done", "1", "")
    assert {"load", "compute", "write", "total"} <= set(shown["stages"])
    assert all(isinstance(seconds, float) for seconds in shown["stages"].values())
    assert len(shown["outputs"]) == 7  # five bands, the STAC item and the eo3 document last
    assert shown["outputs"][-1].endswith("_final.odc-metadata.yaml")
    assert all_local_files(shown["outputs"])

    request = json.loads(conveyor(cli, "job", job["request_id"]))
    assert request["state"] == "finished" and request["jobs"] == [job["job_id"]]
    assert (request["jobs_total"], request["jobs_done"]) == ("1", "1")

    [dead] = json.loads(conveyor(cli, "dead", "list", "--json"))
    assert dead["reason"] == "invalid_request"
    assert "time_from" in dead["error"] and "2019-13-01" in dead["error"]
    assert json.loads(dead["payload"]) == invalid_flat_fields()
    listed = conveyor(cli, "dead", "list")
    assert dead["id"] in listed and "invalid_request" in listed
    assert dead["error"] in listed, "the reason in full"
    assert dead["payload"] in listed, "the original payload"


def later_bucket(namespace: str) -> str:
    """A bucket created only once the job writing to it has been dead-lettered."""
    return f"eo-created-later-{namespace.lower()}"


async def replay_a_worker_s_dead_letter_after_fixing_its_cause(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    running: Running, s3_endpoint: str,
) -> tuple[dict[str, str], dict[str, Any]]:  # fmt: skip
    """A job dead-lettered because its output was unwritable (its request's bucket did not
    exist), the bucket then created and the dead letter replayed by id, beside an invalid
    request's dead letter that stays; the job's record and its request's, once it is done."""
    keys = Keys(namespace)
    s3 = s3_client(s3_endpoint)
    # One bucket per call: the S3 server outlives a test, and the bucket must not exist yet.
    bucket = later_bucket(namespace)
    env = worker_env(
        redis_url, namespace, archive, "s3://", AWS_S3_ENDPOINT_URL=s3_endpoint, **S3_KEYS,
        CONVEYOR_ALLOWED_OUTPUT_BUCKETS=bucket,
    )  # fmt: skip
    running.dispatcher(env)
    running.worker(env)
    cli = service_env(redis_url, namespace)
    conveyor(cli, "submit", json.dumps(product_item("water", bucket=bucket)))
    await redis_client.xadd(keys.events, invalid_flat_fields())  # type: ignore[arg-type]
    await wait_for_requests(redis_client, keys, 1, running)

    dead_letters = json.loads(conveyor(cli, "dead", "list", "--json"))
    [worker_dead] = [dead for dead in dead_letters if dead["stream"] == keys.jobs("product")]
    assert worker_dead["reason"] == "permanent"
    assert bucket in worker_dead["error"] and "does not exist" in worker_dead["error"]
    [job] = await job_records(redis_client, keys)
    assert job["state"] == "dead"

    s3.create_bucket(Bucket=bucket)  # the cause, fixed
    assert "replayed 1" in conveyor(cli, "dead", "replay", worker_dead["id"])

    async def done() -> bool:
        running.check_alive()
        [record] = await job_records(redis_client, keys)
        request_state = await redis_client.hget(keys.request(job["request_id"]), "state")  # type: ignore[misc]
        return record["state"] == "done" and request_state == "finished"

    await wait_until(done, timeout=240)
    written = bucket_keys(s3, bucket)
    assert any(key.endswith("_final.odc-metadata.yaml") for key in written), written
    [still_dead] = json.loads(conveyor(cli, "dead", "list", "--json"))
    assert still_dead["reason"] == "invalid_request", "only the replayed one left the list"
    shown = json.loads(conveyor(cli, "job", job["job_id"]))
    request = json.loads(conveyor(cli, "job", job["request_id"]))
    return shown, request


async def test_a_worker_s_dead_letter_replayed_by_id_after_its_cause_is_fixed_is_done(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, e2e_archive: ArchiveFixture,
    running: Running, s3_endpoint: str,
) -> None:  # fmt: skip
    shown, _request = await replay_a_worker_s_dead_letter_after_fixing_its_cause(
        redis_client, redis_url, namespace, e2e_archive, running, s3_endpoint
    )
    assert shown["state"] == "done" and shown["error"] == ""
    assert shown["outputs"][-1].startswith(
        f"s3://{later_bucket(namespace)}/commonsensing/fiji/e2e/"
    )


async def test_a_replayed_job_counts_once_in_its_request_as_what_it_ended_as(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, e2e_archive: ArchiveFixture,
    running: Running, s3_endpoint: str,
) -> None:  # fmt: skip
    _shown, request = await replay_a_worker_s_dead_letter_after_fixing_its_cause(
        redis_client, redis_url, namespace, e2e_archive, running, s3_endpoint
    )
    counts = (request["jobs_total"], request["jobs_finished"], request["jobs_done"])
    assert counts == ("1", "1", "1")
    assert request.get("jobs_dead", "0") == "0"

"""The commands a user runs after `make demo` see the demo's queue: one state directory.

The demo runs its queue in ACL mode under the state directory (a user per role, passwords in
`secrets/`), runs the services under their users, and stops the server at the end; `conveyor
status`, `job` and `dead list` afterwards start the same server from its AOF, as the operator.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.cli.app import demo_state_dir
from shared.acl import ROLES, username, write_password_files
from shared.embedded import SECRETS_FOLDER, embedded_queue, free_port
from shared.keys import Keys
from tests.e2e_support import conveyor
from tests.processes import ServiceProcess, wait_until

ITEM = {
    "job_code": "ndvi", "product": "ls8_usgs_sr_scene",
    "query_x_from": "2130000.0", "query_y_from": "3499700.0",
    "query_x_to": "2136000.0", "query_y_to": "3504200.0", "query_crs": "EPSG:3460",
    "time_from": "2019-01-01", "time_to": "2019-01-31", "output_crs": "EPSG:3460",
    "prefix": "after-demo",
}  # fmt: skip


def test_the_demo_uses_the_state_directory_every_command_uses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CONVEYOR_STATE_DIR", raising=False)
    assert demo_state_dir(None) == Path(".conveyor")
    monkeypatch.setenv("CONVEYOR_STATE_DIR", str(tmp_path / "mine"))
    assert demo_state_dir(None) == tmp_path / "mine"
    assert demo_state_dir(tmp_path / "given") == tmp_path / "given"


async def test_status_job_and_dead_list_after_the_demo_show_the_demo_s_jobs(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    keys = Keys("conveyor")
    # What `conveyor demo` sets up: role passwords, the queue in ACL mode, services as users.
    passwords = write_password_files(state / SECRETS_FOLDER, ROLES)
    queue = embedded_queue(state)
    queue.start()
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    dispatcher = ServiceProcess(
        "services.dispatcher",
        base
        | {
            "CONVEYOR_REDIS_URL": queue.url,
            "CONVEYOR_REDIS_USERNAME": username("dispatcher"),
            "CONVEYOR_REDIS_PASSWORD_FILE": str(passwords["dispatcher"]),
            "CONVEYOR_METRICS_PORT": str(free_port()),
            "CONVEYOR_BLOCK_MS": "100",
        },
        [],
        tmp_path / "dispatcher.log",
    )
    producer = aioredis.Redis.from_url(queue.url_as("producer"), decode_responses=True)
    operator = aioredis.Redis.from_url(queue.url_as("operator"), decode_responses=True)
    try:
        await producer.rpush("jobProduct", json.dumps(ITEM), "{not json")  # type: ignore[misc]

        async def dispatched() -> bool:
            return bool(await operator.zcard(keys.job_index)) and bool(
                await operator.xlen(keys.dead)
            )

        await wait_until(dispatched, timeout=120)
        job_ids = await operator.zrange(keys.job_index, 0, -1)
    finally:
        await producer.aclose()
        await operator.aclose()
        dispatcher.terminate()
        dispatcher.close()
        queue.stop()  # as the demo does at its end
    assert queue.running_instance() is None

    # A user's commands afterwards: nothing configured but the state directory.
    env = base | {"CONVEYOR_STATE_DIR": str(state)}
    report = json.loads(conveyor(env, "status", "--json"))

    assert report["jobs_by_state"] == {"queued": len(job_ids)}
    assert report["dead_letters"] == 1
    assert {job["job_id"] for job in report["recent_jobs"]} <= set(job_ids)
    shown = conveyor(env, "job", job_ids[0])
    assert job_ids[0] in shown and "queued" in shown
    dead = json.loads(conveyor(env, "dead", "list", "--json"))
    assert len(dead) == 1 and "not valid JSON" in dead[0]["error"]
    # The commands stopped the server they started; the next one starts it again.
    assert embedded_queue(state).running_instance() is None

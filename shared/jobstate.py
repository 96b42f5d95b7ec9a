"""Each job's and request's state, in Redis hashes that `conveyor status` and `job` show.

States: queued -> running -> done | nodata | skipped (already committed) | failed (will retry)
-> dead (gave up). A request is finished when all of its jobs are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from shared.jobs import Job, ProductJob
from shared.keys import Keys
from shared.messages import Request

FINAL_STATES = frozenset({"done", "nodata", "skipped", "dead"})
Command = Sequence[str | int | float]

_FINISH_JOB = """
-- KEYS[1] job hash, KEYS[2] request hash, KEYS[3] job index, KEYS[4] results stream
-- ARGV[1] state, ARGV[2] now, ARGV[3] job id, ARGV[4] result json, then field/value pairs
local previous = redis.call('HGET', KEYS[1], 'state')
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated_at', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'type', 'job', 'job_id', ARGV[3],
           'state', ARGV[1], 'result', ARGV[4])
local final = {done=true, nodata=true, skipped=true, dead=true}
if final[ARGV[1]] and not final[previous or ''] and redis.call('EXISTS', KEYS[2]) == 1 then
  local finished = redis.call('HINCRBY', KEYS[2], 'jobs_finished', 1)
  redis.call('HINCRBY', KEYS[2], 'jobs_' .. ARGV[1], 1)
  local total = tonumber(redis.call('HGET', KEYS[2], 'jobs_total') or '0')
  if finished >= total then
    redis.call('HSET', KEYS[2], 'state', 'finished', 'finished_at', ARGV[2])
    local request_id = redis.call('HGET', KEYS[2], 'request_id')
    local summary = cjson.encode(redis.call('HGETALL', KEYS[2]))
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'type', 'request',
               'request_id', request_id, 'state', 'finished', 'result', summary)
  end
end
return previous
"""


def queued_commands(keys: Keys, request: Request, jobs: Sequence[Job], now: float) -> list[Command]:
    """What dispatching a small request writes, in the same atomic step as adding its jobs."""
    commands: list[Command] = [
        (
            "HSET",
            keys.request(request.request_id),
            *_flatten(request_record(request, len(jobs), now)),
        )
    ]
    for job in jobs:
        commands.extend(job_commands(keys, job, now))
    return commands


def request_record(request: Request, jobs_total: int, now: float) -> dict[str, str]:
    """A request's record as a run of it starts: every counter at zero."""
    return {
        "request_id": request.request_id,
        "kind": request.kind,
        "pool": request.pool,
        "jobs_total": str(jobs_total),
        "jobs_finished": "0",
        "state": "dispatched",
        "created_at": f"{now:.3f}",
        "request": request.canonical_json(),
    }


def job_commands(keys: Keys, job: Job, now: float) -> list[Command]:
    """A job's fresh record (nothing left from an earlier run of its request) and its listings."""
    return [
        ("DEL", keys.job(job.job_id)),
        ("HSET", keys.job(job.job_id), *_flatten(job_summary(job, now))),
        ("ZADD", keys.job_index, f"{now:.3f}", job.job_id),
        ("RPUSH", keys.request_jobs(job.request_id), job.job_id),
    ]


def run_reset_keys(keys: Keys, request_id: str) -> list[str]:
    """What a new run of a finished request clears first, so that it starts clean."""
    return [keys.request(request_id), keys.request_jobs(request_id)]


def job_summary(job: Job, now: float) -> dict[str, str]:
    summary = {
        "job_id": job.job_id,
        "request_id": job.request_id,
        "kind": job.kind,
        "pool": job.pool,
        "state": "queued",
        "attempts": "0",
        "queued_at": f"{now:.3f}",
        "updated_at": f"{now:.3f}",
    }
    if isinstance(job, ProductJob):
        summary.update(
            job_code=job.job_code,
            product=job.product,
            tile=job.area.tile,
            period=job.period.label,
        )
    else:
        summary.update(job_code="ard", scene=job.scene.in_scene)
    return summary


def _flatten(mapping: Mapping[str, str]) -> list[str]:
    flat: list[str] = []
    for name, value in mapping.items():
        flat.extend((name, value))
    return flat


class JobStates:
    """Reads and updates job states for the worker and the CLI."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._finish = redis.register_script(_FINISH_JOB)

    async def started(self, job: Job, *, attempt: int, worker: str) -> None:
        now = time.time()
        await self.redis.hset(  # type: ignore[misc]
            self.keys.job(job.job_id),
            mapping={
                **{k: v for k, v in job_summary(job, now).items() if k not in ("queued_at",)},
                "state": "running",
                "attempts": str(attempt),
                "started_at": f"{now:.3f}",
                "worker": worker,
                "error": "",
            },
        )
        await self.redis.zadd(self.keys.job_index, {job.job_id: now})

    async def finished(
        self,
        job: Job,
        *,
        state: str,
        stages: Mapping[str, float] | None = None,
        outputs: Sequence[str] = (),
        error: str = "",
        extra: Mapping[str, str] | None = None,
    ) -> None:
        now = time.time()
        fields: dict[str, str] = {
            "finished_at": f"{now:.3f}",
            "stages": json.dumps({k: round(v, 3) for k, v in (stages or {}).items()}),
            "outputs": json.dumps(list(outputs)),
            "error": error,
            **(extra or {}),
        }
        result = json.dumps(
            {"request_id": job.request_id, "outputs": list(outputs), "error": error}
        )
        await self._finish(
            keys=[
                self.keys.job(job.job_id),
                self.keys.request(job.request_id),
                self.keys.job_index,
                self.keys.results,
            ],
            args=[state, f"{now:.3f}", job.job_id, result, *_flatten(fields)],
        )

    async def get(self, job_id: str) -> dict[str, Any] | None:
        record = await self.redis.hgetall(self.keys.job(job_id))  # type: ignore[misc]
        if not record:
            return None
        decoded: dict[str, Any] = dict(record)
        for name in ("stages", "outputs"):
            if decoded.get(name):
                decoded[name] = json.loads(decoded[name])
        return decoded

    async def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        job_ids = await self.redis.zrevrange(self.keys.job_index, 0, limit - 1)
        records = []
        for job_id in job_ids:
            record = await self.get(job_id)
            if record is not None:
                records.append(record)
        return records

    async def counts_by_state(self, scan_limit: int = 100_000) -> dict[str, int]:
        job_ids = await self.redis.zrevrange(self.keys.job_index, 0, scan_limit - 1)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self.keys.job(job_id), "state")
        counts: dict[str, int] = {}
        for state in await pipe.execute():
            if state:
                counts[state] = counts.get(state, 0) + 1
        return counts

    async def request(self, request_id: str) -> dict[str, Any] | None:
        record = await self.redis.hgetall(self.keys.request(request_id))  # type: ignore[misc]
        if not record:
            return None
        decoded: dict[str, Any] = dict(record)
        decoded["jobs"] = await self.redis.lrange(self.keys.request_jobs(request_id), 0, -1)  # type: ignore[misc]
        return decoded

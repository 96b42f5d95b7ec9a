"""Each job's and request's state, in Redis hashes that `conveyor status` and `job` show.

States: queued -> running -> done | nodata | skipped (already committed) | failed (will retry)
-> dead (gave up). A request is finished when all of its jobs are.

Two rules hold whoever records an outcome, because they are kept inside the one Lua step that
records it (`RECORD_OUTCOME_LUA`, shared by every script that settles an entry):

- a final state (done, nodata, skipped, dead) never changes: a job delivered again after it
  finished is acknowledged without being counted again;
- a request counts each of its jobs once, so `jobs_finished = jobs_done + jobs_nodata +
  jobs_skipped + jobs_dead` and it is finished exactly when that reaches `jobs_total`.

Finished job and request records expire after the retention (`record_retention_seconds`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from shared.jobs import Job, ProductJob
from shared.keys import Keys
from shared.messages import Request

FINAL_STATES = frozenset({"done", "nodata", "skipped", "dead"})
Command = Sequence[str | int | float]

#: Lua: `record_outcome(...)`, for scripts that settle an entry and record its job's outcome.
RECORD_OUTCOME_LUA = """
local final_states = {done=true, nodata=true, skipped=true, dead=true}

-- keys: job, request, job index, results, request's job list. `settled_by` names the delivery
-- that records a final state ("<entry id> <consumer>"), so that a retry of the same step can
-- be told from another consumer's late result.
-- Returns the job's state before this call ('' if none); a final state is never changed.
local function record_outcome(keys, job_id, state, now, result, retention, results_maxlen,
                              settled_by, fields)
  local previous = redis.call('HGET', keys[1], 'state') or ''
  if final_states[previous] then
    return previous
  end
  for i = 1, #fields, 2 do
    redis.call('HSET', keys[1], fields[i], fields[i + 1])
  end
  redis.call('HSET', keys[1], 'job_id', job_id, 'state', state, 'updated_at', now)
  redis.call('ZADD', keys[3], now, job_id)
  if state ~= 'queued' then
    redis.call('XADD', keys[4], 'MAXLEN', '~', results_maxlen, '*', 'type', 'job',
               'job_id', job_id, 'state', state, 'result', result)
  end
  if not final_states[state] then
    return previous
  end
  redis.call('HSET', keys[1], 'settled_by', settled_by)
  redis.call('EXPIRE', keys[1], retention)
  if redis.call('EXISTS', keys[2]) == 1 then
    local finished = redis.call('HINCRBY', keys[2], 'jobs_finished', 1)
    redis.call('HINCRBY', keys[2], 'jobs_' .. state, 1)
    local total = tonumber(redis.call('HGET', keys[2], 'jobs_total') or '0')
    if finished >= total and redis.call('HGET', keys[2], 'state') ~= 'finished' then
      redis.call('HSET', keys[2], 'state', 'finished', 'finished_at', now)
      local request_id = redis.call('HGET', keys[2], 'request_id')
      local summary = cjson.encode(redis.call('HGETALL', keys[2]))
      redis.call('XADD', keys[4], 'MAXLEN', '~', results_maxlen, '*', 'type', 'request',
                 'request_id', request_id, 'state', 'finished', 'result', summary)
      redis.call('EXPIRE', keys[2], retention)
      redis.call('EXPIRE', keys[5], retention)
    end
  end
  return previous
end
"""

#: Lua: `owner_of(stream, group, entry_id)` -> consumer holding the entry (or false), deliveries.
OWNER_LUA = """
local function owner_of(stream, group, entry_id)
  local pending = redis.call('XPENDING', stream, group, entry_id, entry_id, 1)
  if pending[1] then
    return pending[1][2], tonumber(pending[1][4])
  end
  return false, 0
end
"""

_STARTED = (
    OWNER_LUA
    + """
-- KEYS: 1 stream, 2 job, 3 job index, 4 entry -> job index
-- ARGV: 1 group, 2 consumer, 3 entry id, 4 job id, 5 now, 6 attempt, then field/value pairs
local owner = owner_of(KEYS[1], ARGV[1], ARGV[3])
if owner ~= ARGV[2] then
  return 'lost'
end
local previous = redis.call('HGET', KEYS[2], 'state') or ''
local final_states = {done=true, nodata=true, skipped=true, dead=true}
if final_states[previous] then
  return previous
end
for i = 7, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[2], 'state', 'running', 'attempts', ARGV[6], 'started_at', ARGV[5],
           'updated_at', ARGV[5], 'worker', ARGV[2], 'entry_id', ARGV[3], 'error', '')
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
return previous
"""
)

_RECORD = (
    RECORD_OUTCOME_LUA
    + """
-- KEYS: job, request, job index, results, request's job list
-- ARGV: 1 job id, 2 state, 3 now, 4 result, 5 retention, 6 results maxlen, then field pairs
local fields = {}
for i = 7, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
return record_outcome(KEYS, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], '', fields)
"""
)


@dataclass(frozen=True, slots=True)
class JobRef:
    """Which job (and request) an entry carries."""

    job_id: str
    request_id: str


def outcome_keys(keys: Keys, job: JobRef | None) -> list[str]:
    """The keys `record_outcome` touches, in its order (placeholders when there is no job)."""
    if job is None:
        return [keys.results] * 5
    return [
        keys.job(job.job_id),
        keys.request(job.request_id),
        keys.job_index,
        keys.results,
        keys.request_jobs(job.request_id),
    ]


def outcome_fields(
    *,
    stages: Mapping[str, float] | None = None,
    outputs: Sequence[str] = (),
    error: str = "",
    extra: Mapping[str, str] | None = None,
    now: float | None = None,
) -> dict[str, str]:
    """What a job's record keeps of one outcome."""
    return {
        "finished_at": f"{time.time() if now is None else now:.3f}",
        "stages": json.dumps({k: round(v, 3) for k, v in (stages or {}).items()}),
        "outputs": json.dumps(list(outputs)),
        "error": error,
        **(extra or {}),
    }


def outcome_result(job: JobRef, *, outputs: Sequence[str] = (), error: str = "") -> str:
    """The `result` field of a job's event on the results stream."""
    return json.dumps({"request_id": job.request_id, "outputs": list(outputs), "error": error})


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


def job_ref(job: Job) -> JobRef:
    return JobRef(job.job_id, job.request_id)


class JobStates:
    """Reads and updates job states for the worker and the CLI."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        retention_seconds: float = 30 * 24 * 3600.0,
        results_maxlen: int = 100_000,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.retention_seconds = retention_seconds
        self.results_maxlen = results_maxlen
        self._started = redis.register_script(_STARTED)
        self._record = redis.register_script(_RECORD)

    async def started(
        self, job: Job, *, stream: str, group: str, consumer: str, entry_id: str, attempt: int
    ) -> str:
        """Record that `consumer` runs `job` now, if it still holds the entry.

        Returns the job's state before: '' or a non-final state (go ahead), a final state (the
        job finished before: acknowledge without running it again), or 'lost' (the entry is no
        longer this consumer's: leave it).
        """
        now = f"{time.time():.3f}"
        summary = {k: v for k, v in job_summary(job, 0.0).items() if k not in _KEPT_FROM_QUEUING}
        previous = await self._started(
            keys=[stream, self.keys.job(job.job_id), self.keys.job_index,
                  self.keys.entry_jobs(stream)],
            args=[group, consumer, entry_id, job.job_id, now, attempt, *_flatten(summary)],
        )  # fmt: skip
        return str(previous)

    async def finished(
        self,
        job: Job,
        *,
        state: str,
        stages: Mapping[str, float] | None = None,
        outputs: Sequence[str] = (),
        error: str = "",
        extra: Mapping[str, str] | None = None,
    ) -> str:
        """Record an outcome not tied to holding an entry (a final state never changes).

        Workers record outcomes with `ConsumerGroup.settle`, in the same step as the
        acknowledgement; this is for tools. Returns the state before.
        """
        ref = job_ref(job)
        fields = outcome_fields(stages=stages, outputs=outputs, error=error, extra=extra)
        previous = await self._record(
            keys=outcome_keys(self.keys, ref),
            args=[
                job.job_id, state, f"{time.time():.3f}",
                outcome_result(ref, outputs=outputs, error=error),
                int(self.retention_seconds), self.results_maxlen, *_flatten(fields),
            ],
        )  # fmt: skip
        return str(previous)

    async def job_for_entry(self, stream: str, entry_id: str) -> JobRef | None:
        """The job an entry of `stream` carried, while some worker recorded working on it."""
        job_id = await self.redis.hget(self.keys.entry_jobs(stream), entry_id)  # type: ignore[misc]
        if not job_id:
            return None
        request_id = await self.redis.hget(self.keys.job(job_id), "request_id")  # type: ignore[misc]
        return JobRef(str(job_id), str(request_id or ""))

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

    async def forget_expired(self, now: float | None = None) -> int:
        """Drop index entries of records older than the retention (their hashes expired)."""
        horizon = (time.time() if now is None else now) - self.retention_seconds
        return int(await self.redis.zremrangebyscore(self.keys.job_index, "-inf", horizon))


# `started` keeps these from when the job was queued.
_KEPT_FROM_QUEUING = ("queued_at", "updated_at", "state", "attempts")

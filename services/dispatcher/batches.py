"""Adding a request's jobs exactly once, in bounded batches, keyed by the event's entry id.

Each batch is one Lua script call of at most `dispatch_batch_bytes` (512 KiB by default), so no
request, however large, makes one huge call that blocks the server or the dispatcher's memory.
The script keeps the request's progress in `{ns}:dispatched:<request id>:progress` (the entry
dispatching it and the index of its next job), and:

- applies a batch only if it starts at the recorded next index, then moves the index on; a
  batch sent again (redis-py resends a script after a lost reply) or sent by a dispatcher that
  took the event over is not applied twice: the caller is told where to carry on;
- acts only for the consumer that owns the entry (its lease is renewed with each batch);
- with the last batch, sets the dedupe key `{ns}:dispatched:<request id>` to the entry id for
  `CONVEYOR_DEDUPE_TTL_SECONDS`, drops the progress and acknowledges the event, all at once.
  A retried last call finds the dedupe key holding its own entry id and reports the same
  outcome, `dispatched`, not a duplicate.

A dispatcher killed between batches leaves the event pending; whoever reclaims it re-plans the
request (planning is deterministic) and carries on from the recorded index.

The same request again: within the TTL, or while another event of it is being dispatched, a
`duplicate` (acknowledged, no jobs). After the TTL, a new run if the previous one finished: its
record and job list are cleared and every job's record starts again at `queued`. While the
previous run still has jobs to finish, `in_flight`: the caller refuses it with a reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis
import structlog

from services.dispatcher.planning import JobPlan
from shared.jobs import encode_job
from shared.jobstate import Command, job_commands, request_record, run_reset_keys
from shared.keys import Keys
from shared.streams import Delivery, flatten_commands

log = structlog.get_logger(__name__)

#: Bytes counted per argument besides its text (RESP framing: `$<length>\r\n...\r\n`, at most
#: 14 bytes for an argument under 1 GB), when sizing a batch.
ARGUMENT_OVERHEAD = 16

_DISPATCH_BATCH = """
-- KEYS[1] events stream, KEYS[2] dedupe key, KEYS[3] progress, KEYS[4] request record,
-- KEYS[5] the stream's last-errors hash, KEYS[6..] cleared before a new run of the request.
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entry id, ARGV[4] ttl seconds, ARGV[5] first job
-- index of this batch, ARGV[6] jobs in it, ARGV[7] jobs in the request, ARGV[8] n, then n
-- request record fields and values, then commands as <count> <command> <arguments...>.
local group, consumer, entry = ARGV[1], ARGV[2], ARGV[3]
local ttl, start = tonumber(ARGV[4]), tonumber(ARGV[5])
local batch, total = tonumber(ARGV[6]), tonumber(ARGV[7])
local header_length = tonumber(ARGV[8])

local done_by = redis.call('GET', KEYS[2])
if done_by == entry then
  return {'dispatched', total}
end
local pending = redis.call('XPENDING', KEYS[1], group, entry, entry, 1)
if not pending[1] then
  return {'not_pending', 0}
end
if pending[1][2] ~= consumer then
  return {'not_owner', 0}
end
local function acknowledge()
  redis.call('XACK', KEYS[1], group, entry)
  redis.call('HDEL', KEYS[5], entry)
end
if done_by then
  acknowledge()
  return {'duplicate', 0}
end
local owner = redis.call('HGET', KEYS[3], 'entry')
if owner and owner ~= entry then
  acknowledge()
  return {'duplicate', 0}
end
if not owner then
  if start ~= 0 then
    return {'lost', 0}
  end
  local state = redis.call('HGET', KEYS[4], 'state')
  if state and state ~= 'finished' then
    local finished = redis.call('HGET', KEYS[4], 'jobs_finished') or '0'
    local jobs_total = redis.call('HGET', KEYS[4], 'jobs_total') or '0'
    return {'in_flight', tonumber(finished), tonumber(jobs_total)}
  end
  local run = 1
  if state then
    run = tonumber(redis.call('HGET', KEYS[4], 'run') or '1') + 1
    for i = 6, #KEYS do
      redis.call('DEL', KEYS[i])
    end
  end
  redis.call('HSET', KEYS[3], 'entry', entry, 'next', 0, 'total', total)
  redis.call('EXPIRE', KEYS[3], ttl)
  local record = {}
  for i = 9, 8 + header_length do
    record[#record + 1] = ARGV[i]
  end
  redis.call('HSET', KEYS[4], 'run', run, unpack(record))
end
local next_index = tonumber(redis.call('HGET', KEYS[3], 'next'))
if next_index ~= start then
  return {'moved', next_index}
end
local position = 9 + header_length
while position <= #ARGV do
  local count = tonumber(ARGV[position])
  local command = {}
  for offset = 1, count do
    command[offset] = ARGV[position + offset]
  end
  redis.call(unpack(command))
  position = position + count + 1
end
next_index = start + batch
-- Each batch renews the lease, so a large request is never taken over while it goes out.
redis.call('XCLAIM', KEYS[1], group, consumer, 0, entry, 'JUSTID')
if next_index >= total then
  redis.call('SET', KEYS[2], entry, 'EX', ttl)
  redis.call('DEL', KEYS[3])
  acknowledge()
  return {'dispatched', total}
end
redis.call('HSET', KEYS[3], 'next', next_index)
redis.call('EXPIRE', KEYS[3], ttl)
return {'progress', next_index}
"""

Status = Literal["dispatched", "duplicate", "in_flight", "not_owner", "not_pending"]


@dataclass(frozen=True)
class DispatchOutcome:
    """What became of one event's request.

    `jobs_total` is the request's job count for `dispatched` (the same however often the call
    was retried); `jobs_added` counts the jobs this call added; for `in_flight`, the previous
    run's `jobs_finished` of `jobs_total`.
    """

    status: Status
    jobs_total: int = 0
    jobs_added: int = 0
    jobs_finished: int = 0
    batches: int = 0


@dataclass(frozen=True)
class Batch:
    start: int
    jobs: int
    commands: list[Command]


def progress_key(keys: Keys, request_id: str) -> str:
    return f"{keys.dispatched(request_id)}:progress"


def batches(
    plan: JobPlan, keys: Keys, start: int, budget_bytes: int, now: float
) -> Iterator[Batch]:
    """The plan's jobs from `start` on, as batches of at most about `budget_bytes` of commands.

    A single job larger than the budget still goes, alone.
    """
    commands: list[Command] = []
    size = 0
    first = start
    count = 0
    for job in plan.jobs(start):
        job_part: list[Command] = [
            ("XADD", keys.jobs(job.pool), "*", *encode_job(job).popitem()),
            *job_commands(keys, job, now),
        ]
        job_size = sum(_command_size(command) for command in job_part)
        if commands and size + job_size > budget_bytes:
            yield Batch(first, count, commands)
            commands, size, first, count = [], 0, first + count, 0
        commands.extend(job_part)
        size += job_size
        count += 1
    if commands:
        yield Batch(first, count, commands)


def _command_size(command: Sequence[str | int | float]) -> int:
    """Bytes the command adds to a script call: its arguments and its argument count."""
    return sum(
        len(argument.encode()) + ARGUMENT_OVERHEAD for argument in flatten_commands([command])
    )


class BatchedDispatch:
    """The dispatch step of one consumer: a request's jobs, once, in bounded script calls."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        stream: str,
        group: str,
        consumer: str,
        errors_key: str,
        ttl_seconds: int,
        batch_bytes: int,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.errors_key = errors_key
        self.ttl_seconds = ttl_seconds
        self.batch_bytes = batch_bytes
        self._script = redis.register_script(_DISPATCH_BATCH)

    async def dispatch(self, delivery: Delivery, plan: JobPlan, now: float) -> DispatchOutcome:
        request = plan.request
        total = plan.count
        header = [
            part
            for name, value in request_record(request, total, now).items()
            for part in (name, value)
        ]
        start = await self._resume_point(delivery, request.request_id)
        added = calls = 0
        while True:
            moved_to: int | None = None
            for batch in batches(plan, self.keys, start, self.batch_bytes, now):
                calls += 1
                status, value, extra = await self._call(
                    delivery, request.request_id, total, header, batch
                )
                if status == "progress":
                    added += batch.jobs
                    continue
                if status == "dispatched":
                    return DispatchOutcome(
                        "dispatched", jobs_total=total, jobs_added=added + batch.jobs, batches=calls
                    )
                if status == "moved":
                    moved_to = value
                    break
                if status == "in_flight":
                    return DispatchOutcome("in_flight", jobs_total=extra, jobs_finished=value)
                if status == "lost":
                    # The progress expired under us: start the request again from the beginning.
                    moved_to = 0
                    break
                return DispatchOutcome(status, batches=calls)  # type: ignore[arg-type]
            else:
                raise RuntimeError(
                    f"the plan of request {request.request_id} ran out at job {start} of {total}"
                )
            log.info(
                "dispatch carries on where the request's progress says",
                entry_id=delivery.entry_id, request_id=request.request_id, at=moved_to,
            )  # fmt: skip
            start = moved_to

    async def _resume_point(self, delivery: Delivery, request_id: str) -> int:
        """Where a redelivered event's request stands (0 for a first delivery)."""
        if delivery.attempt <= 1:
            return 0
        entry, next_index = await self.redis.hmget(  # type: ignore[misc]
            progress_key(self.keys, request_id), ["entry", "next"]
        )
        if entry == delivery.entry_id and next_index is not None:
            log.info(
                "resuming a request a dispatcher left half-dispatched",
                entry_id=delivery.entry_id, request_id=request_id, at=int(next_index),
            )  # fmt: skip
            return int(next_index)
        return 0

    async def _call(
        self, delivery: Delivery, request_id: str, total: int, header: list[str], batch: Batch
    ) -> tuple[str, int, int]:
        keys = [
            self.stream,
            self.keys.dispatched(request_id),
            progress_key(self.keys, request_id),
            self.keys.request(request_id),
            self.errors_key,
            *run_reset_keys(self.keys, request_id),
        ]
        args: list[str | int] = [
            self.group,
            self.consumer,
            delivery.entry_id,
            self.ttl_seconds,
            batch.start,
            batch.jobs,
            total,
            len(header),
            *header,
            *flatten_commands(batch.commands),
        ]
        reply = await self._script(keys=keys, args=args)
        status = str(reply[0])
        value = int(reply[1]) if len(reply) > 1 else 0
        extra = int(reply[2]) if len(reply) > 2 else 0
        return status, value, extra

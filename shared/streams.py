"""Redis Streams consumer groups: the one place that knows about them.

A `ConsumerGroup` gives at-least-once delivery with leases, and owns every rule about them:

- `read` reclaims entries idle past the lease first (on a timer well inside the lease), then
  reads new ones (`XREADGROUP ... BLOCK ... COUNT`). Reclaiming walks the whole pending list
  with `XAUTOCLAIM`'s cursor (the server looks at only COUNT x 10 entries a call), so an orphan
  behind any number of live entries is found within a lease plus a reclaim interval.
- a holder keeps its entries with a `Lease`, renewed by `XCLAIM ... JUSTID`; a renewal that
  fails is retried at once, and a holder that cannot renew stops shortly before its lease would
  lapse on the server, so it never races the consumer that reclaims the entry.
- only the owner changes an entry: renew, ack, retry, hand back, dead-letter and the job
  outcome recorded with them are each one Lua step that first checks, with `XPENDING stream
  group id id 1`, that the caller still holds the entry. A lapsed owner's late result is
  dropped, and the caller told so.
- a failed entry is retried after a backoff by setting its idle time (`XCLAIM ... IDLE`), so no
  second structure is needed for delayed retries; a hand-back (a draining worker's leftovers)
  makes the entry reclaimable at once and does not count as a delivery.
- an entry delivered more than `max_attempts` times, or deleted from the stream while pending
  (`XDEL`/`XTRIM` by an operator), goes to the dead-letter stream with why, and its job's state,
  request, the results stream and the metrics follow, in the same step. A dead letter is keyed
  by its entry, so a step retried after a lost reply writes it once.
- streams are trimmed only below what every group has read and acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from shared.config import ConsumerSettings, consumer_setting_problems
from shared.jobstate import (
    OWNER_LUA,
    RECORD_OUTCOME_LUA,
    JobRef,
    outcome_keys,
    outcome_result,
)
from shared.keys import Keys
from shared.outages import QUEUE_ERRORS, is_outage

log = structlog.get_logger(__name__)

_RENEW_IF_OWNED = """
-- KEYS[1] stream; ARGV: group, consumer, entry ids. Returns {renewed ids, deleted ids}.
-- An entry deleted from the stream while pending is not claimed (XCLAIM would silently drop it
-- from the pending list): it is reported, so that its holder records it.
local renewed, deleted = {}, {}
for i, entry_id in ipairs(ARGV) do
  if i > 2 then
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry_id, entry_id, 1)
    if pending[1] and pending[1][2] == ARGV[2] then
      if #redis.call('XRANGE', KEYS[1], entry_id, entry_id) == 0 then
        table.insert(deleted, entry_id)
      else
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, entry_id, 'JUSTID')
        table.insert(renewed, entry_id)
      end
    end
  end
end
return {renewed, deleted}
"""

_APPLY_ONCE_THEN_ACK = """
-- KEYS[1] source stream, KEYS[2] idempotency key.
-- ARGV: group, entry id, ttl seconds, idempotency value, then commands as
-- <argument count> <command> <arguments...> repeated.
local applied = 0
if redis.call('SET', KEYS[2], ARGV[4], 'NX', 'EX', tonumber(ARGV[3])) then
  local position = 5
  while position <= #ARGV do
    local count = tonumber(ARGV[position])
    local command = {}
    for offset = 1, count do
      command[offset] = ARGV[position + offset]
    end
    redis.call(unpack(command))
    position = position + count + 1
    applied = applied + 1
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return applied
"""


_ACK_IF_OWNED = """
-- KEYS[1] stream, KEYS[2] errors hash; ARGV: group, consumer, entry ids in ascending order.
-- One XPENDING of this consumer's entries over the ids' range finds those it holds; only when
-- that reply was cut short are the ids it did not reach looked up one by one.
local wanted = #ARGV - 2
local limit = wanted * 2
local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[#ARGV], limit, ARGV[2])
local owned = {}
for _, entry in ipairs(held) do
  owned[entry[1]] = true
end
local acked = {}
for i = 3, #ARGV do
  local entry_id = ARGV[i]
  if not owned[entry_id] and #held >= limit then
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry_id, entry_id, 1)
    owned[entry_id] = pending[1] ~= nil and pending[1][2] == ARGV[2]
  end
  if owned[entry_id] then
    acked[#acked + 1] = entry_id
  end
end
if #acked > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(acked))
  redis.call('HDEL', KEYS[2], unpack(acked))
end
return acked
"""

_SETTLE = (
    OWNER_LUA
    + RECORD_OUTCOME_LUA
    + """
-- One change of one entry by its owner, with its job's outcome when there is a job.
-- KEYS: 1 stream, 2 errors, 3 dead, 4 dead index, 5 entry -> job index,
--       6 job, 7 request, 8 job index, 9 results, 10 request's job list
-- ARGV: 1 group, 2 consumer, 3 entry id, 4 action, 5 now, 6 job id ('' when none),
--       7 job state, 8 result, 9 retention, 10 results maxlen, 11 dead-letter cap,
--       12 and 13 action arguments, 14 n (number of job field/value items),
--       15..14+n job fields, then the dead letter's field/value items.
-- Actions: ack; retry (12 idle ms, 13 error); handback (12 idle ms, 13 delivery count);
--          dead; dead_deleted (the entry is gone from the stream and its pending list).
-- Returns {status, detail[, dropped dead letter]}: status ok | lost (not this consumer's) |
-- already (done before: a retry of this step after its reply was lost).
local stream, group, consumer, entry_id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local action, job_id, state = ARGV[4], ARGV[6], ARGV[7]
local n = tonumber(ARGV[14])
local fields = {}
for i = 15, 14 + n do
  fields[#fields + 1] = ARGV[i]
end
local dead_fields = {}
for i = 15 + n, #ARGV do
  dead_fields[#dead_fields + 1] = ARGV[i]
end
local job_keys = {KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]}

local function record(outcome)
  if job_id == '' then
    return ''
  end
  return record_outcome(job_keys, job_id, outcome, ARGV[5], ARGV[8], ARGV[9], ARGV[10],
                        entry_id .. ' ' .. consumer, fields)
end

local holder = owner_of(stream, group, entry_id)
if (action == 'retry' or action == 'handback') and holder == consumer
    and #redis.call('XRANGE', stream, entry_id, entry_id) == 0 then
  -- Deleted while pending (XDEL, XTRIM): XCLAIM would drop it from the pending list without a
  -- trace, so it is dead-lettered instead (the dead-letter fields given are for this case).
  action = 'dead_deleted'
  fields = {'error', 'the entry was deleted from the stream while pending',
            'dead_reason', 'entry_deleted'}
end

if action == 'dead' or action == 'dead_deleted' then
  local index_field = stream .. ' ' .. entry_id
  local existing = redis.call('HGET', KEYS[4], index_field)
  if existing then
    return {'already', existing}
  end
  if action == 'dead' and holder ~= consumer then
    return {'lost', ''}
  end
  local dropped = ''
  if redis.call('XLEN', KEYS[3]) >= tonumber(ARGV[11]) then
    local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
    local record_fields = {}
    for i = 1, #oldest[2], 2 do
      record_fields[oldest[2][i]] = oldest[2][i + 1]
    end
    redis.call('HDEL', KEYS[4], (record_fields['stream'] or '') .. ' ' ..
               (record_fields['entry_id'] or ''))
    redis.call('XDEL', KEYS[3], oldest[1])
    dropped = oldest[1]
  end
  local dead_id = redis.call('XADD', KEYS[3], '*', unpack(dead_fields))
  redis.call('HSET', KEYS[4], index_field, dead_id)
  redis.call('XACK', stream, group, entry_id)
  redis.call('HDEL', KEYS[2], entry_id)
  redis.call('HDEL', KEYS[5], entry_id)
  record('dead')
  return {'ok', dead_id, dropped}
end

if holder ~= consumer then
  if job_id ~= '' and redis.call('HGET', KEYS[6], 'settled_by') == entry_id .. ' ' .. consumer then
    return {'already', redis.call('HGET', KEYS[6], 'state') or ''}
  end
  return {'lost', ''}
end

if action == 'ack' then
  redis.call('XACK', stream, group, entry_id)
  redis.call('HDEL', KEYS[2], entry_id)
  redis.call('HDEL', KEYS[5], entry_id)
  return {'ok', record(state)}
elseif action == 'retry' then
  redis.call('HSET', KEYS[2], entry_id, ARGV[13])
  redis.call('XCLAIM', stream, group, consumer, 0, entry_id, 'IDLE', ARGV[12], 'JUSTID')
  return {'ok', record('failed')}
elseif action == 'handback' then
  -- The delivery count is set back to what it was before this delivery: the reclaim that
  -- follows counts it again, so a hand-back does not use up an attempt.
  redis.call('XCLAIM', stream, group, consumer, 0, entry_id, 'IDLE', ARGV[12],
             'RETRYCOUNT', ARGV[13], 'JUSTID')
  return {'ok', record('queued')}
end
return redis.error_reply('unknown action ' .. action)
"""
)

_RECLAIM = """
-- KEYS[1] stream; ARGV: group, consumer, min idle ms, cursor, count, most entries to look at.
-- XAUTOCLAIM from the cursor until `count` are claimed, the pending list has been walked to its
-- end, or enough entries were looked at; then each claimed entry's delivery count.
-- Returns {next cursor, {{id, fields, deliveries}...}, {deleted ids...}}.
local cursor = ARGV[4]
local count = tonumber(ARGV[5])
local budget = tonumber(ARGV[6])
local claimed, deleted = {}, {}
repeat
  local want = count - #claimed
  local reply = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor,
                           'COUNT', want)
  cursor = reply[1]
  for _, entry in ipairs(reply[2]) do
    claimed[#claimed + 1] = entry
  end
  for _, entry_id in ipairs(reply[3] or {}) do
    deleted[#deleted + 1] = entry_id
  end
  budget = budget - want * 10
until #claimed >= count or cursor == '0-0' or budget <= 0
for _, entry in ipairs(claimed) do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
  entry[3] = pending[1] and pending[1][4] or 1
end
return {cursor, claimed, deleted}
"""

_LEAVE_IF_EMPTY = """
-- KEYS[1] stream; ARGV: group, consumer, least idle ms (0: any). Deletes the consumer when it
-- holds no pending entry (and has been idle that long); returns 1 when deleted.
local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #held > 0 then
  return 0
end
if tonumber(ARGV[3]) > 0 then
  local idle = nil
  for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
    local name, consumer_idle = nil, nil
    for i = 1, #info, 2 do
      if info[i] == 'name' then name = info[i + 1] end
      if info[i] == 'idle' then consumer_idle = info[i + 1] end
    end
    if name == ARGV[2] then idle = consumer_idle end
  end
  if idle == nil or idle < tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# How many pending entries one reclaim looks at, at most (a Lua loop of cheap XAUTOCLAIMs).
RECLAIM_SCAN_BUDGET = 20_000


class Settlement(StrEnum):
    """What became of a change to an entry."""

    OK = "ok"  # done now
    LOST = "lost"  # the caller no longer holds the entry: nothing changed
    ALREADY = "already"  # done by an earlier try of the same step (a retry after a lost reply)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One stream entry handed to a consumer; `attempt` counts deliveries, from 1.

    `claimed_at` is this process's monotonic clock just before the read that delivered it was
    sent: the server's lease cannot have started earlier.
    """

    stream: str
    entry_id: str
    fields: dict[str, str]
    attempt: int
    claimed_at: float = 0.0


@dataclass(frozen=True)
class GroupStats:
    """What `XINFO GROUPS` and `XLEN` say of one group; `lag` None: the server can't tell."""

    stream: str
    group: str
    length: int
    lag: int | None
    pending: int
    consumers: int
    last_delivered_id: str
    entries_read: int | None

    @property
    def backlog(self) -> int | None:
        return None if self.lag is None else self.lag + self.pending


@dataclass(frozen=True)
class ConsumerInfo:
    name: str
    pending: int
    idle_seconds: float


def entry_time(entry_id: str) -> float:
    """Seconds since the epoch at which an entry was added, from its id."""
    return int(entry_id.split("-", 1)[0]) / 1000.0


def _next_id(entry_id: str) -> str:
    milliseconds, sequence = entry_id.split("-", 1)
    return f"{milliseconds}-{int(sequence) + 1}"


def _id_key(entry_id: str) -> tuple[int, int]:
    milliseconds, sequence = entry_id.split("-", 1)
    return int(milliseconds), int(sequence)


def flatten_commands(commands: Iterable[Sequence[str | int | float]]) -> list[str]:
    flat: list[str] = []
    for command in commands:
        flat.append(str(len(command)))
        flat.extend(str(argument) for argument in command)
    return flat


def _pairs(mapping: Mapping[str, str]) -> list[str]:
    flat: list[str] = []
    for name, value in mapping.items():
        flat.extend((name, value))
    return flat


JobOf = Callable[[Mapping[str, str]], JobRef | None]
DeadLetterHook = Callable[[str, "Delivery | None"], None]


class ConsumerGroup:
    """A consumer's view of one stream in one group, with leases, retries and dead letters.

    `settings` gives the lease and retry rules (`lease_seconds`/`max_attempts` alone may be given
    instead, e.g. in tests). `job_of` says which job an entry carries, so that dead letters the
    group decides on itself (past `max_attempts`, deleted entries) record the job's outcome;
    `on_dead_letter(reason, delivery)` is told of each such dead letter, and
    `on_renewal_failure(error)` of each lease renewal that failed (for metrics).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        stream: str,
        group: str,
        consumer: str,
        keys: Keys,
        settings: ConsumerSettings | None = None,
        lease_seconds: float | None = None,
        max_attempts: int | None = None,
        service: str = "conveyor",
        job_of: JobOf | None = None,
        on_dead_letter: DeadLetterHook | None = None,
        on_renewal_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        if settings is None:
            given: dict[str, Any] = {"lease_seconds": lease_seconds, "max_attempts": max_attempts}
            settings = ConsumerSettings.model_construct(
                **{name: value for name, value in given.items() if value is not None}
            )
            problems = consumer_setting_problems(settings)
            if problems:
                raise ValueError("; ".join(problems))
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.keys = keys
        self.settings = settings
        self.lease_seconds = settings.lease_seconds
        self.lease_ms = max(1, int(settings.lease_seconds * 1000))
        self.max_attempts = settings.max_attempts
        self.service = service
        self.job_of = job_of
        self.on_dead_letter = on_dead_letter
        self.on_renewal_failure = on_renewal_failure
        self.reclaim_interval = settings.reclaim_interval
        self._next_reclaim_at = 0.0
        self._reclaim_cursor = "0-0"
        self._renew = redis.register_script(_RENEW_IF_OWNED)
        self._ack = redis.register_script(_ACK_IF_OWNED)
        self._settle = redis.register_script(_SETTLE)
        self._reclaim = redis.register_script(_RECLAIM)
        self._leave = redis.register_script(_LEAVE_IF_EMPTY)
        self._apply_once = redis.register_script(_APPLY_ONCE_THEN_ACK)

    @property
    def errors_key(self) -> str:
        return self.keys.last_errors(self.stream)

    async def ensure(self) -> None:
        """Create the group (and stream) if missing; entries added before it are read too."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def ensure_when_reachable(
        self, stopping: asyncio.Event | None = None, max_backoff_seconds: float = 5.0
    ) -> bool:
        """`ensure`, retried with backoff while the queue is unavailable (service start-up).

        Returns False when `stopping` was set before the queue could be reached.
        """
        backoff = 0.1
        while True:
            try:
                await self.ensure()
                return True
            except QUEUE_ERRORS as error:
                if not is_outage(error):
                    raise
                log.warning("queue unavailable at start; retrying", error=str(error))
            if stopping is None:
                await asyncio.sleep(backoff)
            else:
                try:
                    await asyncio.wait_for(stopping.wait(), backoff)
                    return False
                except TimeoutError:
                    pass
            backoff = min(backoff * 2, max_backoff_seconds)

    # -- reading ------------------------------------------------------------------------------

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """Entries to work on: stale ones reclaimed first, then new ones (blocking if none).

        Entries past `max_attempts` and entries deleted while pending are dead-lettered here and
        not returned. A read never blocks past the next reclaim.
        """
        now = time.monotonic()
        if now >= self._next_reclaim_at:
            reclaimed = await self.reclaim(count)
            if reclaimed:
                return reclaimed
            self._next_reclaim_at = now + self.reclaim_interval
        until_reclaim_ms = int((self._next_reclaim_at - time.monotonic()) * 1000)
        return await self.read_new(count, max(1, min(block_ms, until_reclaim_ms)))

    async def read_new(self, count: int, block_ms: int | None) -> list[Delivery]:
        sent = time.monotonic()
        try:
            response = await self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            await self.ensure()
            return []
        deliveries: list[Delivery] = []
        for _stream, entries in response or []:
            for entry_id, fields in entries:
                deliveries.append(Delivery(self.stream, entry_id, dict(fields or {}), 1, sent))
        return deliveries

    async def reclaim(self, count: int) -> list[Delivery]:
        """Claim up to `count` entries idle past the lease, from any consumer (dead ones too).

        Continues from where the last call stopped in the pending list, so every entry is looked
        at in turn however long the list is.
        """
        sent = time.monotonic()
        try:
            cursor, claimed, deleted = await self._reclaim(
                keys=[self.stream],
                args=[
                    self.group, self.consumer, self.lease_ms, self._reclaim_cursor, max(1, count),
                    RECLAIM_SCAN_BUDGET,
                ],
            )  # fmt: skip
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            await self.ensure()
            return []
        self._reclaim_cursor = str(cursor)
        for entry_id in deleted:
            await self.dead_letter_deleted(str(entry_id))
        deliveries: list[Delivery] = []
        for entry_id, flat_fields, deliveries_count in claimed:
            fields = dict(zip(flat_fields[::2], flat_fields[1::2], strict=True))
            attempts = int(deliveries_count)
            delivery = Delivery(self.stream, str(entry_id), fields, attempts, sent)
            if attempts > self.max_attempts:
                last_error = await self.redis.hget(self.errors_key, delivery.entry_id)  # type: ignore[misc]
                # This delivery was never worked on: the attempts made are one fewer.
                made = attempts - 1
                await self._dead_letter_decided(
                    delivery,
                    reason="max_attempts",
                    error=(
                        f"gave up after {made} attempts; last error: "
                        f"{last_error or 'none recorded (the consumer stopped or was killed)'}"
                    ),
                    attempts=made,
                )
                continue
            deliveries.append(delivery)
        if deliveries:
            log.info(
                "reclaimed stale entries",
                stream=self.stream,
                entries=[d.entry_id for d in deliveries],
            )
        return deliveries

    # -- changing entries (each checks that this consumer still holds the entry) ----------------

    async def ack(self, entries: Sequence[str | Delivery]) -> list[str]:
        """Acknowledge the entries this consumer still holds, in one step; returns those acked."""
        if not entries:
            return []
        ids = sorted(
            {entry if isinstance(entry, str) else entry.entry_id for entry in entries}, key=_id_key
        )
        acked = await self._ack(
            keys=[self.stream, self.errors_key], args=[self.group, self.consumer, *ids]
        )
        return [str(entry_id) for entry_id in acked]

    async def renew(self, entry_ids: Sequence[str]) -> list[str]:
        """Reset the idle time of entries this consumer still owns; returns those renewed."""
        renewed, _deleted = await self.renew_held(entry_ids)
        return renewed

    async def renew_held(self, entry_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """`renew`, also saying which held entries were deleted from the stream meanwhile."""
        if not entry_ids:
            return [], []
        renewed, deleted = await self._renew(
            keys=[self.stream], args=[self.group, self.consumer, *entry_ids]
        )
        return [str(entry_id) for entry_id in renewed], [str(entry_id) for entry_id in deleted]

    def hold(self, entry_ids: Iterable[str], claimed_at: float) -> Lease:
        """A lease on entries read at `claimed_at` (monotonic); run `keep()` while working."""
        return Lease(self, entry_ids, claimed_at)

    async def settle(
        self,
        delivery: Delivery,
        *,
        job: JobRef | None = None,
        state: str = "",
        fields: Mapping[str, str] | None = None,
        result: str = "",
    ) -> tuple[Settlement, str]:
        """Acknowledge the entry and record its job's outcome (`state`), in one owned step.

        Returns the settlement and the job's state before (a final state is never changed).
        """
        status, detail = await self._change(
            delivery.entry_id, "ack", job=job, state=state, fields=fields, result=result
        )
        return status, detail

    async def retry_later(
        self,
        delivery: Delivery,
        error: str,
        backoff_seconds: float | None = None,
        *,
        job: JobRef | None = None,
        fields: Mapping[str, str] | None = None,
        reason: str = "max_attempts",
    ) -> Settlement:
        """Record the error and make the entry reclaimable after its backoff.

        The backoff defaults to the settings' `retry_backoff x 2^(attempt-1)`. An entry on its
        last attempt goes to the dead-letter stream instead, with `reason`.
        """
        if delivery.attempt >= self.max_attempts:
            return await self._dead_letter_decided(
                delivery,
                reason=reason,
                error=f"gave up after {delivery.attempt} attempts; last error: {error}",
                attempts=delivery.attempt,
                job=job,
                fields=fields,
            )
        if backoff_seconds is None:
            backoff_seconds = self.settings.backoff_for(delivery.attempt)
        idle_ms = max(0, self.lease_ms - int(backoff_seconds * 1000))
        status, _previous = await self._change(
            delivery.entry_id, "retry", job=job, fields={**(fields or {}), "error": error},
            result=outcome_result(job, error=error) if job else "",
            first=str(idle_ms), second=error, attempt=delivery.attempt,
        )  # fmt: skip
        return status

    async def hand_back(
        self, entries: Sequence[Delivery], *, jobs: Sequence[JobRef | None] = ()
    ) -> list[str]:
        """Make entries this consumer holds reclaimable at once (a draining worker's leftovers).

        A hand-back is not a failure: the next delivery gets the same attempt number. Returns
        the entries handed back (those still held).
        """
        handed: list[str] = []
        for position, delivery in enumerate(entries):
            job = jobs[position] if position < len(jobs) else None
            status, _previous = await self._change(
                delivery.entry_id, "handback", job=job,
                fields={"handed_back_at": f"{time.time():.3f}"},
                first=str(self.lease_ms), second=str(max(0, delivery.attempt - 1)),
                attempt=delivery.attempt,
            )  # fmt: skip
            if status is Settlement.OK:
                handed.append(delivery.entry_id)
        return handed

    async def dead_letter(
        self,
        delivery: Delivery,
        *,
        reason: str,
        error: str,
        attempts: int | None = None,
        job: JobRef | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> Settlement:
        """Move the entry to the dead-letter stream with why, and acknowledge it, atomically.

        The job's outcome (dead) is recorded in the same step when `job` is given (or the
        group's `job_of` finds one in the entry).
        """
        if job is None and self.job_of is not None:
            job = self.job_of(delivery.fields)
        attempts_made = delivery.attempt if attempts is None else attempts
        record = dead_letter_fields(
            delivery, reason=reason, error=error, group=self.group, service=self.service,
            attempts=attempts_made, job_id=job.job_id if job else "",
        )  # fmt: skip
        status, _detail = await self._change(
            delivery.entry_id, "dead", job=job, state="dead",
            fields={**(fields or {}), "error": error, "dead_reason": reason},
            result=outcome_result(job, error=error) if job else "", dead_record=record,
        )  # fmt: skip
        if status is Settlement.OK:
            log.warning(
                "dead-lettered", stream=self.stream, entry_id=delivery.entry_id, reason=reason,
                error=error, attempts=attempts_made, job_id=job.job_id if job else None,
            )  # fmt: skip
        elif status is Settlement.LOST:
            log.warning(
                "dead letter dropped: this consumer no longer holds the entry",
                stream=self.stream, entry_id=delivery.entry_id, reason=reason,
            )  # fmt: skip
        return status

    async def dead_letter_deleted(self, entry_id: str) -> Settlement:
        """Record an entry that was deleted from the stream while pending (`XDEL`, `XTRIM`).

        The server drops it from the pending list as it reports it, so this is the only chance:
        it becomes a dead letter (reason `entry_deleted`) and its job, if a worker recorded one
        for it, is recorded dead.
        """
        from shared.jobstate import JobStates

        job = await JobStates(self.redis, self.keys).job_for_entry(self.stream, entry_id)
        error = (
            f"entry {entry_id} was deleted from {self.stream} while pending (XDEL or XTRIM); "
            "its payload is gone"
            + (f"; it carried job {job.job_id}" if job else "; no job was recorded for it")
        )
        delivery = Delivery(self.stream, entry_id, {}, 0)
        record = dead_letter_fields(
            delivery, reason="entry_deleted", error=error, group=self.group,
            service=self.service, attempts=0, job_id=job.job_id if job else "",
        )  # fmt: skip
        status, _detail = await self._change(
            entry_id, "dead_deleted", job=job, state="dead",
            fields={"error": error, "dead_reason": "entry_deleted"},
            result=outcome_result(job, error=error) if job else "", dead_record=record,
        )  # fmt: skip
        if status is Settlement.OK:
            log.warning(
                "dead-lettered", stream=self.stream, entry_id=entry_id, reason="entry_deleted",
                job_id=job.job_id if job else None,
            )  # fmt: skip
            if self.on_dead_letter is not None:
                self.on_dead_letter("entry_deleted", None)
        return status

    async def _dead_letter_decided(
        self,
        delivery: Delivery,
        *,
        reason: str,
        error: str,
        attempts: int,
        job: JobRef | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> Settlement:
        status = await self.dead_letter(
            delivery, reason=reason, error=error, attempts=attempts, job=job, fields=fields
        )
        if status is Settlement.OK and self.on_dead_letter is not None:
            self.on_dead_letter(reason, delivery)
        return status

    async def _change(
        self,
        entry_id: str,
        action: str,
        *,
        job: JobRef | None = None,
        state: str = "",
        fields: Mapping[str, str] | None = None,
        result: str = "",
        first: str = "",
        second: str = "",
        dead_record: Mapping[str, str] | None = None,
        attempt: int = 0,
    ) -> tuple[Settlement, str]:
        job_fields = _pairs(fields or {}) if job is not None else []
        if dead_record is None and action in ("retry", "handback"):
            # Used only if the entry turns out to be deleted from the stream while pending.
            dead_record = dead_letter_fields(
                Delivery(self.stream, entry_id, {}, attempt), reason="entry_deleted",
                error=f"entry {entry_id} was deleted from {self.stream} while pending (XDEL "
                "or XTRIM); its payload is gone",
                group=self.group, service=self.service, job_id=job.job_id if job else "",
            )  # fmt: skip
        reply = await self._settle(
            keys=[
                self.stream, self.errors_key, self.keys.dead, self.keys.dead_index,
                self.keys.entry_jobs(self.stream), *outcome_keys(self.keys, job),
            ],
            args=[
                self.group, self.consumer, entry_id, action, f"{time.time():.3f}",
                job.job_id if job else "", state, result or "{}",
                int(self.settings.record_retention_seconds), self.settings.results_maxlen,
                self.settings.dead_letters_max, first, second, len(job_fields), *job_fields,
                *_pairs(dead_record or {}),
            ],
        )  # fmt: skip
        status = Settlement(str(reply[0]))
        detail = str(reply[1]) if len(reply) > 1 else ""
        if len(reply) > 2 and reply[2]:
            log.error(
                "dead-letter cap reached: the oldest dead letter was dropped; replay or purge "
                "dead letters (conveyor dead list / replay / purge)",
                dropped=str(reply[2]), cap=self.settings.dead_letters_max,
            )  # fmt: skip
        if action in ("retry", "handback") and len(reply) > 2:
            log.warning(
                "dead-lettered", stream=self.stream, entry_id=entry_id, reason="entry_deleted",
                job_id=job.job_id if job else None,
            )  # fmt: skip
            if self.on_dead_letter is not None:
                self.on_dead_letter("entry_deleted", None)
        return status, detail

    # -- consumers ----------------------------------------------------------------------------

    async def leave(self) -> bool:
        """Delete this consumer from the group if it holds nothing (a clean stop)."""
        try:
            return bool(await self._leave(keys=[self.stream], args=[self.group, self.consumer, 0]))
        except ResponseError as error:
            if "NOGROUP" in str(error):
                return False
            raise

    async def consumers(self) -> list[ConsumerInfo]:
        try:
            infos = await self.redis.xinfo_consumers(self.stream, self.group)
        except ResponseError as error:
            if "NOGROUP" in str(error) or "no such key" in str(error).lower():
                return []
            raise
        return [
            ConsumerInfo(str(info["name"]), int(info["pending"]), int(info["idle"]) / 1000.0)
            for info in infos
        ]

    async def remove_idle_consumers(self, idle_seconds: float) -> list[str]:
        """Delete consumers idle past `idle_seconds` that hold nothing; returns their names."""
        removed = []
        for info in await self.consumers():
            if info.pending or info.idle_seconds < idle_seconds:
                continue
            deleted = await self._leave(
                keys=[self.stream], args=[self.group, info.name, int(idle_seconds * 1000)]
            )
            if deleted:
                removed.append(info.name)
        if removed:
            log.info("removed idle consumers", stream=self.stream, consumers=removed)
        return removed

    async def apply_once_then_ack(
        self,
        delivery: Delivery,
        *,
        idempotency_key: str,
        ttl_seconds: int,
        commands: Sequence[Sequence[str | int | float]],
    ) -> bool:
        """Run `commands` unless `idempotency_key` exists, and acknowledge, in one atomic step.

        Returns whether the commands ran. A crash before this call leaves the entry pending (it is
        reclaimed and applied later); a crash after it leaves nothing to redo.
        """
        applied = await self._apply_once(
            keys=[self.stream, idempotency_key],
            args=[
                self.group,
                delivery.entry_id,
                ttl_seconds,
                delivery.entry_id,
                *flatten_commands(commands),
            ],
        )
        return bool(applied)

    async def stats(self) -> GroupStats:
        return await group_stats(self.redis, self.stream, self.group)


class Lease:
    """Keeps entries' leases renewed while their holder works on them.

    Renewals run every `renew_interval`; one that fails (an outage) is retried at once and then
    every fraction of a second. The lease on the server lapses `lease_seconds` after the last
    renewal that reached it, which cannot be earlier than when that renewal was sent; so when no
    renewal has succeeded by `local_deadline_margin` before that, the holder must stop: `lost`
    is set (reason `lapsed`). It is set too when another consumer holds the entry now (reason
    `taken_over`), or when the entry was deleted from the stream while held (reason `deleted`,
    the ids in `deleted_ids`: the holder dead-letters them with `dead_letter_deleted`). Entries
    released with `release` are no longer renewed.
    """

    def __init__(self, group: ConsumerGroup, entry_ids: Iterable[str], claimed_at: float) -> None:
        self.group = group
        self.entry_ids = set(entry_ids)
        self.lost_ids: set[str] = set()
        self.deleted_ids: set[str] = set()
        self.lost = asyncio.Event()
        self.reason = ""
        settings = group.settings
        self._valid_until = claimed_at + settings.lease_seconds - settings.local_deadline_margin
        self._next_renewal = claimed_at + settings.renew_interval

    def release(self, entry_id: str) -> None:
        self.entry_ids.discard(entry_id)

    @property
    def valid_for(self) -> float:
        """Seconds until the holder must have stopped, unless a renewal succeeds."""
        return self._valid_until - time.monotonic()

    def _lose(self, reason: str, entry_ids: Iterable[str]) -> None:
        self.reason = reason
        self.lost_ids.update(entry_ids)
        self.entry_ids.difference_update(entry_ids)
        self.lost.set()

    async def keep(self) -> None:
        settings = self.group.settings
        retry_in = 0.05
        while self.entry_ids:
            await asyncio.sleep(
                max(0.0, min(self._next_renewal, self._valid_until) - time.monotonic())
            )
            sent = time.monotonic()
            if sent >= self._valid_until:
                self._lose("lapsed", list(self.entry_ids))
                log.error(
                    "lease could not be renewed before it lapsed: stopping the work here rather "
                    "than racing the consumer that reclaims it", entries=sorted(self.lost_ids),
                )  # fmt: skip
                return
            held = sorted(self.entry_ids)
            try:
                renewed_ids, deleted = await asyncio.wait_for(
                    self.group.renew_held(held), self._valid_until - sent
                )
            except TimeoutError:
                continue  # the deadline check above ends it
            except QUEUE_ERRORS as error:
                if not is_outage(error):
                    raise
                log.warning("lease renewal failed; retrying", error=str(error), entries=held)
                if self.group.on_renewal_failure is not None:
                    self.group.on_renewal_failure(error)
                self._next_renewal = time.monotonic() + retry_in
                retry_in = min(retry_in * 2, max(0.05, settings.renew_interval / 4), 1.0)
                continue
            retry_in = 0.05
            renewed = set(renewed_ids)
            if deleted:
                self.deleted_ids.update(deleted)
                self._lose("deleted", deleted)
                log.warning("entries deleted from the stream while held", entries=deleted)
            taken = [e for e in held if e not in renewed and e not in self.deleted_ids]
            if taken:
                self._lose("taken_over", taken)
                log.warning("lease lost: another consumer holds these entries now", entries=taken)
                if not self.entry_ids:
                    return
            self._valid_until = sent + settings.lease_seconds - settings.local_deadline_margin
            self._next_renewal = sent + settings.renew_interval


def dead_letter_fields(
    delivery: Delivery,
    *,
    reason: str,
    error: str,
    group: str,
    service: str,
    attempts: int | None = None,
    job_id: str = "",
) -> dict[str, str]:
    record = {
        "reason": reason,
        "error": error,
        "stream": delivery.stream,
        "group": group,
        "entry_id": delivery.entry_id,
        "attempts": str(delivery.attempt if attempts is None else attempts),
        "service": service,
        "failed_at": f"{time.time():.3f}",
        "payload": json.dumps(delivery.fields, sort_keys=True),
    }
    if job_id:
        record["job_id"] = job_id
    return record


async def group_stats(redis: aioredis.Redis, stream: str, group: str) -> GroupStats:
    """Lag, pending and consumers of one group; zeros when the stream does not exist yet."""
    pipe = redis.pipeline(transaction=False)
    pipe.xlen(stream)
    pipe.xinfo_groups(stream)
    try:
        length, groups = await pipe.execute()
    except ResponseError as error:
        if "no such key" not in str(error).lower():
            raise
        return GroupStats(stream, group, 0, 0, 0, 0, "0-0", 0)
    for info in groups:
        if info["name"] == group:
            lag = info.get("lag")
            entries_read = info.get("entries-read")
            return GroupStats(
                stream=stream,
                group=group,
                length=int(length),
                lag=None if lag is None else int(lag),
                pending=int(info["pending"]),
                consumers=int(info["consumers"]),
                last_delivered_id=str(info["last-delivered-id"]),
                entries_read=None if entries_read is None else int(entries_read),
            )
    return GroupStats(stream, group, int(length), int(length), 0, 0, "0-0", 0)


async def safe_trim_id(redis: aioredis.Redis, stream: str) -> str | None:
    """The lowest id still needed by some group: everything below it was read and acknowledged."""
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
    except ResponseError:
        return None
    if not groups:
        return None
    floor: str | None = None
    for info in groups:
        needed = _next_id(str(info["last-delivered-id"]))
        if int(info["pending"]) > 0:
            summary = await redis.xpending(stream, info["name"])
            oldest = summary.get("min")
            if oldest and _id_key(oldest) < _id_key(needed):
                needed = oldest
        if floor is None or _id_key(needed) < _id_key(floor):
            floor = needed
    return floor


async def trim(redis: aioredis.Redis, stream: str) -> int:
    """Trim entries every group has read and acknowledged; returns how many went."""
    floor = await safe_trim_id(redis, stream)
    if floor is None:
        return 0
    return int(await redis.xtrim(stream, minid=floor, approximate=False))


def decode_payload(fields: Mapping[str, str]) -> dict[str, str]:
    """The original fields of a dead-lettered entry."""
    payload = json.loads(fields.get("payload", "{}"))
    return {str(name): str(value) for name, value in payload.items()}

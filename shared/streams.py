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
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from shared import stream_scripts
from shared.config import ConsumerSettings, consumer_setting_problems
from shared.jobstate import JobRef, outcome_keys, outcome_result
from shared.keys import Keys
from shared.leases import Lease
from shared.outages import QUEUE_ERRORS, is_outage
from shared.wire import dead_letter_payload, original_fields

log = structlog.get_logger(__name__)


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
        self._renew = redis.register_script(stream_scripts.RENEW_IF_OWNED)
        self._ack = redis.register_script(stream_scripts.ACK_IF_OWNED)
        self._settle = redis.register_script(stream_scripts.SETTLE)
        self._reclaim = redis.register_script(stream_scripts.RECLAIM)
        self._leave = redis.register_script(stream_scripts.LEAVE_IF_EMPTY)

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

    async def leave_on_stop(self) -> None:
        """`leave`, as a stopping service calls it: an outage is logged, not raised (the
        consumer is then removed by housekeeping once idle)."""
        try:
            if await self.leave():
                log.info("left the consumer group", consumer=self.consumer)
        except QUEUE_ERRORS as error:
            if not is_outage(error):
                raise
            log.warning("could not leave the consumer group; housekeeping removes it later",
                        error=str(error))  # fmt: skip

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

    async def stats(self) -> GroupStats:
        return await group_stats(self.redis, self.stream, self.group)


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
        **dead_letter_payload(delivery.fields),
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
    """The original fields of a dead-lettered entry, byte for byte."""
    return original_fields(fields)

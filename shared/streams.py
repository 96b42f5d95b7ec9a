"""Redis Streams consumer groups: the one place that knows about them.

A `ConsumerGroup` gives at-least-once delivery with leases:

- `read` first reclaims entries idle past the lease (`XAUTOCLAIM`), then reads new ones
  (`XREADGROUP ... BLOCK ... COUNT`);
- a running entry's lease is renewed with `XCLAIM ... JUSTID` by its owner only (a Lua script
  checks ownership, so a worker whose lease already lapsed never steals its entry back);
- a failed entry is retried after a backoff by setting its idle time (`XCLAIM ... IDLE`), so
  no second structure is needed for delayed retries;
- an entry delivered more than `max_attempts` times goes to the dead-letter stream with its last
  error and is acknowledged, in one transaction;
- streams are trimmed only below what every group has read and acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from shared.keys import Keys
from shared.wire import dead_letter_payload, original_fields

log = structlog.get_logger(__name__)

_RENEW_IF_OWNED = """
local renewed = {}
for i, entry_id in ipairs(ARGV) do
  if i > 2 then
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry_id, entry_id, 1)
    if pending[1] and pending[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, entry_id, 'JUSTID')
      table.insert(renewed, entry_id)
    end
  end
end
return renewed
"""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One stream entry handed to a consumer; `attempt` counts deliveries, from 1."""

    stream: str
    entry_id: str
    fields: dict[str, str]
    attempt: int


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


class ConsumerGroup:
    """A consumer's view of one stream in one group, with leases, retries and dead letters."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        stream: str,
        group: str,
        consumer: str,
        keys: Keys,
        lease_seconds: float = 60.0,
        max_attempts: int = 5,
        service: str = "conveyor",
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.keys = keys
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self.max_attempts = max_attempts
        self.service = service
        # Reclaiming scans the pending list, so it runs on a timer well inside the lease rather
        # than before every read.
        self.reclaim_interval = min(lease_seconds / 4, 5.0)
        self._next_reclaim_at = 0.0
        self._renew = redis.register_script(_RENEW_IF_OWNED)

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

    async def ensure_when_reachable(self, max_backoff_seconds: float = 5.0) -> None:
        """`ensure`, retried with backoff while the server cannot be reached (service start-up)."""
        from shared.redis_connection import TRANSIENT_ERRORS

        backoff = 0.1
        while True:
            try:
                await self.ensure()
                return
            except TRANSIENT_ERRORS as error:
                log.warning("queue unavailable at start; retrying", error=str(error))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max_backoff_seconds)

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """Entries to work on: stale ones reclaimed first, then new ones (blocking if none).

        Entries past `max_attempts` are dead-lettered here and not returned.
        """
        now = time.monotonic()
        if now >= self._next_reclaim_at:
            reclaimed = await self.reclaim(count)
            if reclaimed:
                return reclaimed
            self._next_reclaim_at = now + self.reclaim_interval
        return await self.read_new(count, block_ms)

    async def read_new(self, count: int, block_ms: int | None) -> list[Delivery]:
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
                deliveries.append(Delivery(self.stream, entry_id, dict(fields or {}), 1))
        return deliveries

    async def reclaim(self, count: int) -> list[Delivery]:
        """Claim entries idle past the lease, from any consumer (including dead ones)."""
        try:
            response = await self.redis.xautoclaim(
                self.stream, self.group, self.consumer, self.lease_ms, "0-0", count=count
            )
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            await self.ensure()
            return []
        claimed = [(entry_id, fields) for entry_id, fields in response[1] if fields is not None]
        if not claimed:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for entry_id, _fields in claimed:
            pipe.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
        pending = await pipe.execute()
        deliveries: list[Delivery] = []
        for (entry_id, fields), info in zip(claimed, pending, strict=True):
            attempts = int(info[0]["times_delivered"]) if info else 1
            delivery = Delivery(self.stream, entry_id, dict(fields), attempts)
            if attempts > self.max_attempts:
                last_error = await self.redis.hget(self.errors_key, entry_id)  # type: ignore[misc]
                await self.dead_letter(
                    delivery,
                    reason="max_attempts",
                    error=(
                        f"gave up after {attempts - 1} attempts; last error: "
                        f"{last_error or 'none recorded (the consumer stopped or was killed)'}"
                    ),
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

    async def ack(self, entries: Sequence[str | Delivery]) -> None:
        """Acknowledge entries (ids or deliveries) in one round trip.

        Only a redelivered entry can have a recorded error (`retry_later` records one and the
        entry comes back with attempt >= 2), so first deliveries skip the HDEL.
        """
        if not entries:
            return
        ids = [entry if isinstance(entry, str) else entry.entry_id for entry in entries]
        retried = [
            entry if isinstance(entry, str) else entry.entry_id
            for entry in entries
            if isinstance(entry, str) or entry.attempt > 1
        ]
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(self.stream, self.group, *ids)
        if retried:
            pipe.hdel(self.errors_key, *retried)
        await pipe.execute()

    async def renew(self, entry_ids: Sequence[str]) -> list[str]:
        """Reset the idle time of entries this consumer still owns; returns those renewed."""
        if not entry_ids:
            return []
        renewed = await self._renew(
            keys=[self.stream], args=[self.group, self.consumer, *entry_ids]
        )
        return [str(entry_id) for entry_id in renewed]

    async def retry_later(self, delivery: Delivery, error: str, backoff_seconds: float) -> None:
        """Record the error and make the entry reclaimable after `backoff_seconds`.

        Past `max_attempts` deliveries it goes straight to the dead-letter stream.
        """
        if delivery.attempt >= self.max_attempts:
            await self.dead_letter(
                delivery,
                reason="max_attempts",
                error=f"gave up after {delivery.attempt} attempts; last error: {error}",
            )
            return
        idle_ms = max(0, self.lease_ms - int(backoff_seconds * 1000))
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.errors_key, delivery.entry_id, error)
        pipe.xclaim(
            self.stream,
            self.group,
            self.consumer,
            0,
            [delivery.entry_id],
            idle=idle_ms,
            justid=True,
        )
        await pipe.execute()

    async def hand_back(self, entry_ids: Sequence[str]) -> None:
        """Make entries this consumer holds reclaimable at once (a draining worker's leftovers)."""
        if entry_ids:
            await self.redis.xclaim(
                self.stream, self.group, self.consumer, 0, list(entry_ids),
                idle=self.lease_ms, justid=True,
            )  # fmt: skip

    async def dead_letter(self, delivery: Delivery, *, reason: str, error: str) -> None:
        """Move the entry to the dead-letter stream with why, and acknowledge it, atomically."""
        record = dead_letter_fields(
            delivery, reason=reason, error=error, group=self.group, service=self.service
        )
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(self.keys.dead, record)  # type: ignore[arg-type]
        pipe.xack(self.stream, self.group, delivery.entry_id)
        pipe.hdel(self.errors_key, delivery.entry_id)
        await pipe.execute()
        log.warning(
            "dead-lettered",
            stream=self.stream,
            entry_id=delivery.entry_id,
            reason=reason,
            error=error,
            attempt=delivery.attempt,
        )

    async def stats(self) -> GroupStats:
        return await group_stats(self.redis, self.stream, self.group)


def dead_letter_fields(
    delivery: Delivery, *, reason: str, error: str, group: str, service: str
) -> dict[str, str]:
    return {
        "reason": reason,
        "error": error,
        "stream": delivery.stream,
        "group": group,
        "entry_id": delivery.entry_id,
        "attempts": str(delivery.attempt),
        "service": service,
        "failed_at": f"{time.time():.3f}",
        **dead_letter_payload(delivery.fields),
    }


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

"""Reading a pool's queue: `XINFO GROUPS` (lag, pending, consumers) and `XLEN`.

When the server cannot tell the lag (NULL after `XDEL`/`XTRIM` below the group's position or an
`XGROUP SETID`, and on servers before Redis 7) it is counted: the entries after the group's
last-delivered id are exactly the ones not yet delivered, so `XRANGE (last-delivered-id + COUNT n`
gives the lag, exactly up to `n` and as a lower bound beyond. Such a lag is marked estimated.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from services.autoscaler.policy import Observation
from shared.keys import WORKER_GROUP, Keys
from shared.streams import GroupStats, group_stats


@dataclass(frozen=True)
class QueueReading:
    pool: str
    stream: str
    length: int
    lag: int | None
    lag_estimated: bool
    pending: int
    consumers: int
    entries_read: int | None
    last_delivered_id: str

    def observation(self, current_replicas: int, timestamp: float) -> Observation:
        return Observation(
            pool=self.pool,
            timestamp=timestamp,
            lag=self.lag,
            pending=self.pending,
            current_replicas=current_replicas,
            consumers=self.consumers,
            lag_estimated=self.lag_estimated,
        )


async def count_undelivered(
    redis: aioredis.Redis, stream: str, last_delivered_id: str, limit: int
) -> int:
    """Entries after `last_delivered_id`, counting at most `limit` (ids only are useful here,
    but XRANGE has no count-only form, so keep `limit` modest)."""
    entries = await redis.xrange(stream, min=f"({last_delivered_id}", max="+", count=limit)
    return len(entries)


async def read_queue(
    redis: aioredis.Redis,
    keys: Keys,
    pool: str,
    *,
    group: str = WORKER_GROUP,
    estimate_limit: int = 1000,
) -> QueueReading:
    stream = keys.jobs(pool)
    stats: GroupStats = await group_stats(redis, stream, group)
    lag, estimated = stats.lag, False
    if lag is None:
        lag = await count_undelivered(redis, stream, stats.last_delivered_id, estimate_limit)
        estimated = True
    return QueueReading(
        pool=pool,
        stream=stream,
        length=stats.length,
        lag=lag,
        lag_estimated=estimated,
        pending=stats.pending,
        consumers=stats.consumers,
        entries_read=stats.entries_read,
        last_delivered_id=stats.last_delivered_id,
    )

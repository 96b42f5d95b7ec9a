"""The legacy bridge: items pushed with `RPUSH jobProduct|jobS2 '<json>'` into the events stream.

Popping from the list and adding to the stream happen in one Lua script, so a crash can neither
lose an item (popped, not added) nor double it (added, not popped). While the events stream holds
`max_events` entries or more (dispatchers far behind), items wait in their list: the stream stays
bounded and nothing is dropped.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
import structlog

log = structlog.get_logger(__name__)

_MOVE_BATCH = """
local count = tonumber(ARGV[1])
if tonumber(ARGV[3]) > 0 then
  count = math.min(count, tonumber(ARGV[3]) - redis.call('XLEN', KEYS[2]))
  if count <= 0 then
    return 0
  end
end
local items = redis.call('LPOP', KEYS[1], count)
if not items then
  return 0
end
for _, item in ipairs(items) do
  redis.call('XADD', KEYS[2], '*', 'payload', item, '_source', ARGV[2])
end
return #items
"""


class LegacyBridge:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        lists: list[str],
        events_stream: str,
        batch_size: int = 500,
        idle_sleep_seconds: float = 0.2,
        max_events: int = 0,
    ) -> None:
        self.redis = redis
        self.lists = lists
        self.events_stream = events_stream
        self.batch_size = batch_size
        self.idle_sleep_seconds = idle_sleep_seconds
        self.max_events = max_events
        self._move = redis.register_script(_MOVE_BATCH)

    async def move_once(self) -> int:
        """Move up to `batch_size` items from each list; returns how many moved."""
        moved = 0
        for name in self.lists:
            count = int(
                await self._move(
                    keys=[name, self.events_stream], args=[self.batch_size, name, self.max_events]
                )
            )
            if count:
                log.info("bridged legacy items", list=name, items=count)
            moved += count
        return moved

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            moved = await self.move_once()
            if not moved:
                try:
                    await asyncio.wait_for(stopping.wait(), self.idle_sleep_seconds)
                except TimeoutError:
                    pass

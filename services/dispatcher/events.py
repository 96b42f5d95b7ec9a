"""Reading the events stream without ever holding an oversized event.

`XREADGROUP` hands over whole entries, so one `XADD` of 100 MB would sit in the dispatcher's
memory (a batch of them, in a pod limited to 512 MiB) before any check could refuse it. Here the
read is a Lua script: the server measures each new entry, and one over `max_event_bytes` is
dead-lettered (reason `over_limit`, the first `PREVIEW_BYTES` of each field kept) and
acknowledged in the same step, so only entries of a bounded size ever leave the server.

Scripts cannot block, so when nothing is new the read waits a short poll interval (at most
`block_ms`) before it returns, instead of `XREADGROUP BLOCK`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from shared.keys import Keys
from shared.limits import setting_name
from shared.streams import ConsumerGroup, Delivery

#: How much of each field of an oversized event its dead letter keeps.
PREVIEW_BYTES = 1024
#: Most fields of an oversized event its dead letter keeps a preview of.
PREVIEW_FIELDS = 32
#: Longest wait between two reads while the stream is idle.
POLL_SECONDS = 0.1

_SCREENED_READ = """
-- KEYS[1] events stream, KEYS[2] dead-letter stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] count, ARGV[4] max bytes, ARGV[5] preview bytes,
-- ARGV[6] preview fields, ARGV[7] now, ARGV[8] service, ARGV[9] setting name
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                         'STREAMS', KEYS[1], '>')
if not reply then
  return {{}, 0}
end
local limit, preview_bytes, preview_fields = tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6])
local function with_commas(number)
  local text = tostring(number)
  local shown = text:reverse():gsub('(%d%d%d)', '%1,'):reverse()
  return (shown:gsub('^,', ''))
end
local kept, refused = {}, 0
for _, entry in ipairs(reply[1][2]) do
  local entry_id, fields = entry[1], entry[2]
  local size = 0
  for i = 1, #fields do
    size = size + #fields[i]
  end
  if size > limit then
    local preview = {}
    for i = 1, math.min(#fields, 2 * preview_fields), 2 do
      preview[string.sub(fields[i], 1, preview_bytes)] = string.sub(fields[i + 1] or '', 1,
        preview_bytes)
    end
    redis.call('XADD', KEYS[2], '*',
      'reason', 'over_limit',
      'error', 'the event is ' .. with_commas(size) .. ' bytes; the limit is ' ..
        with_commas(limit) .. ' (' .. ARGV[9] .. '); it was refused unread, and its payload ' ..
        'here keeps the first ' .. preview_bytes .. ' bytes of each of its first ' ..
        preview_fields .. ' fields',
      'stream', KEYS[1], 'group', ARGV[1], 'entry_id', entry_id, 'attempts', '1',
      'service', ARGV[8], 'failed_at', ARGV[7], 'payload', cjson.encode(preview),
      'payload_truncated', 'true', 'event_bytes', tostring(size))
    redis.call('XACK', KEYS[1], ARGV[1], entry_id)
    refused = refused + 1
  else
    table.insert(kept, entry)
  end
end
return {kept, refused}
"""


class EventGroup(ConsumerGroup):
    """The dispatcher's consumer group on the events stream: new entries are read screened.

    `on_refused(n)` is told how many oversized events a read dead-lettered (for the metrics).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        stream: str,
        group: str,
        consumer: str,
        keys: Keys,
        max_event_bytes: int,
        on_refused: Callable[[int], None] = lambda _count: None,
        service: str = "dispatcher",
        **group_options: Any,
    ) -> None:
        super().__init__(
            redis, stream=stream, group=group, consumer=consumer, keys=keys, service=service,
            **group_options,
        )  # fmt: skip
        self.max_event_bytes = max_event_bytes
        self.on_refused = on_refused
        self._screened_read = redis.register_script(_SCREENED_READ)

    async def read_new(self, count: int, block_ms: int | None) -> list[Delivery]:
        sent = time.monotonic()
        try:
            entries, refused = await self._screened_read(
                keys=[self.stream, self.keys.dead],
                args=[
                    self.group, self.consumer, count, self.max_event_bytes, PREVIEW_BYTES,
                    PREVIEW_FIELDS, f"{time.time():.3f}", self.service,
                    setting_name("max_event_bytes"),
                ],
            )  # fmt: skip
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            await self.ensure()
            return []
        if refused:
            self.on_refused(int(refused))
        deliveries = [
            Delivery(self.stream, str(entry_id), _pairs(fields), 1, sent)
            for entry_id, fields in entries
        ]
        if not deliveries and not refused and block_ms:
            await asyncio.sleep(min(block_ms / 1000, POLL_SECONDS))
        return deliveries


def _pairs(flat: list[str]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}

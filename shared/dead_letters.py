"""The dead-letter stream: list, replay and purge dead letters, keeping their index and jobs true.

A dead letter stays until it is replayed or purged (the stream is capped, see
`ConsumerSettings.dead_letters_max`). Replaying puts the original entry back on its stream and,
when it carried a job recorded dead, reopens that job (state `queued`, its request's counters
no longer count it) in the same step, so that the rerun is counted once like any other job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from shared.keys import Keys

_REPLAY = """
-- KEYS: 1 dead stream, 2 dead index, 3 target stream, 4 job, 5 request, 6 request's job list
-- ARGV: 1 dead-letter id, 2 index field, 3 job id ('' none), then the entry's field/value pairs
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return false
end
local fields = {}
for i = 4, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local entry_id = redis.call('XADD', KEYS[3], '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[2])
if ARGV[3] ~= '' and redis.call('HGET', KEYS[4], 'state') == 'dead' then
  redis.call('HSET', KEYS[4], 'state', 'queued', 'error', '', 'reopened_from', ARGV[1])
  redis.call('HDEL', KEYS[4], 'settled_by')
  redis.call('PERSIST', KEYS[4])
  if redis.call('EXISTS', KEYS[5]) == 1 then
    redis.call('HINCRBY', KEYS[5], 'jobs_dead', -1)
    redis.call('HINCRBY', KEYS[5], 'jobs_finished', -1)
    if redis.call('HGET', KEYS[5], 'state') == 'finished' then
      redis.call('HSET', KEYS[5], 'state', 'dispatched')
      redis.call('HDEL', KEYS[5], 'finished_at')
    end
    redis.call('PERSIST', KEYS[5])
    redis.call('PERSIST', KEYS[6])
  end
end
return entry_id
"""

_PURGE = """
-- KEYS: 1 dead stream, 2 dead index; ARGV: dead-letter id, index field, repeated
local purged = 0
for i = 1, #ARGV, 2 do
  purged = purged + redis.call('XDEL', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i + 1])
end
return purged
"""


@dataclass(frozen=True)
class DeadLetter:
    id: str
    fields: dict[str, str]

    @property
    def index_field(self) -> str:
        return f"{self.fields.get('stream', '')} {self.fields.get('entry_id', '')}"

    @property
    def payload(self) -> dict[str, str]:
        """The original entry's fields."""
        payload = json.loads(self.fields.get("payload", "{}"))
        return {str(name): str(value) for name, value in payload.items()}

    @property
    def age_seconds(self) -> float:
        return time.time() - int(self.id.split("-", 1)[0]) / 1000.0


class DeadLetters:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._replay = redis.register_script(_REPLAY)
        self._purge = redis.register_script(_PURGE)

    async def newest(self, limit: int) -> list[DeadLetter]:
        raw = await self.redis.xrevrange(self.keys.dead, count=limit)
        return [DeadLetter(str(entry_id), dict(fields)) for entry_id, fields in raw]

    async def select(self, ids: Sequence[str] = (), *, every: bool = False) -> list[DeadLetter]:
        if every:
            raw = await self.redis.xrange(self.keys.dead)
        else:
            raw = []
            for entry_id in ids:
                raw.extend(await self.redis.xrange(self.keys.dead, entry_id, entry_id))
        return [DeadLetter(str(entry_id), dict(fields)) for entry_id, fields in raw]

    async def replay(self, letter: DeadLetter) -> str | None:
        """Put the entry back on its stream (reopening its job); its new id, or None if the
        dead letter was replayed or purged meanwhile."""
        job_id = letter.fields.get("job_id", "")
        request_id = ""
        if job_id:
            request_id = str(
                await self.redis.hget(self.keys.job(job_id), "request_id") or ""  # type: ignore[misc]
            )
        pairs: list[str] = []
        for name, value in letter.payload.items():
            pairs.extend((name, value))
        entry_id = await self._replay(
            keys=[
                self.keys.dead, self.keys.dead_index, letter.fields["stream"],
                self.keys.job(job_id or "-"), self.keys.request(request_id or "-"),
                self.keys.request_jobs(request_id or "-"),
            ],
            args=[letter.id, letter.index_field, job_id, *pairs],
        )  # fmt: skip
        return None if entry_id is None else str(entry_id)

    async def purge(self, letters: Sequence[DeadLetter]) -> int:
        purged = 0
        for start in range(0, len(letters), 500):
            batch = letters[start : start + 500]
            args: list[str] = []
            for letter in batch:
                args.extend((letter.id, letter.index_field))
            purged += int(await self._purge(keys=[self.keys.dead, self.keys.dead_index], args=args))
        return purged

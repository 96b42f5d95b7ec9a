"""A water classification search becomes a job per scene it finds, each added exactly once.

The dispatcher may not query the datacube index, so a request by product, area and period
reaches the `ard` pool as one search job; the worker that runs it finds the scenes and adds a
job per scene to the same stream, under the same request. Each batch of those jobs is one Lua
script call that, per job:

- adds its id to the search's set `{ns}:expanded:<search job id>:<run of the request>`, and only
  if it was not there already
- adds the job to the `ard` pool's stream with its fresh record, its place in the job index and
  in the request's job list,

and raises the request's `jobs_total` by the number added, so the request finishes when its last
scene does (not when the search does). A search that is run again (a worker killed mid-way, a
lease taken over, a retry) finds the scenes again and adds only those not added yet, whatever it
found the first time; two runs at once add each scene once between them.

Batches are bounded in bytes (`CONVEYOR_DISPATCH_BATCH_BYTES`, as the dispatcher's are), and the
number of scenes by `CONVEYOR_MAX_JOBS_PER_REQUEST` (the search refuses past it), so no request
makes one huge call or an unbounded list.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import redis.asyncio as aioredis

from shared.jobs import Job, encode_job
from shared.jobstate import Command, job_commands
from shared.keys import Keys
from shared.streams import flatten_commands

#: How long a search remembers what it added: far longer than its retries can take.
EXPANSION_TTL_SECONDS = 7 * 24 * 3600
#: Bytes counted per argument besides its text (RESP framing), as the dispatcher counts them.
ARGUMENT_OVERHEAD = 16

_EXPAND = """
-- KEYS[1] the set of jobs the search added in this run, KEYS[2] the request's record
-- ARGV[1] ttl seconds, then per job: its id, how many commands add it, and the commands as
-- <count> <command> <arguments...>
local added = 0
local position = 2
while position <= #ARGV do
  local job_id = ARGV[position]
  local commands = tonumber(ARGV[position + 1])
  position = position + 2
  local fresh = redis.call('SADD', KEYS[1], job_id) == 1
  for _ = 1, commands do
    local count = tonumber(ARGV[position])
    if fresh then
      local command = {}
      for offset = 1, count do
        command[offset] = ARGV[position + offset]
      end
      redis.call(unpack(command))
    end
    position = position + count + 1
  end
  if fresh then
    added = added + 1
  end
end
if added > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'jobs_total', added)
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return added
"""


def job_arguments(keys: Keys, job: Job, now: float) -> list[str]:
    """One job's part of a call: its id, its command count, its commands."""
    commands: list[Command] = [
        ("XADD", keys.jobs(job.pool), "*", *encode_job(job).popitem()),
        *job_commands(keys, job, now),
    ]
    return [job.job_id, str(len(commands)), *flatten_commands(commands)]


def argument_batches(
    keys: Keys, jobs: Sequence[Job], now: float, budget_bytes: int
) -> Iterator[list[str]]:
    """The jobs' arguments in calls of at most about `budget_bytes` (a larger job goes alone)."""
    batch: list[str] = []
    size = 0
    for job in jobs:
        part = job_arguments(keys, job, now)
        part_size = sum(len(argument.encode()) + ARGUMENT_OVERHEAD for argument in part)
        if batch and size + part_size > budget_bytes:
            yield batch
            batch, size = [], 0
        batch.extend(part)
        size += part_size
    if batch:
        yield batch


class Expansion:
    """Adds a search's per-scene jobs, each once (see the module)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        batch_bytes: int,
        ttl_seconds: int = EXPANSION_TTL_SECONDS,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.batch_bytes = batch_bytes
        self.ttl_seconds = ttl_seconds
        self._script = redis.register_script(_EXPAND)

    async def added_key(self, search: Job) -> str:
        """The search's set for the current run of its request (a request submitted again
        after it finished is a new run, whose search adds its scenes again)."""
        run = await self.redis.hget(self.keys.request(search.request_id), "run")  # type: ignore[misc]
        return self.keys.expanded(search.job_id, str(run or "1"))

    async def add(self, search: Job, jobs: Sequence[Job], now: float) -> int:
        """Add those of `jobs` the search has not added yet; how many were added."""
        key = await self.added_key(search)
        added = 0
        for arguments in argument_batches(self.keys, jobs, now, self.batch_bytes):
            added += int(
                await self._script(
                    keys=[key, self.keys.request(search.request_id)],
                    args=[self.ttl_seconds, *arguments],
                )
            )
        return added

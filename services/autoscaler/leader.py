"""One active autoscaler at a time: a Redis lease taken with SET NX PX, renewed by its holder.

The holder renews well inside the lease (every poll); a holder that stops renewing (crash,
partition) loses the lease when it expires and another instance takes it. Renewal and release
compare the holder id in one Lua step, so an instance whose lease already passed to another can
neither extend nor delete it.
"""

from __future__ import annotations

import redis.asyncio as aioredis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaderLease:
    def __init__(
        self, redis: aioredis.Redis, key: str, holder: str, lease_seconds: float = 15.0
    ) -> None:
        self.key = key
        self.holder = holder
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self.held = False
        self.redis = redis
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire_or_renew(self) -> bool:
        """Extend the lease if ours, else take it if free; whether we hold it now."""
        if self.held and int(await self._renew(keys=[self.key], args=[self.holder, self.lease_ms])):
            return True
        taken = await self.redis.set(self.key, self.holder, nx=True, px=self.lease_ms)
        # A holder whose lease lapsed and was not taken by anyone may take it again here.
        self.held = bool(taken)
        return self.held

    async def release(self) -> None:
        """Give the lease up at once (if still ours), so another instance need not wait it out."""
        try:
            await self._release(keys=[self.key], args=[self.holder])
        finally:
            self.held = False

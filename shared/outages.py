"""Which queue errors are outages: the server is away, busy or changing roles, not our bug.

A service loop backs off and carries on after an outage; anything else is a bug and surfaces.
Besides lost connections and timeouts, a server answers some commands with an error while it is
failing over or busy; redis-py maps a few of those to classes and leaves the rest as a plain
`ResponseError` whose message starts with the server's error code:

- `LOADING` (`BusyLoadingError`): a restarted server is still reading its AOF;
- `READONLY` (`ReadOnlyError`): this node became a replica (failover);
- `UNBLOCKED`: a blocked `XREADGROUP` was released because the node changed role;
- `BUSY`: a script or module command is running long;
- `MASTERDOWN`: a replica lost its primary and serves no stale data;
- `NOREPLICAS`: `min-replicas-to-write` is not met;
- `OOM`: `maxmemory` is reached with `noeviction` (writes wait until an operator frees memory).
"""

from __future__ import annotations

from redis.exceptions import (
    BusyLoadingError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

OUTAGE_CODES: tuple[str, ...] = (
    "LOADING",
    "READONLY",
    "UNBLOCKED",
    "BUSY",
    "MASTERDOWN",
    "NOREPLICAS",
    "OOM",
)

#: Classes that are always outages, whatever their message.
_OUTAGE_CLASSES: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ReadOnlyError,
    ConnectionError,
    TimeoutError,
    OSError,
)

#: What `except` clauses catch before asking `is_outage`.
QUEUE_ERRORS: tuple[type[BaseException], ...] = (RedisError, ConnectionError, OSError)


def is_outage(error: BaseException) -> bool:
    """True when `error` means the queue is unavailable for now (retry after a backoff)."""
    if isinstance(error, _OUTAGE_CLASSES):
        return True
    if isinstance(error, ResponseError):
        code = str(error).split(" ", 1)[0].upper()
        return code in OUTAGE_CODES
    return False


def outage_hint(error: BaseException) -> str:
    """A few words for the log on what is going on."""
    text = str(error)
    if isinstance(error, BusyLoadingError) or text.startswith("LOADING"):
        return "the server is loading its data after a restart"
    if isinstance(error, ReadOnlyError) or text.startswith(("READONLY", "UNBLOCKED")):
        return "the server changed role (failover); waiting for a primary at this address"
    if text.startswith("BUSY"):
        return "the server is busy running a script"
    if text.startswith(("MASTERDOWN", "NOREPLICAS")):
        return "the server has no usable replica link"
    if text.startswith("OOM"):
        return "the server reached maxmemory; free memory (dead letters, old records) or raise it"
    return "the server cannot be reached"

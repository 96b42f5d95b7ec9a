"""Redis ACL users, one per role, each allowed only the commands and keys its role needs.

The rules are derived from the namespace and the legacy list names, so that they follow the
configuration; this module is the one place that spells them. The embedded server writes them
into its ACL file (`acl_file`), and the Kubernetes StatefulSet and Compose ship the same text as
a template (`acl_template`) whose password digests are filled in from secrets at start-up;
tests/test_acl.py checks the shipped files against what this module renders.

Each grant becomes one ACL selector `(~key … +command …)`: a command is allowed only on the keys
of a grant that names it, so e.g. a worker may `XADD` to the results and dead-letter streams and
to the `ard` pool's stream (expanding a water classification search), but not to the events or
the `product` pool's stream. Nothing else is allowed: no user runs `FLUSHALL`, `CONFIG`, `ACL`,
`KEYS`, `DEBUG`, `SHUTDOWN` or `MODULE`, and none subscribes to channels. Scripts run with their
caller's permissions, so each user has the commands its scripts call.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.keys import LEGACY_LISTS, Keys

DEFAULT_LEGACY_LISTS: tuple[str, ...] = tuple(LEGACY_LISTS)
ROLES: tuple[str, ...] = (
    "producer",
    "dispatcher",
    "worker",
    "autoscaler",
    "keda",
    "operator",
    "exporter",
)
# Commands that no role is ever given; tests assert each one is refused with NOPERM.
FORBIDDEN_COMMANDS: tuple[str, ...] = (
    "flushall",
    "flushdb",
    "config",
    "acl",
    "keys",
    "debug",
    "shutdown",
    "module",
    "monitor",
    "replicaof",
    "slaveof",
    "migrate",
    "restore",
    "save",
    "bgsave",
    "bgrewriteaof",
    "swapdb",
    "client|kill",
    "client|pause",
    "script|flush",
    "function|flush",
    "sort",
)

# Every client: authenticate, name itself, ping, and run transactions (MULTI/EXEC pipelines).
# Not CLIENT SETINFO: it is new in Redis 7.2 (a 7.0 server would refuse the whole ACL file), and
# our clients do not send it (shared.redis_connection); others ignore its refusal.
_CONNECTION = (
    "auth",
    "hello",
    "ping",
    "echo",
    "select",
    "reset",
    "quit",
    "client|setname",
    "client|getname",
    "client|id",
    "multi",
    "exec",
    "discard",
)
# redis-py's registered scripts: EVALSHA, and SCRIPT LOAD when the server does not know them.
_SCRIPTS = ("evalsha", "eval", "script|load", "script|exists")
_STREAM_READ = (
    "xlen",
    "xrange",
    "xrevrange",
    "xinfo|groups",
    "xinfo|stream",
    "xinfo|consumers",
    "xpending",
)
_CONSUMER = (
    *_STREAM_READ,
    "xreadgroup",
    "xautoclaim",
    "xclaim",
    "xack",
    "xgroup|create",
    "xgroup|createconsumer",
    "xgroup|delconsumer",
)
_HASH_WRITE = ("hset", "hsetnx", "hget", "hmget", "hgetall", "hdel", "hexists", "hincrby", "hlen")
# Job and request records: hashes, the request's job list, the job index, idempotency keys.
_RECORDS = (
    *_HASH_WRITE,
    "rpush",
    "lrange",
    "llen",
    "zadd",
    "zrem",
    "zscore",
    "zcard",
    "zrange",
    "zrevrange",
    "zrangebyscore",
    "zremrangebyscore",
    "set",
    "get",
    "exists",
    "del",
    "unlink",
    "expire",
    "pexpire",
    "persist",
    "ttl",
    "pttl",
)
_READ_ANYTHING = (
    *_STREAM_READ,
    "xread",
    "hget",
    "hmget",
    "hgetall",
    "hlen",
    "hexists",
    "hscan",
    "lrange",
    "llen",
    "lindex",
    "zrange",
    "zrevrange",
    "zrangebyscore",
    "zscore",
    "zcard",
    "get",
    "exists",
    "type",
    "ttl",
    "pttl",
    "memory|usage",
)


@dataclass(frozen=True)
class Grant:
    """Commands allowed on keys (glob patterns): one ACL selector. `read_only` keys are `%R~`."""

    commands: tuple[str, ...]
    keys: tuple[str, ...]
    read_only: bool = False

    def selector(self) -> str:
        key_prefix = "%R~" if self.read_only else "~"
        keys = " ".join(f"{key_prefix}{pattern}" for pattern in self.keys)
        commands = " ".join(f"+{command}" for command in self.commands)
        return f"({keys} {commands})"


@dataclass(frozen=True)
class Role:
    """One ACL user: its role, what it is for, keyless commands and its grants."""

    name: str
    purpose: str
    commands: tuple[str, ...]
    grants: tuple[Grant, ...]

    def username(self, namespace: str) -> str:
        return username(self.name, namespace)

    def rules(self) -> str:
        """The ACL rules after `user NAME on #DIGEST`: start from nothing, then allow."""
        keyless = " ".join(f"+{command}" for command in self.commands)
        selectors = " ".join(grant.selector() for grant in self.grants if grant.keys)
        return f"resetkeys resetchannels -@all {keyless} {selectors}".strip()


def username(role: str, namespace: str = "conveyor") -> str:
    """`conveyor-dispatcher`: users carry the namespace, so two deployments can share a server."""
    return f"{namespace}-{role}"


def _scripts_on(grants: Sequence[Grant]) -> Grant:
    # A script's declared keys are checked against EVALSHA's grant, then each call it makes
    # against the user's grants: the scripts may name any key the role may touch.
    keys = tuple(dict.fromkeys(key for grant in grants for key in grant.keys))
    return Grant(_SCRIPTS, keys)


def roles(
    namespace: str = "conveyor", legacy_lists: Iterable[str] = DEFAULT_LEGACY_LISTS
) -> dict[str, Role]:
    """Every role's user, for this namespace and these legacy lists."""
    keys = Keys(namespace)
    lists = tuple(legacy_lists)
    jobs_streams = keys.jobs("*")
    records = (keys.job("*"), keys.request("*"), keys.job_index)
    errors_of_events = keys.last_errors(keys.events)
    entries_of_events = keys.entry_jobs(keys.events)
    # Dead letters and results: added, measured, trimmed to their caps (the oldest dead letter
    # dropped at the cap), and the index that writes each entry's dead letter once.
    outcome_streams = (
        Grant(("xadd", "xlen", "xrange", "xdel", "xinfo|stream", "xinfo|groups", "xtrim"),
              (keys.dead, keys.results)),
        Grant(_HASH_WRITE, (keys.dead_index,)),
    )  # fmt: skip
    leader = keys.leader("autoscaler")

    dispatcher_grants = [
        # Reads events in its group, reclaims, acknowledges, trims; the bridge adds to it.
        Grant((*_CONSUMER, "xadd", "xtrim", "xdel"), (keys.events,)),
        Grant(_HASH_WRITE, (errors_of_events, entries_of_events)),
        Grant(("lpop", "llen"), lists),
        # Adds tile jobs; watches and trims the pools' streams.
        # Housekeeping removes the workers' idle consumers that hold nothing.
        Grant(
            (*_STREAM_READ, "xadd", "xtrim", "xgroup|create", "xgroup|delconsumer"),
            (jobs_streams,),
        ),
        Grant(_RECORDS, (*records, keys.dispatched("*"))),
        *outcome_streams,
    ]
    worker_grants = [
        # Its group on the jobs streams (and their `:errors` hashes).
        Grant((*_CONSUMER, *_HASH_WRITE), (jobs_streams,)),
        # The one job a worker adds: an ard worker expands a water classification search into
        # a job per dataset it finds in the index (which the dispatcher may not query), each
        # once (the set of those added, per run of the request).
        Grant(("xadd",), (keys.jobs("ard"),)),
        Grant(("sadd", "sismember", "scard", "expire"), (keys.expanded("*", "*"),)),
        Grant(_RECORDS, records),
        *outcome_streams,
    ]
    autoscaler_grants = [
        Grant(_STREAM_READ, (jobs_streams,), read_only=True),
        Grant(("set", "get", "pexpire", "pttl", "del"), (leader,)),
    ]
    operator_writes = [
        # `conveyor submit`, and `conveyor dead replay` back onto the stream an entry came from.
        Grant(("xadd",), (keys.events, jobs_streams)),
        Grant(("rpush",), lists),
        # `conveyor dead purge`, and replay's removal of what it put back.
        Grant(("xdel", "xtrim"), (keys.dead,)),
        Grant(("hset", "hdel"), (keys.dead_index,)),
        # Replayed jobs' records and idempotency keys.
        Grant(
            ("hset", "hdel", "zadd", "zrem", "del", "unlink", "expire", "pexpire", "persist"),
            (*records, keys.dispatched("*")),
        ),
    ]
    all_roles = (
        Role(
            "producer",
            "upstream systems and `conveyor submit`: XADD to the events stream, RPUSH to the "
            "legacy lists, nothing else",
            _CONNECTION,
            (Grant(("xadd",), (keys.events,)), Grant(("rpush",), lists)),
        ),
        Role(
            "dispatcher",
            "reads the events stream in its group and the legacy lists, adds tile jobs and their "
            "records, dead-letters invalid events, trims what every group has read",
            _CONNECTION,
            (*dispatcher_grants, _scripts_on(dispatcher_grants)),
        ),
        Role(
            "worker",
            "reads the jobs streams in group `workers`, renews, retries and acknowledges, "
            "records job states and results, dead-letters; adds the ard pool's per-scene water "
            "classification jobs of a search",
            _CONNECTION,
            (*worker_grants, _scripts_on(worker_grants)),
        ),
        Role(
            "autoscaler",
            "reads the jobs streams' groups and lengths (read-only), holds its leader lease",
            _CONNECTION,
            (*autoscaler_grants, _scripts_on(autoscaler_grants[1:])),
        ),
        Role(
            "keda",
            "KEDA's redis-streams scaler: XINFO, XPENDING and XLEN on the jobs streams, read-only",
            _CONNECTION,
            (
                Grant(
                    ("xlen", "xinfo|groups", "xinfo|stream", "xpending"),
                    (jobs_streams,),
                    read_only=True,
                ),
            ),
        ),
        Role(
            "operator",
            "people with `conveyor status/job/dead`: read everything of the namespace and the "
            "legacy lists, replay and purge dead letters, submit work",
            (*_CONNECTION, "info"),
            (
                Grant(_READ_ANYTHING, (f"{namespace}:*", *lists), read_only=True),
                *operator_writes,
                _scripts_on(operator_writes),
            ),
        ),
        Role(
            "exporter",
            "redis_exporter for Prometheus: INFO (memory, clients, keyspace), no keys",
            (*_CONNECTION, "info"),
            (),
        ),
    )
    return {role.name: role for role in all_roles}


def password_digest(password: str) -> str:
    """What an ACL file holds instead of the password: its SHA-256, hex."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def digest_placeholder(role: str) -> str:
    """Where the template wants a role's password digest (filled in at the server's start)."""
    return f"<{role}-password-sha256>"


def _header() -> list[str]:
    # ACL files take no comments. The first line switches the default user off: no connection
    # can authenticate as it. It keeps every permission because the server replays its AOF as
    # that user: Valkey checks a replayed MULTI/EXEC against it, and with no permissions would
    # drop every transaction (every Lua script's effects) on restart.
    return ["user default off resetchannels ~* &* +@all"]


def acl_template(
    namespace: str = "conveyor", legacy_lists: Iterable[str] = DEFAULT_LEGACY_LISTS
) -> str:
    """The ACL file with `<role-password-sha256>` where each password's digest goes."""
    lists = tuple(legacy_lists)
    lines = _header()
    for role in roles(namespace, lists).values():
        lines.append(
            f"user {role.username(namespace)} on #{digest_placeholder(role.name)} {role.rules()}"
        )
    return "\n".join(lines) + "\n"


def acl_file(
    passwords: Mapping[str, str],
    namespace: str = "conveyor",
    legacy_lists: Iterable[str] = DEFAULT_LEGACY_LISTS,
) -> str:
    """The ACL file for these passwords (by role); roles without one are left out."""
    lists = tuple(legacy_lists)
    unknown = sorted(set(passwords) - set(ROLES))
    if unknown:
        raise ValueError(f"no such role: {', '.join(unknown)} (roles: {', '.join(ROLES)})")
    lines = _header()
    for role in roles(namespace, lists).values():
        if role.name in passwords:
            digest = password_digest(passwords[role.name])
            lines.append(f"user {role.username(namespace)} on #{digest} {role.rules()}")
    return "\n".join(lines) + "\n"


def read_password_file(path: Path) -> str:
    """A password from a file as Kubernetes and Compose mount secrets (a final newline dropped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot read the password file {path}: {error.strerror}") from None
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise ValueError(f"the password file {path} is empty")
    return password


def write_password_files(directory: Path, roles_wanted: Iterable[str] = ROLES) -> dict[str, Path]:
    """A random password per role in `directory/<role>` (mode 0600), kept if already there."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    files: dict[str, Path] = {}
    for role in roles_wanted:
        path = directory / role
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32), encoding="utf-8")
        files[role] = path
    return files

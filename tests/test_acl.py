"""One Redis ACL user per role, on a real valkey-server started in ACL mode.

Each service runs through a real job under its own user; every command and key outside a role
is refused with NOPERM, scripts included; the server refuses writes when full instead of
evicting entries; passwords are stored only as digests.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, ResponseError

from shared.acl import (
    FORBIDDEN_COMMANDS,
    ROLES,
    acl_file,
    acl_template,
    digest_placeholder,
    password_digest,
    read_password_file,
    roles,
    username,
    write_password_files,
)
from shared.config import QueueSettings
from shared.embedded import ADMIN_USERNAME, EmbeddedValkey
from shared.keys import Keys
from tests.archive_support import ArchiveFixture, build_archive
from tests.processes import REPO, ServiceProcess, service_env, wait_ready, wait_until

NAMESPACE = "conveyor"
KEYS = Keys(NAMESPACE)
SMALL_BOX = (2130000.0, 3499700.0, 2133000.0, 3502700.0)


@dataclass
class AclServer:
    server: EmbeddedValkey
    password_files: dict[str, Path]
    admin_password: str

    @property
    def url(self) -> str:
        return self.server.url

    def password(self, role: str) -> str:
        return read_password_file(self.password_files[role])

    def client(self, role: str) -> redis.Redis:
        return redis.Redis(
            host=self.server.host,
            port=self.server.port,
            username=username(role, NAMESPACE),
            password=self.password(role),
            decode_responses=True,
        )

    def admin(self) -> redis.Redis:
        return redis.Redis(
            host=self.server.host,
            port=self.server.port,
            username=ADMIN_USERNAME,
            password=self.admin_password,
            decode_responses=True,
        )

    def environment(self, role: str, **extra: str) -> dict[str, str]:
        """A service's environment: its user, and its password in a file as a Secret mounts."""
        return service_env(
            self.url,
            NAMESPACE,
            CONVEYOR_REDIS_USERNAME=username(role, NAMESPACE),
            CONVEYOR_REDIS_PASSWORD_FILE=str(self.password_files[role]),
            **extra,
        )


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclServer]:
    root = Path(tmp_path_factory.mktemp("acl"))
    files = write_password_files(root / "secrets")
    admin_password = secrets.token_urlsafe(16)
    server = EmbeddedValkey(
        root / "valkey",
        acl_passwords={role: read_password_file(path) for role, path in files.items()},
        namespace=NAMESPACE,
        admin_password=admin_password,
    )
    server.start()
    yield AclServer(server, files, admin_password)
    server.stop()


@pytest.fixture
def clean(acl_server: AclServer) -> AclServer:
    acl_server.admin().flushall()
    return acl_server


# --- rendering ------------------------------------------------------------------------------


def test_the_template_with_digests_filled_in_is_the_acl_file() -> None:
    passwords = {role: f"{role}-password" for role in ROLES}
    filled = acl_template()
    for role, password in passwords.items():
        filled = filled.replace(digest_placeholder(role), password_digest(password))
    assert filled == acl_file(passwords)
    assert "password" not in acl_file(passwords).replace("-password-sha256", "")


def test_rules_follow_the_namespace_and_the_legacy_lists() -> None:
    rendered = acl_template("eo", ["queueA"])
    assert "user eo-dispatcher on" in rendered
    assert "~eo:events" in rendered and "~queueA" in rendered
    assert "conveyor:" not in rendered and "jobProduct" not in rendered


def test_no_role_is_given_a_forbidden_command_or_every_key() -> None:
    for role in roles().values():
        rules = role.rules()
        assert "+@all" not in rules and "~*" not in rules.split() and "allkeys" not in rules
        assert "&" not in rules, f"{role.name} may use pub/sub channels"
        for command in FORBIDDEN_COMMANDS:
            assert f"+{command} " not in f"{rules} " and f"+{command})" not in rules
        # Commands new in Redis 7.2 would make a 7.0 server refuse the whole ACL file.
        assert "client|setinfo" not in rules and "client|no-touch" not in rules


def test_a_password_file_loses_its_final_newline_only(tmp_path: Path) -> None:
    (tmp_path / "p").write_text("s3cret pass\n")
    assert read_password_file(tmp_path / "p") == "s3cret pass"
    settings = QueueSettings(redis_password_file=tmp_path / "p")
    assert settings.redis_password_value() == "s3cret pass"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_password_file(tmp_path / "empty")


# --- the server -----------------------------------------------------------------------------


def test_the_default_user_is_off_and_the_acl_file_holds_only_digests(
    acl_server: AclServer,
) -> None:
    anonymous = redis.Redis(host=acl_server.server.host, port=acl_server.server.port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    stored = acl_server.server.acl_path.read_text()
    for role in ROLES:
        assert acl_server.password(role) not in stored
        assert password_digest(acl_server.password(role)) in stored
    assert acl_server.server.acl_path.stat().st_mode & 0o077 == 0
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(
            host=acl_server.server.host,
            port=acl_server.server.port,
            username=username("dispatcher"),
            password=acl_server.password("worker"),
        ).ping()


FORBIDDEN_CALLS: dict[str, tuple[str, ...]] = {
    "flushall": ("FLUSHALL",),
    "flushdb": ("FLUSHDB",),
    "config": ("CONFIG", "GET", "maxmemory"),
    "acl": ("ACL", "SETUSER", "intruder", "on", "nopass", "+@all", "~*"),
    "keys": ("KEYS", "*"),
    "debug": ("DEBUG", "SLEEP", "0"),
    "shutdown": ("SHUTDOWN", "NOSAVE"),
    "module": ("MODULE", "LIST"),
    "monitor": ("MONITOR",),
    "replicaof": ("REPLICAOF", "127.0.0.1", "1"),
    "slaveof": ("SLAVEOF", "127.0.0.1", "1"),
    "migrate": ("MIGRATE", "127.0.0.1", "1", "k", "0", "1"),
    "restore": ("RESTORE", "k", "0", "x"),
    "save": ("SAVE",),
    "bgsave": ("BGSAVE",),
    "bgrewriteaof": ("BGREWRITEAOF",),
    "swapdb": ("SWAPDB", "0", "1"),
    "client|kill": ("CLIENT", "KILL", "ID", "999999"),
    "client|pause": ("CLIENT", "PAUSE", "1"),
    "script|flush": ("SCRIPT", "FLUSH"),
    "function|flush": ("FUNCTION", "FLUSH"),
    "sort": ("SORT", "conveyor:events"),
}


def test_every_forbidden_command_is_known_to_the_test() -> None:
    assert set(FORBIDDEN_CALLS) == set(FORBIDDEN_COMMANDS)


@pytest.mark.parametrize("role", ROLES)
def test_no_role_may_run_an_administrative_command(acl_server: AclServer, role: str) -> None:
    client = acl_server.client(role)
    assert client.ping() is True
    admin = acl_server.admin()
    for command, call in FORBIDDEN_CALLS.items():
        # The server's own verdict for this user, without running anything.
        verdict = admin.execute_command("ACL", "DRYRUN", username(role), *call)
        assert verdict != "OK" and "no permissions" in str(verdict).lower(), (role, command)
    # And said to the user's face, for those that would do harm if they ran.
    for command in ("flushall", "flushdb", "config", "acl", "keys", "shutdown", "swapdb"):
        with pytest.raises(NoPermissionError):
            client.execute_command(*FORBIDDEN_CALLS[command])
            pytest.fail(f"{role} ran {command}")
    with pytest.raises(NoPermissionError):
        client.publish("channel", "message")
    # The server is still there and unchanged: nobody shut it down or added a user.
    assert "intruder" not in admin.acl_users()


def _seed_streams(admin: redis.Redis) -> None:
    for stream, group in ((KEYS.events, "dispatcher"), (KEYS.jobs("product"), "workers")):
        admin.xgroup_create(stream, group, id="0", mkstream=True)
    admin.xadd(KEYS.jobs("product"), {"job": "{}"})
    admin.xadd(KEYS.dead, {"reason": "x"})
    admin.hset(KEYS.job("j1"), mapping={"state": "queued"})
    admin.rpush("jobProduct", "{}")
    admin.set("unrelated:key", "1")


# (role, command, expected): True allowed, False refused with NOPERM.
KEY_CASES: list[tuple[str, tuple[str, ...], bool]] = [
    ("producer", ("XADD", KEYS.events, "*", "payload", "{}"), True),
    ("producer", ("RPUSH", "jobProduct", "{}"), True),
    ("producer", ("RPUSH", "jobS2", "{}"), True),
    ("producer", ("RPUSH", "jobWater", "{}"), True),
    ("producer", ("XADD", KEYS.jobs("product"), "*", "job", "{}"), False),
    ("producer", ("XADD", KEYS.dead, "*", "x", "y"), False),
    ("producer", ("XADD", "jobProduct", "*", "x", "y"), False),
    ("producer", ("RPUSH", KEYS.events, "x"), False),
    ("producer", ("XRANGE", KEYS.events, "-", "+"), False),
    ("producer", ("HSET", KEYS.job("j1"), "state", "done"), False),
    ("producer", ("GET", "unrelated:key"), False),
    (
        "dispatcher",
        ("XREADGROUP", "GROUP", "dispatcher", "d", "COUNT", "1", "STREAMS", KEYS.events, ">"),
        True,
    ),
    ("dispatcher", ("XADD", KEYS.jobs("product"), "*", "job", "{}"), True),
    ("dispatcher", ("LPOP", "jobProduct"), True),
    ("dispatcher", ("LPOP", "jobWater"), True),
    ("dispatcher", ("SET", KEYS.dispatched("r1"), "1", "NX", "EX", "60"), True),
    ("dispatcher", ("SET", KEYS.leader("autoscaler"), "me"), False),
    (
        "dispatcher",
        ("XREADGROUP", "GROUP", "workers", "d", "COUNT", "1", "STREAMS", KEYS.jobs("product"), ">"),
        False,
    ),
    ("dispatcher", ("GET", "unrelated:key"), False),
    ("dispatcher", ("DEL", "unrelated:key"), False),
    (
        "worker",
        ("XREADGROUP", "GROUP", "workers", "w", "COUNT", "1", "STREAMS", KEYS.jobs("product"), ">"),
        True,
    ),
    ("worker", ("HSET", KEYS.job("j1"), "state", "running"), True),
    ("worker", ("XADD", KEYS.results, "*", "type", "job"), True),
    ("worker", ("XADD", KEYS.jobs("product"), "*", "job", "{}"), False),
    # An ard worker adds the per-scene jobs of a water classification search, each once.
    ("worker", ("XADD", KEYS.jobs("ard"), "*", "job", "{}"), True),
    ("worker", ("SADD", KEYS.expanded("j1", "1"), "j2"), True),
    ("worker", ("SADD", KEYS.dispatched("r1"), "j2"), False),
    ("worker", ("XADD", KEYS.events, "*", "payload", "{}"), False),
    (
        "worker",
        ("XREADGROUP", "GROUP", "dispatcher", "w", "COUNT", "1", "STREAMS", KEYS.events, ">"),
        False,
    ),
    ("worker", ("SET", KEYS.dispatched("r1"), "1"), False),
    ("worker", ("LPOP", "jobProduct"), False),
    ("worker", ("XTRIM", KEYS.jobs("product"), "MAXLEN", "0"), False),
    ("autoscaler", ("XINFO", "GROUPS", KEYS.jobs("product")), True),
    ("autoscaler", ("XPENDING", KEYS.jobs("product"), "workers"), True),
    ("autoscaler", ("XRANGE", KEYS.jobs("product"), "-", "+", "COUNT", "5"), True),
    ("autoscaler", ("SET", KEYS.leader("autoscaler"), "me", "NX", "PX", "1000"), True),
    ("autoscaler", ("XADD", KEYS.jobs("product"), "*", "job", "{}"), False),
    ("autoscaler", ("XTRIM", KEYS.jobs("product"), "MAXLEN", "0"), False),
    (
        "autoscaler",
        ("XREADGROUP", "GROUP", "workers", "a", "COUNT", "1", "STREAMS", KEYS.jobs("product"), ">"),
        False,
    ),
    ("autoscaler", ("XINFO", "GROUPS", KEYS.events), False),
    ("autoscaler", ("SET", KEYS.job("j1"), "x"), False),
    ("keda", ("XINFO", "GROUPS", KEYS.jobs("product")), True),
    ("keda", ("XPENDING", KEYS.jobs("product"), "workers"), True),
    ("keda", ("XLEN", KEYS.jobs("product")), True),
    ("keda", ("XADD", KEYS.jobs("product"), "*", "job", "{}"), False),
    ("keda", ("XACK", KEYS.jobs("product"), "workers", "0-1"), False),
    ("keda", ("SET", KEYS.leader("autoscaler"), "keda"), False),
    ("keda", ("XLEN", KEYS.events), False),
    ("operator", ("XRANGE", KEYS.dead, "-", "+"), True),
    ("operator", ("HGETALL", KEYS.job("j1")), True),
    ("operator", ("LLEN", "jobProduct"), True),
    ("operator", ("INFO", "memory"), True),
    ("operator", ("XADD", KEYS.events, "*", "payload", "{}"), True),
    ("operator", ("XADD", KEYS.jobs("product"), "*", "job", "{}"), True),
    ("operator", ("XTRIM", KEYS.dead, "MAXLEN", "100"), True),
    (
        "operator",
        ("XREADGROUP", "GROUP", "workers", "o", "COUNT", "1", "STREAMS", KEYS.jobs("product"), ">"),
        False,
    ),
    ("operator", ("XACK", KEYS.jobs("product"), "workers", "0-1"), False),
    ("operator", ("LPOP", "jobProduct"), False),
    ("operator", ("GET", "unrelated:key"), False),
    ("operator", ("XADD", KEYS.results, "*", "type", "job"), False),
    ("exporter", ("INFO", "memory"), True),
    ("exporter", ("XLEN", KEYS.events), False),
    ("exporter", ("GET", "unrelated:key"), False),
]


@pytest.mark.parametrize(
    ("role", "command", "allowed"),
    KEY_CASES,
    ids=[
        f"{role}-{' '.join(command[:2])}-{'ok' if ok else 'NOPERM'}"
        for role, command, ok in KEY_CASES
    ],
)
def test_each_role_may_touch_only_its_keys(
    clean: AclServer, role: str, command: tuple[str, ...], allowed: bool
) -> None:
    _seed_streams(clean.admin())
    client = clean.client(role)
    if allowed:
        client.execute_command(*command)
    else:
        with pytest.raises(NoPermissionError):
            client.execute_command(*command)


def test_every_role_is_covered_by_the_key_cases() -> None:
    assert {role for role, _command, _ok in KEY_CASES} == set(ROLES)


def test_scripts_run_with_their_callers_permissions(clean: AclServer) -> None:
    """A worker's Lua cannot do what the worker may not: XADD onto a jobs stream."""
    worker = clean.client("worker")
    sneak = "return redis.call('XADD', KEYS[1], '*', 'job', '{}')"
    assert worker.eval("return redis.call('XADD', KEYS[1], '*', 'type', 'job')", 1, KEYS.results)
    with pytest.raises(ResponseError, match=r"(?i)permission|NOPERM"):
        worker.eval(sneak, 1, KEYS.jobs("product"))
    # Declaring an allowed key and touching another one inside is refused too.
    with pytest.raises(ResponseError, match=r"(?i)permission|NOPERM"):
        worker.eval(
            "return redis.call('XADD', ARGV[1], '*', 'job', '{}')",
            1,
            KEYS.results,
            KEYS.jobs("product"),
        )
    assert clean.admin().xlen(KEYS.jobs("product")) == 0


def test_a_server_restarted_in_acl_mode_replays_every_transaction_from_its_aof(
    tmp_path: Path,
) -> None:
    """Scripts and transactions reach the AOF as MULTI/EXEC, which the server replays as its
    default user: off (nobody may log in as it) yet allowed, or every one would be dropped."""
    passwords = {"worker": "w"}
    server = EmbeddedValkey(tmp_path / "valkey", acl_passwords=passwords)
    server.start()
    worker = redis.Redis(port=server.port, username=username("worker"), password="w")
    worker.eval("redis.call('HSET', KEYS[1], 'state', 'done'); return 1", 1, KEYS.job("j1"))
    pipe = worker.pipeline(transaction=True)
    pipe.hset(KEYS.job("j2"), "state", "running")
    pipe.xadd(KEYS.results, {"type": "job", "job_id": "j2"})
    pipe.execute()
    server.stop()  # SIGTERM: the AOF is fsynced; the restart below replays it
    server.start()
    try:
        again = redis.Redis(port=server.port, username=username("worker"), password="w")
        assert again.hget(KEYS.job("j1"), "state") == b"done"
        assert again.hget(KEYS.job("j2"), "state") == b"running"
        assert again.xlen(KEYS.results) == 1
        log = (tmp_path / "valkey" / "valkey.log").read_text()
        assert "NOPERM" not in log
    finally:
        server.stop()


# --- memory ---------------------------------------------------------------------------------


def test_a_full_server_refuses_writes_and_keeps_every_entry(tmp_path: Path) -> None:
    passwords = {"producer": "p", "dispatcher": "d"}
    server = EmbeddedValkey(
        tmp_path / "valkey", maxmemory="3mb", acl_passwords=passwords, admin_password="a"
    )
    server.start()
    try:
        admin = redis.Redis(port=server.port, username=ADMIN_USERNAME, password="a")
        assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert admin.config_get("maxmemory") == {"maxmemory": str(3 * 1024 * 1024)}
        producer = redis.Redis(port=server.port, username=username("producer"), password="p")
        added = 0
        payload = "x" * 4096
        with pytest.raises(redis.exceptions.OutOfMemoryError, match="maxmemory"):
            for _ in range(10_000):
                producer.xadd(KEYS.events, {"payload": payload})
                added += 1
        assert 0 < added < 10_000
        # Nothing was evicted to make room; reading still works.
        assert admin.xlen(KEYS.events) == added
        dispatcher = redis.Redis(port=server.port, username=username("dispatcher"), password="d")
        assert dispatcher.xlen(KEYS.events) == added
    finally:
        server.stop()


# --- the services, each under its own user --------------------------------------------------


@pytest.fixture(scope="module")
def small_archive(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> ArchiveFixture:
    return build_archive(
        postgres_url,
        Path(tmp_path_factory.mktemp("acl-archive")),
        "ls8_usgs_sr_scene",
        (2129000.0, 3498000.0, 2135000.0, 3504000.0),
        date(2019, 1, 1),
        date(2019, 2, 28),
    )


def _ndvi_item(**extra: str) -> dict[str, str]:
    return {
        "job_code": "ndvi",
        "product": "ls8_usgs_sr_scene",
        "query_x_from": str(SMALL_BOX[0]),
        "query_y_from": str(SMALL_BOX[1]),
        "query_x_to": str(SMALL_BOX[2]),
        "query_y_to": str(SMALL_BOX[3]),
        "query_crs": "EPSG:3460",
        "time_from": "2019-01-01",
        "time_to": "2019-02-28",
        "output_crs": "EPSG:3460",
        "prefix": "acl/test",
    } | extra


def _conveyor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from services.cli.app import app; app()", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _no_permission_errors(*services: ServiceProcess) -> None:
    for service in services:
        text = service.output
        assert "NOPERM" not in text and "no permissions" not in text.lower(), text[-3000:]


async def test_every_service_does_its_work_under_its_own_user(
    clean: AclServer, small_archive: ArchiveFixture, tmp_path: Path
) -> None:
    admin = aioredis.Redis(
        port=clean.server.port,
        username=ADMIN_USERNAME,
        password=clean.admin_password,
        decode_responses=True,
    )
    output = tmp_path / "out"
    common = {"CONVEYOR_BLOCK_MS": "100", "CONVEYOR_DASK_THREADS": "1"}
    dispatcher = ServiceProcess(
        "services.dispatcher", clean.environment("dispatcher", **common), [], tmp_path / "d.log"
    )
    worker = ServiceProcess(
        "services.worker",
        clean.environment(
            "worker", **common, CONVEYOR_OUTPUT_URL=str(output), **small_archive.environment
        ),
        ["--pool", "product"],
        tmp_path / "w.log",
    )
    autoscaler = ServiceProcess(
        "services.autoscaler",
        clean.environment(
            "autoscaler",
            CONVEYOR_AUTOSCALER_BACKEND="dry-run",
            CONVEYOR_POLL_INTERVAL_SECONDS="0.2",
        ),
        [],
        tmp_path / "a.log",
    )
    services = (dispatcher, worker, autoscaler)
    try:
        for service in services:
            await wait_ready(service)
        # Upstream: the producer submits on the events stream and on the legacy list.
        producer = clean.environment("producer")
        submitted = _conveyor(producer, "submit", json.dumps(_ndvi_item()))
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        legacy = _conveyor(producer, "submit", "--legacy", json.dumps(_ndvi_item(prefix="acl/l")))
        assert legacy.returncode == 0, legacy.stdout + legacy.stderr
        invalid = _conveyor(
            producer, "submit", "--no-check", json.dumps(_ndvi_item(time_from="2019-13-01"))
        )
        assert invalid.returncode == 0, invalid.stdout + invalid.stderr

        async def finished() -> bool:
            results = await admin.xrange(KEYS.results)
            requests = [fields for _id, fields in results if fields.get("type") == "request"]
            return len(requests) == 2 and await admin.xlen(KEYS.dead) == 1

        await wait_until(finished, timeout=240)
        states = [
            await admin.hget(KEYS.job(job_id), "state")
            for job_id in await admin.zrange(KEYS.job_index, 0, -1)
        ]
        assert states and set(states) == {"done"}, states
        assert sorted(output.rglob("*.odc-metadata.yaml"))
        assert await admin.llen("jobProduct") == 0
        assert await admin.get(KEYS.leader("autoscaler"))

        # The operator inspects, then replays the dead letter and purges nothing else.
        operator = clean.environment("operator")
        status = _conveyor(operator, "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert report["dead_letters"] == 1 and report["jobs_by_state"] == {"done": len(states)}
        dead = _conveyor(operator, "dead", "list", "--json")
        assert dead.returncode == 0 and "2019-13-01" in dead.stdout
        replayed = _conveyor(operator, "dead", "replay", "--all")
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr

        async def dead_lettered_again() -> bool:
            entries = await admin.xrange(KEYS.dead)
            return (
                len(entries) == 1
                and entries[0][1]["entry_id"] != json.loads(dead.stdout)[0]["entry_id"]
            )

        await wait_until(dead_lettered_again, timeout=60)
        # And a producer cannot do the operator's part.
        refused = _conveyor(producer, "dead", "list")
        assert refused.returncode != 0
        assert "permission" in (refused.stdout + refused.stderr).lower()
        _no_permission_errors(*services)
        assert worker.terminate() == 0
        assert dispatcher.terminate() == 0
        assert autoscaler.terminate() == 0
        _no_permission_errors(*services)
    finally:
        for service in services:
            service.close()
        await admin.aclose()


async def test_water_classification_runs_under_the_producer_dispatcher_and_worker_users(
    clean: AclServer, small_archive: ArchiveFixture, tmp_path: Path
) -> None:
    """A search on jobWater becomes a job per scene, added by the ard worker under its user."""
    admin = aioredis.Redis(
        port=clean.server.port,
        username=ADMIN_USERNAME,
        password=clean.admin_password,
        decode_responses=True,
    )
    common = {"CONVEYOR_BLOCK_MS": "100", "CONVEYOR_DASK_THREADS": "1"}
    dispatcher = ServiceProcess(
        "services.dispatcher", clean.environment("dispatcher", **common), [], tmp_path / "d.log"
    )
    worker = ServiceProcess(
        "services.worker",
        clean.environment(
            "worker", **common, CONVEYOR_OUTPUT_URL=str(tmp_path / "out"),
            CONVEYOR_SCRATCH_ROOT=str(tmp_path / "scratch"), **small_archive.environment,
        ),
        ["--pool", "ard"],
        tmp_path / "w.log",
    )  # fmt: skip
    item = {
        "job_code": "water_classification",
        "product": "ls8_usgs_sr_scene",
        "query_x_from": str(SMALL_BOX[0]),
        "query_y_from": str(SMALL_BOX[1]),
        "query_x_to": str(SMALL_BOX[2]),
        "query_y_to": str(SMALL_BOX[3]),
        "query_crs": "EPSG:3460",
        "time_from": "2019-01-01",
        "time_to": "2019-02-28",
    }
    services = (dispatcher, worker)
    try:
        for service in services:
            await wait_ready(service)
        with clean.client("producer") as producer:
            producer.rpush("jobWater", json.dumps(item))

        async def finished() -> bool:
            results = await admin.xrange(KEYS.results)
            return any(fields.get("type") == "request" for _id, fields in results)

        await wait_until(finished, timeout=240)
        states = [
            await admin.hget(KEYS.job(job_id), "state")
            for job_id in await admin.zrange(KEYS.job_index, 0, -1)
        ]
        scenes = len(small_archive.records)
        assert sorted(states) == ["done"] * (scenes + 1), states
        assert len(list((tmp_path / "out").rglob("*.odc-metadata.yaml"))) == scenes
        assert await admin.xlen(KEYS.dead) == 0
        _no_permission_errors(*services)
    finally:
        for service in services:
            service.close()
        await admin.aclose()


def test_workers_started_by_the_local_backend_connect_as_the_worker_user() -> None:
    from services.autoscaler.backends.local import worker_environment

    autoscaler = {
        "CONVEYOR_REDIS_USERNAME": "conveyor-autoscaler",
        "CONVEYOR_REDIS_PASSWORD": "autoscaler-secret",
        "CONVEYOR_WORKER_REDIS_USERNAME": "conveyor-worker",
        "CONVEYOR_WORKER_REDIS_PASSWORD_FILE": "/run/secrets/worker",
        "CONVEYOR_NAMESPACE": "conveyor",
    }
    environment = worker_environment(autoscaler)
    assert environment == {
        "CONVEYOR_REDIS_USERNAME": "conveyor-worker",
        "CONVEYOR_REDIS_PASSWORD_FILE": "/run/secrets/worker",
        "CONVEYOR_NAMESPACE": "conveyor",
    }
    assert worker_environment({"CONVEYOR_REDIS_PASSWORD": "p"}) == {"CONVEYOR_REDIS_PASSWORD": "p"}


def test_conveyor_acl_template_prints_what_the_deployments_ship() -> None:
    from typer.testing import CliRunner

    from services.cli.app import app

    result = CliRunner().invoke(app, ["acl", "template"])
    assert result.exit_code == 0, result.output
    assert result.output == (REPO / "deploy" / "redis" / "users.acl.template").read_text()
    other = CliRunner().invoke(app, ["acl", "template", "--namespace", "eo", "--legacy-list", "q"])
    assert "user eo-worker on" in other.output and "~q " in other.output


async def test_the_embedded_queue_a_command_starts_has_the_configured_maxmemory(
    tmp_path: Path,
) -> None:
    from shared.redis_connection import queue_url

    settings = QueueSettings(state_dir=tmp_path, embedded_maxmemory="64mb")
    url, server = queue_url(settings)
    assert server is not None
    try:
        client = redis.Redis.from_url(url, decode_responses=True)
        assert client.config_get("maxmemory") == {"maxmemory": str(64 * 1024 * 1024)}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    finally:
        server.stop()

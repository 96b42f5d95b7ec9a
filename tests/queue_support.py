"""Requests dispatched for real, consumer groups and fault injection for the queue tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.dispatcher.service import Dispatcher
from shared.config import ConsumerSettings, DispatcherSettings
from shared.jobs import ProductJob, decode_job
from shared.keys import WORKER_GROUP, Keys
from shared.streams import ConsumerGroup


def worker_group(
    redis: aioredis.Redis, namespace: str, name: str, *, pool: str = "product", **settings: Any
) -> ConsumerGroup:
    from services.worker.service import job_of_fields

    keys = Keys(namespace)
    return ConsumerGroup(
        redis, stream=keys.jobs(pool), group=WORKER_GROUP, consumer=name, keys=keys,
        settings=ConsumerSettings.model_construct(**settings), service="worker",
        job_of=job_of_fields,
    )  # fmt: skip


TILE_METRES = 900.0


def tile_request(number: int = 0, *, tiles: int = 1) -> dict[str, str]:
    """A product request over `tiles` whole 900 m tiles of the grid, inside the seed box."""
    x = TILE_METRES * (2367 + number * 20)
    y = TILE_METRES * 3889
    return {
        "job_code": "ndvi",
        "product": "ls8_usgs_sr_scene",
        "query_x_from": str(x),
        "query_y_from": str(y),
        "query_x_to": str(x + TILE_METRES * tiles),
        "query_y_to": str(y + TILE_METRES),
        "query_crs": "EPSG:3460",
        "time_from": "2019-01-01",
        "time_to": "2019-02-28",
        "output_crs": "EPSG:3460",
        "prefix": f"tests/{number}",
    }


async def dispatch_request(
    redis: aioredis.Redis, redis_url: str, namespace: str, number: int = 0, *, jobs: int = 3
) -> list[ProductJob]:
    """Dispatch one request of `jobs` tile jobs through the real dispatcher; returns its jobs."""
    keys = Keys(namespace)
    settings = DispatcherSettings(
        redis_url=redis_url,  # type: ignore[arg-type]
        namespace=namespace,
        block_ms=50,
        tile_size=TILE_METRES,
        lease_seconds=5,
        legacy_bridge=False,
    )
    dispatcher = Dispatcher(redis, settings, check=None)
    await dispatcher.group.ensure()
    await redis.xadd(keys.events, {"payload": json.dumps(tile_request(number, tiles=jobs))})
    while deliveries := await dispatcher.group.read(100, 50):
        for delivery in deliveries:
            await dispatcher.handle_safely(delivery)
    request_jobs = [
        job
        for _id, fields in await redis.xrange(keys.jobs("product"))
        if isinstance(job := decode_job(fields), ProductJob)
    ]
    mine = [job for job in request_jobs if job.prefix == f"tests/{number}"]
    assert len(mine) == jobs, f"expected {jobs} tile jobs, the dispatcher made {len(mine)}"
    return mine


async def idle_ms(redis: aioredis.Redis, stream: str, group: str, entry_id: str) -> int | None:
    """How long the server says the entry has been idle; None when it is not pending."""
    [info, *_] = (await redis.xpending_range(stream, group, entry_id, entry_id, 1)) or [None]
    return None if info is None else int(info["time_since_delivered"])


async def holder(redis: aioredis.Redis, stream: str, group: str, entry_id: str) -> str | None:
    [info, *_] = (await redis.xpending_range(stream, group, entry_id, entry_id, 1)) or [None]
    return None if info is None else str(info["consumer"])


@dataclass
class ReplyDroppingProxy:
    """A TCP proxy in front of the server that can lose the reply to one command.

    `drop_reply_to(marker)`: the next command whose bytes contain `marker` is forwarded and run
    by the server, but its reply never reaches the client: the connection is closed instead, as
    when a network fault hits between the server running a command and the client reading the
    answer. redis-py then reconnects and sends the command again.
    """

    upstream_host: str
    upstream_port: int
    port: int = 0
    dropped: int = 0
    _marker: bytes | None = None
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{self.port}/0"

    def drop_reply_to(self, marker: str) -> None:
        self._marker = marker.encode()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        server_in, server_out = await asyncio.open_connection(
            self.upstream_host, self.upstream_port
        )
        losing = asyncio.Event()

        async def upstream() -> None:
            while data := await client_in.read(65536):
                if self._marker is not None and self._marker in data:
                    self._marker = None
                    losing.set()
                server_out.write(data)
                await server_out.drain()

        async def downstream() -> None:
            while data := await server_in.read(65536):
                if losing.is_set():
                    self.dropped += 1
                    break  # the server answered; the client never hears it
                client_out.write(data)
                await client_out.drain()

        pumps = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
            self._tasks.discard(pump)
        for writer in (client_out, server_out):
            with contextlib.suppress(Exception):
                writer.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    from tests.processes import wait_until

    await wait_until(check, timeout=timeout, interval=0.02)


class Replica:
    """A `valkey-server` replicating a primary on loopback, for failovers (`FAILOVER TO`)."""

    def __init__(self, primary_port: int, data_dir: Path) -> None:
        import subprocess

        from shared.embedded import free_port, valkey_server_binary

        data_dir.mkdir(parents=True, exist_ok=True)
        self.primary_port = primary_port
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                str(valkey_server_binary()), "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--replicaof", "127.0.0.1", str(primary_port),
                "--logfile", str(data_dir / "valkey.log"), "--protected-mode", "no",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


async def _role(port: int) -> dict[str, str]:
    client = aioredis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    try:
        return {str(k): str(v) for k, v in (await client.info("replication")).items()}
    finally:
        await client.aclose()


async def wait_replicating(replica: Replica, timeout: float = 30.0) -> None:
    async def in_sync() -> bool:
        try:
            info = await _role(replica.port)
        except (OSError, ConnectionError, RedisError):
            return False
        return info.get("master_link_status") == "up"

    await eventually(in_sync, timeout)


async def fail_over(from_port: int, to_port: int, timeout: float = 30.0) -> None:
    """Make `to_port` the primary and `from_port` its replica, as a managed failover does:
    clients of `from_port` are refused writes (READONLY) and blocked reads are released
    (UNBLOCKED) until it is primary again."""
    client = aioredis.Redis(host="127.0.0.1", port=from_port, decode_responses=True)
    try:

        async def switched() -> bool:
            try:
                await client.execute_command(
                    "FAILOVER", "TO", "127.0.0.1", to_port, "TIMEOUT", 5000
                )
            except RedisError as error:
                if "replica" not in str(error).lower() and "progress" not in str(error).lower():
                    raise
            info = await _role(from_port)
            return info.get("role") == "slave" and (await _role(to_port)).get("role") == "master"

        await eventually(switched, timeout)
    finally:
        await client.aclose()

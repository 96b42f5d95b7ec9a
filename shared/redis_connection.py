"""Connecting to the queue: URL with ACL user/password, TLS, retries; or the embedded server."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.config import QueueSettings, scrub_url
from shared.embedded import EmbeddedValkey, embedded_queue
from shared.wire import ENCODING_ERRORS

log = structlog.get_logger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
)


def connect(url: str, settings: QueueSettings | None = None) -> aioredis.Redis:
    """An asyncio client (hiredis parser when installed) that retries passing faults.

    Replies are decoded with `surrogateescape`: a byte that is not UTF-8 (anyone can `XADD` one)
    becomes a lone surrogate instead of a `UnicodeDecodeError` inside the reply parser, and
    `shared.wire.raw_bytes` gives the exact bytes back.
    """
    options: dict[str, object] = {
        "decode_responses": True,
        "encoding_errors": ENCODING_ERRORS,
        "health_check_interval": 15,
        "socket_keepalive": True,
        "socket_connect_timeout": 5,
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        # No CLIENT SETINFO on connect: the ACL users do not grant it (Redis 7.0 has none).
        "lib_name": None,
        "lib_version": None,
    }
    if settings is not None:
        if settings.redis_username:
            options["username"] = settings.redis_username
        password = settings.redis_password_value()
        if password is not None:
            options["password"] = password
        if url.startswith("rediss://"):
            if settings.redis_tls_ca_file is not None:
                options["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
            if settings.redis_tls_insecure:
                options["ssl_cert_reqs"] = ssl.CERT_NONE
                options["ssl_check_hostname"] = False
    return aioredis.Redis.from_url(url, **options)  # type: ignore[arg-type]


def queue_url(settings: QueueSettings, role: str = "operator") -> tuple[str, EmbeddedValkey | None]:
    """The configured queue, or an embedded valkey-server under the state directory.

    The embedded server is reused when an earlier command left it running, so `conveyor submit`
    and the services started by `conveyor demo` talk to the same queue. Where the state
    directory holds the demo's role passwords, the server has one user per role and the URL
    carries `role`'s (the CLI's commands are the operator's).
    """
    configured = settings.configured_redis_url()
    if configured is not None:
        return configured, None
    server = embedded_queue(
        settings.state_dir, maxmemory=settings.embedded_maxmemory, namespace=settings.namespace
    )
    running = server.running_instance()
    server.start(reuse=True)
    log.info("using embedded queue", url=server.url, reused=running is not None)
    return server.url_as(role), (None if running is not None else server)


@asynccontextmanager
async def open_queue(
    settings: QueueSettings, role: str = "operator"
) -> AsyncIterator[aioredis.Redis]:
    """A client for the configured queue, or for an embedded one started (and stopped) here."""
    url, started_server = queue_url(settings, role)
    client = connect(url, settings)
    log.info("queue connection", url=scrub_url(url))
    try:
        yield client
    finally:
        await client.aclose()
        if started_server is not None:
            # The AOF keeps the queue for the next command that starts the server again.
            started_server.stop()

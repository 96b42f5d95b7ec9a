"""`rediss://` with an ACL user: a real TLS handshake in front of the real server.

The embedded valkey-server is built without TLS, so the test terminates TLS in a small proxy with
a certificate made here and forwards the bytes to the server, as a cloud Redis endpoint would.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from shared.config import QueueSettings
from shared.keys import Keys
from shared.redis_connection import connect
from shared.streams import ConsumerGroup


def make_certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
async def tls_endpoint(redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    cert_path, key_path = make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    host, port = redis_url.split("//")[1].split("/")[0].split(":")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        server_reader, server_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    tls_port = server.sockets[0].getsockname()[1]
    yield tls_port, cert_path
    server.close()


async def test_rediss_url_with_acl_user_and_ca_file_works_end_to_end(
    tls_endpoint: tuple[int, Path], redis_client: aioredis.Redis, namespace: str
) -> None:
    tls_port, ca_file = tls_endpoint
    await redis_client.execute_command(
        "ACL", "SETUSER", "tlsuser", "on", ">tls-secret", "~*", "&*", "+@all"
    )
    settings = QueueSettings(
        redis_url=f"rediss://tlsuser:tls-secret@localhost:{tls_port}/0",  # type: ignore[arg-type]
        redis_tls_ca_file=ca_file,
    )
    client = connect(settings.configured_redis_url() or "", settings)
    assert await client.execute_command("ACL", "WHOAMI") == "tlsuser"
    keys = Keys(namespace)
    group = ConsumerGroup(client, stream=keys.events, group="dispatcher", consumer="tls", keys=keys)
    await group.ensure()
    await client.xadd(keys.events, {"n": "1"})
    [delivery] = await group.read(1, 100)
    await group.ack([delivery.entry_id])
    assert (await group.stats()).pending == 0
    await client.aclose()


async def test_an_untrusted_certificate_is_refused(tls_endpoint: tuple[int, Path]) -> None:
    tls_port, _ca_file = tls_endpoint
    settings = QueueSettings(redis_url=f"rediss://localhost:{tls_port}/0")  # type: ignore[arg-type]
    client = connect(settings.configured_redis_url() or "", settings)
    with pytest.raises(Exception, match=r"(?i)certificate"):
        await client.ping()
    await client.aclose()

"""Where product files land: a local directory or an S3 bucket, behind one small async interface.

Keys are relative POSIX paths (`prefix/product/x022/y036/...`). Every `put` is atomic: a local
file is written under a temporary name in the same folder, flushed and renamed over the final
name; an S3 object appears whole when its PUT (or multipart completion) succeeds. A reader thus
never sees half a file, and a rerun simply overwrites what an interrupted run left.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from services.worker.outputs.settings import MIB, S3Credentials, S3Settings, parse_output_url
from shared.config import scrub_url
from shared.errors import ConveyorError, Permanent, Retryable

log = structlog.get_logger(__name__)

Payload = bytes | Path


@runtime_checkable
class Destination(Protocol):
    """A place to put product files. `kind` labels metrics (`local`, `s3`)."""

    kind: str

    def url_for(self, key: str) -> str:
        """The file's URL as other tools name it (`file:///...`, `s3://bucket/...`)."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def put(self, key: str, data: Payload, *, content_type: str | None = None) -> int:
        """Store `data` (bytes, or a local file's contents) at `key`; returns the bytes stored."""
        ...

    async def read_bytes(self, key: str) -> bytes:
        """The object's contents; FileNotFoundError when there is none."""
        ...

    async def read_text(self, key: str) -> str: ...

    async def aclose(self) -> None: ...


def check_key(key: str) -> str:
    """A relative POSIX path without empty, '.' or '..' parts; anything else is a bug upstream."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"{key!r} is not a relative key (no leading '/', no empty, '.' or '..' parts)"
        )
    return key


def payload_size(data: Payload) -> int:
    return len(data) if isinstance(data, bytes) else data.stat().st_size


class LocalDestination:
    """A directory tree; each file is renamed into place, so it appears whole or not at all."""

    kind = "local"

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = Path(root)
        # fsync before the rename, so that after a power cut the marker never outlives its data.
        self.durable = durable

    def __repr__(self) -> str:
        return f"LocalDestination(root={str(self.root)!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    def path_for(self, key: str) -> Path:
        return self.root / check_key(key)

    def url_for(self, key: str) -> str:
        return self.path_for(key).absolute().as_uri()

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path_for(key).is_file)

    async def put(self, key: str, data: Payload, *, content_type: str | None = None) -> int:
        return await asyncio.to_thread(self._put, self.path_for(key), data)

    def _put(self, target: Path, data: Payload) -> int:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _local_error(target.parent, error) from error
        # A writer killed mid-file left its temporary copy: only one execution of a job runs at
        # a time, so any earlier one for this file is such a leftover.
        for leftover in target.parent.glob(f".{glob.escape(target.name)}.*.partial"):
            with contextlib.suppress(OSError):
                leftover.unlink()
        # A unique name: two workers writing the same product never share a temporary file.
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        try:
            if isinstance(data, bytes):
                with open(temporary, "wb") as handle:
                    handle.write(data)
                    self._flush(handle.fileno())
            else:
                shutil.copyfile(data, temporary)
                if self.durable:
                    with open(temporary, "rb+") as handle:
                        self._flush(handle.fileno())
            size = temporary.stat().st_size
            os.replace(temporary, target)
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise _local_error(target, error) from error
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        return size

    def _flush(self, descriptor: int) -> None:
        if self.durable:
            os.fsync(descriptor)

    async def read_bytes(self, key: str) -> bytes:
        return await asyncio.to_thread(self.path_for(key).read_bytes)

    async def read_text(self, key: str) -> str:
        return (await self.read_bytes(key)).decode("utf-8")

    async def aclose(self) -> None:
        return None


def _local_error(path: Path, error: OSError) -> ConveyorError:
    if isinstance(error, PermissionError):
        return Permanent(
            f"cannot write {path}: permission denied; check CONVEYOR_OUTPUT_URL and the "
            "directory's owner"
        )
    return Retryable(f"cannot write {path}: {error.strerror or error}")


# Error codes that a retry will not fix: wrong bucket, wrong keys, no permission.
_PERMANENT_S3_CODES = {
    # HEAD answers carry no body, so a refusal arrives as a bare status code.
    "403": "access to s3://{bucket}/{key} was denied{where}; check the bucket policy "
    "and AWS_ACCESS_KEY_ID",
    "NoSuchBucket": "bucket {bucket!r} does not exist{where}; create it or fix CONVEYOR_OUTPUT_URL",
    "AccessDenied": "access to s3://{bucket}/{key} was denied{where}; check the bucket policy "
    "and AWS_ACCESS_KEY_ID",
    "InvalidAccessKeyId": "the AWS access key is not known{where}; check AWS_ACCESS_KEY_ID",
    "SignatureDoesNotMatch": "the AWS secret key does not match{where}; "
    "check AWS_SECRET_ACCESS_KEY",
    "InvalidBucketName": "{bucket!r} is not a valid bucket name; fix CONVEYOR_OUTPUT_URL",
    "AuthorizationHeaderMalformed": "the request was signed for the wrong region{where}; "
    "check AWS_DEFAULT_REGION",
    "PermanentRedirect": "bucket {bucket!r} lives in another region or endpoint{where}; "
    "check AWS_DEFAULT_REGION, AWS_S3_ENDPOINT_URL and AWS_VIRTUAL_HOSTING",
}
_MISSING_S3_CODES = {"404", "NoSuchKey", "NotFound"}
_TRANSIENT_BOTO_ERRORS = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)


class S3Destination:
    """An S3 (or S3-compatible) bucket under an optional prefix, through aiobotocore.

    One client per destination, opened on first use and closed by `aclose` (or `async with`).
    Objects of `multipart_threshold_bytes` or more go up in parts of `multipart_part_bytes`,
    `max_concurrent_parts` at a time; a failed multipart upload is aborted, leaving nothing.
    """

    kind = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        credentials: S3Credentials | None = None,
        virtual_hosting: bool | None = None,
        multipart_threshold_bytes: int = 16 * MIB,
        multipart_part_bytes: int = 16 * MIB,
        max_concurrent_parts: int = 4,
        max_attempts: int = 3,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 destination needs a bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self._credentials = credentials
        self.virtual_hosting = virtual_hosting
        self.multipart_threshold_bytes = multipart_threshold_bytes
        self.multipart_part_bytes = multipart_part_bytes
        self.max_concurrent_parts = max_concurrent_parts
        self.max_attempts = max_attempts
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._client_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, bucket: str, settings: S3Settings, *, prefix: str = "") -> S3Destination:
        return cls(
            bucket,
            prefix=prefix,
            endpoint_url=settings.aws_s3_endpoint_url,
            region=settings.aws_region,
            credentials=settings.credentials(),
            virtual_hosting=settings.aws_virtual_hosting,
            multipart_threshold_bytes=settings.s3_multipart_threshold_bytes,
            multipart_part_bytes=settings.s3_multipart_part_bytes,
            max_concurrent_parts=settings.s3_max_concurrent_parts,
            max_attempts=settings.s3_max_attempts,
        )

    def __repr__(self) -> str:
        endpoint = scrub_url(self.endpoint_url) if self.endpoint_url else None
        return (
            f"S3Destination(bucket={self.bucket!r}, prefix={self.prefix!r}, "
            f"endpoint_url={endpoint!r})"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    def object_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def url_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(key)}"

    async def client(self) -> Any:
        """The aiobotocore client, created once; safe to call from concurrent tasks."""
        async with self._client_lock:
            if self._client is None:
                stack = AsyncExitStack()
                addressing = {None: "auto", True: "virtual", False: "path"}[self.virtual_hosting]
                config = AioConfig(
                    s3={"addressing_style": addressing},
                    retries={"max_attempts": self.max_attempts, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=60,
                    max_pool_connections=max(10, self.max_concurrent_parts * 2),
                )
                keys: dict[str, str] = {}
                if self._credentials is not None:
                    keys["aws_access_key_id"] = self._credentials.access_key_id.get_secret_value()
                    keys["aws_secret_access_key"] = (
                        self._credentials.secret_access_key.get_secret_value()
                    )
                    if self._credentials.session_token is not None:
                        keys["aws_session_token"] = (
                            self._credentials.session_token.get_secret_value()
                        )
                self._client = await stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        endpoint_url=self.endpoint_url,
                        region_name=self.region,
                        config=config,
                        **keys,
                    )
                )
                self._stack = stack
            return self._client

    async def aclose(self) -> None:
        async with self._client_lock:
            stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def exists(self, key: str) -> bool:
        object_key = self.object_key(key)
        client = await self.client()
        try:
            await client.head_object(Bucket=self.bucket, Key=object_key)
        except ClientError as error:
            if _error_code(error) in _MISSING_S3_CODES:
                return False
            raise self._error(error, key) from error
        except (BotoCoreError, OSError) as error:
            raise self._error(error, key) from error
        return True

    async def put(self, key: str, data: Payload, *, content_type: str | None = None) -> int:
        object_key = self.object_key(key)
        size = await asyncio.to_thread(payload_size, data)
        extra = {"ContentType": content_type} if content_type else {}
        client = await self.client()
        try:
            if size >= self.multipart_threshold_bytes:
                await self._put_in_parts(client, object_key, data, size, extra)
            else:
                body = data if isinstance(data, bytes) else await asyncio.to_thread(data.read_bytes)
                await client.put_object(Bucket=self.bucket, Key=object_key, Body=body, **extra)
        except ConveyorError:
            raise
        except (ClientError, BotoCoreError, OSError) as error:
            raise self._error(error, key) from error
        return size

    async def _put_in_parts(
        self, client: Any, object_key: str, data: Payload, size: int, extra: dict[str, str]
    ) -> None:
        started = await client.create_multipart_upload(Bucket=self.bucket, Key=object_key, **extra)
        upload_id = started["UploadId"]
        part_size = self.multipart_part_bytes
        offsets = list(range(0, size, part_size))
        limit = asyncio.Semaphore(self.max_concurrent_parts)

        async def upload(number: int, offset: int) -> dict[str, Any]:
            async with limit:
                if isinstance(data, bytes):
                    body = data[offset : offset + part_size]
                else:
                    body = await asyncio.to_thread(_read_range, data, offset, part_size)
                answer = await client.upload_part(
                    Bucket=self.bucket,
                    Key=object_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                )
                return {"ETag": answer["ETag"], "PartNumber": number}

        try:
            try:
                # A TaskGroup stops the other parts as soon as one fails.
                async with asyncio.TaskGroup() as group:
                    uploads = [
                        group.create_task(upload(number, offset))
                        for number, offset in enumerate(offsets, start=1)
                    ]
            except BaseExceptionGroup as failed:
                raise failed.exceptions[0] from None
            await client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=object_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [task.result() for task in uploads]},
            )
        except BaseException:
            # Parts of an unfinished upload are billed and invisible: never leave them behind.
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    client.abort_multipart_upload(
                        Bucket=self.bucket, Key=object_key, UploadId=upload_id
                    )
                )
            raise
        log.debug("s3.multipart_uploaded", key=object_key, parts=len(offsets), size=size)

    async def read_bytes(self, key: str) -> bytes:
        object_key = self.object_key(key)
        client = await self.client()
        try:
            answer = await client.get_object(Bucket=self.bucket, Key=object_key)
            async with answer["Body"] as body:
                content: bytes = await body.read()
        except ClientError as error:
            if _error_code(error) in _MISSING_S3_CODES:
                raise FileNotFoundError(self.url_for(key)) from None
            raise self._error(error, key) from error
        except (BotoCoreError, OSError) as error:
            raise self._error(error, key) from error
        return content

    async def read_text(self, key: str) -> str:
        return (await self.read_bytes(key)).decode("utf-8")

    def _error(self, error: Exception, key: str) -> ConveyorError:
        where = f" at {scrub_url(self.endpoint_url)}" if self.endpoint_url else ""
        if isinstance(error, ClientError):
            code = _error_code(error)
            template = _PERMANENT_S3_CODES.get(code)
            if template is not None:
                return Permanent(
                    template.format(bucket=self.bucket, key=self.object_key(key), where=where)
                )
            return Retryable(f"S3 said {code} for {self.url_for(key)}{where}; will retry")
        if isinstance(error, NoCredentialsError):
            return Permanent(
                "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "or give the pod an IAM role"
            )
        if isinstance(error, (*_TRANSIENT_BOTO_ERRORS, OSError)):
            return Retryable(
                f"cannot reach S3{where} for {self.url_for(key)}: {type(error).__name__}"
            )
        return Retryable(f"S3 request for {self.url_for(key)} failed{where}: {error}")


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "Unknown"))


def _read_range(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def destination_from_url(
    url: str, s3_settings: S3Settings | None = None, *, bucket: str | None = None
) -> LocalDestination | S3Destination:
    """The destination `CONVEYOR_OUTPUT_URL` names.

    `s3://` without a bucket writes to `bucket` (a job's own, as the original worker did).
    """
    location = parse_output_url(url)
    if location.scheme == "file":
        assert location.path is not None
        return LocalDestination(location.path)
    chosen_bucket = location.bucket or bucket
    if not chosen_bucket:
        raise ValueError(f"output URL {url!r} names no bucket and the job gives none")
    return S3Destination.from_settings(
        chosen_bucket,
        s3_settings if s3_settings is not None else S3Settings(),
        prefix=location.prefix,
    )

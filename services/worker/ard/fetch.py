"""Finding a scene in the source archive and fetching it into the scratch directory.

The archive is a local directory or an S3 prefix (`CONVEYOR_ARD_SOURCE`) holding products as
ESA ships them: a `{name}.SAFE/` folder or a `{name}.zip` (ESA's zips hold the `.SAFE` folder);
or as USGS ships them: a `{name}.tar` / `{name}.tar.gz` (the files at its top level) or folder.
Only the archive's top level is searched, so finding a scene costs one listing. A scene that is
not there is a `SceneNotFound` naming what was looked for and where.

Files are streamed into scratch (never memory-mapped or linked), so the archive can change or
go away while the scene is processed; zips and tarballs are unpacked member by member after
checking that no member would land outside the scratch directory.
"""

from __future__ import annotations

import asyncio
import gzip
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from services.worker.ard.errors import CorruptScene, SceneNotFound
from services.worker.outputs.destination import S3Destination
from services.worker.outputs.settings import S3Settings, parse_output_url
from shared.config import scrub_url
from shared.errors import Permanent, Retryable

log = structlog.get_logger(__name__)

CHUNK_BYTES = 4 * 1024 * 1024
CONCURRENT_DOWNLOADS = 8
_PERMANENT_S3_CODES = {
    "NoSuchBucket",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
}


@dataclass(frozen=True)
class Archive:
    """Where scenes are found: a local directory, or an S3 bucket and prefix."""

    url: str
    directory: Path | None = None
    bucket: str | None = None
    prefix: str = ""

    def describe(self) -> str:
        return str(self.directory) if self.directory is not None else scrub_url(self.url)

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name


@dataclass(frozen=True)
class FetchedScene:
    """The product in scratch (`folder` holds the `.SAFE` folder) and where it came from."""

    folder: Path
    source_url: str
    size: int


def parse_archive(url: str) -> Archive:
    """`/data/s2`, `file:///data/s2` or `s3://bucket/prefix`; an S3 URL must name a bucket."""
    try:
        location = parse_output_url(url)
    except ValueError as error:
        raise Permanent(f"the ARD source {url!r} is not usable: {error}") from None
    if location.scheme == "file":
        return Archive(url=url, directory=location.path)
    if not location.bucket:
        raise Permanent(f"the ARD source {url!r} names no bucket (expected s3://bucket/prefix)")
    return Archive(url=url, bucket=location.bucket, prefix=location.prefix)


def _not_found(archive: Archive, candidates: Sequence[str]) -> SceneNotFound:
    looked_for = " or ".join(candidates)
    return SceneNotFound(
        f"the scene is not in the archive: looked for {looked_for} in {archive.describe()} "
        "(CONVEYOR_ARD_SOURCE, or the item's `source`)"
    )


def _inside(folder: Path, relative: str) -> Path:
    """`folder/relative`, refusing names that would escape `folder` (a zip slip)."""
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or any(part in ("..", "") for part in parts):
        raise CorruptScene(f"archive member {relative!r} would be written outside the scene")
    return folder.joinpath(*parts)


# -- local directories ----------------------------------------------------------------------


def _stream_copy(source: str, target: str) -> str:
    # Opened and read as a stream: works for any readable file, and copies no metadata.
    with open(source, "rb") as reader, open(target, "wb") as writer:
        shutil.copyfileobj(reader, writer, CHUNK_BYTES)
    return target


def _copy_folder(source: Path, target: Path) -> int:
    shutil.copytree(source, target, copy_function=_stream_copy, dirs_exist_ok=True)
    return sum(path.stat().st_size for path in target.rglob("*") if path.is_file())


def unpack_zip(path: Path, folder: Path, *, label: str | None = None) -> int:
    """Unpack the product zip `path` into `folder`; a broken zip is a `CorruptScene`."""
    shown = label or path.name
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                target = _inside(folder, member.filename.rstrip("/"))
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with archive.open(member) as reader, open(target, "wb") as writer:
                        shutil.copyfileobj(reader, writer, CHUNK_BYTES)
                except zipfile.BadZipFile as error:
                    raise CorruptScene(
                        f"{shown}: member {member.filename} is corrupt ({error})"
                    ) from None
                total += member.file_size
    except zipfile.BadZipFile as error:
        raise CorruptScene(f"{shown} is not a readable zip archive ({error})") from None
    except FileNotFoundError:
        raise CorruptScene(f"{shown} vanished while it was unpacked") from None
    return total


# -- USGS tarballs --------------------------------------------------------------------------

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_tarball(name: str) -> bool:
    return name.endswith(TAR_SUFFIXES)


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.issym() or member.islnk():
        return "link"
    if member.isdev() or member.isfifo():
        return "device"
    return "special file"


def unpack_tar(path: Path, folder: Path, *, label: str | None = None) -> int:
    """Unpack a USGS tarball (`.tar`, `.tar.gz`) into `folder`; a broken one is a `CorruptScene`.

    Members are checked as a zip's are (`_inside`: no absolute or `..` names), and only regular
    files and folders are taken: a link or device member refuses the whole archive.
    """
    shown = label or path.name
    total = 0
    try:
        with tarfile.open(path, mode="r:*") as archive:
            for member in archive:
                name = member.name.rstrip("/")
                if member.isdir():
                    if PurePosixPath(name).parts:
                        _inside(folder, name).mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    raise CorruptScene(
                        f"{shown}: member {member.name} is a {_tar_kind(member)}, not a file"
                    )
                target = _inside(folder, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                reader = archive.extractfile(member)
                assert reader is not None  # a regular file always has contents
                with reader, open(target, "wb") as writer:
                    shutil.copyfileobj(reader, writer, CHUNK_BYTES)
                total += member.size
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise CorruptScene(f"{shown} is not a readable tar archive ({error})") from None
    except FileNotFoundError:
        raise CorruptScene(f"{shown} vanished while it was unpacked") from None
    return total


def unpack_archive(path: Path, folder: Path, *, label: str | None = None) -> int:
    """A tarball or a zip, by its name (`label`, else the file's)."""
    name = label or path.name
    return (unpack_tar if is_tarball(name) else unpack_zip)(path, folder, label=label)


def _fetch_local(archive: Archive, candidates: Sequence[str], folder: Path) -> FetchedScene:
    assert archive.directory is not None
    root = archive.directory
    if not root.is_dir():
        raise SceneNotFound(
            f"the ARD archive {root} does not exist or is not a directory; "
            "check CONVEYOR_ARD_SOURCE (or the item's `source`)"
        )
    for candidate in candidates:
        source = root / candidate.rstrip("/")
        if candidate.endswith("/") and source.is_dir():
            size = _copy_folder(source, folder / source.name)
            return FetchedScene(folder=folder, source_url=source.absolute().as_uri(), size=size)
        if not candidate.endswith("/") and source.is_file():
            size = unpack_archive(source, folder)
            return FetchedScene(folder=folder, source_url=source.absolute().as_uri(), size=size)
    raise _not_found(archive, candidates)


# -- S3 -------------------------------------------------------------------------------------


def _s3_error(error: Exception, archive: Archive, what: str) -> Exception:
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", "Unknown"))
        if code in _PERMANENT_S3_CODES:
            return Permanent(
                f"S3 said {code} for {what} in {archive.describe()}; check CONVEYOR_ARD_SOURCE "
                "and the AWS credentials"
            )
        return Retryable(f"S3 said {code} for {what} in {archive.describe()}; will retry")
    return Retryable(f"fetching {what} from {archive.describe()} failed: {error}; will retry")


async def _list(client: Any, archive: Archive, prefix: str) -> list[tuple[str, int]]:
    objects: list[tuple[str, int]] = []
    token: str | None = None
    while True:
        extra = {"ContinuationToken": token} if token else {}
        page = await client.list_objects_v2(Bucket=archive.bucket, Prefix=prefix, **extra)
        objects.extend((item["Key"], int(item["Size"])) for item in page.get("Contents", []))
        if not page.get("IsTruncated"):
            return objects
        token = page["NextContinuationToken"]


async def _download(client: Any, bucket: str, key: str, target: Path) -> None:
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    answer = await client.get_object(Bucket=bucket, Key=key)
    writer = await asyncio.to_thread(open, target, "wb")
    try:
        async with answer["Body"] as body:
            while chunk := await body.read(CHUNK_BYTES):
                await asyncio.to_thread(writer.write, chunk)
    finally:
        await asyncio.to_thread(writer.close)


async def _fetch_s3(
    archive: Archive, candidates: Sequence[str], folder: Path, s3_settings: S3Settings
) -> FetchedScene:
    assert archive.bucket is not None
    # The outputs' S3 client, for its credentials, endpoint and retry settings; read only here.
    source = S3Destination.from_settings(archive.bucket, s3_settings)
    try:
        client = await source.client()
        for candidate in candidates:
            key = archive.key(candidate)
            try:
                listed = await _list(client, archive, key)
            except (ClientError, BotoCoreError, OSError) as error:
                raise _s3_error(error, archive, candidate) from error
            if candidate.endswith("/"):
                members = [(k, size) for k, size in listed if not k.endswith("/")]
                if not members:
                    continue
                limit = asyncio.Semaphore(CONCURRENT_DOWNLOADS)
                base = folder / candidate.rstrip("/")

                async def fetch_one(
                    member: str,
                    base: Path = base,
                    key: str = key,
                    limit: asyncio.Semaphore = limit,
                ) -> None:
                    async with limit:
                        target = _inside(base, member[len(key) :])
                        await _download(client, archive.bucket or "", member, target)

                try:
                    async with asyncio.TaskGroup() as group:
                        for member, _size in members:
                            group.create_task(fetch_one(member))
                except BaseExceptionGroup as failures:
                    first = failures.exceptions[0]
                    if isinstance(first, (ClientError, BotoCoreError, OSError)):
                        raise _s3_error(first, archive, candidate) from first
                    raise first from None
                return FetchedScene(
                    folder=folder,
                    source_url=f"s3://{archive.bucket}/{key}",
                    size=sum(size for _key, size in members),
                )
            if any(k == key for k, _size in listed):
                zipped = folder / f".{PurePosixPath(candidate).name}"
                try:
                    await _download(client, archive.bucket, key, zipped)
                except (ClientError, BotoCoreError, OSError) as error:
                    raise _s3_error(error, archive, candidate) from error
                size = await asyncio.to_thread(unpack_archive, zipped, folder, label=candidate)
                await asyncio.to_thread(zipped.unlink)
                return FetchedScene(
                    folder=folder, source_url=f"s3://{archive.bucket}/{key}", size=size
                )
        raise _not_found(archive, candidates)
    finally:
        await source.aclose()


async def fetch_scene(
    archive: Archive, candidates: Sequence[str], folder: Path, s3_settings: S3Settings
) -> FetchedScene:
    """Fetch the first of `candidates` (`name.SAFE/` folders end with `/`) into `folder`."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    if archive.directory is not None:
        fetched = await asyncio.to_thread(_fetch_local, archive, candidates, folder)
    else:
        fetched = await _fetch_s3(archive, candidates, folder, s3_settings)
    log.info("ard.fetched", source=fetched.source_url, bytes=fetched.size)
    return fetched

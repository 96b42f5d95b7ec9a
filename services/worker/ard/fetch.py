"""Finding a scene in the source archive and fetching it into the scratch directory.

The archive is a local directory or an S3 prefix (`CONVEYOR_ARD_SOURCE`) holding products as
ESA ships them: a `{name}.SAFE/` folder or a `{name}.zip` (ESA's zips hold the `.SAFE` folder);
or as USGS ships them: a `{name}.tar` / `{name}.tar.gz` (the files at its top level) or folder.
Only the archive's top level is searched, so finding a scene costs one listing. A scene that is
not there is a `SceneNotFound` naming what was looked for and where.

Files are streamed into scratch (never memory-mapped or linked), so the archive can change or
go away while the scene is processed. Everything fetched is bounded (`ArchiveLimits`: bytes,
files, and for zips and compressed tarballs the compression ratio), checked before anything is
written where the archive says (a zip's directory) and always while bytes are written; no member
may land outside the scene's folder (absolute, `..`, backslash or control-character names), and
links are refused, in zips, tarballs and archive folders alike.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import stat
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
from services.worker.ard.limits import RATIO_FLOOR_BYTES, ArchiveLimits
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
    if (
        not parts
        or relative.startswith("/")
        or any(part in ("..", "") for part in parts)
        or "\\" in relative
        or any(ord(character) < 32 or ord(character) == 127 for character in relative)
    ):
        raise CorruptScene(f"archive member {relative!r} would be written outside the scene")
    return folder.joinpath(*parts)


def _copy_bounded(reader: Any, writer: Any, written: int, limits: ArchiveLimits, where: str) -> int:
    """Copy in chunks, counting what is written: sizes a zip declares are not trusted."""
    while chunk := reader.read(CHUNK_BYTES):
        written += len(chunk)
        limits.check_bytes(written, where)
        writer.write(chunk)
    return written


# -- local directories ----------------------------------------------------------------------


def _folder_files(source: Path, limits: ArchiveLimits) -> list[tuple[str, int]]:
    """(relative path, size) of every file under `source`, within the limits; links refused."""
    if source.is_symlink():
        raise CorruptScene(f"{source} is a symbolic link; a scene must be a folder of files")
    files: list[tuple[str, int]] = []
    total = 0
    for directory, folders, names in os.walk(source):
        for name in (*folders, *names):
            path = Path(directory) / name
            if path.is_symlink():
                raise CorruptScene(
                    f"{path} is a symbolic link; a scene in the archive may hold only files"
                )
        for name in names:
            path = Path(directory) / name
            size = path.stat().st_size
            total += size
            files.append((path.relative_to(source).as_posix(), size))
            limits.check_members(len(files), str(source))
            limits.check_bytes(total, str(source))
    return files


def _copy_folder(source: Path, target: Path, limits: ArchiveLimits) -> int:
    """Copy the scene folder, file by file as streams (no metadata, no links followed)."""
    written = 0
    for relative, _size in _folder_files(source, limits):
        destination = _inside(target, relative)
        destination.parent.mkdir(parents=True, exist_ok=True)
        with open(source / relative, "rb") as reader, open(destination, "wb") as writer:
            written = _copy_bounded(reader, writer, written, limits, str(source))
    return written


def _is_link(member: zipfile.ZipInfo) -> bool:
    # Unix zips keep the file type in the high half of external_attr.
    return stat.S_ISLNK(member.external_attr >> 16)


def unpack_zip(
    path: Path, folder: Path, *, label: str | None = None, limits: ArchiveLimits | None = None
) -> int:
    """Unpack the product zip `path` into `folder`, within `limits`; a broken, hostile or
    oversized zip is a `CorruptScene` saying why."""
    limits = limits if limits is not None else ArchiveLimits()
    shown = label or path.name
    written = 0
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            # Everything the central directory says is checked before a byte is written.
            limits.check_members(sum(1 for m in members if not m.is_dir()), shown)
            limits.check_bytes(sum(m.file_size for m in members), shown)
            limits.check_ratio(
                sum(m.file_size for m in members), sum(m.compress_size for m in members), shown
            )
            for member in members:
                _inside(folder, member.filename.rstrip("/"))
                if _is_link(member):
                    raise CorruptScene(f"{shown}: member {member.filename!r} is a symbolic link")
                if member.file_size >= RATIO_FLOOR_BYTES:
                    limits.check_ratio(
                        member.file_size, member.compress_size, f"{shown}: {member.filename}"
                    )
            for member in members:
                target = _inside(folder, member.filename.rstrip("/"))
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with archive.open(member) as reader, open(target, "wb") as writer:
                        written = _copy_bounded(reader, writer, written, limits, shown)
                except zipfile.BadZipFile as error:
                    raise CorruptScene(
                        f"{shown}: member {member.filename} is corrupt ({error})"
                    ) from None
    except zipfile.BadZipFile as error:
        raise CorruptScene(f"{shown} is not a readable zip archive ({error})") from None
    except FileNotFoundError:
        raise CorruptScene(f"{shown} vanished while it was unpacked") from None
    return written


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


def unpack_tar(
    path: Path, folder: Path, *, label: str | None = None, limits: ArchiveLimits | None = None
) -> int:
    """Unpack a USGS tarball (`.tar`, `.tar.gz`) into `folder`, within `limits`; a broken,
    hostile or oversized one is a `CorruptScene` saying why.

    A tarball has no directory to check first, so members, bytes and (for a compressed one) the
    compression ratio are counted as it is read. Names are checked as a zip's are (`_inside`),
    and only regular files and folders are taken: a link or device member refuses the archive.
    """
    limits = limits if limits is not None else ArchiveLimits()
    shown = label or path.name
    compressed = path.stat().st_size
    written = members = 0
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
                members += 1
                limits.check_members(members, shown)
                limits.check_bytes(written + member.size, shown)
                target = _inside(folder, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                reader = archive.extractfile(member)
                assert reader is not None  # a regular file always has contents
                with reader, open(target, "wb") as writer:
                    while chunk := reader.read(CHUNK_BYTES):
                        written += len(chunk)
                        limits.check_bytes(written, shown)
                        # A plain tar's ratio stays near 1; a gzipped bomb's grows as it is read.
                        limits.check_ratio(written, compressed, shown)
                        writer.write(chunk)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise CorruptScene(f"{shown} is not a readable tar archive ({error})") from None
    except FileNotFoundError:
        raise CorruptScene(f"{shown} vanished while it was unpacked") from None
    return written


def unpack_archive(
    path: Path, folder: Path, *, label: str | None = None, limits: ArchiveLimits | None = None
) -> int:
    """A tarball or a zip, by its name (`label`, else the file's)."""
    name = label or path.name
    unpack = unpack_tar if is_tarball(name) else unpack_zip
    return unpack(path, folder, label=label, limits=limits)


def _fetch_local(
    archive: Archive, candidates: Sequence[str], folder: Path, limits: ArchiveLimits
) -> FetchedScene:
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
            size = _copy_folder(source, folder / source.name, limits)
            return FetchedScene(folder=folder, source_url=source.absolute().as_uri(), size=size)
        if not candidate.endswith("/") and source.is_file():
            size = unpack_archive(source, folder, limits=limits)
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
    archive: Archive,
    candidates: Sequence[str],
    folder: Path,
    s3_settings: S3Settings,
    limits: ArchiveLimits,
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
                where = f"s3://{archive.bucket}/{key}"
                limits.check_members(len(members), where)
                limits.check_bytes(sum(size for _key, size in members), where)
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
                limits.check_bytes(
                    max(size for k, size in listed if k == key), f"s3://{archive.bucket}/{key}"
                )
                zipped = folder / f".{PurePosixPath(candidate).name}"
                try:
                    await _download(client, archive.bucket, key, zipped)
                except (ClientError, BotoCoreError, OSError) as error:
                    raise _s3_error(error, archive, candidate) from error
                size = await asyncio.to_thread(
                    unpack_archive, zipped, folder, label=candidate, limits=limits
                )
                await asyncio.to_thread(zipped.unlink)
                return FetchedScene(
                    folder=folder, source_url=f"s3://{archive.bucket}/{key}", size=size
                )
        raise _not_found(archive, candidates)
    finally:
        await source.aclose()


async def fetch_scene(
    archive: Archive,
    candidates: Sequence[str],
    folder: Path,
    s3_settings: S3Settings,
    limits: ArchiveLimits | None = None,
) -> FetchedScene:
    """Fetch the first of `candidates` (`name.SAFE/` folders end with `/`) into `folder`."""
    limits = limits if limits is not None else ArchiveLimits()
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    if archive.directory is not None:
        fetched = await asyncio.to_thread(_fetch_local, archive, candidates, folder, limits)
    else:
        fetched = await _fetch_s3(archive, candidates, folder, s3_settings, limits)
    log.info("ard.fetched", source=fetched.source_url, bytes=fetched.size)
    return fetched

"""Hostile scene archives through the real ARD runner: bounded unpacking, confined paths.

Each hostile scene is dead-lettered as `corrupt_scene` with a reason that names the limit (and
its setting) or the offending path; nothing lands outside scratch and scratch is left clean.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from pathlib import Path

import pytest

from devtools.archive.safe import write_safe, zip_safe
from services.worker.ard.errors import CorruptScene
from services.worker.ard.fetch import unpack_zip
from services.worker.ard.limits import ArchiveLimits
from services.worker.ard.runner import SceneRunner
from services.worker.ard.safe import PRODUCT_METADATA
from tests.test_ard_runner import job_for, places, unique_name, worker_settings

__all__ = ["places"]  # the fixture, shared with the runner's tests

MIB = 1024 * 1024


async def run_scene(places: dict[str, Path], name: str, **limits: float) -> CorruptScene:
    runner = SceneRunner(
        worker_settings(places),
        indexer=None,
        archive_limits=ArchiveLimits(**limits),  # type: ignore[arg-type]
    )
    with pytest.raises(CorruptScene) as raised:
        await runner.run(job_for(name, places["scratch"] / "intermediate"))
    assert raised.value.reason == "corrupt_scene"
    assert not [p for p in places["scratch"].rglob("*") if p.is_file()], "scratch left behind"
    return raised.value


def zip_with(
    path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED
) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


async def test_a_zip_bomb_of_a_few_kilobytes_is_refused_before_anything_is_written(
    places: dict[str, Path],
) -> None:
    name = unique_name(40)
    bomb = zip_with(
        places["archive"] / f"{name}.zip",
        {f"{name}.SAFE/{PRODUCT_METADATA}": b"<x/>", f"{name}.SAFE/padding.bin": bytes(64 * MIB)},
    )
    assert bomb.stat().st_size < 100 * 1024  # 64 MiB of zeros deflate to about 64 KB
    error = await run_scene(places, name)
    assert "CONVEYOR_ARD_MAX_COMPRESSION_RATIO" in str(error)
    assert re.search(r"expands [\d,]+ times", str(error))


async def test_a_zip_unpacking_past_the_byte_limit_is_refused(places: dict[str, Path]) -> None:
    name = unique_name(41)
    zip_safe(write_safe(places["scratch"] / "made", name=name, size=120, seed=41).path,
             places["archive"])  # fmt: skip
    for made in sorted(places["scratch"].rglob("*"), reverse=True):
        made.unlink() if made.is_file() else made.rmdir()
    error = await run_scene(places, name, max_unpacked_bytes=64 * 1024)
    assert "the limit is 65,536 (CONVEYOR_ARD_MAX_UNPACKED_BYTES)" in str(error)


async def test_a_zip_of_twenty_thousand_members_is_refused(places: dict[str, Path]) -> None:
    name = unique_name(42)
    zip_with(
        places["archive"] / f"{name}.zip",
        {f"{name}.SAFE/QI_DATA/m{number:05d}.gml": b"" for number in range(20_000)},
        compression=zipfile.ZIP_STORED,
    )
    error = await run_scene(places, name)
    assert "holds 20,000 files; the limit is 2,000 (CONVEYOR_ARD_MAX_MEMBERS)" in str(error)


@pytest.mark.parametrize(
    "member",
    [
        "../../escaped.txt",
        "/tmp/absolute.txt",
        "SAFE/..\\..\\escaped.txt",
        "SAFE/a\tb",
        "SAFE/a\nb",
    ],
)
async def test_a_member_that_would_land_outside_the_scene_is_refused(
    places: dict[str, Path], member: str
) -> None:
    name = unique_name(43)
    zip_with(places["archive"] / f"{name}.zip", {f"{name}.SAFE/ok.txt": b"x", member: b"x"})
    error = await run_scene(places, name)
    assert "would be written outside the scene" in str(error)
    assert not list(places["scratch"].parent.glob("**/escaped.txt"))


async def test_a_symbolic_link_in_a_zip_is_refused(places: dict[str, Path]) -> None:
    name = unique_name(44)
    path = places["archive"] / f"{name}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        link = zipfile.ZipInfo(f"{name}.SAFE/{PRODUCT_METADATA}")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    error = await run_scene(places, name)
    assert "is a symbolic link" in str(error)


async def test_a_symbolic_link_in_a_scene_folder_is_refused(
    places: dict[str, Path], tmp_path: Path
) -> None:
    name = unique_name(45)
    scene = write_safe(places["archive"], name=name, size=60, seed=45)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the worker")
    os.symlink(secret, scene.path / "GRANULE" / "notes.txt")
    error = await run_scene(places, name)
    assert "is a symbolic link" in str(error)


async def test_a_band_path_in_the_metadata_that_leads_outside_the_scene_is_refused(
    places: dict[str, Path],
) -> None:
    name = unique_name(46)
    scene = write_safe(places["archive"], name=name, size=60, seed=46)
    metadata = scene.path / PRODUCT_METADATA
    text = metadata.read_text()
    stem = next(
        match.group(1) for match in re.finditer(r"<IMAGE_FILE>([^<]*_B02_10m)</IMAGE_FILE>", text)
    )
    metadata.write_text(text.replace(stem, f"../../../../outside/{stem.rsplit('/', 1)[-1]}"))
    error = await run_scene(places, name)
    assert "outside the product's folder" in str(error) and "B02_10m" in str(error)


async def test_metadata_with_entities_is_refused(places: dict[str, Path]) -> None:
    name = unique_name(47)
    scene = write_safe(places["archive"], name=name, size=60, seed=47)
    metadata = scene.path / PRODUCT_METADATA
    laughs = (
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>\n'
    )
    body = metadata.read_text().split("?>", 1)[1]
    metadata.write_text(laughs + body)
    error = await run_scene(places, name)
    assert "declares a DTD or entities" in str(error)


def test_real_sized_products_pass_the_default_limits() -> None:
    """An L2A SAFE: about 1.2 GB of JPEG 2000 (incompressible) in about 150 files."""
    limits = ArchiveLimits()
    limits.check_members(150, "L2A")
    limits.check_bytes(1_300_000_000, "L2A")
    limits.check_ratio(1_300_000_000, 1_250_000_000, "L2A")
    # XML and GML members compress well; under 1 MiB they are not judged one by one.
    assert limits.max_compression_ratio > 1.1 and limits.max_unpacked_bytes > 2 * 1024**3


def test_a_zip_lying_about_its_sizes_is_still_bounded(tmp_path: Path) -> None:
    """Sizes in the central directory are checked first, then bytes are counted as written."""
    path = zip_with(tmp_path / "lying.zip", {"SAFE/big.bin": bytes(4 * MIB)})
    data = bytearray(path.read_bytes())
    real = (4 * MIB).to_bytes(4, "little")
    # Shrink the declared size (local header and central directory) to 1 KiB.
    data = data.replace(real, (1024).to_bytes(4, "little"))
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptScene):
        unpack_zip(path, tmp_path / "scratch", limits=ArchiveLimits(max_unpacked_bytes=MIB))
    written = [p for p in (tmp_path / "scratch").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in written) <= MIB


def tar_with(path: Path, members: dict[str, bytes]) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as archive:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_a_gzipped_tarball_bomb_is_refused_while_it_unpacks(tmp_path: Path) -> None:
    from services.worker.ard.fetch import unpack_tar

    bomb = tar_with(tmp_path / "LC08_bomb.tar.gz", {"padding.bin": bytes(64 * MIB)})
    assert bomb.stat().st_size < 200 * 1024
    target = tmp_path / "out"
    with pytest.raises(CorruptScene, match="CONVEYOR_ARD_MAX_COMPRESSION_RATIO"):
        unpack_tar(bomb, target)
    written = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    assert written < 64 * MIB  # stopped part-way, not after the whole member


def test_a_tarball_of_twenty_thousand_members_or_too_many_bytes_is_refused(
    tmp_path: Path,
) -> None:
    from services.worker.ard.fetch import unpack_tar

    many = tar_with(tmp_path / "many.tar", {f"m{n:05d}.txt": b"x" for n in range(20_000)})
    with pytest.raises(CorruptScene, match=r"holds 2,001 files; .*CONVEYOR_ARD_MAX_MEMBERS"):
        unpack_tar(many, tmp_path / "many")
    big = tar_with(tmp_path / "big.tar", {"a.bin": os.urandom(MIB), "b.bin": os.urandom(MIB)})
    with pytest.raises(CorruptScene, match="CONVEYOR_ARD_MAX_UNPACKED_BYTES"):
        unpack_tar(big, tmp_path / "big", limits=ArchiveLimits(max_unpacked_bytes=MIB + 10))

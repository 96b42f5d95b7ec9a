"""How much a scene archive may unpack to: bytes, members, compression ratio.

A scene comes from an archive that items may point at, so a zip is unpacked only within these
limits (settings `CONVEYOR_ARD_MAX_UNPACKED_BYTES`, `CONVEYOR_ARD_MAX_MEMBERS`,
`CONVEYOR_ARD_MAX_COMPRESSION_RATIO`). The defaults pass every real Sentinel-2 product: an L2A
SAFE is about 1.2 GB in 100-200 files of JPEG 2000, which does not compress further (a ratio
near 1); a zip bomb of a few kilobytes that expands to gigabytes, or one of 20,000 members, is
refused before anything is written. A breach is a `CorruptScene` naming the limit, the figure
and the setting.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.worker.ard.errors import CorruptScene

GIB = 1024**3
# Below this a member's own ratio is not judged: small XML and GML files compress 20-50 times.
RATIO_FLOOR_BYTES = 1024 * 1024


class ArchiveLimits(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_ARD_", extra="ignore")

    max_unpacked_bytes: int = Field(
        default=4 * GIB, ge=1, description="Bytes one scene may unpack or copy to in scratch."
    )
    max_members: int = Field(default=2000, ge=1, description="Files one scene may hold.")
    max_compression_ratio: float = Field(
        default=100.0,
        gt=1,
        description="Unpacked / compressed bytes, of the whole zip and of any member over 1 MiB.",
    )

    def check_members(self, count: int, where: str) -> None:
        if count > self.max_members:
            raise CorruptScene(
                f"{where} holds {count:,} files; the limit is {self.max_members:,} "
                "(CONVEYOR_ARD_MAX_MEMBERS)"
            )

    def check_bytes(self, total: int, where: str) -> None:
        if total > self.max_unpacked_bytes:
            raise CorruptScene(
                f"{where} unpacks to more than {total:,} bytes; the limit is "
                f"{self.max_unpacked_bytes:,} (CONVEYOR_ARD_MAX_UNPACKED_BYTES)"
            )

    def check_ratio(self, unpacked: int, compressed: int, where: str) -> None:
        ratio = unpacked / max(1, compressed)
        if ratio > self.max_compression_ratio:
            raise CorruptScene(
                f"{where} expands {ratio:,.0f} times ({compressed:,} to {unpacked:,} bytes); the "
                f"limit is {self.max_compression_ratio:g} (CONVEYOR_ARD_MAX_COMPRESSION_RATIO)"
            )

"""Committing a made dataset of the `ard` pool to its output folder, then indexing it.

Both of the pool's runners (`SceneRunner`: scenes from an archive into ARD; `WaterRunner`:
indexed scenes into their water classification) end the same way:

1. every file is written to the dataset's folder, then the STAC item, then the eo3 document,
   last: its presence is the commit, so a worker killed before it leaves no visible dataset
   (a rerun overwrites what it left);
2. the committed document is read back and indexed, after the commit and idempotently (the ids
   are deterministic), so the index never holds a dataset whose files are not all there.

Each write is atomic: renamed into place locally, one whole PUT (or completed multipart
upload) on S3.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from services.worker.ard.errors import BadSceneRequest
from services.worker.ard.index import SceneIndexer
from services.worker.ard.plugin import ArdProduct, metadata_file_name, stac_file_name
from services.worker.outputs.destination import LocalDestination, S3Destination
from services.worker.outputs.metadata import YAML_MEDIA_TYPE, dump_json, dump_yaml
from shared.paths import UnsafePath, relative_path

CONCURRENT_UPLOADS = 4


@dataclass(frozen=True)
class OutputPlace:
    """A dataset's folder at its destination."""

    destination: LocalDestination | S3Destination
    folder: str

    def key(self, file_name: str) -> str:
        return f"{self.folder}/{file_name}"

    def url(self, file_name: str) -> str:
        return self.destination.url_for(self.key(file_name))

    @property
    def folder_url(self) -> str:
        return f"{self.destination.url_for(self.folder)}/"


def output_folder(s3_dir: str, scene: str) -> str:
    """`{s3_dir}/{scene}`, with `s3_dir` checked to be a plain relative path."""
    try:
        cleaned = relative_path(s3_dir.strip(), what="a relative folder", allow_empty=True)
    except UnsafePath as error:
        raise BadSceneRequest(f"s3_dir: {error}") from None
    return f"{cleaned}/{scene}" if cleaned else scene


async def is_committed(place: OutputPlace, name: str) -> bool:
    """Whether the dataset `name` in `place` has its eo3 document: it is done."""
    return await place.destination.exists(place.key(metadata_file_name(name)))


async def commit(product: ArdProduct, place: OutputPlace, name: str) -> dict[str, int]:
    """Files, then the STAC item, then the eo3 document: the commit. Returns bytes per URL."""
    written: dict[str, int] = {}
    limit = asyncio.Semaphore(CONCURRENT_UPLOADS)
    destination = place.destination

    async def put(file_name: str, data: Any, media_type: str) -> None:
        async with limit:
            size = await destination.put(place.key(file_name), data, content_type=media_type)
        written[place.url(file_name)] = size

    try:
        async with asyncio.TaskGroup() as group:
            for item in product.files:
                group.create_task(put(item.name, item.path, item.media_type))
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    await put(stac_file_name(name), dump_json(product.stac_item).encode(), "application/json")
    await put(metadata_file_name(name), dump_yaml(product.eo3_document).encode(), YAML_MEDIA_TYPE)
    return written


async def index_committed(
    indexer: SceneIndexer,
    place: OutputPlace,
    name: str,
    on_added: Callable[[str], None] = lambda _url: None,
) -> bool:
    """Index the committed dataset `name` in `place` unless its id is there; True if added."""
    metadata_name = metadata_file_name(name)
    document_text = await place.destination.read_text(place.key(metadata_name))
    added = await asyncio.to_thread(indexer.ensure_indexed, document_text, place.url(metadata_name))
    if added:
        on_added(place.url(metadata_name))
    return added


def log_indexed(bound: structlog.typing.FilteringBoundLogger, event: str) -> Callable[[str], None]:
    """An `on_added` that logs `event` with the document's URL."""
    return lambda url: bound.info(event, metadata_url=url)

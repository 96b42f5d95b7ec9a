"""`SceneRunner`: one scene job of the `ard` pool, from the archive to indexed ARD.

For each job:

1. the scene plugin that accepts the name refuses what can never succeed (a malformed name,
   an L1C scene with no Sen2Cor), and `inter_dir` is checked to lie under the scratch root;
2. if the scene's eo3 document is already in the output, the scene is done: it is indexed if
   it was not yet (a worker may have died between the two) and the job is `skipped`;
3. the scene is fetched from the archive into its own scratch folder, prepared (Sen2Cor for
   L1C), and made into COGs and documents by the plugin;
4. the files are written to `{output}/{s3_dir}/{scene}/`, the STAC item next, the eo3 document
   last: its presence is the commit;
5. the dataset is indexed, after the commit and idempotently (a deterministic id), unless
   `CONVEYOR_INDEX_OUTPUTS` is set to false;
6. the scratch folder is removed, whatever happened.

The output is `CONVEYOR_ARD_OUTPUT_URL` (a directory, or `s3://bucket/prefix`), or the item's own
`s3://{s3_bucket}` when unset or given as bare `s3://`, as the original uploaded it; the item's
`s3_dir` is the folder under it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import structlog

from services.worker.ard import landsat as _landsat  # noqa: F401  (registers the plugins)
from services.worker.ard import sentinel2 as _sentinel2  # noqa: F401  (registers the plugin)
from services.worker.ard.errors import BadSceneRequest
from services.worker.ard.fetch import Archive, fetch_scene, parse_archive
from services.worker.ard.index import SceneIndexer, indexer_for
from services.worker.ard.limits import ArchiveLimits
from services.worker.ard.plugin import (
    ArdContext,
    ArdProduct,
    ScenePlugin,
    metadata_file_name,
    registered_scene_plugins,
    stac_file_name,
)
from services.worker.ard.scratch import fresh_folder, job_folder, remove_folder, scratch_directory
from services.worker.outputs.destination import (
    LocalDestination,
    S3Destination,
    destination_from_url,
)
from services.worker.outputs.metadata import YAML_MEDIA_TYPE, dump_json, dump_yaml
from services.worker.outputs.settings import S3Settings
from services.worker.outputs.spec import CogOptions
from services.worker.service import JobOutcome
from services.worker.settings import WorkerSettings
from shared.destinations import LEGACY_ARD_SOURCES as LEGACY_SOURCES
from shared.destinations import check_destinations
from shared.errors import InvalidRequest, Permanent
from shared.jobs import Job, SceneJob
from shared.messages import SceneRequest
from shared.paths import UnsafePath, relative_path

log = structlog.get_logger(__name__)
CONCURRENT_UPLOADS = 4


@dataclass(frozen=True)
class OutputPlace:
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


class SceneRunner:
    """Runs `SceneJob`s; `close()` releases the datacube connection.

    `indexer` defaults to the datacube the environment names (unless `CONVEYOR_INDEX_OUTPUTS`
    is set to false); pass None to never index, or an indexer of your own.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        indexer: SceneIndexer | Literal["configured"] | None = "configured",
        s3_settings: S3Settings | None = None,
        cog: CogOptions | None = None,
        archive_limits: ArchiveLimits | None = None,
    ) -> None:
        self.settings = settings
        self.s3_settings = s3_settings if s3_settings is not None else S3Settings()
        self.archive_limits = archive_limits if archive_limits is not None else ArchiveLimits()
        self.cog = cog or CogOptions()
        self.plugins: list[ScenePlugin] = [
            plugin() for plugin in registered_scene_plugins().values()
        ]
        self.indexer = indexer_for(settings) if indexer == "configured" else indexer
        self.destinations = settings.destination_policy()

    async def close(self) -> None:
        if self.indexer is not None:
            await asyncio.to_thread(self.indexer.close)

    # -- deciding ---------------------------------------------------------------------------

    def plugin_for(self, request: SceneRequest) -> ScenePlugin:
        for plugin in self.plugins:
            if plugin.accepts(request.in_scene):
                return plugin
        known = ", ".join(plugin.name for plugin in self.plugins) or "none"
        raise BadSceneRequest(
            f"{request.in_scene!r} is not a scene name any plugin here accepts (plugins: {known}); "
            "expected e.g. S2A_MSIL2A_20190812T235741_N0213_R030_T56LRR_20190813T014708"
        )

    def archive_for(self, request: SceneRequest) -> Archive:
        source = (request.source or "").strip()
        if source and source.lower() not in LEGACY_SOURCES:
            if "://" in source or source.startswith("/"):
                return parse_archive(source)
            legacy = ", ".join(sorted(LEGACY_SOURCES))
            raise BadSceneRequest(
                f"source {request.source!r} is neither an archive (s3://bucket/prefix or an "
                f"absolute directory) nor one of the original's names ({legacy})"
            )
        if not self.settings.ard_source:
            raise Permanent(
                "no scene archive is configured: set CONVEYOR_ARD_SOURCE to the directory or "
                "s3://bucket/prefix holding the .SAFE folders or .zip files (Sentinel-2) or the "
                "USGS .tar/.tar.gz downloads (Landsat)"
            )
        return parse_archive(self.settings.ard_source)

    def output_for(self, request: SceneRequest, name: str) -> OutputPlace:
        folder = output_folder(request.s3_dir, name)
        url = self.settings.ard_output_url or "s3://"
        try:
            destination = destination_from_url(url, self.s3_settings, bucket=request.s3_bucket)
        except ValueError as error:
            raise Permanent(f"CONVEYOR_ARD_OUTPUT_URL {url!r} is not usable: {error}") from None
        return OutputPlace(destination=destination, folder=folder)

    # -- running ----------------------------------------------------------------------------

    async def run(self, job: Job) -> JobOutcome:
        if not isinstance(job, SceneJob):
            raise InvalidRequest(f"the ard pool runs scene jobs, not {job.kind} jobs")
        request = job.scene
        # The dispatcher checked this too; a job added to the stream by hand was not.
        check_destinations(job, self.destinations)
        plugin = self.plugin_for(request)
        plugin.check(request, self.settings)
        inter_dir = scratch_directory(request.inter_dir, self.settings.scratch_root)
        archive = self.archive_for(request)
        name = plugin.output_name(request)
        place = self.output_for(request, name)
        bound = log.bind(job_id=job.job_id, scene=request.in_scene, plugin=plugin.name)
        async with place.destination:
            metadata_name = metadata_file_name(name)
            if await place.destination.exists(place.key(metadata_name)):
                await self._index(place, metadata_name, bound)
                bound.info("ard.already_committed", metadata_url=place.url(metadata_name))
                return JobOutcome(
                    state="skipped",
                    outputs=[place.url(metadata_name)],
                    destination=place.destination.kind,
                    detail={"scene": name},
                )
            workdir = job_folder(inter_dir, name, job.job_id)
            try:
                return await self._make(job, plugin, archive, place, workdir, bound)
            finally:
                await asyncio.to_thread(remove_folder, workdir)

    async def _make(
        self,
        job: SceneJob,
        plugin: ScenePlugin,
        archive: Archive,
        place: OutputPlace,
        workdir: Path,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> JobOutcome:
        request = job.scene
        name = plugin.output_name(request)
        stages: dict[str, float] = {}
        started = time.monotonic()
        await asyncio.to_thread(fresh_folder, workdir)
        fetched = await fetch_scene(
            archive,
            plugin.archive_candidates(request),
            workdir / "input",
            self.s3_settings,
            self.archive_limits,
        )
        ready = await plugin.prepare(fetched, request, workdir, self.settings)
        stages["load"] = time.monotonic() - started

        started = time.monotonic()
        context = ArdContext(
            output_name=name,
            folder_url=place.folder_url,
            source_url=fetched.source_url,
            processed=datetime.now(UTC),
            threads=self.settings.dask_threads,
            cog=self.cog,
        )
        product = await asyncio.to_thread(
            plugin.make_ard, ready, request, workdir / "output", context
        )
        stages["compute"] = time.monotonic() - started

        started = time.monotonic()
        written = await self._write(product, place, name)
        await self._index(place, metadata_file_name(name), bound)
        stages["write"] = time.monotonic() - started
        bound.info(
            "ard.done",
            dataset_id=str(product.dataset_id),
            files=len(written),
            bytes=sum(written.values()),
        )
        return JobOutcome(
            state="done",
            outputs=list(written),
            stages=stages,
            bytes_written=sum(written.values()),
            destination=place.destination.kind,
            detail={"scene": name, "dataset_id": str(product.dataset_id)},
        )

    async def _write(self, product: ArdProduct, place: OutputPlace, name: str) -> dict[str, int]:
        """Files, then the STAC item, then the eo3 document: the commit."""
        written: dict[str, int] = {}
        limit = asyncio.Semaphore(CONCURRENT_UPLOADS)
        destination = place.destination

        async def put(file_name: str, data: bytes | Path, media_type: str) -> None:
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
        await put(
            metadata_file_name(name), dump_yaml(product.eo3_document).encode(), YAML_MEDIA_TYPE
        )
        return written

    async def _index(
        self, place: OutputPlace, metadata_name: str, bound: structlog.typing.FilteringBoundLogger
    ) -> None:
        if self.indexer is None:
            return
        document_text = await place.destination.read_text(place.key(metadata_name))
        added = await asyncio.to_thread(
            self.indexer.ensure_indexed, document_text, place.url(metadata_name)
        )
        if added:
            bound.info("ard.indexed", metadata_url=place.url(metadata_name))

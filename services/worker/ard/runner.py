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
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import structlog

from services.worker.ard import landsat as _landsat  # noqa: F401  (registers the plugins)
from services.worker.ard import sentinel2 as _sentinel2  # noqa: F401  (registers the plugin)
from services.worker.ard.commit import (
    OutputPlace,
    commit,
    index_committed,
    is_committed,
    log_indexed,
    output_folder,
)
from services.worker.ard.errors import BadSceneRequest
from services.worker.ard.fetch import Archive, fetch_scene, parse_archive
from services.worker.ard.index import SceneIndexer, indexer_for
from services.worker.ard.limits import ArchiveLimits
from services.worker.ard.plugin import (
    ArdContext,
    ScenePlugin,
    metadata_file_name,
    registered_scene_plugins,
)
from services.worker.ard.scratch import fresh_folder, job_folder, remove_folder, scratch_directory
from services.worker.outputs.destination import destination_from_url
from services.worker.outputs.settings import S3Settings
from services.worker.outputs.spec import CogOptions
from services.worker.service import JobOutcome
from services.worker.settings import WorkerSettings
from shared.destinations import LEGACY_ARD_SOURCES as LEGACY_SOURCES
from shared.destinations import check_destinations
from shared.errors import InvalidRequest, Permanent
from shared.jobs import Job, SceneJob
from shared.messages import SceneRequest

log = structlog.get_logger(__name__)

__all__ = ["OutputPlace", "SceneRunner", "output_folder"]


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
        self.cog = cog or settings.cog_options()
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
            if await is_committed(place, name):
                await self._index(place, name, bound)
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
        written = await commit(product, place, name)
        await self._index(place, name, bound)
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

    async def _index(
        self, place: OutputPlace, name: str, bound: structlog.typing.FilteringBoundLogger
    ) -> None:
        if self.indexer is not None:
            await index_committed(self.indexer, place, name, log_indexed(bound, "ard.indexed"))

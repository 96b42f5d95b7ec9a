"""`WaterRunner`: the `ard` pool's water classification jobs (`jobWater`).

A job either classifies one dataset of the index, or is a search (a request by product, area
and period) that becomes a job per dataset (`expansion`). Classifying one dataset:

1. the dataset is looked up in the index (`dataset_not_found` when it is not there) and must
   be a scene of an input product (`ls8_usgs_sr_scene`, `s2_esa_sr_granule`, ...);
2. if its classification's eo3 document is already in the output, it is done: it is indexed
   if it was not yet (a worker may have died between the two) and the job is `skipped`;
3. the scene's WOfS bands and mask are loaded on its own grid (`grids.default`: 30 m Landsat,
   10 m Sentinel-2, whose 20 m bands are taken nearest) and classified (`layer`), in Dask
   chunks on `CONVEYOR_DASK_THREADS` threads, into one uint8 COG in a scratch folder;
4. the COG, then the STAC item, then the eo3 document are written to
   `{output}/{prefix}/{product}/{yyyy}/{mm}/{dd}/{label}-{source id[:8]}/` (the output is
   `CONVEYOR_OUTPUT_URL`, with the item's `bucket` when that is a bare `s3://`), the document
   last: its presence is the commit;
5. it is indexed as its own product (`ls8_water_classification`, added to the index if
   missing), unless `CONVEYOR_INDEX_OUTPUTS` is set to false; its id is a uuid5 of the source
   dataset and the product's version, so a rerun is the same dataset.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import structlog

from services.worker.ard.commit import (
    OutputPlace,
    commit,
    index_committed,
    is_committed,
    log_indexed,
)
from services.worker.ard.index import SceneIndexer, indexing_enabled, open_configured_datacube
from services.worker.ard.plugin import ArdFile, ArdProduct, metadata_file_name, stac_file_name
from services.worker.ard.scratch import fresh_folder, remove_folder
from services.worker.outputs.cog import COG_MEDIA_TYPE, write_cog_file
from services.worker.outputs.destination import destination_from_url
from services.worker.outputs.settings import S3Settings
from services.worker.outputs.spec import CogOptions
from services.worker.service import JobOutcome
from services.worker.settings import WorkerSettings
from services.worker.water.documents import Classification, eo3_document, safe_name, stac_item
from services.worker.water.expansion import Expansion
from services.worker.water.layer import (
    WATER_BAND,
    WATER_SPEC,
    classification_dataset_id,
    classify_scene,
    measurements,
)
from services.worker.water.sources import SourceScene, find_scenes, scene_by_id
from shared.catalogue import water_classification_definition
from shared.destinations import check_destinations
from shared.errors import InvalidRequest, NoData, Permanent
from shared.jobs import Job, WaterJob, water_dataset_job
from shared.keys import Keys
from shared.limits import RequestLimits

log = structlog.get_logger(__name__)


def classification_folder(prefix: str, product: str, scene: SourceScene) -> str:
    """`{prefix}/{product}/{yyyy}/{mm}/{dd}/{label}-{source id[:8]}`: by the scene's date,
    named after it, and apart from any other dataset that shares its label."""
    day = scene.time
    folder = (
        f"{product}/{day:%Y}/{day:%m}/{day:%d}/"
        f"{safe_name(scene.label)}-{scene.dataset_id.replace('-', '')[:8]}"
    )
    return f"{prefix.strip('/')}/{folder}" if prefix.strip("/") else folder


def classification_stem(product: str, scene: SourceScene) -> str:
    """The stem of every file of a classification: its eo3 label."""
    return f"{product}_{safe_name(scene.label)}"


class WaterRunner:
    """Runs `WaterJob`s; `close()` releases the datacube connection."""

    def __init__(
        self,
        settings: WorkerSettings,
        redis: aioredis.Redis,
        *,
        limits: RequestLimits | None = None,
        index: SceneIndexer | None = None,
        s3_settings: S3Settings | None = None,
        cog: CogOptions | None = None,
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.limits = limits if limits is not None else RequestLimits()
        self.index = index if index is not None else SceneIndexer(open_configured_datacube)
        self.index_outputs = indexing_enabled(settings)
        self.s3_settings = s3_settings if s3_settings is not None else S3Settings()
        self.cog = cog or settings.cog_options()
        self.destinations = settings.destination_policy()
        self.expansion = Expansion(redis, self.keys, batch_bytes=self.limits.dispatch_batch_bytes)

    async def close(self) -> None:
        await asyncio.to_thread(self.index.close)

    async def run(self, job: Job) -> JobOutcome:
        if not isinstance(job, WaterJob):
            raise InvalidRequest(f"a {job.kind} job reached the water classification runner")
        # The dispatcher checked this too; a job added to the stream by hand was not.
        check_destinations(job, self.destinations)
        if job.expands:
            return await self._expand(job)
        return await self._classify(job)

    # -- a search ---------------------------------------------------------------------------

    async def _expand(self, job: WaterJob) -> JobOutcome:
        request = job.request
        bound = log.bind(job_id=job.job_id, request_id=job.request_id)
        started = time.monotonic()
        limit = self.limits.max_jobs_per_request
        # The index is opened in the thread too: connecting blocks.
        scenes = await asyncio.to_thread(lambda: find_scenes(self.index.datacube(), request, limit))
        if not scenes:
            raise NoData(
                f"no {request.product} datasets between {request.time_from} and "
                f"{request.time_to} meet the area {request.area_bounds} ({request.area_crs})"
            )
        jobs = [water_dataset_job(job, scene.dataset_id, scene.label) for scene in scenes]
        added = await self.expansion.add(job, jobs, time.time())
        bound.info("water.expanded", scenes=len(scenes), added=added)
        return JobOutcome(
            state="done",
            stages={"search": time.monotonic() - started},
            detail={"scenes": str(len(scenes)), "jobs_added": str(added)},
        )

    # -- one dataset ------------------------------------------------------------------------

    async def _classify(self, job: WaterJob) -> JobOutcome:
        assert job.dataset_id is not None
        bound = log.bind(job_id=job.job_id, request_id=job.request_id, dataset=job.dataset_id)
        stages: dict[str, float] = {}
        started = time.monotonic()
        dataset_id = job.dataset_id
        scene = await asyncio.to_thread(lambda: scene_by_id(self.index.datacube(), dataset_id))
        product = scene.output_product
        stem = classification_stem(product, scene)
        place = self._place(job, product, scene)
        async with place.destination:
            if await is_committed(place, stem):
                await self._index(place, stem, product, bound)
                bound.info(
                    "water.already_committed", metadata_url=place.url(metadata_file_name(stem))
                )
                return JobOutcome(
                    state="skipped",
                    outputs=[place.url(metadata_file_name(stem))],
                    destination=place.destination.kind,
                    detail={"source": scene.dataset_id, "product": product},
                )
            workdir = self._workdir(stem, job.job_id)
            try:
                await asyncio.to_thread(fresh_folder, workdir)
                stages["load"] = time.monotonic() - started
                started = time.monotonic()
                made = await asyncio.to_thread(
                    self._make, scene, product, stem, workdir, place.folder_url
                )
                stages["compute"] = time.monotonic() - started
                started = time.monotonic()
                written = await commit(made, place, stem)
                await self._index(place, stem, product, bound)
                stages["write"] = time.monotonic() - started
            finally:
                await asyncio.to_thread(remove_folder, workdir)
        bound.info("water.done", dataset_id=str(made.dataset_id), bytes=sum(written.values()))
        return JobOutcome(
            state="done",
            outputs=list(written),
            stages=stages,
            bytes_written=sum(written.values()),
            destination=place.destination.kind,
            detail={
                "dataset_id": str(made.dataset_id),
                "source": scene.dataset_id,
                "product": product,
            },
        )

    def _place(self, job: WaterJob, product: str, scene: SourceScene) -> OutputPlace:
        url = self.settings.output_url
        try:
            destination = destination_from_url(url, self.s3_settings, bucket=job.request.bucket)
        except ValueError as error:
            raise Permanent(f"CONVEYOR_OUTPUT_URL {url!r} is not usable: {error}") from None
        return OutputPlace(destination, classification_folder(job.request.prefix, product, scene))

    def _workdir(self, stem: str, job_id: str) -> Path:
        return Path(self.settings.scratch_root) / "water" / f"{stem}.{job_id[:16]}"

    def _make(
        self, scene: SourceScene, product: str, stem: str, workdir: Path, folder_url: str
    ) -> ArdProduct:
        """Blocking: load the scene on its grid, classify it, write the COG, describe it."""
        sensor = scene.sensor
        chunk = self.settings.default_chunk_pixels
        cube = self.index.datacube().load(
            datasets=[scene.dataset],
            measurements=measurements(sensor),
            like=scene.geobox,
            resampling="nearest",
            dask_chunks={"time": 1, "y": chunk, "x": chunk},
        )
        if cube is None or not cube.data_vars:
            raise Permanent(f"dataset {scene.dataset_id} loaded nothing on its own grid")
        layer: Any = classify_scene(cube, sensor).compute(
            scheduler="threads", num_workers=self.settings.dask_threads
        )
        file_name = f"{stem}_{WATER_BAND}.tif"
        write_cog_file(layer, workdir / file_name, WATER_SPEC, self.cog)
        facts = Classification(
            dataset_id=classification_dataset_id(scene.dataset_id, product),
            product=product,
            source=scene,
            file_name=file_name,
            processed=datetime.now(UTC),
        )
        self_href = f"{folder_url.rstrip('/')}/{stac_file_name(stem)}"
        return ArdProduct(
            dataset_id=facts.dataset_id,
            files=(ArdFile(file_name, workdir / file_name, COG_MEDIA_TYPE),),
            stac_item=stac_item(facts, self_href, metadata_file_name(stem)),
            eo3_document=eo3_document(facts),
        )

    async def _index(
        self,
        place: OutputPlace,
        stem: str,
        product: str,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        if not self.index_outputs:
            return
        await asyncio.to_thread(self.index.ensure_product, water_classification_definition(product))
        await index_committed(self.index, place, stem, log_indexed(bound, "water.indexed"))

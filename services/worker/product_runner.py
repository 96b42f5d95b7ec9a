"""One product tile job: skip if committed, find and load inputs, compute on Dask, write, index.

Every blocking step runs off the event loop (`asyncio.to_thread` or the asynchronous Dask
client), so lease renewal keeps running however long the computation takes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from services.worker.compute import DaskCompute
from services.worker.outputs import (
    BandSpec,
    Destination,
    OutputSpec,
    S3Settings,
    destination_from_url,
    is_committed,
    layout_for,
    output_spec_for_job,
    product_definition,
    write_product,
)
from services.worker.products import ProductContext, get_product, sensor_for
from services.worker.products.base import DerivedFrom
from services.worker.service import JobOutcome
from services.worker.settings import WorkerSettings
from shared.catalogue import short_name
from shared.destinations import check_destinations
from shared.errors import NoData, Permanent
from shared.jobs import Job, ProductJob

log = structlog.get_logger(__name__)


class MissingInputs(Permanent):
    """The job counts datasets made from others, and some of those were never made."""

    reason = "inputs_missing"


def output_product_name(job: ProductJob) -> str:
    """e.g. `ls8_geomedian`: the sensor of the inputs and the job code, as the original named it."""
    return f"{short_name(job.product)}_{job.job_code}"


class ProductRunner:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.compute = DaskCompute(settings)
        self.s3_settings = S3Settings()
        self.destinations = settings.destination_policy()
        self._datacube: Any = None
        # Jobs running at once (--concurrency) open it from their threads: one index for all.
        self._datacube_lock = threading.Lock()
        self._context: ProductContext | None = None

    def datacube(self) -> Any:
        with self._datacube_lock:
            if self._datacube is None:
                from shared.datacube import DatacubeSettings, open_datacube

                self._datacube = open_datacube(DatacubeSettings())
            return self._datacube

    def context(self) -> ProductContext:
        if self._context is None:
            self._context = ProductContext.from_settings(self.settings)
        return self._context

    async def run(self, job: Job) -> JobOutcome:
        if not isinstance(job, ProductJob):
            raise Permanent(f"a {job.kind} job reached the product pool")
        # The dispatcher checked this too; a job added to the stream by hand was not.
        check_destinations(job, self.destinations)
        product = get_product(job.job_code)
        sensor = sensor_for(job.product)
        product.check(sensor, job.options)
        bands = {
            name: BandSpec(
                dtype=band.dtype, nodata=band.nodata, units=band.units,
                overview_resampling=band.overview_resampling, scale=band.scale, offset=band.offset,
            )
            for name, band in product.outputs.items()
        }  # fmt: skip
        destination = destination_from_url(
            self.settings.output_url, self.s3_settings, bucket=job.bucket
        )
        stages: dict[str, float] = {}
        async with destination:
            draft = output_spec_for_job(
                job, product_name=output_product_name(job), bands=bands, sources=(),
                default_naming=self.settings.output_naming,
            )  # fmt: skip
            if await is_committed(draft, destination):
                log.info("already committed: nothing to do", job_id=job.job_id)
                if self.settings.index_outputs:
                    # Committed by a run that stopped before indexing it (or ran without).
                    await self._index(draft, bands, destination)
                return JobOutcome(state="skipped", destination=destination.kind)

            started = time.monotonic()
            plan = product.load_plan(sensor, job.options)
            datasets = await asyncio.to_thread(self._find_datasets, job, plan.product)
            if not datasets:
                raise NoData(
                    f"no {plan.product} datasets between {job.period.start} and "
                    f"{job.period.end} over tile {job.area.tile}"
                )
            if plan.derived_from is not None:
                await asyncio.to_thread(
                    self._check_derived, job, plan.product, plan.derived_from, datasets
                )
            # Lazy: pixels are read as the computation consumes them, a few chunks at a time
            # (persisting the cube first held all of it, and then its masked copy, at once). So
            # "load" is finding the datasets and planning the read; reading counts as compute.
            cube = await asyncio.to_thread(
                self._load, job, datasets, plan.measurements, plan.resampling
            )
            stages["load"] = time.monotonic() - started

            started = time.monotonic()
            lazy = product.compute(cube, sensor, job.options, self.context())
            del cube
            result = await self.compute.compute(lazy)
            del lazy
            vectors = await asyncio.to_thread(product.vectors, result, job.options)
            stages["compute"] = time.monotonic() - started

            started = time.monotonic()
            spec = output_spec_for_job(
                job, product_name=output_product_name(job), bands=bands,
                sources=[str(dataset.id) for dataset in datasets],
                default_naming=self.settings.output_naming,
                properties={"odc:file_format": "GeoTIFF"},
                cog=self.settings.cog_options(), producer=self.settings.producer,
            )  # fmt: skip
            written = await write_product(result, vectors, spec, destination)
            if self.settings.index_outputs:
                await self._index(spec, bands, destination)
            stages["write"] = time.monotonic() - started
        return JobOutcome(
            state="skipped" if written.already_done else "done",
            outputs=[file.url for file in written.files],
            stages=stages,
            bytes_written=written.bytes_written,
            destination=destination.kind,
            detail={
                "dataset_id": str(written.dataset_id),
                "metadata": written.metadata_url,
                "sources": str(len(datasets)),
            },
        )

    def _find_datasets(self, job: ProductJob, product: str | None = None) -> Sequence[Any]:
        """Datasets of `product` (default the job's) whose footprint meets the cell and whose
        solar day (at the cell) is in the period.

        The index is searched by time (a day wider than the period: see `loading`) and
        latitude only, then footprints are intersected in the cell's own CRS: datacube 1.9
        stores a longitude range for a dataset that crosses the antimeridian (as Fiji's do)
        that spans the wrong way round the globe, so a lon/lat search misses them.
        """
        from services.worker.loading import cell_longitude, in_period, search_times
        from shared.tiling import area_geobox

        geobox = area_geobox(job.area)
        cell = geobox.extent
        longitude = cell_longitude(geobox)
        latitudes = cell.to_crs("EPSG:4326").boundingbox
        candidates = self.datacube().find_datasets(
            product=product or job.product,
            time=search_times(job.period.start, job.period.end),
            lat=(latitudes.bottom, latitudes.top),
        )
        return [
            dataset
            for dataset in candidates
            if dataset.extent is not None
            and in_period(dataset, job.period.start, job.period.end, longitude)
            and dataset.extent.to_crs(cell.crs).intersects(cell)
        ]

    def _check_derived(
        self, job: ProductJob, product: str, derived: DerivedFrom, datasets: Sequence[Any]
    ) -> None:
        """Every dataset of `derived.product` the tile and period hold has its `product`
        dataset among `datasets`, or `MissingInputs` says which do not."""
        present = {str(dataset.id) for dataset in datasets}
        sources = self._find_datasets(job, derived.product)
        missing = [
            str(source.id)
            for source in sources
            if str(derived.dataset_id(str(source.id))) not in present
        ]
        if missing:
            raise MissingInputs(
                f"{len(missing)} of the {len(sources)} {derived.product} datasets between "
                f"{job.period.start} and {job.period.end} over tile {job.area.tile} have no "
                f"{product} dataset indexed (e.g. {missing[0]}): make them first (a "
                f"water_classification item on jobWater), or ask for another method"
            )

    def _load(
        self,
        job: ProductJob,
        datasets: Sequence[Any],
        measurements: Sequence[str],
        resampling: Mapping[str, str] | str | None = None,
    ) -> Any:
        """The cell's cube, each band resampled as the product says (reflectance interpolated,
        masks nearest: `Product.load_resampling`), scenes of one pass fused into one solar-day
        observation."""
        from services.worker.loading import cell_longitude, solar_day_grouping
        from shared.tiling import area_geobox

        geobox = area_geobox(job.area)
        chunk = self.settings.default_chunk_pixels
        chunks = {"time": 1, "y": chunk, "x": chunk} | job.dask_chunks
        return self.datacube().load(
            datasets=list(datasets),
            measurements=list(measurements),
            like=geobox,
            group_by=solar_day_grouping(cell_longitude(geobox)),
            dask_chunks=chunks,
            resampling=(
                get_product(job.job_code).load_resampling(sensor_for(job.product))
                if resampling is None
                else resampling
                if isinstance(resampling, str)
                else dict(resampling)
            ),
        )

    async def _index(
        self, spec: OutputSpec, bands: Mapping[str, BandSpec], destination: Destination
    ) -> None:
        """Index the committed output as a dataset of its own product, wherever it was written
        (an S3 output by its s3:// URL); a no-op for a dataset the index has."""
        metadata_key = layout_for(spec).metadata_key
        metadata_url = destination.url_for(metadata_key)
        document = await destination.read_text(metadata_key)
        definition = product_definition(spec, bands)
        await asyncio.to_thread(self._index_output, definition, metadata_url, document)

    def _index_output(
        self, definition: Mapping[str, Any], metadata_url: str, document: str
    ) -> None:
        from shared.datacube import index_product_output

        index_product_output(self.datacube(), definition, metadata_url, document)

    async def close(self) -> None:
        await self.compute.close()

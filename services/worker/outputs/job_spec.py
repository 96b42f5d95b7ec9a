"""From a tile job on the stream to the `OutputSpec` that names and describes its product."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from odc.geo.crs import CRS

from services.worker.outputs.spec import (
    DEFAULT_VERSION,
    BandSpec,
    CogOptions,
    NamingMode,
    OutputSpec,
)
from shared.jobs import ProductJob


def covers_whole_request(job: ProductJob) -> bool:
    """True when the job's tile holds the request's whole box (to within a pixel)."""
    area = job.area
    if CRS(job.request_crs) != CRS(area.crs):
        return False
    left, bottom, right, top = job.request_bounds
    slack = area.resolution
    return (
        area.left <= left + slack
        and area.bottom <= bottom + slack
        and area.right >= right - slack
        and area.top >= top - slack
    )


def output_spec_for_job(
    job: ProductJob,
    *,
    product_name: str,
    bands: Mapping[str, BandSpec],
    sources: Iterable[str],
    source_locations: Mapping[str, str] | None = None,
    version: str = DEFAULT_VERSION,
    default_naming: NamingMode = "odc",
    cog: CogOptions | None = None,
    producer: str | None = None,
    properties: Mapping[str, Any] | None = None,
) -> OutputSpec:
    """The spec of `job`'s product, known before loading (sources come from the index search).

    With legacy naming, a job that is the whole request is named after the request's box, as
    the original worker named its files; a job that is one tile of several is named after its
    tile, so that tiles never overwrite each other.
    """
    naming = job.naming or default_naming
    legacy_bounds = job.request_bounds if covers_whole_request(job) else None
    return OutputSpec(
        product_name=product_name,
        job_code=job.job_code,
        source_product=job.product,
        version=version,
        tile=job.area.tile,
        crs=job.area.crs,
        bounds=job.area.bounds,
        period=job.period,
        sources=tuple(sources),
        source_locations=dict(source_locations or {}),
        prefix=job.prefix,
        naming=naming,
        legacy_bounds=legacy_bounds if naming == "legacy" else None,
        epsg4326_naming=job.epsg4326_naming,
        bands=dict(bands),
        producer=producer,
        properties=dict(properties or {}),
        cog=cog or CogOptions(),
    )

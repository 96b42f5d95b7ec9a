"""Write one product dataset: band COGs and vectors first, the STAC item, then the eo3 document.

The eo3 document is the commit marker. Its presence means the dataset is complete, so a rerun
of a finished job returns at once, and a run that dies before the last write leaves no
committed product: the next run overwrites whatever part it had written.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
import xarray as xr
import yaml
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox

from services.worker.outputs.cog import COG_MEDIA_TYPE, encode_cog
from services.worker.outputs.destination import Destination
from services.worker.outputs.identity import dataset_id
from services.worker.outputs.metadata import (
    GEOJSON_MEDIA_TYPE,
    YAML_MEDIA_TYPE,
    DatasetFacts,
    dump_json,
    dump_yaml,
    eo3_document,
    stac_item,
)
from services.worker.outputs.naming import layout_for
from services.worker.outputs.spec import BandSpec, OutputSpec
from shared.errors import Permanent

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class WrittenFile:
    key: str
    url: str
    size: int


@dataclass(frozen=True)
class WrittenProduct:
    """What a write left behind, in the order written (the eo3 document last)."""

    dataset_id: UUID
    metadata_url: str
    stac_url: str
    files: tuple[WrittenFile, ...]
    already_done: bool

    @property
    def bytes_written(self) -> int:
        return sum(written.size for written in self.files)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(written.key for written in self.files)


async def is_committed(spec: OutputSpec, destination: Destination) -> bool:
    """True when the product's metadata document exists: the job needs no loading at all."""
    return await destination.exists(layout_for(spec).metadata_key)


async def write_product(
    result: xr.Dataset,
    vectors: Mapping[str, Mapping[str, Any]],
    spec: OutputSpec,
    destination: Destination,
    *,
    processed: datetime | None = None,
) -> WrittenProduct:
    """Write `result` (one 2-D variable per band, with an odc geobox) and `vectors` (GeoJSON).

    Returns at once, writing nothing, when the product is committed already. Dask-backed
    results are computed here, once, off the event loop.
    """
    layout = layout_for(spec)
    logger = log.bind(product=spec.product_name, tile=spec.tile, period=spec.period.label)
    if await destination.exists(layout.metadata_key):
        done_id = await _committed_id(destination, layout.metadata_key, spec)
        logger.info("product.already_committed", dataset_id=str(done_id))
        return WrittenProduct(
            dataset_id=done_id,
            metadata_url=destination.url_for(layout.metadata_key),
            stac_url=destination.url_for(layout.stac_key),
            files=(),
            already_done=True,
        )

    bands = resolve_bands(result, spec)
    geobox = result_geobox(result, spec)
    selected = result[list(bands)]
    if any(selected[band].chunks is not None for band in bands):
        selected = await asyncio.to_thread(selected.compute)

    identity = dataset_id(spec)
    facts = DatasetFacts(
        spec=spec,
        layout=layout,
        geobox=geobox,
        dataset_id=identity,
        bands=bands,
        vectors=tuple(vectors),
        processed=processed or datetime.now(UTC),
        product_href=destination.url_for(layout.product_folder),
    )
    logger = logger.bind(dataset_id=str(identity))
    written: list[WrittenFile] = []

    async def put(key: str, data: bytes, content_type: str) -> None:
        size = await destination.put(key, data, content_type=content_type)
        written.append(WrittenFile(key=key, url=destination.url_for(key), size=size))

    for band, band_spec in bands.items():
        encoded = await asyncio.to_thread(encode_cog, selected[band], band_spec, spec.cog)
        await put(layout.band_key(band), encoded, COG_MEDIA_TYPE)
    for name, collection in vectors.items():
        text = json.dumps(collection, allow_nan=False, separators=(",", ":"))
        await put(layout.vector_key(name), text.encode(), GEOJSON_MEDIA_TYPE)

    stac_url = destination.url_for(layout.stac_key)
    await put(layout.stac_key, dump_json(stac_item(facts, stac_url)).encode(), "application/json")
    # Last: from here on the product counts as done.
    await put(layout.metadata_key, dump_yaml(eo3_document(facts)).encode(), YAML_MEDIA_TYPE)

    product = WrittenProduct(
        dataset_id=identity,
        metadata_url=destination.url_for(layout.metadata_key),
        stac_url=stac_url,
        files=tuple(written),
        already_done=False,
    )
    logger.info(
        "product.written",
        files=len(product.files),
        bytes=product.bytes_written,
        metadata_url=product.metadata_url,
    )
    return product


def resolve_bands(result: xr.Dataset, spec: OutputSpec) -> dict[str, BandSpec]:
    """The spec's bands, which `result` must hold; or, when it names none, every variable."""
    if spec.bands:
        missing = [band for band in spec.bands if band not in result.data_vars]
        if missing:
            present = ", ".join(map(str, result.data_vars))
            raise Permanent(
                f"the result lacks band{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"that {spec.product_name} declares (it has {present})"
            )
        return dict(spec.bands)
    if not result.data_vars:
        raise Permanent(f"the result of {spec.product_name} holds no bands to write")
    return {
        str(name): BandSpec(dtype=variable.dtype.name, nodata=variable.odc.nodata)
        for name, variable in result.data_vars.items()
    }


def result_geobox(result: xr.Dataset, spec: OutputSpec) -> GeoBox:
    geobox = result.odc.geobox
    if not isinstance(geobox, GeoBox) or geobox.crs is None:
        raise Permanent(f"the result of {spec.product_name} has no geobox (CRS and pixel grid)")
    if geobox.crs != CRS(spec.crs):
        raise Permanent(
            f"the result of {spec.product_name} is in {geobox.crs} but the job asked for {spec.crs}"
        )
    return geobox


async def _committed_id(destination: Destination, key: str, spec: OutputSpec) -> UUID:
    """The id the committed document carries (it may predate new sources); the spec's otherwise."""
    try:
        document = yaml.safe_load(await destination.read_text(key))
        return UUID(str(document["id"]))
    except (FileNotFoundError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return dataset_id(spec)

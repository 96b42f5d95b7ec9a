"""Product outputs: band COGs, an eo3 document and a STAC item, to a directory or S3.

    spec = output_spec_for_job(job, product_name="ls8_geomedian", bands=..., sources=ids)
    async with destination_from_url(settings.output_url, S3Settings()) as destination:
        if not await is_committed(spec, destination):
            written = await write_product(result, {}, spec, destination)

See `naming` for the layout under the prefix and `writer` for the commit protocol.
"""

from services.worker.outputs.destination import (
    Destination,
    LocalDestination,
    S3Destination,
    destination_from_url,
)
from services.worker.outputs.identity import dataset_id, derived_dataset_id
from services.worker.outputs.job_spec import output_spec_for_job
from services.worker.outputs.metadata import product_definition
from services.worker.outputs.naming import ProductLayout, layout_for
from services.worker.outputs.quicklook import rgb_quicklook
from services.worker.outputs.settings import S3Credentials, S3Settings
from services.worker.outputs.spec import BandSpec, CogOptions, OutputSpec
from services.worker.outputs.writer import WrittenFile, WrittenProduct, is_committed, write_product

__all__ = [
    "BandSpec",
    "CogOptions",
    "Destination",
    "LocalDestination",
    "OutputSpec",
    "ProductLayout",
    "S3Credentials",
    "S3Destination",
    "S3Settings",
    "WrittenFile",
    "WrittenProduct",
    "dataset_id",
    "derived_dataset_id",
    "destination_from_url",
    "is_committed",
    "layout_for",
    "output_spec_for_job",
    "product_definition",
    "rgb_quicklook",
    "write_product",
]

"""Product plugins, registered by `job_code`: pure computations over a loaded datacube cube.

The worker calls, for a job:

    product = get_product(job.job_code)          # InvalidRequest naming the known codes
    sensor = sensor_for(job.product)             # InvalidRequest naming the known products
    product.check(sensor, job.options)           # InvalidRequest with the reason
    cube = dc.load(..., measurements=product.measurements(sensor), group_by="solar_day",
                   resampling=product.load_resampling(sensor), dask_chunks=...)
    result = product.compute(cube, sensor, job.options, context)   # lazy; the worker computes
    vectors = product.vectors(result, job.options)                 # GeoJSON by name

`product.outputs` gives each result band's dtype, nodata and units for the writer.
"""

from services.worker.products import (
    fc_percentiles,
    fractional_cover,
    geomedian,
    ndvi,
    shoreline,
    water,
)
from services.worker.products.base import (
    OutputBand,
    Product,
    ProductContext,
    get_product,
    register,
    registry,
)
from services.worker.products.tides import TideTable
from shared.catalogue import CANONICAL_BANDS, SENSORS, Sensor, sensor_for
from shared.options import TideRange, parse_tide_range, parse_time_step

__all__ = [
    "CANONICAL_BANDS",
    "SENSORS",
    "OutputBand",
    "Product",
    "ProductContext",
    "Sensor",
    "TideRange",
    "TideTable",
    "fc_percentiles",
    "fractional_cover",
    "geomedian",
    "get_product",
    "ndvi",
    "parse_tide_range",
    "parse_time_step",
    "register",
    "registry",
    "sensor_for",
    "shoreline",
    "water",
]

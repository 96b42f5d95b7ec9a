"""What a product is: its inputs, its outputs, and one computation over a loaded cube.

A product is pure: `compute` turns the cube `dc.load` returned into a lazy 2-D result and
`vectors` turns the computed result into GeoJSON. Loading, Dask and writing belong to the
worker. Products register under their `job_code`:

    @register("ndvi")
    class Ndvi(Product):
        inputs = ("red", "nir")
        outputs = {"ndvi_median": OutputBand("float32", math.nan, "1", "median NDVI")}

        def compute(self, cube, sensor, options, context): ...
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar
from uuid import UUID

import numpy as np
import xarray as xr
from odc.geo.xr import xr_coords

from services.worker.products.tides import TideTable
from shared.catalogue import JOB_CODES, Sensor, check_plugin
from shared.errors import InvalidRequest
from shared.mask_filters import UNBUFFERED, MaskFilters
from shared.options import check_known_options

Resampling = Literal["nearest", "average", "mode", "bilinear", "cubic"]


@dataclass(frozen=True)
class OutputBand:
    """One band of a product's result as it is stored."""

    dtype: str
    nodata: float | int | None
    units: str = "1"
    description: str = ""
    #: How overviews of the band are made: counts and classes must not be averaged.
    overview_resampling: Resampling = "average"
    #: physical value = stored * scale + offset (reflectance x 10000: scale 0.0001).
    scale: float | None = None
    offset: float | None = None

    @property
    def nodata_is_nan(self) -> bool:
        return isinstance(self.nodata, float) and math.isnan(self.nodata)


@dataclass(frozen=True)
class DerivedFrom:
    """The loaded datasets are each derived from one dataset of `product`, with the id
    `dataset_id(source id)`: every such source in the job's place and period must have its
    derived dataset, or the job is refused (a count must not silently miss scenes)."""

    product: str
    dataset_id: Callable[[str], UUID]


@dataclass(frozen=True)
class LoadPlan:
    """What a job loads: which product's datasets, which of its measurements, resampled how."""

    product: str
    measurements: list[str]
    resampling: Mapping[str, str] | str
    derived_from: DerivedFrom | None = None


class TideTableSettings(Protocol):
    """The part of the worker's settings a product context is built from."""

    @property
    def tide_table(self) -> Path | None: ...


@dataclass(frozen=True)
class ProductContext:
    """What a product may need beyond cube and request: data the worker is configured with."""

    tide_table: TideTable | None = None

    @classmethod
    def from_settings(cls, settings: TideTableSettings) -> ProductContext:
        """Read what the settings name (e.g. `CONVEYOR_TIDE_TABLE`) once, at start-up."""
        table = None if settings.tide_table is None else TideTable.from_csv(settings.tide_table)
        return cls(tide_table=table)


class Product(ABC):
    """A product plugin. Subclasses declare `inputs`, `outputs` and implement `compute`."""

    #: Set by `register`.
    job_code: ClassVar[str] = ""
    #: Canonical reflectance bands (`blue, green, red, nir, swir1, swir2`) the product reads.
    inputs: ClassVar[tuple[str, ...]] = ()
    #: Result bands in order, each with the dtype and nodata `compute` delivers.
    outputs: ClassVar[Mapping[str, OutputBand]] = {}
    #: Options this product understands besides `time_step`.
    accepted_options: ClassVar[frozenset[str]] = frozenset()
    #: How reflectance is resampled onto the output grid when the scenes' grid differs.
    reflectance_resampling: ClassVar[Resampling] = "bilinear"

    def measurements(self, sensor: Sensor) -> list[str]:
        """The datacube measurements to load: the inputs as `sensor` names them, and its mask."""
        return [*(sensor.measurement(band) for band in self.inputs), sensor.mask_band]

    def check(self, sensor: Sensor, options: Mapping[str, str]) -> None:
        """Raise InvalidRequest, with a reason, if this product cannot serve `sensor`, `options`.

        The catalogue's entry decides for the products it lists, as the dispatcher does.
        """
        entry = JOB_CODES.get(self.job_code)
        if entry is not None:
            entry.check(sensor, options)
            return
        missing = [band for band in self.inputs if band not in sensor.bands]
        if missing:
            raise InvalidRequest(
                f"{self.job_code} needs {', '.join(missing)}, which {sensor.product} does not have"
            )
        check_known_options(self.job_code, options, self.accepted_options)

    @abstractmethod
    def compute(
        self,
        cube: xr.Dataset,
        sensor: Sensor,
        options: Mapping[str, str],
        context: ProductContext,
    ) -> xr.Dataset:
        """The product over `cube` (time, y, x; measurement names as in `sensor`).

        Returns the `outputs` bands, 2-D (y, x) on the cube's geobox, in their declared dtype
        with `nodata` set; usually lazy (Dask), for the caller to compute.
        """

    def mask_filters(self, sensor: Sensor, options: Mapping[str, str]) -> MaskFilters:
        """How cloud and shadow are buffered for this request (`cloud_filter`, `shadow_filter`,
        else the catalogue's default for the job code and sensor)."""
        entry = JOB_CODES.get(self.job_code)
        return UNBUFFERED if entry is None else entry.mask_filters(sensor, options)

    def load_resampling(self, sensor: Sensor) -> dict[str, str]:
        """How `dc.load` resamples each measurement onto the output grid: masks and classes
        always nearest; reflectance as `reflectance_resampling` says."""
        return {sensor.mask_band: "nearest", "*": self.reflectance_resampling}

    def load_plan(self, sensor: Sensor, options: Mapping[str, str]) -> LoadPlan:
        """What the worker loads for a request: by default the input product's `measurements`,
        resampled as `load_resampling` says. A product that reads something the worker made
        before (a water summary counting indexed classifications) says so here."""
        return LoadPlan(sensor.product, self.measurements(sensor), self.load_resampling(sensor))

    def vectors(self, result: xr.Dataset, options: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """GeoJSON FeatureCollections derived from the computed `result`, by name (default none)."""
        return {}

    def finish(self, bands: Mapping[Any, xr.DataArray], cube: xr.Dataset) -> xr.Dataset:
        """The declared outputs from `bands`: cast, with nodata and units, on `cube`'s geobox."""
        missing = [name for name in self.outputs if name not in bands]
        if missing:
            raise RuntimeError(f"{self.job_code} computed no {', '.join(missing)}")
        grid = xr_coords(cube.odc.geobox)
        finished: dict[str, xr.DataArray] = {}
        for name, band in self.outputs.items():
            layer = bands[name]
            if layer.dims != ("y", "x"):
                raise RuntimeError(f"{self.job_code} band {name} has dims {layer.dims}, not (y, x)")
            if layer.dtype != np.dtype(band.dtype):
                layer = layer.astype(band.dtype)
            # Only the grid's coordinates, with their CRS whatever the computation kept of it.
            layer = layer.drop_vars(list(layer.coords)).assign_coords(grid)
            layer.attrs = {"nodata": band.nodata, "units": band.units}
            finished[name] = layer
        return xr.Dataset(finished)


ProductClass = TypeVar("ProductClass", bound=type[Product])

#: job_code -> product; filled by `register` when the product modules are imported.
registry: dict[str, Product] = {}


def register(job_code: str) -> Callable[[ProductClass], ProductClass]:
    """Class decorator: serve jobs with `job_code` with one instance of the class."""

    def add(product_class: ProductClass) -> ProductClass:
        if job_code in registry:
            raise ValueError(f"job_code {job_code!r} is registered already")
        check_plugin(job_code, product_class.inputs, product_class.accepted_options)
        product_class.job_code = job_code
        registry[job_code] = product_class()
        return product_class

    return add


def get_product(job_code: str) -> Product:
    """The product registered for `job_code`, or InvalidRequest naming those that are."""
    try:
        return registry[job_code]
    except KeyError:
        raise InvalidRequest(
            f"no product is registered for job_code {job_code!r}; known job codes: "
            f"{', '.join(sorted(registry))}"
        ) from None

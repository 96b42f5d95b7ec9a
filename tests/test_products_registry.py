"""Products are found by job code and deliver exactly the bands they declare, for every sensor."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.worker.products import (
    OutputBand,
    Product,
    ProductContext,
    get_product,
    register,
    registry,
    sensor_for,
)
from shared.errors import InvalidRequest
from tests.test_products_support import ALL_PRODUCTS, loaded, synthetic_scene

JOB_CODES = ("geomedian", "fractional_cover", "water", "shoreline", "ndvi", "fc_percentiles")


def test_the_original_and_the_new_job_codes_are_registered() -> None:
    assert set(JOB_CODES) <= set(registry)
    for job_code in JOB_CODES:
        assert get_product(job_code).job_code == job_code


def test_an_unknown_job_code_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(InvalidRequest) as refused:
        get_product("mangroves")
    message = str(refused.value)
    assert "mangroves" in message
    assert all(job_code in message for job_code in JOB_CODES)


def test_a_job_code_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="registered already"):

        @register("geomedian")
        class Impostor(Product):
            def compute(self, cube, sensor, options, context):  # type: ignore[no-untyped-def]
                raise NotImplementedError


@pytest.mark.parametrize("product", ALL_PRODUCTS)
def test_measurements_are_the_inputs_as_the_datacube_names_them_and_the_mask(product: str) -> None:
    sensor = sensor_for(product)
    assert get_product("geomedian").measurements(sensor) == [
        "red", "green", "blue", "nir", "swir1", "swir2", sensor.mask_band,
    ]  # fmt: skip
    assert get_product("ndvi").measurements(sensor) == ["red", "nir", sensor.mask_band]
    assert get_product("shoreline").measurements(sensor) == ["green", "swir1", sensor.mask_band]
    assert get_product("water").measurements(sensor) == [
        "blue", "green", "red", "nir", "swir1", "swir2", sensor.mask_band,
    ]  # fmt: skip


@pytest.mark.parametrize("job_code", JOB_CODES)
def test_options_a_product_cannot_use_are_refused_with_the_reason(job_code: str) -> None:
    product = get_product(job_code)
    sensor = sensor_for("ls8_usgs_sr_scene")
    product.check(sensor, {"time_step": "1Y"})
    with pytest.raises(InvalidRequest, match="does not take option"):
        product.check(sensor, {"percentile": "90"})
    with pytest.raises(InvalidRequest, match="is not a time step"):
        product.check(sensor, {"time_step": "yearly"})


@pytest.mark.parametrize("job_code", ["geomedian", "fractional_cover", "water", "ndvi"])
def test_a_tide_range_is_refused_by_products_that_ignore_tides(job_code: str) -> None:
    options = {"tide_range_from": "0.5", "tide_range_to": "1.5"}
    with pytest.raises(InvalidRequest, match="tide_range_from, tide_range_to"):
        get_product(job_code).check(sensor_for("ls8_usgs_sr_scene"), options)


def test_shoreline_refuses_a_tide_range_that_is_not_numbers_or_is_upside_down() -> None:
    shoreline, sensor = get_product("shoreline"), sensor_for("ls8_usgs_sr_scene")
    shoreline.check(sensor, {"tide_range_from": "9.5", "tide_range_to": "10"})
    with pytest.raises(InvalidRequest, match="not a number"):
        shoreline.check(sensor, {"tide_range_from": "low", "tide_range_to": "10"})
    with pytest.raises(InvalidRequest, match="must be less than"):
        shoreline.check(sensor, {"tide_range_from": "10", "tide_range_to": "9.5"})


@pytest.mark.parametrize("product", ALL_PRODUCTS)
@pytest.mark.parametrize("job_code", JOB_CODES)
def test_every_product_delivers_its_declared_bands_on_the_cubes_grid(
    job_code: str, product: str
) -> None:
    scene = synthetic_scene(product, dates=6)
    plugin, sensor = get_product(job_code), sensor_for(product)
    cube = loaded(scene, plugin.measurements(sensor))

    result = plugin.compute(cube, sensor, {}, ProductContext()).compute()

    assert list(result.data_vars) == list(plugin.outputs)
    assert result.odc.geobox == scene.geobox
    for name, declared in plugin.outputs.items():
        band = result[name]
        assert band.dims == ("y", "x")
        assert band.dtype == np.dtype(declared.dtype), name
        assert _same_nodata(band.attrs["nodata"], declared)
        assert band.attrs["units"] == declared.units
        assert _has_data(band.values, declared), f"{name} is all nodata"


def _same_nodata(nodata: float | int | None, declared: OutputBand) -> bool:
    if declared.nodata_is_nan:
        return isinstance(nodata, float) and math.isnan(nodata)
    return nodata == declared.nodata


def _has_data(values: np.ndarray, declared: OutputBand) -> bool:
    if declared.nodata_is_nan:
        return bool(np.isfinite(values).any())
    return bool((values != declared.nodata).any())

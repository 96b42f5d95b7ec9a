"""Each datacube product's mask codes turn into the clear and water pixels the original chose."""

from __future__ import annotations

import dask.array
import numpy as np
import pytest
import xarray as xr

from services.worker.products import CANONICAL_BANDS, SENSORS, sensor_for
from shared.errors import InvalidRequest
from tests.test_products_support import ALL_PRODUCTS, MASK_CODES

EVERY_CODE: dict[str, np.ndarray] = {
    "pixel_qa": np.arange(0, 4096, dtype=np.uint16),
    "scene_classification": np.arange(0, 256, dtype=np.uint8),
}


def mask_of(codes: np.ndarray, name: str) -> xr.DataArray:
    return xr.DataArray(dask.array.from_array(codes, chunks=512), dims=("x",), name=name)


@pytest.mark.parametrize("product", ALL_PRODUCTS)
def test_every_sensor_calls_exactly_its_clear_and_water_codes_clear_and_water(product: str) -> None:
    sensor = sensor_for(product)
    codes = MASK_CODES[product]
    every = EVERY_CODE[sensor.mask_band]

    clear = sensor.clear(mask_of(every, sensor.mask_band)).compute().values
    water = sensor.water(mask_of(every, sensor.mask_band)).compute().values

    assert set(every[clear].tolist()) == set(codes.land) | set(codes.water)
    assert set(every[water].tolist()) == set(codes.water)


@pytest.mark.parametrize("product", ALL_PRODUCTS)
def test_cloud_shadow_and_fill_are_never_clear(product: str) -> None:
    sensor = sensor_for(product)
    codes = MASK_CODES[product]
    dtype = EVERY_CODE[sensor.mask_band].dtype
    bad = np.array([*codes.cloud, *codes.shadow, codes.fill, sensor.mask_nodata], dtype=dtype)

    assert not sensor.clear(mask_of(bad, sensor.mask_band)).compute().values.any()
    assert not sensor.water(mask_of(bad, sensor.mask_band)).compute().values.any()


def test_landsat_8_codes_are_the_original_workers() -> None:
    sensor = sensor_for("ls8_usgs_sr_scene")
    assert sensor.land_values == {322, 386, 834, 898, 1346}
    assert sensor.water_values == {324, 388, 836, 900, 1348}
    assert sensor.clear_values == sensor.land_values | sensor.water_values


@pytest.mark.parametrize("product", ["ls5_usgs_sr_scene", "ls7_usgs_sr_scene"])
def test_landsat_5_and_7_codes_are_the_original_workers(product: str) -> None:
    sensor = sensor_for(product)
    assert sensor.clear_values == {66, 130, 68, 132}
    assert sensor.water_values == {68, 132}


def test_sentinel_2_good_classes_are_dark_vegetation_bare_water_unclassified() -> None:
    sensor = sensor_for("s2_esa_sr_granule")
    assert sensor.clear_values == {2, 4, 5, 6, 7}
    assert sensor.water_values == {6}
    assert sensor.mask_band == "scene_classification"


@pytest.mark.parametrize("product", ALL_PRODUCTS)
def test_every_sensor_names_the_six_canonical_bands(product: str) -> None:
    sensor = sensor_for(product)
    assert [sensor.measurement(band) for band in CANONICAL_BANDS] == list(CANONICAL_BANDS)


def test_reflectance_encoding_is_declared_per_sensor() -> None:
    landsat, sentinel = sensor_for("ls8_usgs_sr_scene"), sensor_for("s2_esa_sr_granule")
    assert (landsat.reflectance_dtype, landsat.reflectance_nodata) == ("int16", -9999)
    assert (sentinel.reflectance_dtype, sentinel.reflectance_nodata) == ("uint16", 0)
    assert landsat.reflectance_scale == sentinel.reflectance_scale == 0.0001


def test_an_unknown_product_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(InvalidRequest) as refused:
        sensor_for("ls4_c2l2_sr")
    message = str(refused.value)
    assert "ls4_c2l2_sr" in message
    assert all(product in message for product in SENSORS)


def test_a_band_a_sensor_lacks_is_refused_naming_its_bands() -> None:
    with pytest.raises(InvalidRequest, match="has no coastal"):
        sensor_for("ls8_usgs_sr_scene").measurement("coastal")

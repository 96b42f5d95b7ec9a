"""Collection 2 Level-2 products: QA_PIXEL good pixels, declared reflectance, same products as C1.

The QA_PIXEL bits are written out here from USGS's LSDS-1619 table, independently of the
catalogue, so that the tests check the catalogue rather than repeat it.
"""

from __future__ import annotations

from typing import Any

import dask.array
import numpy as np
import pytest
import xarray as xr
from datacube.model import Product
from eodatasets3.validate import Level, validate_product
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.archive.usgs import collection2_qa_pixel, collection2_reflectance
from services.worker.ard.landsat_bands import MISSIONS, collection2_bands
from services.worker.products import sensor_for
from services.worker.products.observations import reflectance
from shared.catalogue import INPUT_PRODUCTS, product_definition
from tests.test_products_support import (
    LANDSAT_5_7,
    LANDSAT_8,
    Scene,
    run_product,
    synthetic_scene,
)

C2_PRODUCTS = ("ls5_c2l2_sr", "ls7_c2l2_sr", "ls8_c2l2_sr", "ls9_c2l2_sr")
# LSDS-1619 QA_PIXEL: bit 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 shadow, 5 snow, 6 clear,
# 7 water.
FILL, DILATED, CIRRUS, CLOUD, SHADOW, SNOW, CLEAR, WATER = (1 << bit for bit in range(8))
C1_NAMES = {"nir": "nir08", "swir1": "swir16", "swir2": "swir22"}


def as_mask(values: np.ndarray) -> xr.DataArray:
    return xr.DataArray(dask.array.from_array(values, chunks=4096), dims=("x",), name="qa_pixel")


def reference_clear(value: int) -> bool:
    bad = FILL | DILATED | CIRRUS | CLOUD | SHADOW | SNOW
    return bool(value & (CLEAR | WATER)) and not value & bad


@pytest.mark.parametrize("product", C2_PRODUCTS)
def test_qa_pixel_clear_and_water_follow_usgs_bits_for_every_value(product: str) -> None:
    sensor = sensor_for(product)
    every = np.arange(0, 65536, dtype=np.uint16)

    clear = sensor.clear(as_mask(every)).compute().values
    water = sensor.water(as_mask(every)).compute().values

    expected_clear = np.array([reference_clear(int(v)) for v in every])
    np.testing.assert_array_equal(clear, expected_clear)
    np.testing.assert_array_equal(water, expected_clear & ((every & WATER) != 0))


@pytest.mark.parametrize(
    ("value", "clear", "water"),
    [
        (21824, True, False),  # Landsat 8/9 clear land: clear, low cloud/shadow/snow/cirrus conf
        (21952, True, True),  # Landsat 8/9 clear water
        (5440, True, False),  # Landsat 4-7 clear land
        (5504, True, True),  # Landsat 4-7 clear water
        (1, False, False),  # fill
        (22280, False, False),  # cloud, high confidence
        (21826, False, False),  # dilated cloud (clear bit left set)
        (23888, False, False),  # cloud shadow: USGS leaves the clear bit set
        (30048, False, False),  # snow: clear bit set too
        (54596, False, False),  # high-confidence cirrus
    ],
)
def test_known_usgs_qa_pixel_values(value: int, clear: bool, water: bool) -> None:
    sensor = sensor_for("ls8_c2l2_sr")
    mask = as_mask(np.array([value], dtype=np.uint16))
    assert bool(sensor.clear(mask).compute().values[0]) is clear
    assert bool(sensor.water(mask).compute().values[0]) is water


# Collection 1 pixel_qa codes with high cirrus confidence (bits 8-9 = 3), which the original
# worker's Landsat 8 lists count as clear; USGS's Collection 2 flags them as cirrus (bit 2).
HIGH_CIRRUS = {834: 322, 898: 386, 836: 324, 900: 388}


def decided(sensor: Any, mask: np.ndarray) -> tuple[list[bool], list[bool]]:
    array = as_mask(mask)
    return sensor.clear(array).compute().values.tolist(), sensor.water(
        array
    ).compute().values.tolist()


@pytest.mark.parametrize(("oli", "codes"), [(True, LANDSAT_8), (False, LANDSAT_5_7)])
def test_collection_1_codes_recoded_for_collection_2_keep_their_meaning(
    oli: bool, codes: Any
) -> None:
    c1 = sensor_for("ls8_usgs_sr_scene" if oli else "ls5_usgs_sr_scene")
    c2 = sensor_for("ls8_c2l2_sr" if oli else "ls5_c2l2_sr")
    values = np.array(
        [*codes.land, *codes.water, *codes.cloud, *codes.shadow, codes.fill], dtype=np.uint16
    )
    kept = values[~np.isin(values, list(HIGH_CIRRUS))]

    recoded = collection2_qa_pixel(kept, oli=oli)

    assert decided(c2, recoded) == decided(c1, kept)
    assert 1 in recoded.tolist()


def test_high_cirrus_confidence_is_clear_in_the_original_lists_but_cirrus_in_collection_2() -> None:
    c1, c2 = sensor_for("ls8_usgs_sr_scene"), sensor_for("ls8_c2l2_sr")
    cirrus = np.array(sorted(HIGH_CIRRUS), dtype=np.uint16)
    recoded = collection2_qa_pixel(cirrus, oli=True)

    assert all(decided(c1, cirrus)[0])
    assert not any(decided(c2, recoded)[0])
    assert all(value & CIRRUS for value in recoded.tolist())


@settings(deadline=None)
@given(st.lists(st.integers(-2000, 16000), min_size=1, max_size=50))
def test_collection_2_reflectance_reads_back_as_the_same_int16_reflectance(
    values: list[int],
) -> None:
    """DN = (r + 0.2) / 0.0000275 loads, through the declared scale and offset, as r x 10000."""
    original = np.array(values, dtype=np.int16)
    stored = collection2_reflectance(original)
    loaded = xr.Dataset(
        {
            name: xr.DataArray(dask.array.from_array(stored), dims=("x",), attrs={"nodata": 0})
            for name in ("blue", "green", "red", "nir08", "swir16", "swir22")
        }
    )

    canonical = reflectance(loaded, sensor_for("ls8_c2l2_sr"), ("red", "nir")).compute()

    np.testing.assert_array_equal(canonical["red"].values, original)
    np.testing.assert_array_equal(canonical["nir"].values, original)
    assert canonical["red"].dtype == np.int16


def test_collection_2_fill_loads_as_the_canonical_nodata() -> None:
    loaded = xr.Dataset(
        {"red": xr.DataArray(np.array([0, 7273, 43636], dtype=np.uint16), dims=("x",))}
    )
    canonical = reflectance(loaded, sensor_for("ls8_c2l2_sr"), ("red",))
    assert canonical["red"].values.tolist() == [-9999, 0, 10000]


def as_collection_2(scene: Scene, product: str) -> Scene:
    """The same stack as USGS would ship it in Collection 2: DN, QA_PIXEL, C2 names."""
    oli = product in ("ls8_c2l2_sr", "ls9_c2l2_sr")
    raw: dict[str, np.ndarray] = {
        C1_NAMES.get(band, band): collection2_reflectance(values)
        for band, values in scene.raw.items()
        if band != "pixel_qa"
    }
    raw["qa_pixel"] = collection2_qa_pixel(scene.raw["pixel_qa"], oli=oli)
    converted = Scene.__new__(Scene)
    converted.product = product
    converted.geobox = scene.geobox
    converted.times = scene.times
    converted.raw = raw
    converted.water_fraction = scene.water_fraction
    converted.codes = type(scene.codes)("qa_pixel", (), (), (), (), 1)
    converted.nodata = 0
    converted.__post_init__()
    return converted


@pytest.mark.parametrize(
    ("job_code", "c1", "c2"),
    [
        ("geomedian", "ls8_usgs_sr_scene", "ls8_c2l2_sr"),
        ("geomedian", "ls7_usgs_sr_scene", "ls7_c2l2_sr"),
        ("ndvi", "ls8_usgs_sr_scene", "ls9_c2l2_sr"),
        ("water", "ls5_usgs_sr_scene", "ls5_c2l2_sr"),
        ("fractional_cover", "ls8_usgs_sr_scene", "ls8_c2l2_sr"),
    ],
)
def test_a_product_of_collection_2_equals_the_product_of_the_same_pixels_in_collection_1(
    job_code: str, c1: str, c2: str
) -> None:
    scene = synthetic_scene(c1, dates=6, seed=16)
    # Same meaning in both collections: high-cirrus codes (see above) become their clear twins.
    for cirrus, clear in HIGH_CIRRUS.items():
        scene.raw["pixel_qa"][scene.raw["pixel_qa"] == cirrus] = clear
    scene.cube = scene.cube.assign(pixel_qa=scene.cube["pixel_qa"].copy(data=scene.raw["pixel_qa"]))

    expected, _ = run_product(job_code, scene)
    result, _ = run_product(job_code, as_collection_2(scene, c2))

    assert list(result.data_vars) == list(expected.data_vars)
    for band in expected.data_vars:
        np.testing.assert_array_equal(result[band].values, expected[band].values, err_msg=band)


@pytest.mark.parametrize("product", C2_PRODUCTS)
def test_collection_2_definitions_validate_and_match_what_the_plugin_writes(product: str) -> None:
    definition = product_definition(product)
    Product.validate(definition)
    errors = [m for m in validate_product(definition) if m.level == Level.error]
    assert not errors, errors

    mission = next(m for m in MISSIONS.values() if m.products.get(2) == product)
    written = {band.measurement: band for band in collection2_bands(mission.family)}
    declared = {m["name"]: m for m in definition["measurements"]}
    assert set(declared) == set(written)
    for name, band in written.items():
        assert declared[name]["dtype"] == band.spec.dtype, name
        assert declared[name]["nodata"] == band.spec.nodata, name
        assert band.source in declared[name]["aliases"], name
    sensor = INPUT_PRODUCTS[product]
    for canonical, measurement in sensor.band_names:
        assert measurement in declared, canonical
        assert declared[measurement]["scale_factor"] == sensor.reflectance_scale
        assert declared[measurement]["add_offset"] == sensor.reflectance_offset
    assert set(declared["qa_pixel"]["flags_definition"]) >= {
        "nodata", "dilated_cloud", "cirrus", "cloud", "cloud_shadow", "snow", "clear", "water",
        "cloud_confidence", "cloud_shadow_confidence", "snow_ice_confidence", "cirrus_confidence",
    }  # fmt: skip

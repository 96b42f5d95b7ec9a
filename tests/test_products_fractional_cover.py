"""Fractional cover is GA's package applied to the period's geomedian, water masked out."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from fc.fractional_cover import LANDSAT_8_COEFFICIENTS, fractional_cover

from tests.test_products_geomedian import BANDS, geomad_directly, masked_by_hand
from tests.test_products_support import ALL_PRODUCTS, Scene, run_product, synthetic_scene

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the fc package's own

UNMIXING_BANDS = ("green", "red", "nir", "swir1", "swir2")
#: Flood (2017), Sentinel-2A to Landsat ETM+ surface reflectance, (intercept x 10000, slope), as
#: in Geoscience Australia's Sentinel-2 fractional cover configuration (fc, s2_fc_albers.yaml).
FLOOD_2017_SENTINEL_2 = {
    "blue": [-22.0, 0.9551],
    "green": [31.0, 1.0582],
    "red": [64.0, 0.9871],
    "nir": [120.0, 1.0187],
    "swir1": [79.0, 0.9528],
    "swir2": [-42.0, 0.9688],
}
UNMIXED = {"bs": "BS", "pv": "PV", "npv": "NPV", "ue": "UE"}


def water_share_by_hand(scene: Scene) -> np.ndarray:
    usable = scene.usable(BANDS)
    clear_count = usable.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(clear_count > 0, (usable & scene.wet()).sum(axis=0) / clear_count, np.nan)


def expected_cover(scene: Scene) -> dict[str, np.ndarray]:
    composite = geomad_directly(masked_by_hand(scene, scene.usable(BANDS)))
    inputs = xr.Dataset({band: composite[band] for band in UNMIXING_BANDS})
    regression = {
        "ls8_usgs_sr_scene": LANDSAT_8_COEFFICIENTS,
        "s2_esa_sr_granule": FLOOD_2017_SENTINEL_2,
    }.get(scene.product)
    cover = fractional_cover(
        inputs, regression_coefficients=regression, clip_after_regression=True
    ).compute()
    water = water_share_by_hand(scene) > 0.4
    expected = {}
    for name, package_name in UNMIXED.items():
        values = cover[package_name].values
        expected[name] = np.where(water | (values == -1), 255, values).astype(np.uint8)
    return expected


@pytest.mark.parametrize("product", ALL_PRODUCTS)
def test_fractional_cover_equals_the_package_on_the_composite_with_water_masked(
    product: str,
) -> None:
    scene = synthetic_scene(product, dates=10, seed=31, intertidal=True)

    result, vectors = run_product("fractional_cover", scene)

    assert vectors == {}
    for name, values in expected_cover(scene).items():
        np.testing.assert_array_equal(result[name].values, values, err_msg=name)


def test_pixels_mostly_water_are_nodata_and_land_is_covered() -> None:
    scene = synthetic_scene("ls8_usgs_sr_scene", dates=10, seed=32, intertidal=True)
    share = water_share_by_hand(scene)

    result, _ = run_product("fractional_cover", scene)

    bare = result["bs"].values
    assert (bare[share > 0.4] == 255).all()
    assert (bare[share == 0] != 255).mean() > 0.99
    # Water on exactly 4 of 10 clear dates is not "more than 0.4": it stays. (Rows from 3 on:
    # above, date 1 is fill.)
    assert (share[3:, 40:44] == 0.4).all()
    assert (bare[3:, 40:44] != 255).all()
    assert (share[3:, 44:48] == 0.5).all()
    assert (bare[3:, 44:48] == 255).all()


def test_cover_fractions_are_percentages() -> None:
    scene = synthetic_scene("ls5_usgs_sr_scene", dates=6, seed=33)
    result, _ = run_product("fractional_cover", scene)
    for name in ("bs", "pv", "npv"):
        values = result[name].values
        assert values[values != 255].max() <= 127
    total = np.sum([result[name].values.astype(int) for name in ("bs", "pv", "npv")], axis=0)
    land = result["bs"].values != 255
    # The package's fractions sum to about 100 % on land.
    assert np.median(total[land]) == pytest.approx(100, abs=15)

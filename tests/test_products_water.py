"""The water summary counts what the mask band says, as a plain numpy count does."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_products_support import ALL_PRODUCTS, run_product, synthetic_scene


@pytest.mark.parametrize("product", ALL_PRODUCTS)
def test_water_summary_equals_numpy_counts_of_the_mask_codes(product: str) -> None:
    scene = synthetic_scene(product, dates=8, seed=21, intertidal=True)
    clear = scene.clear()
    wet = scene.wet() & clear

    result, vectors = run_product("water", scene)

    count_clear, count_wet = clear.sum(axis=0), wet.sum(axis=0)
    assert vectors == {}
    np.testing.assert_array_equal(result["count_clear"].values, count_clear)
    np.testing.assert_array_equal(result["count_wet"].values, count_wet)
    with np.errstate(invalid="ignore", divide="ignore"):
        frequency = np.where(count_clear > 0, count_wet / count_clear, np.nan)
    np.testing.assert_allclose(result["frequency"].values, frequency, rtol=1e-6)


def test_open_water_is_always_wet_and_land_never() -> None:
    scene = synthetic_scene("ls5_usgs_sr_scene", dates=6, seed=22)
    result, _ = run_product("water", scene)

    frequency = result["frequency"].values
    assert (frequency[scene.water_fraction[0] >= 0.5] == 1).all()
    assert (frequency[scene.water_fraction[0] < 0.5] == 0).all()


def test_a_pixel_never_observed_is_nodata_and_one_always_cloudy_counts_zero() -> None:
    scene = synthetic_scene("ls8_usgs_sr_scene", dates=4, seed=23, clouds=False)
    scene.raw["pixel_qa"][:, :4, :4] = 1  # fill: no observation at all
    scene.raw["pixel_qa"][:, 4:8, :4] = 480  # seen, but always cloud
    scene.__post_init__()

    result, _ = run_product("water", scene)

    assert (result["count_clear"].values[:4, :4] == -999).all()
    assert (result["count_wet"].values[:4, :4] == -999).all()
    assert (result["count_clear"].values[4:8, :4] == 0).all()
    assert np.isnan(result["frequency"].values[:8, :4]).all()

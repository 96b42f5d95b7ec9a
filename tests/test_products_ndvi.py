"""NDVI statistics equal a plain numpy computation over the clear observations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.test_products_support import (
    ALL_PRODUCTS,
    LANDSAT_PRODUCTS,
    run_product,
    synthetic_scene,
)

#: The defaults: DEA's Landsat summaries dilate cloud and shadow by 6; odc-stats' Sentinel-2
#: default opens by 2 and dilates by 5.
LANDSAT_DEFAULT = (("dilation", 6),)
SENTINEL_2_DEFAULT = (("opening", 2), ("dilation", 5))


@pytest.mark.parametrize("product", ALL_PRODUCTS)
def test_ndvi_statistics_equal_numpy_over_clear_observations(product: str) -> None:
    scene = synthetic_scene(product, dates=8, seed=11)
    steps = LANDSAT_DEFAULT if product in LANDSAT_PRODUCTS else SENTINEL_2_DEFAULT
    usable = scene.usable(("red", "nir"), steps, steps)
    clear = scene.usable((), steps, steps)
    red = scene.reflectance_int16("red").astype("float64") / 10000
    nir = scene.reflectance_int16("nir").astype("float64") / 10000
    ndvi = np.where(usable, (nir - red) / (nir + red), np.nan)

    result, vectors = run_product("ndvi", scene)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = {
            "ndvi_median": np.nanmedian(ndvi, axis=0),
            "ndvi_mean": np.nanmean(ndvi, axis=0),
            "ndvi_std": np.nanstd(ndvi, axis=0),
        }
    assert vectors == {}
    for name, values in expected.items():
        np.testing.assert_allclose(result[name].values, values, atol=2e-6, err_msg=name)
    np.testing.assert_array_equal(result["ndvi_count"].values, usable.sum(axis=0))
    np.testing.assert_array_equal(result["clear_count"].values, clear.sum(axis=0))


def test_unbuffered_on_request_counts_every_clear_observation() -> None:
    scene = synthetic_scene("ls7_usgs_sr_scene", dates=8, seed=14)
    options = {"cloud_filter": "none", "shadow_filter": "none"}

    result, _ = run_product("ndvi", scene, options)
    buffered, _ = run_product("ndvi", scene)

    np.testing.assert_array_equal(result["clear_count"].values, scene.clear().sum(axis=0))
    assert (buffered["clear_count"].values <= result["clear_count"].values).all()
    assert (buffered["clear_count"].values < result["clear_count"].values).any()


def test_a_cloud_edge_no_longer_moves_the_mean() -> None:
    # The synthetic clouds are exact squares; a real cloud's edge is hazy. Make each cloud's
    # ring of 3 pixels hazy (reflectance halfway to the cloud's), flagged clear as masks do.
    from scipy import ndimage

    scene = synthetic_scene("ls5_usgs_sr_scene", dates=8, seed=15)
    for t in range(8):
        cloud = scene.cloud()[t]
        ring = ndimage.binary_dilation(cloud, iterations=3) & ~cloud
        for band in ("red", "nir"):
            scene.raw[band][t][ring] = (scene.raw[band][t][ring] + 6500) // 2
    scene.__post_init__()
    land = scene.water_fraction[0] == 0

    raw, _ = run_product("ndvi", scene, {"cloud_filter": "none", "shadow_filter": "none"})
    buffered, _ = run_product("ndvi", scene)

    # Land NDVI varies smoothly by row; hazy edges scatter the unbuffered mean around it.
    spread_raw = np.nanstd(raw["ndvi_mean"].values[land])
    spread_buffered = np.nanstd(buffered["ndvi_mean"].values[land])
    assert spread_buffered < spread_raw


def test_clouds_and_fill_never_reach_the_statistics() -> None:
    scene = synthetic_scene("ls8_usgs_sr_scene", dates=6, seed=12)
    result, _ = run_product("ndvi", scene)

    # Dense vegetation or water everywhere: clouds (NDVI near 0) would show as outliers.
    median = result["ndvi_median"].values
    assert np.isfinite(median).all()
    land = scene.water_fraction[0] == 0
    assert (median[land] > 0.4).all()
    assert (median[scene.water_fraction[0] == 1] < -0.1).all()


def test_a_pixel_never_seen_clear_has_nan_statistics_and_zero_counts() -> None:
    scene = synthetic_scene("s2_esa_sr_granule", dates=5, seed=13, clouds=False)
    scene.raw["scene_classification"][:, 60:, 60:] = 8  # cloud medium probability throughout
    scene.__post_init__()

    result, _ = run_product("ndvi", scene)

    for name in ("ndvi_median", "ndvi_mean", "ndvi_std"):
        assert np.isnan(result[name].values[60:, 60:]).all()
    assert (result["ndvi_count"].values[60:, 60:] == 0).all()
    # Seen (cloudy), so counted zero rather than nodata.
    assert (result["clear_count"].values[60:, 60:] == 0).all()

"""The geomedian is geomad's, over whole clear observations, for every sensor."""

from __future__ import annotations

import dask.array
import numpy as np
import pytest
import xarray as xr
from odc.algo import geomedian_with_mads

from tests.test_products_support import (
    ALL_PRODUCTS,
    CLOUD,
    Scene,
    run_product,
    synthetic_scene,
)

BANDS = ("red", "green", "blue", "nir", "swir1", "swir2")


def masked_by_hand(scene: Scene, keep: np.ndarray) -> xr.Dataset:
    """The scene's six bands as int16 x 10000, -9999 wherever `keep` is false, chunked per date."""
    coords = scene.cube[BANDS[0]].coords
    return xr.Dataset(
        {
            band: xr.DataArray(
                dask.array.from_array(
                    np.where(keep, scene.reflectance_int16(band), np.int16(-9999)),
                    chunks=(1, 32, 32),
                ),
                dims=("time", "y", "x"),
                coords=coords,
                attrs={"nodata": -9999},
            )
            for band in BANDS
        }
    )


def geomad_directly(masked: xr.Dataset) -> xr.Dataset:
    """geomedian_with_mads as odc-stats configures it for reflectance x 10000."""
    return geomedian_with_mads(
        masked,
        scale=1e-4,
        offset=-1e-4,
        maxiters=1000,
        num_threads=1,
        reshape_strategy="yxbt",
        work_chunks=(400, 400),
    ).compute()


@pytest.mark.parametrize("product", ALL_PRODUCTS)
def test_geomedian_equals_geomad_run_directly_on_the_masked_cube(product: str) -> None:
    scene = synthetic_scene(product, dates=8, seed=3)
    expected = geomad_directly(masked_by_hand(scene, scene.usable(BANDS)))

    result, vectors = run_product("geomedian", scene)

    assert vectors == {}
    for band in BANDS:
        np.testing.assert_array_equal(result[band].values, expected[band].values, err_msg=band)
    for band in ("smad", "emad", "bcmad"):
        np.testing.assert_allclose(result[band].values, expected[band].values, rtol=1e-6)
    np.testing.assert_array_equal(result["count"].values, expected["count"].values)
    # The clouds are gone: nothing of their brightness made it into the composite.
    assert result["red"].values.max() < CLOUD / 2


def test_a_cloudy_pixel_date_is_left_out_of_every_band() -> None:
    scene = synthetic_scene("ls8_usgs_sr_scene", dates=6, seed=5, clouds=False)
    # Date 2 is cloudy over a block, its reflectance bright in every band.
    block = (2, slice(10, 20), slice(30, 40))
    scene.raw["pixel_qa"][block] = 480
    for band in BANDS:
        scene.raw[band][block] = 7000
    scene.__post_init__()

    result, _ = run_product("geomedian", scene)
    without_date_2 = np.arange(6) != 2
    reference = geomad_directly(
        masked_by_hand(scene, scene.usable(BANDS)).isel(time=without_date_2)
    )

    inside = (block[1], block[2])
    assert (result["count"].values[inside] == 5).all()
    for band in BANDS:
        np.testing.assert_array_equal(result[band].values[inside], reference[band].values[inside])


def test_a_pixel_date_missing_one_band_is_left_out_of_every_band() -> None:
    # Red alone is missing on date 1 where the mask calls it clear: the whole observation goes,
    # or the other bands' geomedian would be pulled towards an observation red cannot match.
    scene = synthetic_scene("ls7_usgs_sr_scene", dates=6, seed=8, clouds=False)
    block = (1, slice(40, 48), slice(8, 16))
    scene.raw["red"][block] = -9999
    for band in ("green", "blue", "nir", "swir1", "swir2"):
        scene.raw[band][block] = 9000
    scene.__post_init__()

    result, _ = run_product("geomedian", scene)
    masked = masked_by_hand(scene, scene.usable(BANDS))
    reference = geomad_directly(masked.isel(time=[0, 2, 3, 4, 5]))

    inside = (block[1], block[2])
    assert (result["count"].values[inside] == 5).all()
    for band in BANDS:
        np.testing.assert_array_equal(result[band].values[inside], reference[band].values[inside])
        assert result[band].values[inside].max() < 4000


def test_pixels_never_seen_clear_are_nodata_with_a_count_of_zero() -> None:
    scene = synthetic_scene("s2_esa_sr_granule", dates=4, seed=2, clouds=False)
    scene.raw["scene_classification"][:, :5, :5] = 9  # cloud on every date
    scene.__post_init__()

    result, _ = run_product("geomedian", scene)

    assert (result["count"].values[:5, :5] == 0).all()
    for band in BANDS:
        assert (result[band].values[:5, :5] == -9999).all()
    assert np.isnan(result["smad"].values[:5, :5]).all()
    assert (result["count"].values[5:, 5:] == 4).all()


def test_sentinel_2_composite_is_in_the_landsat_encoding() -> None:
    landsat = synthetic_scene("ls8_usgs_sr_scene", dates=5, seed=4, clouds=False)
    sentinel = synthetic_scene("s2_esa_sr_granule", dates=5, seed=4, clouds=False)
    for band in BANDS:
        sentinel.raw[band] = landsat.raw[band].astype(np.uint16)
    sentinel.__post_init__()

    from_landsat, _ = run_product("geomedian", landsat)
    from_sentinel, _ = run_product("geomedian", sentinel)

    for band in BANDS:
        np.testing.assert_array_equal(from_sentinel[band].values, from_landsat[band].values)

"""The water summary: WOfS by default, the mask band's water flags with `method: qa`.

References are plain numpy: the WOfS tree written leaf by leaf (`devtools.validate.references`)
and masks buffered with scipy's morphology, counted as odc-stats' `wofs-summary` counts.
"""

from __future__ import annotations

import numpy as np
import pytest

from devtools.validate.references import buffer, water_summary, wofs_wet
from tests.test_products_support import (
    ALL_PRODUCTS,
    BANDS,
    LANDSAT_PRODUCTS,
    Scene,
    run_product,
    synthetic_scene,
)

UNBUFFERED = {"cloud_filter": "none", "shadow_filter": "none"}
LANDSAT_DEFAULT = (("dilation", 6),)
SENTINEL_2_DEFAULT = (("opening", 2), ("dilation", 5))


def default_filter(scene: Scene) -> tuple[tuple[str, int], ...]:
    return LANDSAT_DEFAULT if scene.product in LANDSAT_PRODUCTS else SENTINEL_2_DEFAULT


def wofs_by_hand(scene: Scene, steps: tuple[tuple[str, int], ...]) -> dict[str, np.ndarray]:
    bands = {band: scene.reflectance_int16(band) for band in BANDS}
    no_data = scene.mask == scene.codes.fill
    all_missing = np.all([bands[band] == -9999 for band in BANDS], axis=0)
    no_data |= all_missing
    out_of_range = np.any([(bands[b] < 1) | (bands[b] > 10000) for b in BANDS], axis=0)
    bad = out_of_range | buffer(scene.cloud(), steps) | buffer(scene.shadow(), steps)
    if scene.product == "ls8_usgs_sr_scene":
        bad |= (scene.mask & 1024) != 0
    wet = wofs_wet(*(bands[band] for band in BANDS))
    clear = ~no_data & ~bad
    return water_summary(wet & clear, ~wet & clear, ~no_data)


@pytest.mark.parametrize("product", ALL_PRODUCTS)
def test_wofs_summary_equals_numpy_counts_of_the_tree_with_buffered_masks(product: str) -> None:
    scene = synthetic_scene(product, dates=8, seed=21, intertidal=True)

    result, vectors = run_product("water", scene)

    assert vectors == {}
    expected = wofs_by_hand(scene, default_filter(scene))
    for band in ("count_wet", "count_clear"):
        np.testing.assert_array_equal(result[band].values, expected[band], err_msg=band)
    np.testing.assert_allclose(result["frequency"].values, expected["frequency"], rtol=1e-6)


def test_buffering_is_set_per_request_and_none_turns_it_off() -> None:
    scene = synthetic_scene("ls5_usgs_sr_scene", dates=8, seed=24)
    options = {"cloud_filter": "opening:1,dilation:3", "shadow_filter": "none"}

    buffered, _ = run_product("water", scene, options)
    unbuffered, _ = run_product("water", scene, UNBUFFERED)

    expected = wofs_by_hand(scene, ())
    np.testing.assert_array_equal(unbuffered["count_clear"].values, expected["count_clear"])
    # By hand: cloud opened by 1 and dilated by 3, shadow as it is.
    bands = {band: scene.reflectance_int16(band) for band in BANDS}
    cloud = buffer(scene.cloud(), [("opening", 1), ("dilation", 3)])
    bad = cloud | scene.shadow() | np.any([(bands[b] < 1) for b in BANDS], axis=0)
    no_data = scene.mask == scene.codes.fill
    clear = ~bad & ~no_data
    np.testing.assert_array_equal(buffered["count_clear"].values, clear.sum(axis=0))
    # Buffering only ever removes observations near clouds.
    assert (buffered["count_clear"].values <= unbuffered["count_clear"].values).all()
    assert (buffered["count_clear"].values < unbuffered["count_clear"].values).any()


@pytest.mark.parametrize("product", ALL_PRODUCTS)
def test_method_qa_unbuffered_counts_the_mask_codes_as_the_original_did(product: str) -> None:
    scene = synthetic_scene(product, dates=8, seed=21, intertidal=True)
    clear = scene.clear()
    wet = scene.wet() & clear

    result, _ = run_product("water", scene, {"method": "qa", **UNBUFFERED})

    count_clear, count_wet = clear.sum(axis=0), wet.sum(axis=0)
    np.testing.assert_array_equal(result["count_clear"].values, count_clear)
    np.testing.assert_array_equal(result["count_wet"].values, count_wet)
    with np.errstate(invalid="ignore", divide="ignore"):
        frequency = np.where(count_clear > 0, count_wet / count_clear, np.nan)
    np.testing.assert_allclose(result["frequency"].values, frequency, rtol=1e-6)


@pytest.mark.parametrize("method", ["wofs", "qa"])
def test_open_water_is_always_wet_and_land_never(method: str) -> None:
    scene = synthetic_scene("ls5_usgs_sr_scene", dates=6, seed=22)
    result, _ = run_product("water", scene, {"method": method})

    frequency = result["frequency"].values
    seen = np.isfinite(frequency)
    assert (frequency[seen & (scene.water_fraction[0] == 1)] == 1).all()
    assert (frequency[seen & (scene.water_fraction[0] == 0)] == 0).all()


def test_a_cloud_shadow_the_tree_calls_wet_is_not_counted() -> None:
    # Shadowed land (every band 150) goes down the tree to N27: wet. Only the mask stops it.
    scene = synthetic_scene("ls8_usgs_sr_scene", dates=6, seed=25)
    shadowed_land = scene.shadow() & (scene.water_fraction[0] == 0)[None]
    assert shadowed_land.any()
    assert wofs_wet(*(scene.reflectance_int16(b)[shadowed_land] for b in BANDS)).all()

    result, _ = run_product("water", scene)

    land = scene.water_fraction[0] == 0
    assert (result["count_wet"].values[land] == 0).all()


def test_a_pixel_never_observed_is_nodata_and_one_always_cloudy_counts_zero() -> None:
    scene = synthetic_scene("ls8_usgs_sr_scene", dates=4, seed=23, clouds=False)
    scene.raw["pixel_qa"][:, :4, :4] = 1  # fill: no observation at all
    scene.raw["pixel_qa"][:, 4:8, :4] = 480  # seen, but always cloud
    scene.__post_init__()

    for method in ("wofs", "qa"):
        result, _ = run_product("water", scene, {"method": method})
        assert (result["count_clear"].values[:4, :4] == -999).all()
        assert (result["count_wet"].values[:4, :4] == -999).all()
        assert (result["count_clear"].values[4:8, :4] == 0).all()
        assert np.isnan(result["frequency"].values[:8, :4]).all()


def test_an_unknown_method_is_refused_with_the_choices() -> None:
    from shared.catalogue import check_request
    from shared.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="wofs or qa"):
        check_request("water", "ls8_usgs_sr_scene", {"method": "ndwi"})

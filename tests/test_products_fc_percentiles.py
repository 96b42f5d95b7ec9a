"""Fractional cover percentiles: GA's unmixing per clear dry day, then nearest-rank percentiles.

The reference runs the `fc` package on each day by hand, keeps the days a plain numpy WOfS
(`devtools.validate.references`) calls clear and dry outside the buffered masks, and takes
numpy's nearest-rank percentiles with odc-algo's rule of three observations.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from fc.fractional_cover import LANDSAT_8_COEFFICIENTS, fractional_cover
from odc.geo.xr import xr_coords

from devtools.validate.references import buffer, nearest_rank_percentile, wofs_wet
from tests.test_products_fractional_cover import FLOOD_2017_SENTINEL_2
from tests.test_products_support import (
    ALL_PRODUCTS,
    BANDS,
    LANDSAT_PRODUCTS,
    Scene,
    run_product,
    synthetic_scene,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the fc package's own

UNMIXING_BANDS = ("green", "red", "nir", "swir1", "swir2")
PACKAGE = {"pv": "PV", "npv": "NPV", "bs": "BS"}


def clear_wet_and_dry(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    steps = (
        (("dilation", 6),)
        if scene.product in LANDSAT_PRODUCTS
        else (("opening", 2), ("dilation", 5))
    )
    bands = {band: scene.reflectance_int16(band) for band in BANDS}
    no_data = (scene.mask == scene.codes.fill) | np.all([bands[b] == -9999 for b in BANDS], axis=0)
    bad = np.any([(bands[b] < 1) | (bands[b] > 10000) for b in BANDS], axis=0)
    bad |= buffer(scene.cloud(), steps) | buffer(scene.shadow(), steps)
    if scene.product == "ls8_usgs_sr_scene":
        bad |= (scene.mask & 1024) != 0
    wet = wofs_wet(*(bands[b] for b in BANDS))
    clear = ~no_data & ~bad
    return clear & ~wet, clear & wet, ~no_data


def cover_by_hand(scene: Scene) -> dict[str, np.ndarray]:
    """pv, npv, bs per day (float, NaN where the package gives none)."""
    regression = {
        "ls8_usgs_sr_scene": LANDSAT_8_COEFFICIENTS,
        "s2_esa_sr_granule": FLOOD_2017_SENTINEL_2,
    }.get(scene.product)
    days: dict[str, list[np.ndarray]] = {name: [] for name in PACKAGE}
    for t in range(len(scene.times)):
        inputs = xr.Dataset(
            {
                band: xr.DataArray(
                    scene.reflectance_int16(band)[t],
                    dims=("y", "x"),
                    coords=xr_coords(scene.geobox),
                    attrs={"nodata": -9999},
                )
                for band in UNMIXING_BANDS
            }
        )
        cover = fractional_cover(
            inputs,
            regression_coefficients=regression,
            clip_after_regression=True,
        )
        for name, package_name in PACKAGE.items():
            values = cover[package_name].values.astype(float)
            days[name].append(np.where(values == -1, np.nan, values))
    return {name: np.stack(values) for name, values in days.items()}


@pytest.mark.parametrize("product", ALL_PRODUCTS)
def test_percentiles_equal_numpy_over_the_clear_dry_days(product: str) -> None:
    scene = synthetic_scene(product, dates=10, seed=51, intertidal=True)
    dry, wet, seen = clear_wet_and_dry(scene)
    covers = cover_by_hand(scene)

    result, _ = run_product("fc_percentiles", scene)

    for name, cover in covers.items():
        valid = dry & np.isfinite(cover)
        for percentile in (10, 50, 90):
            expected = nearest_rank_percentile(cover, valid, percentile)
            got = result[f"{name}_pc_{percentile}"].values.astype(float)
            got[got == 255] = np.nan
            np.testing.assert_array_equal(got, expected, err_msg=f"{name}_pc_{percentile}")
    np.testing.assert_array_equal(
        result["count_valid"].values, np.where(seen.any(axis=0), dry.sum(axis=0), -999)
    )
    all_valid = np.all(
        [result[f"{n}_pc_{p}"].values != 255 for n in PACKAGE for p in (10, 50, 90)], axis=0
    )
    ever_wet = wet.any(axis=0)
    expected_qa = np.where(all_valid, 2, np.where(ever_wet, 0, 1))
    np.testing.assert_array_equal(result["qa"].values, expected_qa)


def test_open_water_has_no_cover_and_qa_zero() -> None:
    scene = synthetic_scene("ls5_usgs_sr_scene", dates=8, seed=52)
    result, _ = run_product("fc_percentiles", scene)

    water = scene.water_fraction[0] == 1
    land = scene.water_fraction[0] == 0
    assert (result["bs_pc_50"].values[water] == 255).all()
    assert (result["qa"].values[water] == 0).all()
    assert (result["qa"].values[land] == 2).mean() > 0.95
    # Vegetated land: green cover dominates its median.
    assert np.median(result["pv_pc_50"].values[land]) > 40

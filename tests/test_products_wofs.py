"""The WOfS classifier against the reference's own test vectors and hand-worked pixels.

The vectors (`tests/data/wofs_reference_vectors.csv`) are GeoscienceAustralia/wofs' own test
input and output: a Landsat 8 Collection 3 scene sampled every 200th pixel and the water
observation layer its `WOfSClassifier` computed. The hand-worked pixels take the published tree
(Mueller et al. 2016, nodes N1-N45 as `wofs/classifier.py` numbers them) down every leaf; each
one's normalised differences are worked out in its comment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from services.worker.products.wofs import (
    CLOUD,
    CLOUD_SHADOW,
    NO_DATA,
    NON_CONTIGUOUS,
    TERRAIN_SHADOW,
    WET,
    classify,
    water_observations,
)
from shared.catalogue import sensor_for
from shared.mask_filters import UNBUFFERED

VECTORS = Path(__file__).parent / "data" / "wofs_reference_vectors.csv"


def reference_vectors() -> np.ndarray:
    """(blue, green, red, nir, swir1, swir2, fmask, wofl) per row."""
    lines = [line for line in VECTORS.read_text().splitlines() if not line.startswith("#")]
    assert lines[0] == "blue,green,red,nir,swir1,swir2,fmask,wofl"
    return np.array([[int(value) for value in line.split(",")] for line in lines[1:]])


# (leaf, wet, blue, green, red, nir, swir1, swir2); reflectance x 10000.
# ndi_52 = (swir1 - green) / (swir1 + green), ndi_43 = (nir - red) / (nir + red),
# ndi_72 = (swir2 - green) / (swir2 + green).
HAND_WORKED = [
    # Left of N1: ndi_52 = (500 - 1000) / 1500 = -0.33 <= -0.01.
    ("N3", False, 2500, 1000, 800, 600, 500, 100),  # blue > 2083.5
    ("N6", True, 600, 1000, 800, 600, 500, 200),  # swir2 <= 323.5, ndi_43 = -0.14 <= 0.61
    ("N7", False, 600, 1000, 200, 2000, 500, 200),  # ndi_43 = 0.82 > 0.61
    ("N10", True, 1500, 2000, 1800, 1000, 1000, 400),  # blue > 1400.5, ndi_43 = -0.29 <= -0.01
    ("N11", False, 1500, 2000, 1800, 2500, 1000, 400),  # ndi_43 = 0.16 > -0.01
    # blue <= 1400.5, ndi_72 = (800 - 1000) / 1800 = -0.11 > -0.23 (ndi_52 = -0.05):
    ("N14", True, 300, 1000, 900, 800, 900, 800),  # blue <= 379
    ("N15", False, 500, 1000, 900, 800, 900, 800),  # blue > 379
    # ndi_72 = (400 - 1000) / 1400 = -0.43 <= -0.23:
    ("N17", True, 1000, 1000, 800, 900, 500, 400),  # ndi_43 = 0.06 <= 0.22
    ("N19", True, 400, 1000, 500, 1500, 500, 400),  # ndi_43 = 0.5 > 0.22, blue <= 473
    ("N20", False, 600, 1000, 500, 1500, 500, 400),  # blue > 473
    # Right of N1, ndi_52 = (1100 - 1000) / 2100 = 0.05 <= 0.23:
    ("N23", False, 500, 1000, 900, 1000, 1100, 800),  # blue > 334.5
    ("N25", False, 300, 1000, 200, 1500, 1100, 800),  # ndi_43 = 0.76 > 0.54
    ("N27", True, 300, 1000, 900, 1000, 1100, 800),  # ndi_43 = 0.05, ndi_52 <= 0.12
    # ndi_52 = (1500 - 1000) / 2500 = 0.2 > 0.12:
    ("N31", True, 100, 1000, 300, 400, 1500, 800),  # red <= 364.5, blue <= 129.5
    ("N32", False, 200, 1000, 300, 400, 1500, 800),  # blue > 129.5
    ("N33", True, 250, 1000, 600, 700, 1500, 800),  # red > 364.5, blue <= 300.5
    ("N34", False, 320, 1000, 600, 700, 1500, 800),  # blue > 300.5
    # ndi_52 > 0.23:
    ("N36", False, 100, 1000, 300, 400, 2500, 800),  # ndi_52 = 0.43 > 0.34
    # ndi_52 = (1800 - 1000) / 2800 = 0.29:
    ("N38", False, 300, 1000, 300, 400, 1800, 800),  # blue > 249.5
    ("N40", False, 100, 1000, 200, 1000, 1800, 800),  # ndi_43 = 0.67 > 0.45
    ("N42", False, 100, 1000, 500, 600, 1800, 800),  # ndi_43 = 0.09, red > 364.5
    ("N44", True, 100, 1000, 300, 400, 1800, 800),  # red <= 364.5, blue <= 129.5
    ("N45", False, 200, 1000, 300, 400, 1800, 800),  # blue > 129.5
]


def test_the_classifier_agrees_with_every_reference_vector() -> None:
    vectors = reference_vectors()
    observed = vectors[:, 7] != NO_DATA
    bands = vectors[observed, :6].T
    expected_wet = (vectors[observed, 7] & WET) == WET

    wet = classify(*bands)

    assert observed.sum() == 1020 and expected_wet.sum() == 651
    np.testing.assert_array_equal(wet, expected_wet)


@pytest.mark.parametrize(("leaf", "wet", *"bgrnsw"), HAND_WORKED, ids=[h[0] for h in HAND_WORKED])
def test_each_leaf_of_the_tree_classifies_its_hand_worked_pixel(
    leaf: str, wet: bool, b: int, g: int, r: int, n: int, s: int, w: int
) -> None:
    assert bool(classify(b, g, r, n, s, w)) is wet, leaf


def test_every_leaf_is_worked_by_hand() -> None:
    leaves = {leaf for leaf, *_ in HAND_WORKED}
    assert len(leaves) == 23  # the tree's leaves: 10 on the left of N1, 13 on the right


def test_thresholds_include_their_bound() -> None:
    # N13: blue <= 379 is wet, 380 is not (the tree's tests are "<=").
    assert classify(379, 1000, 900, 800, 900, 800)
    assert not classify(380, 1000, 900, 800, 900, 800)


def test_the_classifier_works_on_arrays_of_any_shape() -> None:
    pixels = np.array([row[2:] for row in HAND_WORKED], dtype=np.int16)
    cube = np.broadcast_to(pixels.T[:, None, :], (6, 3, len(HAND_WORKED)))
    wet = classify(*cube)
    assert wet.shape == (3, len(HAND_WORKED))
    assert (wet == np.array([row[1] for row in HAND_WORKED])[None, :]).all()


# The reference's fmask classes as Sentinel-2 scene classes, so that the whole observation layer
# (flags and classification) can be checked against the vectors: 0 no data, 1 valid, 2 cloud,
# 3 shadow, 5 water -> SCL 0 no data, 4 vegetation, 9 cloud high probability, 3 shadow, 6 water.
FMASK_AS_SCL = {0: 0, 1: 4, 2: 9, 3: 3, 5: 6}


def test_the_water_observation_layer_equals_the_references_for_every_vector() -> None:
    vectors = reference_vectors()
    sensor = sensor_for("s2_esa_sr_granule")
    names = ("blue", "green", "red", "nir", "swir1", "swir2")

    def layer(values: np.ndarray, dtype: str, nodata: int) -> xr.DataArray:
        return xr.DataArray(
            values.astype(dtype)[None, None, :], dims=("time", "y", "x"), attrs={"nodata": nodata}
        )

    bands = {
        name: layer(np.where(vectors[:, i] == -999, 0, vectors[:, i]), "uint16", 0)
        for i, name in enumerate(names)
    }
    scl = np.vectorize(FMASK_AS_SCL.__getitem__)(vectors[:, 6])
    cube = xr.Dataset({**bands, "scene_classification": layer(scl, "uint8", 0)})

    observations = water_observations(cube, sensor, UNBUFFERED).values[0, 0]

    np.testing.assert_array_equal(observations, vectors[:, 7])


def test_flags_follow_the_mask_band_and_the_reflectance() -> None:
    sensor = sensor_for("ls8_usgs_sr_scene")
    water = [600, 1000, 800, 600, 500, 200]  # leaf N6: wet
    # pixel_qa: 322 clear, 1 fill, 480 cloud, 328 shadow, 1346 terrain occlusion, 322 with a
    # saturated red (10001) and 322 with a missing swir2 (-9999).
    qa = np.array([322, 1, 480, 328, 1346, 322, 322], dtype=np.uint16)
    pixels = np.tile(np.array(water, dtype=np.int16)[:, None], (1, qa.size))
    pixels[:, 1] = -9999
    pixels[2, 5] = 10001
    pixels[5, 6] = -9999
    names = ("blue", "green", "red", "nir", "swir1", "swir2")
    cube = xr.Dataset(
        {
            **{
                name: xr.DataArray(pixels[i][None, None], dims=("time", "y", "x"),
                                   attrs={"nodata": -9999})
                for i, name in enumerate(names)
            },
            "pixel_qa": xr.DataArray(qa[None, None], dims=("time", "y", "x"), attrs={"nodata": 1}),
        }
    )  # fmt: skip

    observations = water_observations(cube, sensor, UNBUFFERED).values[0, 0]

    assert list(observations) == [
        WET,
        NO_DATA,
        WET | CLOUD,
        WET | CLOUD_SHADOW,
        WET | TERRAIN_SHADOW,
        WET | NON_CONTIGUOUS,
        WET | NON_CONTIGUOUS,
    ]

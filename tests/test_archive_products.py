"""The archive's product definitions are valid datacube products with the original's names."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from datacube.model import Product
from datacube.utils.masking import make_mask

from devtools.archive import PRODUCTS, product_definition
from shared.errors import InvalidRequest

LANDSAT = ("ls5_usgs_sr_scene", "ls7_usgs_sr_scene", "ls8_usgs_sr_scene")
LANDSAT_BANDS = ["blue", "green", "red", "nir", "swir1", "swir2"]
S2_BANDS = [
    "coastal_aerosol", "blue", "green", "red", "veg_red_edge_1", "veg_red_edge_2",
    "veg_red_edge_3", "nir", "narrow_nir", "water_vapour", "swir1", "swir2",
]  # fmt: skip


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_product_definition_passes_datacubes_own_schema(name: str) -> None:
    document = product_definition(name)
    Product.validate(document)
    Product.validate_measurements(document)
    assert document["name"] == name
    assert document["metadata_type"] == "eo3"


@pytest.mark.parametrize("name", LANDSAT)
def test_landsat_products_have_the_original_bands_dtypes_and_nodata(name: str) -> None:
    measurements = {m["name"]: m for m in product_definition(name)["measurements"]}
    assert list(measurements) == [*LANDSAT_BANDS, "pixel_qa"]
    for band in LANDSAT_BANDS:
        assert (measurements[band]["dtype"], measurements[band]["nodata"]) == ("int16", -9999)
        assert measurements[band]["scale_factor"] == 0.0001
    assert (measurements["pixel_qa"]["dtype"], measurements["pixel_qa"]["nodata"]) == ("uint16", 1)


def test_sentinel2_product_has_the_original_bands_and_scl_alias() -> None:
    measurements = {m["name"]: m for m in product_definition("s2_esa_sr_granule")["measurements"]}
    assert list(measurements) == [*S2_BANDS, "scene_classification"]
    for band in S2_BANDS:
        assert (measurements[band]["dtype"], measurements[band]["nodata"]) == ("uint16", 0)
    scl = measurements["scene_classification"]
    assert (scl["dtype"], scl["nodata"]) == ("uint8", 0)
    assert "SCL" in scl["aliases"]


def _qa(name: str, values: list[int]) -> xr.DataArray:
    flags = {m["name"]: m for m in product_definition(name)["measurements"]}["pixel_qa"]
    return xr.DataArray(
        np.array(values, dtype=np.uint16),
        dims=["x"],
        attrs={"flags_definition": flags["flags_definition"], "nodata": 1},
    )


@pytest.mark.parametrize(
    ("name", "clear", "water"),
    [
        ("ls8_usgs_sr_scene", [322, 386, 834, 898, 1346], [324, 388, 836, 900, 1348]),
        ("ls7_usgs_sr_scene", [66, 130], [68, 132]),
        ("ls5_usgs_sr_scene", [66, 130], [68, 132]),
    ],
)
def test_pixel_qa_flags_decode_the_usgs_clear_and_water_values(
    name: str, clear: list[int], water: list[int]
) -> None:
    qa = _qa(name, [*clear, *water, 1, 480, 328])
    decoded_clear = make_mask(qa, clear="clear_land").values.tolist()
    decoded_water = make_mask(qa, water="water").values.tolist()
    assert decoded_clear == [True] * len(clear) + [False] * (len(water) + 3)
    assert decoded_water == [False] * len(clear) + [True] * len(water) + [False] * 3
    assert make_mask(qa, nodata=True).values.tolist()[-3:] == [True, False, False]
    assert make_mask(qa, cloud="cloud").values.tolist()[-2:] == [True, False]
    assert make_mask(qa, cloud_shadow="cloud_shadow").values.tolist()[-1] is True


def test_scene_classification_flags_name_every_esa_class() -> None:
    scl = {m["name"]: m for m in product_definition("s2_esa_sr_granule")["measurements"]}[
        "scene_classification"
    ]
    classes = xr.DataArray(
        np.arange(12, dtype=np.uint8),
        dims=["x"],
        attrs={"flags_definition": scl["flags_definition"]},
    )
    for value, name in enumerate(
        ["no_data", "saturated_or_defective", "dark_area_pixels", "cloud_shadows", "vegetation",
         "not_vegetated", "water", "unclassified", "cloud_medium_probability",
         "cloud_high_probability", "thin_cirrus", "snow"]
    ):  # fmt: skip
        mask = make_mask(classes, scene_classification=name).values
        assert mask.tolist() == [index == value for index in range(12)]


def test_an_unknown_product_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(InvalidRequest) as refused:
        product_definition("ls9_usgs_sr_scene")
    assert "ls9_usgs_sr_scene" in str(refused.value)
    for name in PRODUCTS:
        assert name in str(refused.value)

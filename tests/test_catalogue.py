"""Every input product of the catalogue agrees with its ODC product definition: the bands the
products read exist with the dtype and nodata the catalogue states, and so does the mask band,
with its flags; a new sensor's entry that disagrees with its YAML fails here, not in a job."""

from __future__ import annotations

import pytest

from shared.catalogue import INPUT_PRODUCTS, product_definition


@pytest.mark.parametrize("name", sorted(INPUT_PRODUCTS))
def test_each_input_product_matches_its_odc_definition(name: str) -> None:
    product = INPUT_PRODUCTS[name]
    definition = product_definition(name)
    assert definition["name"] == name
    measurements = {entry["name"]: entry for entry in definition["measurements"]}
    for canonical, measurement in product.band_names:
        declared = measurements.get(measurement)
        assert declared is not None, f"{name}: {canonical} is {measurement}, not in the YAML"
        assert declared["dtype"] == product.reflectance_dtype, measurement
        assert float(declared["nodata"]) == product.reflectance_nodata, measurement
    mask = measurements[product.mask_band]
    assert mask["dtype"] == product.mask_dtype
    assert float(mask["nodata"]) == product.mask_nodata
    assert mask.get("flags_definition"), f"{name}: the mask band declares no flags"
    assert product.short_name and product.resolution > 0

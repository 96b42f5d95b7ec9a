"""What each product declares about its bands is what its pixels hold, and what STAC and the
output product definitions say: nodata, dtype, units, and the scale of x 10000 bands."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest
from datacube.model import Product as DatacubeProduct

from services.worker.outputs.metadata import product_definition, stac_item
from services.worker.outputs.spec import BandSpec, OutputSpec
from services.worker.products import registry
from shared.jobs import Period
from tests.test_outputs_metadata import facts_for
from tests.test_products_support import run_product, synthetic_scene

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the fc package's own

SCALED = {
    "geomedian": {"red", "green", "blue", "nir", "swir1", "swir2", "emad"},
}


def band_specs(job_code: str) -> dict[str, BandSpec]:
    return {
        name: BandSpec(
            dtype=band.dtype,
            nodata=band.nodata,
            units=band.units,
            overview_resampling=band.overview_resampling,
            scale=band.scale,
            offset=band.offset,
        )
        for name, band in registry[job_code].outputs.items()
    }


def spec_for(job_code: str) -> OutputSpec:
    return OutputSpec(
        product_name=f"ls8_{job_code}",
        job_code=job_code,
        source_product="ls8_usgs_sr_scene",
        tile="x022y036",
        crs="EPSG:3460",
        bounds=(2130000.0, 3499680.0, 2131920.0, 3501600.0),
        period=Period(start=date(2019, 1, 1), end=date(2019, 12, 31)),
        sources=("6b8f1b7e-0a4c-4c1e-9a1e-3c4c2f9f0d11",),
        prefix="declared",
        bands=band_specs(job_code),
    )


@pytest.mark.parametrize("job_code", sorted(registry))
def test_every_output_band_declares_its_nodata_dtype_and_units(job_code: str) -> None:
    for name, band in registry[job_code].outputs.items():
        assert band.nodata is not None, f"{job_code} {name} has no nodata"
        assert band.units, f"{job_code} {name} has no units"
        assert np.dtype(band.dtype).kind in "iuf"


@pytest.mark.parametrize("job_code", sorted(registry))
def test_stac_and_the_product_definition_say_what_the_bands_declare(job_code: str) -> None:
    spec = spec_for(job_code)
    item = stac_item(facts_for(spec), "https://example.org/item.json")
    definition = product_definition(spec, spec.bands)
    DatacubeProduct.validate(definition)
    measurements = {m["name"]: m for m in definition["measurements"]}
    for name, band in spec.bands.items():
        [raster] = item["assets"][name]["raster:bands"]
        assert raster["data_type"] == band.dtype
        assert raster["unit"] == band.units
        measurement = measurements[name]
        assert measurement["dtype"] == band.dtype and measurement["units"] == band.units
        if isinstance(band.nodata, float) and math.isnan(band.nodata):
            assert raster["nodata"] == "nan" and measurement["nodata"] == "NaN"
        else:
            assert raster["nodata"] == band.nodata == measurement["nodata"]
        if name in SCALED.get(job_code, set()):
            assert raster["scale"] == 0.0001 and raster["offset"] == 0.0
            assert measurement["scale_factor"] == 0.0001 and measurement["add_offset"] == 0.0
        else:
            assert "scale" not in raster and "scale_factor" not in measurement


@pytest.mark.parametrize(
    ("job_code", "counts"),
    [
        ("geomedian", ("count",)),
        ("ndvi", ("ndvi_count", "clear_count")),
        ("water", ("count_wet", "count_clear")),
        ("fc_percentiles", ("count_valid",)),
    ],
)
def test_counts_are_their_declared_nodata_where_nothing_was_observed_and_zero_when_cloudy(
    job_code: str, counts: tuple[str, ...]
) -> None:
    scene = synthetic_scene("ls7_usgs_sr_scene", dates=4, seed=61, clouds=False)
    scene.raw["pixel_qa"][:, :8, :8] = 1  # never observed: fill on every date
    for band in ("blue", "green", "red", "nir", "swir1", "swir2"):
        scene.raw[band][:, :8, :8] = -9999
    scene.raw["pixel_qa"][:, 8:16, :8] = 224  # observed, always cloud
    scene.__post_init__()

    result, _ = run_product(job_code, scene)

    for name in counts:
        declared = registry[job_code].outputs[name].nodata
        assert declared == -999
        values = result[name].values
        assert (values[:8, :8] == declared).all(), name
        assert (values[8:16, :8] == 0).all(), name
        assert (values[16:] != declared).all(), name

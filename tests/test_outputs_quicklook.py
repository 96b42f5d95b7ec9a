"""Quicklook PNGs: their shape, their stretch, transparent nodata, one per committed product."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimage

from services.worker.outputs import BandSpec, LocalDestination, layout_for, write_product
from services.worker.outputs.quicklook import quicklooks_for_outputs, rgb_quicklook
from shared.errors import Permanent
from tests.test_outputs_support import (
    REFLECTANCE,
    geomedian_result,
    geomedian_spec,
    seed_legacy_spec,
)


def decoded(png: bytes) -> np.ndarray:
    return mpimage.imread(io.BytesIO(png), format="png")


def test_the_quicklook_is_an_rgba_png_with_transparent_nodata() -> None:
    png = rgb_quicklook(geomedian_result())

    assert png.startswith(b"\x89PNG")
    pixels = decoded(png)
    assert pixels.shape == (64, 64, 4)
    assert (pixels[:4, :4, 3] == 0).all()  # the nodata corner
    assert (pixels[4:, 4:, 3] == 1).all()


def test_the_stretch_spreads_the_values_over_the_display_range() -> None:
    pixels = decoded(rgb_quicklook(geomedian_result(), percentiles=(2, 98)))

    visible = pixels[4:, 4:, :3]
    assert visible.min() == 0.0
    assert visible.max() == 1.0
    assert 0.3 < float(np.median(visible)) < 0.7


def test_large_results_are_shrunk_to_the_size_asked() -> None:
    pixels = decoded(rgb_quicklook(geomedian_result(size=128), max_size=32))

    assert pixels.shape == (32, 32, 4)


def test_a_result_without_rgb_bands_has_no_quicklook() -> None:
    with pytest.raises(Permanent, match="lacks red"):
        rgb_quicklook(geomedian_result().drop_vars("red"))


async def test_every_committed_product_under_a_folder_gets_a_quicklook(tmp_path: Path) -> None:
    destination = LocalDestination(tmp_path)
    geomedian = geomedian_spec()
    legacy = seed_legacy_spec()
    cover = geomedian_spec(
        product_name="ls8_fractional_cover",
        job_code="fractional_cover",
        bands={name: BandSpec(dtype="int16", nodata=-9999) for name in ("bs", "pv", "npv")},
    )
    ndvi = geomedian_spec(product_name="ls8_ndvi", job_code="ndvi", bands={"red": REFLECTANCE})
    await write_product(geomedian_result(), {}, geomedian, destination)
    await write_product(geomedian_result(), {}, legacy, destination)
    renamed = geomedian_result().rename({"red": "bs", "green": "pv", "blue": "npv"})
    await write_product(renamed, {}, cover, destination)
    await write_product(geomedian_result(), {}, ndvi, destination)

    pngs = await asyncio.to_thread(quicklooks_for_outputs, tmp_path)

    expected = {layout_for(spec).quicklook_key for spec in (geomedian, legacy, cover, ndvi)}
    assert {path.relative_to(tmp_path).as_posix() for path in pngs} == expected
    for path in pngs:
        pixels = decoded(path.read_bytes())
        assert pixels.shape == (64, 64, 4)
        assert (pixels[:4, :4, 3] == 0).all()

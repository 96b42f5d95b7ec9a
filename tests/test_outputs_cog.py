"""Band COGs: valid Cloud-Optimised GeoTIFFs that read back equal, nodata included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
from rio_cogeo.cogeo import cog_validate

from services.worker.outputs.cog import encode_cog, overview_levels, write_cog_file
from services.worker.outputs.spec import BandSpec, CogOptions
from shared.errors import Permanent
from tests.test_outputs_support import band, tile_geobox


def written(tmp_path: Path, data: bytes, name: str = "band.tif") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def assert_valid_cog(path: Path) -> None:
    valid, errors, warnings = cog_validate(path, quiet=True)
    assert valid, errors
    assert errors == []
    assert warnings == []


@pytest.mark.parametrize(
    ("dtype", "low", "high", "nodata"),
    [
        ("int16", -2000, 10000, -9999),
        ("uint8", 1, 200, 0),
        ("uint16", 1, 60000, 0),
        ("float32", -1.0, 1.0, float("nan")),
    ],
)
@pytest.mark.parametrize("compression", ["DEFLATE", "ZSTD"])
def test_every_band_is_a_valid_cog_that_reads_back_equal(
    tmp_path: Path, dtype: str, low: float, high: float, nodata: float, compression: str
) -> None:
    pixels = band(tile_geobox(), dtype, low, high, nodata, seed=1)
    spec = BandSpec(dtype=dtype, nodata=nodata)

    path = written(tmp_path, encode_cog(pixels, spec, CogOptions(compression=compression)))  # type: ignore[arg-type]

    assert_valid_cog(path)
    with rasterio.open(path) as cog:
        assert cog.dtypes[0] == dtype
        assert cog.crs.to_epsg() == 3460
        assert cog.transform == pixels.odc.geobox.transform
        assert cog.compression.name.upper() == compression
        back = cog.read(1)
        if np.isnan(nodata):
            assert np.isnan(cog.nodata)
        else:
            assert cog.nodata == nodata
    np.testing.assert_array_equal(back, pixels.values)
    with tifffile.TiffFile(path) as tiff:
        assert tiff.pages[0].is_tiled


def test_large_bands_get_overviews_down_to_one_block(tmp_path: Path) -> None:
    pixels = band(tile_geobox(64), "int16", 0, 3000, -9999, seed=2)
    options = CogOptions(blocksize=16)

    path = written(tmp_path, encode_cog(pixels, BandSpec(dtype="int16", nodata=-9999), options))

    assert_valid_cog(path)
    with rasterio.open(path) as cog:
        assert cog.overviews(1) == [2, 4]
        assert cog.block_shapes[0] == (16, 16)
    assert overview_levels((3200, 3200), 512) == [2, 4, 8]
    assert overview_levels((64, 64), 512) == []


def test_a_cog_file_can_be_written_in_place(tmp_path: Path) -> None:
    pixels = band(tile_geobox(), "int16", 0, 3000, -9999, seed=3)
    path = tmp_path / "red.tif"

    size = write_cog_file(pixels, path, BandSpec(dtype="int16", nodata=-9999), CogOptions())

    assert size == path.stat().st_size
    assert_valid_cog(path)
    with rasterio.open(path) as cog:
        np.testing.assert_array_equal(cog.read(1), pixels.values)


def test_float_results_are_rounded_into_the_declared_integer_type_with_nan_as_nodata(
    tmp_path: Path,
) -> None:
    pixels = band(tile_geobox(), "float64", 0, 100, float("nan"), seed=4)

    path = written(tmp_path, encode_cog(pixels, BandSpec(dtype="int8", nodata=-1), CogOptions()))

    with rasterio.open(path) as cog:
        back = cog.read(1)
        assert cog.nodata == -1
    assert (back[:4, :4] == -1).all()
    np.testing.assert_array_equal(back[4:], np.rint(pixels.values[4:]).astype("int8"))


def test_values_that_do_not_fit_the_declared_type_are_refused() -> None:
    pixels = band(tile_geobox(), "int16", 0, 1000, None, seed=5)

    with pytest.raises(Permanent, match=r"do not fit the declared uint8"):
        encode_cog(pixels, BandSpec(dtype="uint8", nodata=0), CogOptions())


def test_a_band_with_several_dates_is_refused() -> None:
    pixels = band(tile_geobox(), "int16", 0, 1000, None, seed=6).expand_dims(time=2)

    with pytest.raises(Permanent, match="extra dimensions"):
        encode_cog(pixels, BandSpec(dtype="int16"), CogOptions())

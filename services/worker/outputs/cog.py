"""One Cloud-Optimised GeoTIFF per band, through odc-geo's COG writer.

These functions block (GDAL encodes the tiles); call them with `asyncio.to_thread`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
import xarray as xr
from rasterio.io import MemoryFile

from services.worker.outputs.spec import BandSpec, CogOptions
from shared.errors import Permanent

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def overview_levels(shape: tuple[int, int], blocksize: int) -> list[int]:
    """Halvings until the whole image fits one block: 3200 px in 512 px blocks -> [2, 4, 8]."""
    largest = max(shape)
    levels: list[int] = []
    factor = 2
    while math.ceil(largest / (factor // 2)) > blocksize:
        levels.append(factor)
        factor *= 2
    return levels


def _spatial_only(band: xr.DataArray) -> xr.DataArray:
    extra = [dim for dim in band.dims if dim not in band.odc.spatial_dims]
    singletons = [dim for dim in extra if band.sizes[dim] == 1]
    if len(singletons) != len(extra):
        sizes = ", ".join(f"{dim}={band.sizes[dim]}" for dim in extra)
        raise Permanent(
            f"band {band.name!r} has extra dimensions ({sizes}); write one 2-D layer per band"
        )
    return band.squeeze(singletons, drop=True) if singletons else band


def conform_band(band: xr.DataArray, spec: BandSpec) -> xr.DataArray:
    """The band as a 2-D numpy array of the declared dtype with its nodata set.

    Floats going to an integer type are rounded and their NaNs become nodata; values that do not
    fit the declared type are an error (a silent wrap-around would corrupt the product).
    """
    if band.odc.geobox is None:
        raise Permanent(
            f"band {band.name!r} has no geobox (crs and transform); cannot write a GeoTIFF"
        )
    band = _spatial_only(band)
    target = np.dtype(spec.dtype)
    pixels = np.asarray(band.values)
    if pixels.dtype != target:
        pixels = _cast(pixels, target, spec.nodata, str(band.name))
    conformed = band.copy(data=pixels)
    conformed.attrs = {key: value for key, value in band.attrs.items() if key != "nodata"}
    if spec.nodata is not None:
        conformed.attrs["nodata"] = spec.nodata
    return conformed


def _cast(
    pixels: np.ndarray, target: np.dtype, nodata: float | int | None, name: str
) -> np.ndarray:
    if target.kind == "f":
        return pixels.astype(target)
    if pixels.dtype.kind == "f":
        missing = ~np.isfinite(pixels)
        if missing.any() and nodata is None:
            raise Permanent(f"band {name!r} has NaN pixels but {target} output declares no nodata")
        pixels = np.where(missing, 0, np.rint(pixels))
    else:
        missing = np.zeros(pixels.shape, dtype=bool)
    limits = np.iinfo(target)
    valid = pixels[~missing]
    if valid.size and (valid.min() < limits.min or valid.max() > limits.max):
        raise Permanent(
            f"band {name!r} holds values {valid.min()}..{valid.max()} that do not fit the declared "
            f"{target} ({limits.min}..{limits.max}); declare a wider dtype or scale the values"
        )
    cast = pixels.astype(target)
    if missing.any():
        cast[missing] = nodata
    return cast


#: Our overview resampling names as GDAL's COG driver spells them.
_GDAL_RESAMPLING = {
    "nearest": "NEAREST",
    "average": "AVERAGE",
    "mode": "MODE",
    "bilinear": "BILINEAR",
    "cubic": "CUBIC",
}
#: rio-cogeo (and GDAL's validator) call a file wider or taller than this "large".
_LARGE_PIXELS = 512


def block_edge(shape: tuple[int, int], blocksize: int) -> int:
    """The tile edge for a band of `shape`: `blocksize`, unless a tile would span the full width
    of a large image, which validators read as a striped (untiled) file; then a smaller tile."""
    height, width = shape
    if width == blocksize and max(height, width) > _LARGE_PIXELS:
        return blocksize // 2 if blocksize % 32 == 0 else blocksize + 16
    return blocksize


def creation_options(
    shape: tuple[int, int], dtype: np.dtype, spec: BandSpec, options: CogOptions
) -> dict[str, str]:
    """GDAL COG driver options: tiled, compressed with a predictor, overviews to one block."""
    blocksize = block_edge(shape, options.blocksize)
    levels = overview_levels(shape, blocksize)
    creation = {
        "BLOCKSIZE": str(blocksize),
        "COMPRESS": options.compression,
        "LEVEL": str(options.level),
        # Horizontal differencing suits integers, floating-point prediction suits floats.
        "PREDICTOR": "FLOATING_POINT" if dtype.kind == "f" else "STANDARD",
        "OVERVIEW_RESAMPLING": _GDAL_RESAMPLING[spec.overview_resampling],
        "BIGTIFF": "IF_SAFER",
    }
    if levels:
        creation["OVERVIEW_COUNT"] = str(len(levels))
    else:
        creation["OVERVIEWS"] = "NONE"
    return creation


def _cog_bytes(band: xr.DataArray, spec: BandSpec, options: CogOptions) -> bytes:
    """Through GDAL's COG driver, which lays out every size as a COG (header first, tiles
    after it), where a plain GeoTIFF writer leaves small images without that layout."""
    geobox = band.odc.geobox
    pixels = np.asarray(band.values)
    height, width = pixels.shape
    profile: dict[str, object] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": pixels.dtype.name,
        "crs": str(geobox.crs),
        "transform": geobox.transform,
    }
    if spec.nodata is not None:
        profile["nodata"] = spec.nodata
    creation = creation_options((height, width), pixels.dtype, spec, options)
    with MemoryFile() as source_file:
        with source_file.open(**profile) as source:
            source.write(pixels, 1)
        with MemoryFile() as cog_file:
            rasterio.shutil.copy(source_file.name, cog_file.name, driver="COG", **creation)
            return bytes(cog_file.read())


def encode_cog(band: xr.DataArray, spec: BandSpec, options: CogOptions) -> bytes:
    """The band as COG bytes: tiled, compressed with a predictor, nodata set, with overviews."""
    return _cog_bytes(conform_band(band, spec), spec, options)


def write_cog_file(band: xr.DataArray, path: Path, spec: BandSpec, options: CogOptions) -> int:
    """The band as a COG file at `path` (replaced if present); returns its size in bytes."""
    data = encode_cog(band, spec, options)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    partial.replace(path)
    return len(data)

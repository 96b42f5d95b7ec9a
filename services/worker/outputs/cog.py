"""One Cloud-Optimised GeoTIFF per band, through odc-geo's COG writer.

These functions block (GDAL encodes the tiles); call them with `asyncio.to_thread`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import xarray as xr
from odc.geo.cog import to_cog, write_cog

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


def _rio_options(pixels_dtype: np.dtype, options: CogOptions) -> dict[str, object]:
    # Horizontal differencing suits integers, floating-point prediction suits floats.
    predictor = 3 if pixels_dtype.kind == "f" else 2
    if options.compression == "ZSTD":
        return {"compress": "ZSTD", "zstd_level": options.level, "predictor": predictor}
    return {"compress": "DEFLATE", "zlevel": options.level, "predictor": predictor}


def _cog_arguments(band: xr.DataArray, spec: BandSpec, options: CogOptions) -> dict[str, object]:
    return {
        "blocksize": options.blocksize,
        "overview_levels": overview_levels(band.shape, options.blocksize),  # type: ignore[arg-type]
        "overview_resampling": spec.overview_resampling,
        "nodata": spec.nodata,
        **_rio_options(band.dtype, options),
    }


def encode_cog(band: xr.DataArray, spec: BandSpec, options: CogOptions) -> bytes:
    """The band as COG bytes: tiled, compressed with a predictor, nodata set, with overviews."""
    conformed = conform_band(band, spec)
    return to_cog(conformed, **_cog_arguments(conformed, spec, options))  # type: ignore[arg-type]


def write_cog_file(band: xr.DataArray, path: Path, spec: BandSpec, options: CogOptions) -> int:
    """The band as a COG file at `path` (replaced if present); returns its size in bytes."""
    conformed = conform_band(band, spec)
    write_cog(conformed, path, overwrite=True, **_cog_arguments(conformed, spec, options))  # type: ignore[arg-type]
    return path.stat().st_size

"""Quicklook PNGs of products: a look at the result, not a measurement.

Three bands become red, green and blue with one percentile stretch shared by all three, so that
colours keep their balance (a per-band stretch would turn a blue sea grey). Products without
reflectance bands are shown as bare soil / green / non-green vegetation (fractional cover), or
their first band through a colour map. Nodata pixels are transparent. Everything here blocks;
call it with `asyncio.to_thread`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
import yaml
from matplotlib import colormaps
from matplotlib import image as mpimage
from rasterio.enums import Resampling

from shared.errors import Permanent

RGB_BANDS = ("red", "green", "blue")
# Fractional cover's usual false colour: bare soil red, green vegetation green, dry vegetation blue.
FRACTIONAL_COVER_BANDS = ("bs", "pv", "npv")
METADATA_SUFFIXES = ("_final.odc-metadata.yaml", "_datacube-metadata.yaml")
QUICKLOOK_SUFFIX = "_quicklook.png"
DEFAULT_PERCENTILES = (2.0, 98.0)


def valid_pixels(pixels: np.ndarray, nodata: float | None) -> np.ndarray:
    good = np.isfinite(pixels)
    if nodata is not None and not np.isnan(nodata):
        good &= pixels != nodata
    return good


def render_png(
    layers: Sequence[np.ndarray],
    valid: np.ndarray,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> bytes:
    """PNG of three layers as RGB, or of one through a colour map, stretched between percentiles."""
    stack = np.stack([layer.astype("float64") for layer in layers], axis=-1)
    if valid.any():
        low, high = np.percentile(stack[valid], percentiles)
    else:
        low, high = 0.0, 1.0
    scaled = np.clip((stack - low) / (high - low if high > low else 1.0), 0.0, 1.0)
    if len(layers) == 1:
        rgb = colormaps["viridis"](scaled[..., 0])[..., :3]
    elif len(layers) == 3:
        rgb = scaled
    else:
        raise ValueError(f"a quicklook shows one or three layers, not {len(layers)}")
    rgb[~valid] = 0.0
    rgba = np.concatenate([rgb, valid[..., None].astype("float64")], axis=-1)
    buffer = io.BytesIO()
    mpimage.imsave(buffer, (rgba * 255).round().astype("uint8"), format="png")
    return buffer.getvalue()


def rgb_quicklook(
    result: xr.Dataset,
    *,
    bands: Sequence[str] = RGB_BANDS,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    max_size: int = 1024,
) -> bytes:
    """PNG bytes of an in-memory result's `bands` as red, green and blue."""
    missing = [band for band in bands if band not in result.data_vars]
    if missing:
        raise Permanent(f"no quicklook: the result lacks {', '.join(missing)}")
    height, width = (result.sizes[dim] for dim in result.odc.spatial_dims)
    step = max(1, -(-max(height, width) // max_size))
    layers: list[np.ndarray] = []
    valid = np.ones((len(range(0, height, step)), len(range(0, width, step))), dtype=bool)
    for band in bands:
        variable = result[band]
        extra = {dim: 0 for dim in variable.dims if dim not in variable.odc.spatial_dims}
        pixels = np.asarray(variable.isel(extra).values[::step, ::step], dtype="float64")
        valid &= valid_pixels(pixels, variable.odc.nodata)
        layers.append(pixels)
    return render_png(layers, valid, percentiles)


def display_bands(measurements: Sequence[str]) -> tuple[str, ...]:
    """Which of a product's bands a quicklook shows."""
    for trio in (RGB_BANDS, FRACTIONAL_COVER_BANDS):
        if all(band in measurements for band in trio):
            return trio
    return (measurements[0],) if measurements else ()


def _read_decimated(path: Path, max_size: int) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(path) as source:
        step = max(1, -(-max(source.height, source.width) // max_size))
        shape = (-(-source.height // step), -(-source.width // step))
        # The COG's overviews serve the reduced read.
        pixels = source.read(1, out_shape=shape, resampling=Resampling.nearest).astype("float64")
        return pixels, valid_pixels(pixels, source.nodata)


def quicklook_for_document(document_path: Path, *, max_size: int = 1024) -> Path | None:
    """Write `{stem}_quicklook.png` beside a committed product's metadata (None: no bands)."""
    document = yaml.safe_load(document_path.read_text())
    measurements: Mapping[str, Mapping[str, str]] = document.get("measurements") or {}
    bands = display_bands(list(measurements))
    if not bands:
        return None
    layers: list[np.ndarray] = []
    valid: np.ndarray | None = None
    for band in bands:
        pixels, good = _read_decimated(document_path.parent / measurements[band]["path"], max_size)
        layers.append(pixels)
        valid = good if valid is None else valid & good
    assert valid is not None
    name = document_path.name
    stem = next((name[: -len(end)] for end in METADATA_SUFFIXES if name.endswith(end)), name)
    target = document_path.with_name(f"{stem}{QUICKLOOK_SUFFIX}")
    target.write_bytes(render_png(layers, valid))
    return target


def quicklooks_for_outputs(root: Path, *, max_size: int = 1024) -> list[Path]:
    """A quicklook PNG beside every committed product under `root`; returns their paths."""
    documents = sorted(path for end in METADATA_SUFFIXES for path in Path(root).rglob(f"*{end}"))
    written = (quicklook_for_document(path, max_size=max_size) for path in documents)
    return [path for path in written if path is not None]

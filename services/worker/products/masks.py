"""Cloud and shadow masks buffered as odc-stats buffers them, and reflectance that can be trusted.

`buffered` applies a filter (`shared.mask_filters`: opening, closing, dilation, erosion, each
with a radius in pixels) to a boolean (time, y, x) mask with odc-algo's isotropic morphology
(`odc.algo.mask_cleanup_np`). It is computed chunk by chunk with as much context around each
chunk as the filter can reach (an opening of radius r looks 2r away: erosion, then dilation),
so the result does not depend on how the cube is chunked. Openings and closings are applied as
their erosion and dilation, and a step whose input is constant (all True or all False) leaves
it as it is: there is nothing to grow or shrink, and the distance transform odc-algo uses then
has no background to measure from (it would measure from a corner and mark it).

Beyond the tile's edge nothing is known: a cloud just outside the tile does not buffer into it
(odc-stats has the same edge).

Reflectance is usable between 0 and 1 exclusive of 0 (stored 1..10000): anything else is
saturated, an atmospheric-correction artefact, or fill (`in_range`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import dask.array
import numpy as np
import numpy.typing as npt
import xarray as xr
from odc.algo import mask_cleanup_np

from shared.mask_filters import Filter, reach

#: Stored reflectance (x 10000) a surface can have: above 0, at most 1.
VALID_REFLECTANCE_MIN = 1
VALID_REFLECTANCE_MAX = 10000


_STEPS: dict[str, tuple[str, ...]] = {
    "opening": ("erosion", "dilation"),
    "closing": ("dilation", "erosion"),
    "dilation": ("dilation",),
    "erosion": ("erosion",),
}


def _clean_block(block: npt.NDArray[np.bool_], mask_filter: Filter) -> npt.NDArray[np.bool_]:
    """`mask_filter` applied to each 2-D layer of a (..., y, x) block."""
    result = np.empty_like(block)
    steps = [(step, radius) for operation, radius in mask_filter for step in _STEPS[operation]]
    for index in np.ndindex(block.shape[:-2]):
        layer = block[index]
        for step, radius in steps:
            if radius == 0 or not layer.any() or layer.all():
                continue
            layer = mask_cleanup_np(layer, [(step, radius)])
        result[index] = layer
    return result


def buffered(mask: xr.DataArray, mask_filter: Filter) -> xr.DataArray:
    """`mask` (bool, (..., y, x), numpy or Dask) after the morphological `mask_filter`."""
    if not mask_filter:
        return mask
    data = mask.data
    clean = partial(_clean_block, mask_filter=mask_filter)
    if isinstance(data, dask.array.Array):
        depth = reach(mask_filter)
        cleaned: Any = data.map_overlap(
            clean,
            depth={axis: (depth if axis >= data.ndim - 2 else 0) for axis in range(data.ndim)},
            boundary="none",
            dtype=bool,
            meta=np.array((), dtype=bool),
        )
    else:
        cleaned = clean(np.asarray(data, dtype=bool))
    return mask.copy(data=cleaned)


def in_range(bands: xr.Dataset) -> xr.DataArray:
    """True where every band of `bands` (int16 reflectance x 10000) is a reflectance in (0, 1]."""
    layers = [
        (bands[name] >= VALID_REFLECTANCE_MIN) & (bands[name] <= VALID_REFLECTANCE_MAX)
        for name in bands.data_vars
    ]
    valid = layers[0]
    for layer in layers[1:]:
        valid = valid & layer
    return valid

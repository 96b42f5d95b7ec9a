"""One scene's water classification: the WOfS water observation layer of its pixels.

The layer is `wofs.water_observations` on the scene alone, on its own grid, with the mask band's
cloud and cloud shadow as they are (not buffered): a summary buffers them when it counts (as
odc-stats' `wofs-summary` does), with whatever filter its request asks for, so one stored
layer serves every buffering. Its bits are the reference's (`wofs`): 1 no data (and nothing
else), 2 non-contiguous or saturated, 8 terrain shadow, 32 cloud shadow, 64 cloud, 128 wet;
clear dry is 0 and clear wet 128.

Stored as GA stores `ga_ls_wo_3`: one uint8 band `water`, nodata 1 (the no-data bit).
"""

from __future__ import annotations

import xarray as xr

from services.worker.outputs.spec import BandSpec
from services.worker.products.wofs import NO_DATA, WOFS_BANDS, water_observations
from services.worker.water.identity import VERSION, classification_dataset_id
from shared.catalogue import WATER_CLASSIFICATION_BAND, Sensor
from shared.mask_filters import UNBUFFERED

WATER_BAND = WATER_CLASSIFICATION_BAND
#: uint8, nodata 1 (the no-data bit), overviews by nearest neighbour: flags never average.
WATER_SPEC = BandSpec(dtype="uint8", nodata=NO_DATA, units="1", overview_resampling="nearest")


def measurements(sensor: Sensor) -> list[str]:
    """What a scene's classification reads: the WOfS bands, as `sensor` names them, and its mask."""
    return [*(sensor.measurement(band) for band in WOFS_BANDS), sensor.mask_band]


def classify_scene(cube: xr.Dataset, sensor: Sensor) -> xr.DataArray:
    """The water observation layer of the one scene in `cube` (time of length 1), 2-D, lazily."""
    if cube.sizes.get("time", 1) != 1:
        raise ValueError(f"a scene's cube has one time, not {cube.sizes['time']}")
    layer = water_observations(cube, sensor, UNBUFFERED)
    if "time" in layer.dims:
        layer = layer.isel(time=0, drop=True)
    return layer.rename(WATER_BAND).assign_attrs(nodata=NO_DATA, units="1")


__all__ = [
    "VERSION",
    "WATER_BAND",
    "WATER_SPEC",
    "classification_dataset_id",
    "classify_scene",
    "measurements",
]

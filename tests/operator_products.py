"""An operator's own product module, as `CONVEYOR_PLUGIN_MODULES` names it: clear days per pixel.

Both the dispatcher (to accept the job code) and the workers (to run it) import this module; it
is never imported by the test process itself.

With the options `meet_dir` and `meet_parties`, each job's computation, once its count is
computed, waits until `meet_parties` jobs have got that far (one file each in `meet_dir`), and
fails after `MEET_DEADLINE_SECONDS` otherwise: those jobs finish only if they all run at the same
time, which is how the tests see that a worker runs jobs concurrently.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
import xarray as xr

from services.worker.products.base import OutputBand, Product, ProductContext, register
from shared.catalogue import Sensor

MEET_DEADLINE_SECONDS = 120.0


def meet(
    block: npt.NDArray[np.int16], directory: str, parties: int, name: str
) -> npt.NDArray[np.int16]:
    """Arrive at the meeting point `directory` as `name`, and wait for `parties` arrivals."""
    folder = Path(directory)
    (folder / name).touch()
    deadline = time.monotonic() + MEET_DEADLINE_SECONDS
    while (arrived := sum(1 for _ in folder.iterdir())) < parties:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {arrived} of {parties} jobs ran at the same time")
        time.sleep(0.05)
    return block


@register("clear_days")
class ClearDays(Product):
    inputs = ()
    accepted_options = frozenset({"meet_dir", "meet_parties"})
    outputs = MappingProxyType(
        {"clear_days": OutputBand("int16", -1, "1", "clear observations", "nearest")}
    )

    def compute(
        self,
        cube: xr.Dataset,
        sensor: Sensor,
        options: Mapping[str, str],
        context: ProductContext,
    ) -> xr.Dataset:
        days = sensor.clear(cube[sensor.mask_band]).sum("time", dtype="int16")
        if "meet_dir" in options:
            # One name per job: its tile and its period.
            where = f"{cube.odc.geobox.extent.boundingbox} {cube.time.values[0]}"
            name = hashlib.sha256(where.encode()).hexdigest()[:16]
            met = days.data.map_blocks(
                meet, options["meet_dir"], int(options["meet_parties"]), name,
                dtype="int16", meta=np.array((), dtype="int16"),  # else dask calls it to see
            )  # fmt: skip
            days = days.copy(data=met)
        return self.finish({"clear_days": days}, cube)

"""Writing scenes side by side in worker processes.

Threads gain nothing here (rasterio holds the GIL while GDAL compresses), so scenes go to
forked processes: they inherit the request's precomputed ground (copy-on-write, never pickled)
and each writes whole scenes with one thread of numexpr and GDAL, which keeps both cores busy
on a two-core machine.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numexpr

if TYPE_CHECKING:
    from devtools.archive.footprints import ScenePlan
    from devtools.archive.scene_files import SceneRecord
    from devtools.archive.synthetic import SceneWriter

# The writer of this worker process, set once when the process starts.
_process_writer: Any = None


def _adopt(writer: SceneWriter) -> None:
    global _process_writer
    numexpr.set_num_threads(1)
    _process_writer = replace(writer, cog=replace(writer.cog, threads=1))


def _write(plan: ScenePlan) -> SceneRecord:
    record: SceneRecord = _process_writer(plan)
    return record


def write_scenes(
    writer: SceneWriter,
    plans: Sequence[ScenePlan],
    processes: int,
    on_scene: Callable[[SceneRecord], None] | None = None,
) -> list[SceneRecord]:
    """Write every plan, in order of the returned records; `on_scene` as each one is done."""
    records: list[SceneRecord] = []
    if processes <= 1 or len(plans) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for plan in plans:
            records.append(writer(plan))
            if on_scene is not None:
                on_scene(records[-1])
        return records
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        max_workers=min(processes, len(plans)),
        mp_context=context,
        initializer=_adopt,
        initargs=(writer,),
    ) as pool:
        for record in pool.map(_write, plans, chunksize=1):
            records.append(record)
            if on_scene is not None:
                on_scene(record)
    return records

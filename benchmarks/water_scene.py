"""One scene's water classification through the worker against a bare numpy script, in one run.

    .venv/bin/python -m benchmarks.water_scene [--size 2000] [--repeats 3] [--threads 2] [--index]

A synthetic Landsat 8 scene (`ls8_usgs_sr_scene`, about `size` px square at 30 m, beside Viti
Levu) is written and indexed once into an embedded PostgreSQL datacube. Then, alternately and
`repeats` times:

* worker: `WaterRunner.run` on a job naming the scene by its dataset id: look it up in the index,
  `dc.load` its six WOfS bands and `pixel_qa` on its own grid in Dask chunks, classify
  (`wofs.water_observations`), write the uint8 COG, then the STAC item and the eo3 document
  (fsync'd, renamed into place) into a fresh output folder; with `--index` also index it (the
  first repeat adds the product and the dataset, later ones find them);
* bare: rasterio reads the same seven band files whole, numpy runs the same decision tree
  (`wofs.classify`) and sets the same flags from `pixel_qa`, and GDAL's COG driver writes the
  layer with the same options (DEFLATE, predictor 2, 512 px blocks); nothing else.

Both layers are compared (they must be equal), then it prints the median wall seconds of each
and worker / bare, and the CPU seconds of each (all threads).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.io import MemoryFile

# Beside Viti Levu, Fiji (as the ARD benchmark's Landsat scene).
CENTRE = (178.3, -17.5)
PRODUCT = "ls8_usgs_sr_scene"
BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")
COG_OPTIONS = {"COMPRESS": "DEFLATE", "LEVEL": "6", "PREDICTOR": "2", "BLOCKSIZE": "512"}


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def synthesise(size: int, workdir: Path) -> Any:
    """The scene closest to `size` px square that the generator makes over a box that large."""
    from devtools.archive.synthetic import generate_archive

    degrees = size * 30 / 111_000 / 2
    area = (CENTRE[0] - degrees, CENTRE[1] - degrees, CENTRE[0] + degrees, CENTRE[1] + degrees)
    records = generate_archive(
        PRODUCT, area, date(2019, 1, 1), date(2019, 1, 16), workdir / "archive", processes=1
    )
    return max(records, key=lambda record: record.geobox.shape[0] * record.geobox.shape[1])


def bare(record: Any, target: Path) -> np.ndarray:
    """The least a script does: read the bands, run the tree, set the flags, write one COG."""
    from services.worker.products.wofs import classify

    bands = {}
    for band in (*BANDS, "pixel_qa"):
        with rasterio.open(record.measurement_paths[band]) as source:
            bands[band] = source.read(1)
            profile = source.profile
    qa = bands["pixel_qa"].astype(np.int64)
    reflectance = [bands[band] for band in BANDS]
    wet = classify(*reflectance)
    missing = np.all([values == -9999 for values in reflectance], axis=0)
    out_of_range = np.any([(values < 1) | (values > 10000) for values in reflectance], axis=0)
    layer = (
        out_of_range.astype(np.uint8) * 2
        | ((qa & (1 << 10)) != 0).astype(np.uint8) * 8
        | ((qa & (1 << 3)) != 0).astype(np.uint8) * 32
        | ((qa & (1 << 5)) != 0).astype(np.uint8) * 64
        | wet.astype(np.uint8) * 128
    )
    layer[((qa & 1) != 0) | missing] = 1
    profile.update(driver="GTiff", dtype="uint8", nodata=1, count=1)
    for key in ("blockxsize", "blockysize", "tiled", "compress", "interleave", "predictor"):
        profile.pop(key, None)
    with MemoryFile() as memory:
        with memory.open(**profile) as scratch:
            scratch.write(layer, 1)
        rasterio.shutil.copy(memory.name, target, driver="COG", **COG_OPTIONS)
    return layer


async def worker(runner: Any, record: Any) -> Path:
    from shared.jobs import water_job
    from shared.messages import WaterClassificationRequest

    request = WaterClassificationRequest(
        job_code="water_classification", dataset_id=str(record.dataset_id)
    )
    outcome = await runner.run(water_job(request))
    assert outcome.state == "done", outcome
    [cog] = [url for url in outcome.outputs if url.endswith("_water.tif")]
    return Path(cog.removeprefix("file://"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--index", action="store_true", help="index each classification too")
    options = parser.parse_args()

    import redis.asyncio as aioredis

    from services.worker.ard.index import SceneIndexer
    from services.worker.settings import WorkerSettings
    from services.worker.water.runner import WaterRunner
    from shared.datacube import (
        DatacubeSettings,
        add_products,
        index_datasets,
        init_index,
        open_datacube,
    )
    from shared.embedded import stop_embedded_servers

    workdir = Path(tempfile.mkdtemp(prefix="water-bench-"))
    workdir.chmod(0o755)
    settings = DatacubeSettings(state_dir=workdir / "state", db_url=None)
    try:
        init_index(settings)
        datacube = open_datacube(settings)
        add_products(datacube, [PRODUCT])
        record = synthesise(options.size, workdir)
        index_datasets(datacube, [record.metadata_path])
        datacube.close()
        height, width = record.geobox.shape
        print(f"scene {record.label}: {width} x {height} px, 7 bands")

        async def run() -> tuple[list[float], list[float], list[float], list[float]]:
            worker_settings = WorkerSettings(
                pool="ard", output_url=str(workdir / "out"), scratch_root=workdir / "scratch",
                dask_threads=options.threads, index_outputs=options.index,
            )  # fmt: skip
            # Not connected: a job naming its dataset adds no jobs.
            queue = aioredis.Redis()
            runner = WaterRunner(
                worker_settings, queue, index=SceneIndexer(lambda: open_datacube(settings))
            )
            walls: dict[str, list[float]] = {"worker": [], "bare": []}
            cpus: dict[str, list[float]] = {"worker": [], "bare": []}
            try:
                for repeat in range(options.repeats):
                    shutil.rmtree(workdir / "out", ignore_errors=True)
                    started, cpu = time.perf_counter(), cpu_seconds()
                    made = await worker(runner, record)
                    walls["worker"].append(time.perf_counter() - started)
                    cpus["worker"].append(cpu_seconds() - cpu)
                    target = workdir / f"bare-{repeat}.tif"
                    started, cpu = time.perf_counter(), cpu_seconds()
                    expected = bare(record, target)
                    walls["bare"].append(time.perf_counter() - started)
                    cpus["bare"].append(cpu_seconds() - cpu)
                    with rasterio.open(made) as written:
                        np.testing.assert_array_equal(written.read(1), expected)
            finally:
                await runner.close()
                await queue.aclose()
            return walls["worker"], walls["bare"], cpus["worker"], cpus["bare"]

        worker_wall, bare_wall, worker_cpu, bare_cpu = asyncio.run(run())
    finally:
        stop_embedded_servers(workdir / "state")
        shutil.rmtree(workdir, ignore_errors=True)
    median = statistics.median
    indexed = ", indexed" if options.index else ""
    steps = f"index lookup, dc.load, Dask on {options.threads} threads, COG, STAC, eo3{indexed}"
    print(f"worker ({steps})")
    print(f"  wall {median(worker_wall):7.2f} s   cpu {median(worker_cpu):7.2f} s")
    print("bare (rasterio read, numpy tree and flags, one COG)")
    print(f"  wall {median(bare_wall):7.2f} s   cpu {median(bare_cpu):7.2f} s")
    print(f"worker / bare: {median(worker_wall) / median(bare_wall):.2f} (wall), ", end="")
    print(f"{median(worker_cpu) / median(bare_cpu):.2f} (cpu); layers equal")


if __name__ == "__main__":
    main()

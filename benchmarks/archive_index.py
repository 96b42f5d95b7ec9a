"""Synthesise and index the seed's Fiji box for 2019 (Landsat 8) on embedded PostgreSQL.

Prints the time against the 60 s target and against a baseline measured in the same run: the
time to write the same pixels as plain, uncompressed GeoTIFFs with rasterio (no generation, no
compression, no index). Run with `python benchmarks/archive_index.py [--workdir DIR]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devtools.archive import (
    DatacubeSettings,
    add_products,
    generate_archive,
    index_datasets,
    init_index,
    open_datacube,
)
from shared.embedded import stop_embedded_servers
from shared.seed import SEED_BOX_EPSG3460

TARGET_SECONDS = 60.0
PRODUCT = "ls8_usgs_sr_scene"


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the scene-writing processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def synthesise_and_index(workdir: Path) -> tuple[float, float, float, float, list[Path]]:
    """Seconds to start the index, to synthesise, to index; CPU seconds; band files."""
    settings = DatacubeSettings(state_dir=workdir / "state", db_url=None)
    started = time.perf_counter()
    init_index(settings)
    datacube = open_datacube(settings)
    add_products(datacube, [PRODUCT])
    ready = time.perf_counter()
    cpu_before = cpu_seconds()
    records = generate_archive(
        PRODUCT,
        SEED_BOX_EPSG3460,
        date(2019, 1, 1),
        date(2019, 12, 31),
        workdir / "archive",
        crs="EPSG:3460",
    )
    synthesised = time.perf_counter()
    report = index_datasets(datacube, [record.metadata_path for record in records])
    indexed = time.perf_counter()
    cpu = cpu_seconds() - cpu_before
    datacube.close()
    assert len(report.added) == len(records), report
    bands = [path for record in records for path in record.measurement_paths.values()]
    return ready - started, synthesised - ready, indexed - synthesised, cpu, bands


def plain_geotiff_baseline(bands: list[Path], workdir: Path) -> tuple[float, int]:
    """Seconds to write the same rasters (shape, dtype, values) as uncompressed GeoTIFFs."""
    rasters = []
    for path in bands:
        with rasterio.open(path) as source:
            rasters.append((source.read(1), source.profile))
    target = workdir / "baseline"
    target.mkdir()
    total_bytes = sum(pixels.nbytes for pixels, _profile in rasters)
    started = time.perf_counter()
    for number, (pixels, profile) in enumerate(rasters):
        plain = {
            key: profile[key]
            for key in ("width", "height", "count", "dtype", "crs", "transform", "nodata")
        }
        with rasterio.open(target / f"{number}.tif", "w", driver="GTiff", **plain) as out:
            out.write(pixels[np.newaxis], [1])
    return time.perf_counter() - started, total_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=None, help="Kept afterwards if given.")
    arguments = parser.parse_args()
    workdir = arguments.workdir or Path(tempfile.mkdtemp(prefix="archive-bench-"))
    if workdir.exists() and any(workdir.iterdir()):
        raise SystemExit(f"{workdir} is not empty: give an empty or new directory")
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        startup, synthesise, index, cpu, bands = synthesise_and_index(workdir)
        written = sum(path.stat().st_size for path in bands)
        baseline, raw_bytes = plain_geotiff_baseline(bands, workdir)
    finally:
        stop_embedded_servers(workdir / "state")
        if arguments.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    total = synthesise + index
    scenes = len(bands) // 7
    print(f"archive_index: {scenes} scenes, {len(bands)} COGs, Fiji seed box, 2019, Landsat 8")
    print(f"  embedded PostgreSQL start + init  {startup:8.2f} s (not counted)")
    print(f"  synthesise (COGs + eo3)           {synthesise:8.2f} s")
    print(f"  index                             {index:8.2f} s")
    print(f"  total                             {total:8.2f} s")
    print(f"  total with the server's start     {total + startup:8.2f} s")
    ratio = total / TARGET_SECONDS
    print(f"  target                            {TARGET_SECONDS:8.2f} s   ratio {ratio:.2f}")
    print(
        f"  baseline: plain GeoTIFF write     {baseline:8.2f} s   ratio {total / baseline:.2f}"
        f"   ({raw_bytes / 1e9:.2f} GB raw, {written / 1e9:.2f} GB as COGs)"
    )
    print(
        f"  CPU (this process and its scene writers, not PostgreSQL) {cpu:.2f} s; "
        f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()

"""`make validate`: rerun the independent checks on products and print the largest differences.

    python -m devtools.validate [--outputs demo-output] [--archive .conveyor/archive]

Every product dataset (`*.odc-metadata.yaml`) under `--outputs` whose job code has a check is
compared, on `--windows` random windows of `--size` pixels, with its reference recomputed from
the scene files it lists as sources (found under `--archive`, read with rasterio). Without
products there (no `make demo` yet), it makes its own: a small synthetic Landsat 8 archive
indexed in an embedded PostgreSQL under `--workdir`, each product made by the worker's own
product runner, then checked. Exit status 1 when a difference exceeds its tolerance.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import zlib
from datetime import date
from pathlib import Path

from devtools.validate.checks import Difference, check_dataset, output_dataset
from devtools.validate.scenes import index_archive

SMALL_BOX = (2130000.0, 3499700.0, 2136000.0, 3504200.0)  # 6 x 4.5 km of the seed's Fiji box
SMALL_PERIOD = (date(2019, 1, 1), date(2019, 4, 30))
JOB_CODES = ("geomedian", "ndvi", "water", "shoreline", "fc_percentiles")


def make_own_products(workdir: Path) -> tuple[Path, Path]:
    """A small archive and the products the worker's runner makes of it: (outputs, archive)."""
    from devtools.archive import generate_archive
    from shared.datacube import (
        DatacubeSettings,
        add_products,
        index_datasets,
        init_index,
        locate_index,
        open_location,
    )

    archive, outputs = workdir / "archive", workdir / "outputs"
    settings = DatacubeSettings(state_dir=workdir)  # type: ignore[call-arg]
    location = locate_index(settings)
    init_index(settings)
    datacube = open_location(location)
    try:
        add_products(datacube, ["ls8_usgs_sr_scene"])
        records = generate_archive(
            "ls8_usgs_sr_scene", SMALL_BOX, *SMALL_PERIOD, archive, crs="EPSG:3460", processes=2
        )
        index_datasets(datacube, [record.metadata_path for record in records])
    finally:
        datacube.close()
    os.environ.update(location.child_environment())
    asyncio.run(_run_products(outputs))
    return outputs, archive


async def _run_products(outputs: Path) -> None:
    from services.dispatcher.planning import plan_jobs
    from services.worker.product_runner import ProductRunner
    from services.worker.settings import WorkerSettings
    from shared.config import DispatcherSettings
    from shared.jobs import ProductJob
    from shared.messages import parse_request

    settings = WorkerSettings(output_url=str(outputs), dask_threads=2)  # type: ignore[call-arg]
    runner = ProductRunner(settings)
    try:
        for job_code in JOB_CODES:
            item = {
                "job_code": job_code,
                "product": "ls8_usgs_sr_scene",
                "query_x_from": str(SMALL_BOX[0]),
                "query_y_from": str(SMALL_BOX[1]),
                "query_x_to": str(SMALL_BOX[2]),
                "query_y_to": str(SMALL_BOX[3]),
                "query_crs": "EPSG:3460",
                "time_from": SMALL_PERIOD[0].isoformat(),
                "time_to": SMALL_PERIOD[1].isoformat(),
                "output_crs": "EPSG:3460",
                "prefix": "validate",
            }
            request, _ignored = parse_request(item)
            # The dispatcher's own cells: products are checked as `make demo` makes them.
            cell_pixels = DispatcherSettings.model_fields["tile_size_pixels"].default
            for job in plan_jobs(request, tile_size=None, tile_size_pixels=cell_pixels):
                assert isinstance(job, ProductJob)
                outcome = await runner.run(job)
                print(f"made {job_code} {job.area.tile}: {outcome.state}", flush=True)
    finally:
        await runner.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.validate", description=__doc__)
    parser.add_argument("--outputs", type=Path, default=Path("demo-output"))
    parser.add_argument("--archive", type=Path, default=Path(".conveyor/archive"))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--windows", type=int, default=2, help="windows checked per dataset")
    parser.add_argument("--size", type=int, default=256, help="window size in pixels")
    parser.add_argument("--geomedian-pixels", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2019)
    arguments = parser.parse_args(argv)

    outputs, archive = arguments.outputs, arguments.archive
    documents = sorted(outputs.rglob("*.odc-metadata.yaml")) if outputs.is_dir() else []
    datasets = [d for d in map(output_dataset, documents) if d is not None]
    workdir = None
    if not datasets:
        workdir = arguments.workdir or Path(tempfile.mkdtemp(prefix="conveyor-validate-"))
        print(f"no products under {outputs}: making a small archive and its products in {workdir}")
        outputs, archive = make_own_products(workdir)
        documents = sorted(outputs.rglob("*.odc-metadata.yaml"))
        datasets = [d for d in map(output_dataset, documents) if d is not None]
    try:
        scenes = index_archive(archive)
        results: dict[tuple[str, str], Difference] = {}
        for dataset in datasets:
            check_dataset(
                dataset, scenes, results,
                windows=arguments.windows, size=arguments.size,
                geomedian_pixels=arguments.geomedian_pixels,
                seed=arguments.seed + zlib.crc32(str(dataset.files).encode()),
            )  # fmt: skip
    finally:
        if workdir is not None:
            from shared.embedded import stop_embedded_servers

            stop_embedded_servers(workdir)
    print(f"{'product':<22} {'band':<14} {'pixels':>9} {'largest |diff|':>15} "
          f"{'nodata mismatches':>18} {'tolerance':>10}  ok")  # fmt: skip
    for difference in results.values():
        print(
            f"{difference.product:<22} {difference.band:<14} {difference.pixels:>9} "
            f"{difference.largest:>15.6g} {difference.nodata_mismatches:>18} "
            f"{difference.tolerance:>10.3g}  {'yes' if difference.ok else 'NO'}"
        )
    checked = len(datasets)
    failed = [d for d in results.values() if not d.ok]
    print(f"{checked} datasets checked, {len(results)} bands, {len(failed)} beyond tolerance")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())

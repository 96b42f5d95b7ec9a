"""Worker options end to end: an operator's own product module (`CONVEYOR_PLUGIN_MODULES`),
`--concurrency N` (jobs at once in one process) and `--processes N` (worker processes in one
pod, each with its own /metrics on `metrics_port + i`).

The operator's module is `tests/operator_products.py` (job code `clear_days`); its `meet_*`
options make jobs finish only when that many run at the same time, so a passing test shows
the concurrency rather than inferring it from timings.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import numpy as np
import rasterio
import redis.asyncio as aioredis

from shared.keys import WORKER_GROUP, Keys
from tests.archive_support import ArchiveFixture
from tests.e2e_support import (
    SMALL_BOX,
    TILE_SIZE,
    Running,
    job_records,
    product_item,
    tiled_box,
    wait_for_requests,
    worker_env,
)
from tests.processes import ServiceProcess, wait_until

PLUGIN = {"CONVEYOR_PLUGIN_MODULES": "tests.operator_products"}


def clear_days_expected(archive: ArchiveFixture, box: tuple[float, ...]) -> np.ndarray:
    """Clear observations per pixel over the archive's period, counted here independently."""
    from odc.geo.geobox import GeoBox

    from shared.catalogue import sensor_for

    sensor = sensor_for("ls8_usgs_sr_scene")
    geobox = GeoBox.from_bbox(box, crs="EPSG:3460", resolution=30)
    latitudes = geobox.extent.to_crs("EPSG:4326").boundingbox
    datacube = archive.datacube()
    try:
        # Searched by latitude: the footprints cross the antimeridian (see product_runner).
        candidates = datacube.find_datasets(
            product="ls8_usgs_sr_scene", time=("2019-01-01", "2019-04-30"),
            lat=(latitudes.bottom, latitudes.top),
        )  # fmt: skip
        datasets = [
            dataset
            for dataset in candidates
            if dataset.extent.to_crs(geobox.crs).intersects(geobox.extent)
        ]
        cube = datacube.load(
            datasets=datasets, measurements=[sensor.mask_band], like=geobox,
            group_by="solar_day",
        )  # fmt: skip
    finally:
        datacube.close()
    return np.asarray(sensor.clear(cube[sensor.mask_band]).sum("time").values)


async def test_an_operator_s_product_module_is_imported_by_the_dispatcher_and_the_worker(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, e2e_archive: ArchiveFixture,
    tmp_path: Path, running: Running,
) -> None:  # fmt: skip
    keys = Keys(namespace)
    output = tmp_path / "out"
    env = worker_env(redis_url, namespace, e2e_archive, str(output), **PLUGIN)
    running.dispatcher(env)
    running.worker(env)
    await redis_client.rpush("jobProduct", json.dumps(product_item("clear_days")))
    await wait_for_requests(redis_client, keys, 1, running)

    assert await redis_client.xlen(keys.dead) == 0, await redis_client.xrange(keys.dead)
    [job] = await job_records(redis_client, keys)
    assert job["state"] == "done", job["error"]
    assert job["job_code"] == "clear_days"
    [band] = output.rglob("ls8_clear_days_*_clear_days.tif")
    assert band.parent.parent.parent.parent.name == "ls8_clear_days"
    with rasterio.open(band) as written:
        counted = written.read(1)
    assert np.array_equal(counted, clear_days_expected(e2e_archive, SMALL_BOX))
    assert counted.max() > 0


async def test_concurrency_n_runs_n_jobs_at_once_in_one_worker_process(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, e2e_archive: ArchiveFixture,
    tmp_path: Path, running: Running,
) -> None:  # fmt: skip
    keys = Keys(namespace)
    meeting = tmp_path / "meet"
    meeting.mkdir()
    env = worker_env(
        redis_url, namespace, e2e_archive, str(tmp_path / "out"), CONVEYOR_TILE_SIZE=TILE_SIZE,
        CONVEYOR_DASK_THREADS="3", **PLUGIN,
    )  # fmt: skip
    running.dispatcher(env)
    worker = running.worker(env, "--concurrency", "3")
    item = product_item(
        "clear_days", box=tiled_box(3), options={"meet_dir": str(meeting), "meet_parties": "3"}
    )
    await redis_client.rpush("jobProduct", json.dumps(item))
    await wait_for_requests(redis_client, keys, 1, running)

    jobs = await job_records(redis_client, keys)
    assert len(jobs) == 3
    assert [job["state"] for job in jobs] == ["done"] * 3, [job["error"] for job in jobs]
    assert [job["attempts"] for job in jobs] == ["1"] * 3, "all three met on their first try"
    assert len({job["worker"] for job in jobs}) == 1, "one worker process ran them all"
    assert len(list(meeting.iterdir())) == 3
    assert worker.output.count('"datacube index open"') == 1, "one index for the jobs at once"


def two_free_ports() -> int:
    """A port P such that P and P + 1 are both free now."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise AssertionError("no two consecutive free ports")


def metrics_page(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


async def test_processes_n_runs_n_consumers_each_with_metrics_on_its_own_port(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, e2e_archive: ArchiveFixture,
    tmp_path: Path, running: Running,
) -> None:  # fmt: skip
    keys = Keys(namespace)
    meeting = tmp_path / "meet"
    meeting.mkdir()
    env = worker_env(
        redis_url, namespace, e2e_archive, str(tmp_path / "out"), CONVEYOR_TILE_SIZE=TILE_SIZE,
        **PLUGIN,
    )  # fmt: skip
    running.dispatcher(env)
    port = two_free_ports()
    pod: ServiceProcess = running.start(
        "pod", "services.worker", env, "--processes", "2", "--pool", "product",
        "--consumer", "pod", metrics_port=port,
    )  # fmt: skip

    async def both_serve_metrics() -> bool:
        assert pod.process.poll() is None, pod.output[-3000:]
        return metrics_page(port) is not None and metrics_page(port + 1) is not None

    await wait_until(both_serve_metrics, timeout=120)
    item = product_item(
        "clear_days", box=tiled_box(2), options={"meet_dir": str(meeting), "meet_parties": "2"}
    )
    await redis_client.rpush("jobProduct", json.dumps(item))
    await wait_for_requests(redis_client, keys, 1, running)

    jobs = await job_records(redis_client, keys)
    assert [job["state"] for job in jobs] == ["done"] * 2, [job["error"] for job in jobs]
    assert sorted(job["worker"] for job in jobs) == ["pod-0", "pod-1"]
    consumers = await redis_client.xinfo_consumers(keys.jobs("product"), WORKER_GROUP)
    assert sorted(consumer["name"] for consumer in consumers) == ["pod-0", "pod-1"]
    done = 'conveyor_jobs_total{job_code="clear_days",outcome="done",pool="product"} 1.0'
    for each_port in (port, port + 1):
        page = metrics_page(each_port)
        assert page is not None and done in page, f":{each_port} /metrics lacks {done}"
    assert running.stop("pod") == 0, pod.output[-3000:]
    assert pod.output.count('"worker stopped"') == 2

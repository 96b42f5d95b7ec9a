"""Workers end to end: RPUSH jobProduct -> dispatcher -> worker -> products on disk and in S3.

Real servers throughout: valkey, PostgreSQL with a real datacube index of a synthetic Landsat 8
archive, moto's S3 over HTTP, and the services as real processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import redis.asyncio as aioredis
import yaml

from shared.embedded import free_port
from shared.keys import Keys
from tests.archive_support import ArchiveFixture, build_archive
from tests.processes import (
    ServiceProcess,
    service_env,
    wait_ready,
    wait_until,
)

# Cell x111y182 of the output grid (19.2 km, 640 px at 30 m) inside the seed's Fiji box, and a
# 6 km x 4.5 km box inside it: either is one job over the whole cell. January to April 2019.
CELL = (2131200.0, 3494400.0, 2150400.0, 3513600.0)
SMALL_BOX = (2132000.0, 3499700.0, 2138000.0, 3504200.0)
ARCHIVE_FROM, ARCHIVE_TO = date(2019, 1, 1), date(2019, 4, 30)
ARCHIVE_BOX = (CELL[0] - 500, CELL[1] - 500, CELL[2] + 500, CELL[3] + 500)


def item(job_code: str = "geomedian", box: tuple[float, ...] = SMALL_BOX, **extra: str) -> str:
    body = {
        "job_code": job_code,
        "product": "ls8_usgs_sr_scene",
        "query_x_from": str(box[0]),
        "query_y_from": str(box[1]),
        "query_x_to": str(box[2]),
        "query_y_to": str(box[3]),
        "query_crs": "EPSG:3460",
        "time_from": "2019-01-01",
        "time_to": "2019-04-30",
        "output_crs": "EPSG:3460",
        "prefix": "commonsensing/fiji/test",
    }
    return json.dumps(body | extra)


@pytest.fixture(scope="module")
def archive(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> ArchiveFixture:
    return build_archive(
        postgres_url,
        Path(tmp_path_factory.mktemp("archive")),
        "ls8_usgs_sr_scene",
        ARCHIVE_BOX,
        ARCHIVE_FROM,
        ARCHIVE_TO,
    )


def worker_env(
    redis_url: str, namespace: str, archive: ArchiveFixture, output: str, **extra: str
) -> dict[str, str]:
    defaults = {"CONVEYOR_RETRY_BACKOFF_SECONDS": "0.2"}
    return service_env(
        redis_url,
        namespace,
        CONVEYOR_BLOCK_MS="100",
        CONVEYOR_OUTPUT_URL=output,
        CONVEYOR_DASK_THREADS="1",
        **archive.environment,
        **(defaults | extra),
    )


async def request_results(redis: aioredis.Redis, keys: Keys) -> list[dict[str, Any]]:
    return [
        fields | {"result": json.loads(fields["result"])}
        for _id, fields in await redis.xrange(keys.results)
    ]


async def finished_requests(redis: aioredis.Redis, keys: Keys) -> int:
    return sum(1 for r in await request_results(redis, keys) if r["type"] == "request")


async def job_records(redis: aioredis.Redis, keys: Keys) -> list[dict[str, str]]:
    return [
        await redis.hgetall(keys.job(job_id))
        for job_id in await redis.zrange(keys.job_index, 0, -1)
    ]


@pytest.fixture
def services(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[dict[str, ServiceProcess]]:
    """Each test adds what it runs here; all are killed at the end whatever happened."""
    running: dict[str, ServiceProcess] = {}
    yield running
    for service in running.values():
        service.close()


def start(
    services: dict[str, ServiceProcess], name: str, module: str, env: dict[str, str], log: Path,
    *args: str,
) -> ServiceProcess:  # fmt: skip
    service = ServiceProcess(
        module, env | {"CONVEYOR_METRICS_PORT": str(free_port())}, list(args), log
    )
    services[name] = service
    return service


async def test_rpush_job_product_ends_as_committed_products_on_disk(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    tmp_path: Path, services: dict[str, ServiceProcess],
) -> None:  # fmt: skip
    keys = Keys(namespace)
    output = tmp_path / "out"
    env = worker_env(redis_url, namespace, archive, str(output))
    start(services, "dispatcher", "services.dispatcher", env, tmp_path / "d.log")
    worker = start(services, "worker", "services.worker", env, tmp_path / "w.log")
    await redis_client.rpush("jobProduct", item("geomedian"), item("ndvi"))

    async def both_finished() -> bool:
        return await finished_requests(redis_client, keys) == 2

    await wait_until(both_finished, timeout=240)
    jobs = await job_records(redis_client, keys)
    assert {job["state"] for job in jobs} == {"done"}, [job.get("error") for job in jobs]
    metadata = sorted(output.rglob("*.odc-metadata.yaml"))
    assert len(metadata) == 2
    for document_path in metadata:
        document = yaml.safe_load(document_path.read_text())
        for band in document["measurements"].values():
            assert (document_path.parent / band["path"]).exists()
        assert document["lineage"]
    red = next(output.rglob("*_red.tif"))
    with rasterio.open(red) as dataset:
        assert dataset.crs.to_epsg() == 3460
        assert dataset.res == (30.0, 30.0)
        assert dataset.nodata == -9999
        pixels = dataset.read(1)
        assert (pixels != -9999).mean() > 0.9
    stages = json.loads(jobs[0]["stages"])
    assert {"load", "compute", "write"} <= set(stages)
    assert worker.terminate() == 0


async def test_the_geomedian_written_equals_geomad_on_the_same_masked_cube(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    tmp_path: Path, services: dict[str, ServiceProcess],
) -> None:  # fmt: skip
    from odc.algo import geomedian_with_mads
    from odc.geo.geobox import GeoBox

    keys = Keys(namespace)
    output = tmp_path / "out"
    env = worker_env(redis_url, namespace, archive, str(output))
    start(services, "dispatcher", "services.dispatcher", env, tmp_path / "d.log")
    start(services, "worker", "services.worker", env, tmp_path / "w.log")
    await redis_client.rpush("jobProduct", item("geomedian"))

    async def finished() -> bool:
        return await finished_requests(redis_client, keys) == 1

    await wait_until(finished, timeout=240)

    # Independently: load the same cell as the worker does (reflectance bilinear, pixel_qa
    # nearest, one observation per solar day at the cell), keep clear/water observations whole,
    # run geomad.
    from services.worker.loading import cell_longitude, solar_day_grouping
    from shared.solar_day import solar_day_at

    dc = archive.datacube()
    geobox = GeoBox.from_bbox(CELL, crs="EPSG:3460", resolution=30)
    bands = ["red", "green", "blue", "nir", "swir1", "swir2"]
    # Searched by latitude: the footprints cross the antimeridian (see product_runner).
    latitudes = geobox.extent.to_crs("EPSG:4326").boundingbox
    longitude = cell_longitude(geobox)
    datasets = [
        dataset for dataset in dc.find_datasets(
            product="ls8_usgs_sr_scene", time=("2018-12-31", "2019-05-01"),
            lat=(latitudes.bottom, latitudes.top),
        )
        if date(2019, 1, 1) <= solar_day_at(dataset.center_time, longitude) <= date(2019, 4, 30)
    ]  # fmt: skip
    cube = dc.load(
        datasets=datasets, measurements=[*bands, "pixel_qa"], like=geobox,
        group_by=solar_day_grouping(longitude), dask_chunks={"time": 1},
        resampling={"*": "bilinear", "pixel_qa": "nearest"},
    )  # fmt: skip
    good_codes = [322, 386, 834, 898, 1346, 324, 388, 836, 900, 1348]
    good = cube.pixel_qa.isin(good_codes)
    for band in bands:
        good = good & (cube[band] != -9999)
    reflectance = cube[bands].where(good, -9999).astype("int16")
    for band in bands:
        reflectance[band].attrs["nodata"] = -9999
    # geomad stops iterating when a whole work chunk has converged, so the last unit of a pixel
    # depends on its chunk: the same 400 px chunks as odc-stats (and the worker) use.
    expected = geomedian_with_mads(
        reflectance, reshape_strategy="yxbt", scale=1e-4, offset=-1e-4, work_chunks=(400, 400),
    ).compute()  # fmt: skip
    for band in ("red", "nir", "swir2"):
        with rasterio.open(next(output.rglob(f"*_{band}.tif"))) as written:
            got = written.read(1)
        want = expected[band].values
        assert got.shape == want.shape
        assert np.array_equal(got, want), f"{band}: {np.abs(got.astype(int) - want).max()}"


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing-key", aws_secret_access_key="testing-secret",
    )  # fmt: skip


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_VIRTUAL_HOSTING": "FALSE",
}


async def test_products_go_to_s3_and_an_area_without_data_ends_as_nodata(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    tmp_path: Path, services: dict[str, ServiceProcess], s3_endpoint: str,
) -> None:  # fmt: skip
    keys = Keys(namespace)
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket="eo-products")
    env = worker_env(
        redis_url, namespace, archive, "s3://eo-products/conveyor",
        AWS_S3_ENDPOINT_URL=s3_endpoint, **S3_ENV,
    )  # fmt: skip
    start(services, "dispatcher", "services.dispatcher", env, tmp_path / "d.log")
    start(services, "worker", "services.worker", env, tmp_path / "w.log")
    empty = item("water", time_from="2015-01-01", time_to="2015-03-31")
    await redis_client.rpush("jobProduct", item("water"), empty)

    async def both_finished() -> bool:
        return await finished_requests(redis_client, keys) == 2

    await wait_until(both_finished, timeout=240)
    states = sorted(job["state"] for job in await job_records(redis_client, keys))
    assert states == ["done", "nodata"]
    keys_written = [o["Key"] for o in s3.list_objects_v2(Bucket="eo-products")["Contents"]]
    assert any(key.endswith("_frequency.tif") for key in keys_written)
    assert any(key.endswith(".odc-metadata.yaml") for key in keys_written)
    assert all(key.startswith("conveyor/commonsensing/fiji/test/") for key in keys_written)
    assert await redis_client.xlen(keys.dead) == 0


async def test_a_job_that_keeps_failing_is_retried_then_dead_lettered_with_its_error(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    tmp_path: Path, services: dict[str, ServiceProcess], s3_endpoint: str,
) -> None:  # fmt: skip
    keys = Keys(namespace)
    unreachable = f"http://127.0.0.1:{free_port()}"  # an S3 endpoint that is down throughout
    env = worker_env(
        redis_url, namespace, archive, "s3://eo-products/x", AWS_S3_ENDPOINT_URL=unreachable,
        CONVEYOR_MAX_ATTEMPTS="2", CONVEYOR_S3_MAX_ATTEMPTS="1", **S3_ENV,
    )  # fmt: skip
    start(services, "dispatcher", "services.dispatcher", env, tmp_path / "d.log")
    worker = start(services, "worker", "services.worker", env, tmp_path / "w.log")
    await redis_client.rpush("jobProduct", item("ndvi"))

    async def dead_lettered() -> bool:
        return await redis_client.xlen(keys.dead) == 1

    await wait_until(dead_lettered, timeout=240)
    [(_id, dead)] = await redis_client.xrange(keys.dead)
    assert dead["reason"] == "max_attempts"
    assert "gave up after 2 attempts" in dead["error"]
    assert unreachable in dead["error"] or "connect" in dead["error"].lower()
    [job] = await job_records(redis_client, keys)
    assert job["state"] == "dead" and job["attempts"] == "2"
    assert await finished_requests(redis_client, keys) == 1
    assert worker.process.poll() is None, "the worker keeps serving"


def kill_inside_the_write(output: Path, service: ServiceProcess, timeout: float) -> str:
    """SIGKILL `service` while it writes a product: as soon as a file is half-written (a
    `.partial` exists), else once a band is in place and the metadata is not. Says which."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise AssertionError(f"the worker exited early:\n{service.output[-3000:]}")
        names = [name for _root, _dirs, files in os.walk(output) for name in files]
        if any(name.endswith(".partial") for name in names):
            service.kill()
            return "partial"
        if any(name.endswith(".tif") for name in names):
            service.kill()
            return "band"
        time.sleep(0.001)
    raise AssertionError(f"the worker did not start writing within {timeout}s")


async def test_a_worker_killed_inside_the_write_is_replaced_and_the_product_committed_once(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    tmp_path: Path, services: dict[str, ServiceProcess],
) -> None:  # fmt: skip
    keys = Keys(namespace)
    output = tmp_path / "out"
    env = worker_env(redis_url, namespace, archive, str(output), CONVEYOR_LEASE_SECONDS="3")
    start(services, "dispatcher", "services.dispatcher", env, tmp_path / "d.log")
    doomed = start(services, "doomed", "services.worker", env, tmp_path / "w1.log")
    await redis_client.rpush("jobProduct", item("geomedian", box=CELL))
    where = await asyncio.to_thread(kill_inside_the_write, output, doomed, 240)
    assert not list(output.rglob("*.odc-metadata.yaml")), "killed after the commit, not inside"
    left_by_the_kill = list(output.rglob(".*.partial"))
    start(services, "replacement", "services.worker", env, tmp_path / "w2.log")

    async def finished() -> bool:
        return await finished_requests(redis_client, keys) == 1

    await wait_until(finished, timeout=240)
    [job] = await job_records(redis_client, keys)
    assert (job["state"], job["attempts"]) == ("done", "2"), job
    job_events = [r for r in await request_results(redis_client, keys) if r["type"] == "job"]
    assert [event["state"] for event in job_events] == ["done"], "committed and counted once"
    [metadata] = output.rglob("*.odc-metadata.yaml")
    document = yaml.safe_load(metadata.read_text())
    for band in document["measurements"].values():
        assert (metadata.parent / band["path"]).exists(), band
    leftovers = list(output.rglob(".*.partial"))
    assert not leftovers, (
        f"killed at a {where}; left: {leftovers} (at the kill: {left_by_the_kill})"
    )


async def test_a_rerun_removes_the_temporary_file_a_killed_writer_left(tmp_path: Path) -> None:
    from services.worker.outputs.destination import LocalDestination

    target = tmp_path / "product" / "band.tif"
    target.parent.mkdir(parents=True)
    leftover = target.parent / ".band.tif.0123abcd.partial"  # what a SIGKILL mid-write leaves
    leftover.write_bytes(b"half a file")
    other = target.parent / ".other.tif.0123abcd.partial"
    other.write_bytes(b"another file's")
    async with LocalDestination(tmp_path) as destination:
        await destination.put("product/band.tif", b"whole")
    assert target.read_bytes() == b"whole"
    assert not leftover.exists() and other.exists()


async def test_a_drained_workers_job_is_taken_by_another_worker_at_once(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    tmp_path: Path, services: dict[str, ServiceProcess],
) -> None:  # fmt: skip
    """SIGTERM with no time to finish: the job is handed back, and another worker takes it with
    no lease to wait out (600 s here) and on the same attempt."""
    keys = Keys(namespace)
    env = worker_env(
        redis_url, namespace, archive, str(tmp_path / "out"), CONVEYOR_LEASE_SECONDS="600",
        CONVEYOR_DRAIN_SECONDS="0", CONVEYOR_RECLAIM_INTERVAL_SECONDS="0.5",
    )  # fmt: skip
    start(services, "dispatcher", "services.dispatcher", env, tmp_path / "d.log")
    draining = start(
        services, "draining", "services.worker", env, tmp_path / "w1.log", "--consumer", "draining"
    )
    await redis_client.rpush("jobProduct", item("geomedian", box=CELL))

    async def running() -> bool:
        return {job.get("worker") for job in await job_records(redis_client, keys)} == {"draining"}

    await wait_until(running, timeout=120, interval=0.02)
    taking = start(
        services, "taking", "services.worker", env, tmp_path / "w2.log", "--consumer", "taking"
    )
    await wait_ready(taking)
    assert draining.terminate(timeout=120) == 0
    assert "handed back unfinished jobs" in draining.output

    async def finished() -> bool:
        return await finished_requests(redis_client, keys) == 1

    await wait_until(finished, timeout=240)
    [job] = await job_records(redis_client, keys)
    assert (job["state"], job["worker"], job["attempts"]) == ("done", "taking", "1")
    ended = [json.loads(line) for line in draining.output.splitlines() if "execution ended" in line]
    assert [event["ending"] for event in ended] == ["stopped"]


async def test_a_failing_job_is_retried_after_a_doubling_backoff(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    tmp_path: Path, services: dict[str, ServiceProcess],
) -> None:  # fmt: skip
    keys = Keys(namespace)
    unreachable = f"http://127.0.0.1:{free_port()}"
    env = worker_env(
        redis_url, namespace, archive, "s3://eo-products/x", AWS_S3_ENDPOINT_URL=unreachable,
        CONVEYOR_MAX_ATTEMPTS="3", CONVEYOR_S3_MAX_ATTEMPTS="1", CONVEYOR_LEASE_SECONDS="20",
        CONVEYOR_RETRY_BACKOFF_SECONDS="2", CONVEYOR_RECLAIM_INTERVAL_SECONDS="0.2", **S3_ENV,
    )  # fmt: skip
    start(services, "dispatcher", "services.dispatcher", env, tmp_path / "d.log")
    worker = start(services, "worker", "services.worker", env, tmp_path / "w.log")
    await redis_client.rpush("jobProduct", item("ndvi"))

    async def dead_lettered() -> bool:
        return await redis_client.xlen(keys.dead) == 1

    await wait_until(dead_lettered, timeout=240)
    events = [json.loads(line) for line in worker.output.splitlines() if line.startswith("{")]

    def times(name: str) -> list[float]:
        return [
            datetime.fromisoformat(event["timestamp"]).timestamp()
            for event in events
            if event["event"] == name
        ]

    starts, failures = times("job execution started"), times("job failed")
    assert len(starts) == 3 and len(failures) == 3
    waits = [starts[n + 1] - failures[n] for n in range(2)]
    # retry_backoff_seconds x 2^(attempt-1): at least 2 s, then at least 4 s.
    assert waits[0] >= 2.0 and waits[1] >= 4.0, waits


async def test_sigterm_lets_the_running_job_finish_then_exits_zero(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    tmp_path: Path, services: dict[str, ServiceProcess],
) -> None:  # fmt: skip
    keys = Keys(namespace)
    env = worker_env(redis_url, namespace, archive, str(tmp_path / "out"))
    start(services, "dispatcher", "services.dispatcher", env, tmp_path / "d.log")
    worker = start(services, "worker", "services.worker", env, tmp_path / "w.log")
    await wait_ready(worker)
    await redis_client.rpush("jobProduct", item("geomedian", box=CELL))

    async def running() -> bool:
        return {job.get("state") for job in await job_records(redis_client, keys)} == {"running"}

    await wait_until(running, timeout=120, interval=0.02)
    assert worker.terminate(timeout=180) == 0
    [job] = await job_records(redis_client, keys)
    assert job["state"] == "done"
    assert "draining" in worker.output


def exposed_metric_names(text: str) -> set[str]:
    """Every series name a /metrics page offers, histogram and counter suffixes included."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _hash, _type, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
            if kind == "counter":
                names.add(name if name.endswith("_total") else f"{name}_total")
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


async def test_every_metric_a_rule_or_panel_queries_is_exported_by_the_live_services(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    tmp_path: Path, services: dict[str, ServiceProcess],
) -> None:  # fmt: skip
    import shutil
    import subprocess
    import urllib.request

    from tests.test_deploy import metric_names_used

    keys = Keys(namespace)
    env = worker_env(redis_url, namespace, archive, str(tmp_path / "out"))
    dispatcher = start(services, "dispatcher", "services.dispatcher", env, tmp_path / "d.log")
    worker = start(services, "worker", "services.worker", env, tmp_path / "w.log")
    autoscaler = start(
        services, "autoscaler", "services.autoscaler",
        env | {"CONVEYOR_AUTOSCALER_BACKEND": "dry-run", "CONVEYOR_POLL_INTERVAL_SECONDS": "0.5"},
        tmp_path / "a.log",
    )  # fmt: skip
    await redis_client.rpush("jobProduct", item("water"), "{not json")

    async def finished() -> bool:
        return await finished_requests(redis_client, keys) == 1

    await wait_until(finished, timeout=240)
    for service in (dispatcher, worker, autoscaler):
        await wait_ready(service)
    pages: dict[str, str] = {}
    wanted = set(metric_names_used())

    async def every_used_metric_exported() -> bool:
        # Gauges appear after a housekeeping round and a few autoscaler polls.
        for name, service in (
            ("dispatcher", dispatcher),
            ("worker", worker),
            ("autoscaler", autoscaler),
        ):
            url = f"http://127.0.0.1:{service.metrics_port}/metrics"
            pages[name] = urllib.request.urlopen(url, timeout=5).read().decode()
        exported = set().union(*(exposed_metric_names(page) for page in pages.values()))
        return wanted <= exported

    try:
        await wait_until(every_used_metric_exported, timeout=60, interval=0.5)
    except AssertionError:
        exported = set().union(*(exposed_metric_names(page) for page in pages.values()))
        missing = sorted(wanted - exported)
        raise AssertionError(
            f"queried by rules or dashboards but not exported: {missing}"
        ) from None

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run scripts/system-deps.sh"
    for name, page in pages.items():
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=page, capture_output=True, text=True
        )
        assert checked.returncode == 0, f"{name}: {checked.stdout}{checked.stderr}"


async def test_the_local_backend_scales_real_workers_down_without_losing_a_job(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    tmp_path: Path, services: dict[str, ServiceProcess],
) -> None:  # fmt: skip
    from services.autoscaler.backends.local import LocalProcessBackend

    keys = Keys(namespace)
    env = worker_env(redis_url, namespace, archive, str(tmp_path / "out"))
    start(services, "dispatcher", "services.dispatcher", env, tmp_path / "d.log")
    backend = LocalProcessBackend(environment=env, stop_grace_seconds=180)
    try:
        await backend.scale("product", 2)
        assert await backend.current_replicas("product") == 2
        # Eight requests for one cell, each a different fortnight: eight distinct datasets.
        fortnights = [
            (date(2019, 1, 1) + timedelta(days=15 * n), date(2019, 1, 15) + timedelta(days=15 * n))
            for n in range(8)
        ]
        await redis_client.rpush(
            "jobProduct",
            *(
                item("ndvi", time_from=first.isoformat(), time_to=last.isoformat())
                for first, last in fortnights
            ),
        )

        async def some_done() -> bool:
            return await finished_requests(redis_client, keys) >= 2

        await wait_until(some_done, timeout=240)
        await backend.scale("product", 1)  # SIGTERM to one busy worker: it drains

        async def all_done() -> bool:
            return await finished_requests(redis_client, keys) == len(fortnights)

        await wait_until(all_done, timeout=300)
        assert await backend.current_replicas("product") == 1
    finally:
        await backend.close()
    stopped = [worker.returncode for worker in backend.exited]
    assert stopped and all(code == 0 for code in stopped)
    jobs = await job_records(redis_client, keys)
    assert len(jobs) == len(fortnights)
    assert {job["state"] for job in jobs} == {"done"}
    assert await redis_client.xlen(keys.dead) == 0

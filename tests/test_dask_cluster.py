"""Product workers on a shared Dask cluster (`DASK_SCHEDULER_HOST`): a real `dask scheduler` and
two `dask worker` processes, the dispatcher and the product worker as processes, the synthetic
archive in a real index.

What a cluster computes is what the worker computes in its own threads; the cluster is never
restarted by a worker (it is shared with other tenants); a scheduler that dies mid-job fails the
attempt, which is retried on the scheduler that replaces it, and never hangs.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import redis.asyncio as aioredis
from distributed import Client

from shared.embedded import free_port
from shared.keys import Keys
from tests.archive_support import ArchiveFixture
from tests.processes import ServiceProcess, wait_until
from tests.test_worker import (
    archive,  # noqa: F401  (the module's archive fixture)
    finished_requests,
    item,
    job_records,
    services,  # noqa: F401  (each test's processes, closed at its end)
    start,
    worker_env,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2


class DaskCluster:
    """A scheduler and its workers as processes on loopback, restartable on the same port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.processes: list[ServiceProcess] = []
        self.scheduler: ServiceProcess | None = None
        # The workers run the product's tasks: they import the project as the worker does.
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "CONVEYOR_METRICS_PORT": "0"}

    def start_scheduler(self) -> None:
        arguments = ["scheduler", "--host", "127.0.0.1", "--port", str(self.port)]
        arguments += ["--no-dashboard"]
        log = self.folder / f"scheduler-{len(self.processes)}.log"
        self.scheduler = ServiceProcess("dask", self.env, arguments, log)
        self.processes.append(self.scheduler)

    def start_workers(self) -> None:
        for number in range(WORKERS):
            arguments = ["worker", self.address, "--nthreads", "1", "--no-dashboard"]
            arguments += ["--name", f"tenant-worker-{number}", "--death-timeout", "120"]
            log = self.folder / f"worker-{number}-{len(self.processes)}.log"
            self.processes.append(ServiceProcess("dask", self.env, arguments, log))

    async def workers(self) -> set[tuple[str, str, int]]:
        """The scheduler's workers: (name, id, process id) of each; a restarted worker has
        another id and process."""
        async with Client(self.address, asynchronous=True, timeout=10) as client:
            info = await client.scheduler.identity(n_workers=-1)
            pids = await client.run(os.getpid)
            return {
                (str(worker["name"]), str(worker["id"]), int(pids[address]))
                for address, worker in info["workers"].items()
            }

    async def executed(self) -> dict[str, int]:
        """How many tasks each worker has executed."""

        def count(dask_worker: Any) -> int:
            return int(dask_worker.state.executed_count)

        async with Client(self.address, asynchronous=True, timeout=10) as client:
            return dict(await client.run(count))

    async def ready(self) -> set[tuple[str, str, int]]:
        async def all_workers() -> bool:
            try:
                return len(await self.workers()) == WORKERS
            except OSError:
                return False

        await wait_until(all_workers, timeout=90)
        return await self.workers()

    def close(self) -> None:
        for process in self.processes:
            process.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    running = DaskCluster(tmp_path)
    yield running
    running.close()


def bands(output: Path) -> dict[str, tuple[np.ndarray, Any, Any]]:
    """Every band COG under `output`, by file name with the prefix left out: values, grid."""
    found = {}
    for path in sorted(output.rglob("*.tif")):
        with rasterio.open(path) as raster:
            found[path.name] = (raster.read(1), raster.transform, raster.nodata)
    return found


async def run_until_finished(
    redis_client: aioredis.Redis, keys: Keys, requests: int, running: dict[str, ServiceProcess],
    timeout: float = 240,
) -> None:  # fmt: skip
    async def finished() -> bool:
        for service in running.values():
            assert service.process.poll() is None, service.output[-3000:]
        return await finished_requests(redis_client, keys) >= requests

    await wait_until(finished, timeout=timeout)


async def test_a_job_on_a_shared_cluster_writes_what_threads_write_and_leaves_the_cluster_up(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,  # noqa: F811
    tmp_path: Path, services: dict[str, ServiceProcess], cluster: DaskCluster,  # noqa: F811
) -> None:  # fmt: skip
    keys = Keys(namespace)
    cluster.start_scheduler()
    cluster.start_workers()
    before = await cluster.ready()

    in_threads = worker_env(redis_url, namespace, archive, str(tmp_path / "threads"))
    on_cluster = worker_env(
        redis_url, namespace, archive, str(tmp_path / "cluster"),
        DASK_SCHEDULER_HOST=cluster.address,
    )  # fmt: skip
    start(services, "dispatcher", "services.dispatcher", in_threads, tmp_path / "d.log")
    start(services, "threads", "services.worker", in_threads, tmp_path / "threads.log")
    await redis_client.rpush("jobProduct", item("ndvi"))  # type: ignore[misc]
    await run_until_finished(redis_client, keys, 1, services)
    services.pop("threads").close()

    start(services, "cluster", "services.worker", on_cluster, tmp_path / "cluster.log")
    await redis_client.rpush("jobProduct", item("ndvi", prefix="on/cluster"))  # type: ignore[misc]
    await run_until_finished(redis_client, keys, 2, services)

    jobs = await job_records(redis_client, keys)
    assert [job["state"] for job in jobs] == ["done"] * 2, [job.get("error") for job in jobs]
    log = (tmp_path / "cluster.log").read_text()
    assert f'"address": "{cluster.address}"' in log, log[-2000:]
    # The cluster did the work: its workers executed the jobs' tasks.
    executed = await cluster.executed()
    assert sum(executed.values()) > 0, executed

    threads, cluster_bands = bands(tmp_path / "threads"), bands(tmp_path / "cluster")
    assert threads and set(threads) == set(cluster_bands)
    for name, (values, transform, nodata) in threads.items():
        other_values, other_transform, other_nodata = cluster_bands[name]
        assert transform == other_transform, name
        assert np.array_equal([nodata], [other_nodata], equal_nan=True), name
        np.testing.assert_array_equal(values, other_values, err_msg=name)

    # Shared: the same worker processes are there after the jobs, none restarted.
    assert await cluster.workers() == before


async def test_a_scheduler_lost_mid_job_fails_the_attempt_and_the_retry_finishes_on_its_successor(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,  # noqa: F811
    tmp_path: Path, services: dict[str, ServiceProcess], cluster: DaskCluster,  # noqa: F811
) -> None:  # fmt: skip
    keys = Keys(namespace)
    cluster.start_scheduler()
    cluster.start_workers()
    await cluster.ready()
    env = worker_env(
        redis_url, namespace, archive, str(tmp_path / "out"),
        DASK_SCHEDULER_HOST=cluster.address,
        # A worker that cannot reach a scheduler gives up on the attempt quickly.
        DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="5s",
        # Far beyond the test's deadline: an attempt that hung would show as a hang, not as
        # a timeout retried.
        CONVEYOR_JOB_TIMEOUT_SECONDS="3600",
    )  # fmt: skip
    start(services, "dispatcher", "services.dispatcher", env, tmp_path / "d.log")
    start(services, "worker", "services.worker", env, tmp_path / "w.log")
    await redis_client.rpush("jobProduct", item("geomedian"))  # type: ignore[misc]

    async def computing() -> bool:
        jobs = await job_records(redis_client, keys)
        return bool(jobs) and jobs[0].get("state") == "running"

    await wait_until(computing, timeout=120)
    await asyncio.sleep(1.0)  # into the computation: the graph is on the scheduler
    assert cluster.scheduler is not None
    os.kill(cluster.scheduler.process.pid, signal.SIGKILL)
    cluster.scheduler.process.wait(timeout=10)

    async def attempt_failed() -> bool:
        jobs = await job_records(redis_client, keys)
        return int(jobs[0].get("attempts", "0") or 0) >= 2 or jobs[0].get("state") == "done"

    await wait_until(attempt_failed, timeout=120)
    # Its workers closed with it (a worker's nanny stops once its scheduler is gone); the
    # replacement comes with its own, as a restarted Deployment's pods would.
    cluster.start_scheduler()
    cluster.start_workers()
    await cluster.ready()
    await run_until_finished(redis_client, keys, 1, services, timeout=300)

    [job] = await job_records(redis_client, keys)
    assert job["state"] == "done", job
    assert int(job["attempts"]) >= 2, job
    log = (tmp_path / "w.log").read_text()
    failures = [line for line in log.splitlines() if '"job failed"' in line]
    assert failures and all("connect" in line for line in failures), failures
    assert await redis_client.xlen(keys.dead) == 0
    assert len(list((tmp_path / "out").rglob("*_final.odc-metadata.yaml"))) == 1

"""What the end-to-end tests share: a synthetic archive in its own index, work items as users
write them, the services as real processes, and the records and results they leave.

Registered as a plugin in `tests/conftest.py`, so the session-wide `e2e_archive` (built once, in
a database of its own) and the per-test `running` services are fixtures of every test module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

from shared.embedded import free_port
from shared.keys import Keys
from tests.processes import REPO, ServiceProcess, service_env, wait_until

if TYPE_CHECKING:  # the archive generator is imported only by the tests that build one
    from tests.archive_support import ArchiveFixture

# Landsat 8 over part of the seed's Fiji box (EPSG:3460), January to April 2019: a scene every
# 16 days, so each month has one or two dates.
ARCHIVE_PRODUCT = "ls8_usgs_sr_scene"
ARCHIVE_BOX = (2129000.0, 3498000.0, 2146000.0, 3510000.0)
ARCHIVE_FROM, ARCHIVE_TO = date(2019, 1, 1), date(2019, 4, 30)

# The end-to-end services cut their output grid in 3 km cells (100 x 100 px at 30 m), quick to
# compute: SMALL_BOX is exactly cell x710y1167, and the box x 2130000-2139000 is exactly cells
# x710, x711 and x712.
TILE_SIZE = "3000"
SMALL_BOX = (2130000.0, 3501000.0, 2133000.0, 3504000.0)


def tiled_box(tiles: int) -> tuple[float, float, float, float]:
    """A box `tiles` tiles of TILE_SIZE wide and one high, on the tile grid's lines."""
    return (2130000.0, 3501000.0, 2130000.0 + 3000.0 * tiles, 3504000.0)


S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "testing-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_VIRTUAL_HOSTING": "FALSE",
}


def product_item(
    job_code: str, box: tuple[float, float, float, float] = SMALL_BOX, **extra: Any
) -> dict[str, Any]:
    """A product work item as the original inserter wrote it: numbers as strings."""
    body: dict[str, Any] = {
        "job_code": job_code,
        "product": ARCHIVE_PRODUCT,
        "query_x_from": str(box[0]),
        "query_y_from": str(box[1]),
        "query_x_to": str(box[2]),
        "query_y_to": str(box[3]),
        "query_crs": "EPSG:3460",
        "time_from": ARCHIVE_FROM.isoformat(),
        "time_to": ARCHIVE_TO.isoformat(),
        "output_crs": "EPSG:3460",
        "prefix": "commonsensing/fiji/e2e",
    }
    return body | extra


@pytest.fixture(scope="session")
def e2e_archive(fresh_database: Any, tmp_path_factory: pytest.TempPathFactory) -> ArchiveFixture:
    """The synthetic archive, indexed in a database of its own (products indexed back land
    there too, apart from other tests' indexes)."""
    from tests.archive_support import build_archive

    return build_archive(
        fresh_database("e2e"),
        Path(tmp_path_factory.mktemp("e2e-archive")),
        ARCHIVE_PRODUCT,
        ARCHIVE_BOX,
        ARCHIVE_FROM,
        ARCHIVE_TO,
    )


def worker_env(
    redis_url: str, namespace: str, archive: ArchiveFixture, output: str, **extra: str
) -> dict[str, str]:
    """The environment of a dispatcher or worker on this archive, writing to `output`."""
    settings = {
        "CONVEYOR_BLOCK_MS": "100",
        "CONVEYOR_OUTPUT_URL": output,
        "CONVEYOR_DASK_THREADS": "1",
        "CONVEYOR_RETRY_BACKOFF_SECONDS": "0.2",
        "CONVEYOR_TILE_SIZE": TILE_SIZE,
        **archive.environment,
    }
    return service_env(redis_url, namespace, **(settings | extra))


class Running:
    """The services a test starts; all are killed when the test ends, whatever happened."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.services: dict[str, ServiceProcess] = {}
        self.stopped: set[str] = set()

    def start(
        self, name: str, module: str, env: dict[str, str], *args: str, metrics_port: int = 0
    ) -> ServiceProcess:
        port = metrics_port or free_port()
        service = ServiceProcess(
            module, env | {"CONVEYOR_METRICS_PORT": str(port)}, list(args),
            self.logs / f"{name}.log",
        )  # fmt: skip
        self.services[name] = service
        return service

    def dispatcher(self, env: dict[str, str]) -> ServiceProcess:
        return self.start("dispatcher", "services.dispatcher", env)

    def worker(self, env: dict[str, str], *args: str, name: str = "worker") -> ServiceProcess:
        return self.start(name, "services.worker", env, *args)

    def stop(self, name: str, timeout: float = 120.0) -> int:
        """SIGTERM the service and wait for it to exit; its exit code."""
        self.stopped.add(name)
        return self.services[name].terminate(timeout)

    def check_alive(self) -> None:
        """Fail at once, with its log, if a service exited that the test did not stop."""
        for name, service in self.services.items():
            code = service.process.poll()
            if code is not None and name not in self.stopped:
                raise AssertionError(f"{name} exited {code}:\n{service.output[-4000:]}")

    def close(self) -> None:
        for service in self.services.values():
            service.close()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    services = Running(tmp_path)
    yield services
    services.close()


async def job_records(redis: aioredis.Redis, keys: Keys) -> list[dict[str, str]]:
    """Every job's record, oldest first."""
    return [
        await redis.hgetall(keys.job(job_id))  # type: ignore[misc]
        for job_id in await redis.zrange(keys.job_index, 0, -1)
    ]


async def results(redis: aioredis.Redis, keys: Keys) -> list[dict[str, Any]]:
    return [
        fields | {"result": json.loads(fields["result"])}
        for _id, fields in await redis.xrange(keys.results)
    ]


async def finished_requests(redis: aioredis.Redis, keys: Keys) -> list[dict[str, Any]]:
    return [entry for entry in await results(redis, keys) if entry["type"] == "request"]


async def wait_for_requests(
    redis: aioredis.Redis, keys: Keys, count: int, running: Running, timeout: float = 240
) -> None:
    """Until `count` requests have finished (every job done, nodata, skipped or dead), while
    the `running` services stay up."""

    async def finished() -> bool:
        running.check_alive()
        return len(await finished_requests(redis, keys)) >= count

    await wait_until(finished, timeout=timeout)


def conveyor(env: dict[str, str], *args: str, input_text: str | None = None) -> str:
    """Run the `conveyor` command as a user does, in its own process; its output.

    Fails the test, with the output, when the command exits non-zero."""
    completed = run_conveyor(env, *args, input_text=input_text)
    assert completed.returncode == 0, (
        f"conveyor {' '.join(args)} exited {completed.returncode}:\n"
        f"{completed.stdout}{completed.stderr}"
    )
    return completed.stdout


def run_conveyor(
    env: dict[str, str], *args: str, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("conveyor")
    assert script.exists(), f"the conveyor command is not installed beside {sys.executable}"
    # A terminal wide enough that no table cell is folded onto a second line.
    return subprocess.run(
        [str(script), *args], cwd=REPO, env=env | {"COLUMNS": "1000"}, input=input_text,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
    )  # fmt: skip


def bucket_keys(s3: Any, bucket: str) -> list[str]:
    return [entry["Key"] for entry in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def gdal_s3_environment(endpoint: str) -> dict[str, str]:
    """What GDAL (so rasterio and `dc.load`) needs to read s3:// URLs from an S3-compatible
    endpoint over plain HTTP with path-style addressing."""
    host = endpoint.removeprefix("http://")
    return S3_KEYS | {
        "AWS_REGION": S3_KEYS["AWS_DEFAULT_REGION"],
        "AWS_S3_ENDPOINT": host,
        "AWS_HTTPS": "NO",
    }

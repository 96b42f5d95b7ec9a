"""One product, one grid, end to end: requests over parts of one cell share its one dataset.

Real servers: valkey, PostgreSQL with a datacube index of a synthetic native-UTM Landsat 8
archive, a dispatcher and a worker as processes, outputs indexed back into the datacube.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis
import yaml

from shared.embedded import free_port
from shared.keys import Keys
from tests.archive_support import ArchiveFixture, build_archive
from tests.processes import ServiceProcess, service_env, wait_until

# Cell x111y182 of the EPSG:3460 grid (19.2 km) and two different boxes inside it.
CELL = (2131200.0, 3494400.0, 2150400.0, 3513600.0)
FIRST_BOX = (2132000.0, 3499700.0, 2138000.0, 3504200.0)
SECOND_BOX = (2140000.0, 3495000.0, 2149000.0, 3512000.0)
FROM, TO = date(2019, 1, 1), date(2019, 2, 28)


def item(box: tuple[float, float, float, float]) -> str:
    return json.dumps(
        {
            "job_code": "ndvi",
            "product": "ls8_usgs_sr_scene",
            "query_x_from": str(box[0]),
            "query_y_from": str(box[1]),
            "query_x_to": str(box[2]),
            "query_y_to": str(box[3]),
            "query_crs": "EPSG:3460",
            "time_from": FROM.isoformat(),
            "time_to": TO.isoformat(),
            "output_crs": "EPSG:3460",
            "prefix": "commonsensing/fiji/grid",
        }
    )


@pytest.fixture(scope="module")
def archive(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> ArchiveFixture:
    left, bottom, right, top = CELL
    return build_archive(
        postgres_url,
        Path(tmp_path_factory.mktemp("archive")),
        "ls8_usgs_sr_scene",
        (left - 500, bottom - 500, right + 500, top + 500),
        FROM,
        TO,
    )


@pytest.fixture
def services() -> Iterator[list[ServiceProcess]]:
    running: list[ServiceProcess] = []
    yield running
    for service in running:
        service.close()


async def test_two_requests_over_parts_of_one_cell_make_one_dataset_computed_once(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, archive: ArchiveFixture,
    tmp_path: Path, services: list[ServiceProcess],
) -> None:  # fmt: skip
    keys = Keys(namespace)
    output = tmp_path / "out"
    env = service_env(
        redis_url, namespace, CONVEYOR_BLOCK_MS="100", CONVEYOR_OUTPUT_URL=str(output),
        CONVEYOR_DASK_THREADS="1", CONVEYOR_INDEX_OUTPUTS="true", **archive.environment,
    )  # fmt: skip
    for module, log in (("services.dispatcher", "d.log"), ("services.worker", "w.log")):
        service = ServiceProcess(
            module, env | {"CONVEYOR_METRICS_PORT": str(free_port())}, [], tmp_path / log
        )
        services.append(service)
    await redis_client.rpush("jobProduct", item(FIRST_BOX), item(SECOND_BOX))

    async def both_finished() -> bool:
        results = await redis_client.xrange(keys.results)
        return sum(1 for _id, fields in results if fields["type"] == "request") == 2

    await wait_until(both_finished, timeout=300)
    jobs = [
        await redis_client.hgetall(keys.job(job_id))
        for job_id in await redis_client.zrange(keys.job_index, 0, -1)
    ]
    assert {job["tile"] for job in jobs} == {"x111y182"}
    # The first request computed the cell; the second found it committed.
    assert sorted(job["state"] for job in jobs) == ["done", "skipped"], jobs
    [document_path] = output.rglob("*.odc-metadata.yaml")
    assert "ls8_ndvi/x111/y182/2019-01--P2M" in str(document_path)
    document = yaml.safe_load(document_path.read_text())
    assert document["properties"]["odc:region_code"] == "x111y182"

    # Indexed back: the product over the whole area is one dataset for the cell and period,
    # and loads onto the cell's own grid.
    datacube = archive.datacube()
    try:
        found = datacube.find_datasets(product="ls8_ndvi")
        assert [str(dataset.id) for dataset in found] == [document["id"]]
        loaded = datacube.load(
            product="ls8_ndvi",
            x=(FIRST_BOX[0], SECOND_BOX[2]),
            y=(SECOND_BOX[1], SECOND_BOX[3]),
            crs="EPSG:3460",
            output_crs="EPSG:3460",
            resolution=(-30, 30),
            measurements=["ndvi_median"],
        )
        assert loaded.time.size == 1
        assert np.isfinite(loaded.ndvi_median.values).mean() > 0.5
    finally:
        datacube.close()

"""The ARD pool end to end: `RPUSH jobS2` -> real dispatcher and worker processes -> ARD, indexed.

Real valkey, PostgreSQL and processes (`python -m services.dispatcher`,
`python -m services.worker --pool ard`); scenes of 60-120 px.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from odc.geo.geobox import GeoBox

from devtools.archive.safe import SEED_SCENE_NAME, write_safe
from services.worker.ard.metadata import ard_dataset_id
from shared.embedded import free_port
from shared.jobs import scene_job
from shared.keys import WORKER_GROUP, Keys
from shared.messages import SceneRequest, parse_request
from shared.seed import SEED_SCENE_ITEM
from tests.processes import running_service, service_env, wait_until
from tests.test_ard_runner import (  # noqa: F401  (fixtures)
    PRODUCT,
    ard_db_url,
    datacube,
    datacube_settings,
    unique_name,
)

WORKER = "services.worker"
DISPATCHER = "services.dispatcher"


def folders(tmp_path: Path) -> dict[str, Path]:
    made = {name: tmp_path / name for name in ("archive", "scratch", "output")}
    for folder in made.values():
        folder.mkdir()
    return made


def ard_env(
    redis_url: str, namespace: str, places: dict[str, Path], db_url: str, **extra: str
) -> dict[str, str]:
    settings = {
        "CONVEYOR_BLOCK_MS": "100",
        "CONVEYOR_RETRY_BACKOFF_SECONDS": "0.2",
        "CONVEYOR_SCRATCH_ROOT": str(places["scratch"]),
        "CONVEYOR_ARD_SOURCE": str(places["archive"]),
        "CONVEYOR_ARD_OUTPUT_URL": str(places["output"]),
        "CONVEYOR_DB_URL": db_url,
        "CONVEYOR_INDEX_OUTPUTS": "true",
        "CONVEYOR_DASK_THREADS": "2",
    }
    return service_env(redis_url, namespace, **(settings | extra))


def own_port(env: dict[str, str]) -> dict[str, str]:
    """The same environment with a metrics port of its own: one per process."""
    return env | {"CONVEYOR_METRICS_PORT": str(free_port())}


def job_id_of(item: str) -> str:
    request, _ignored = parse_request(json.loads(item))
    assert isinstance(request, SceneRequest)
    return scene_job(request).job_id


async def job_state(redis: aioredis.Redis, namespace: str, job_id: str) -> str | None:
    state: str | None = await redis.hget(Keys(namespace).job(job_id), "state")  # type: ignore[misc]
    return state


async def finished_results(redis: aioredis.Redis, namespace: str, job_id: str) -> list[str]:
    entries = await redis.xrange(Keys(namespace).results)
    return [
        fields["state"]
        for _id, fields in entries
        if fields.get("type") == "job" and fields.get("job_id") == job_id
    ]


def scratch_contents(places: dict[str, Path]) -> list[str]:
    return sorted(str(p.relative_to(places["scratch"])) for p in places["scratch"].rglob("*"))


def load_band(cube: Any, dataset_id: str, scene: Any, band: str, resolution: int) -> np.ndarray:
    truth = scene.truth
    geobox = GeoBox(truth.at(band).shape, truth.transforms[resolution], truth.crs)
    dataset = cube.index.datasets.get(dataset_id)
    return np.asarray(cube.load(datasets=[dataset], measurements=[band], like=geobox)[band][0])


async def test_seed_item_pushed_on_jobS2_ends_as_cogs_metadata_and_an_index_entry(
    redis_client: aioredis.Redis,
    redis_url: str,
    namespace: str,
    ard_db_url: str,  # noqa: F811
    datacube: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    places = folders(tmp_path)
    scene = write_safe(places["archive"], name=SEED_SCENE_NAME, size=120, seed=2019)
    # The seed's line with its inter_dir on this machine's scratch volume.
    item = json.dumps(
        json.loads(SEED_SCENE_ITEM) | {"inter_dir": str(places["scratch"] / "intermediate")}
    )
    env = ard_env(redis_url, namespace, places, ard_db_url)
    job_id = job_id_of(item)

    with (
        running_service(DISPATCHER, own_port(env), tmp_path / "dispatcher.log"),
        running_service(
            WORKER, own_port(env), tmp_path / "worker.log", ["--pool", "ard"]
        ) as worker,
    ):
        await redis_client.rpush("jobS2", item)  # type: ignore[misc]

        async def done() -> bool:
            return await job_state(redis_client, namespace, job_id) in ("done", "dead")

        await wait_until(done, timeout=180)
        assert await job_state(redis_client, namespace, job_id) == "done", worker.output

    folder = places["output"] / "fiji" / "Sentinel_2_test" / SEED_SCENE_NAME
    names = sorted(path.name for path in folder.iterdir())
    assert f"{SEED_SCENE_NAME}_B02_10m.tif" in names
    assert f"{SEED_SCENE_NAME}_NDVI_10m.tif" in names
    assert f"{SEED_SCENE_NAME}.stac-item.json" in names
    assert f"{SEED_SCENE_NAME}.odc-metadata.yaml" in names
    dataset_id = str(ard_dataset_id(PRODUCT, SEED_SCENE_NAME))
    assert datacube.index.datasets.has(dataset_id)
    for band, resolution in (("red", 10), ("swir2", 20), ("scene_classification", 20)):
        loaded = load_band(datacube, dataset_id, scene, band, resolution)
        assert np.array_equal(loaded, scene.truth.at(band)), band
    assert scratch_contents(places) == ["intermediate"]
    assert await redis_client.xlen(Keys(namespace).dead) == 0


async def test_scenes_that_cannot_be_made_are_dead_lettered_with_their_reason(
    redis_client: aioredis.Redis,
    redis_url: str,
    namespace: str,
    ard_db_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    places = folders(tmp_path)
    inter_dir = str(places["scratch"] / "intermediate")
    corrupt = unique_name(40)
    scene = write_safe(places["archive"], name=corrupt, size=60, seed=40)
    band = scene.band_files["red"]
    band.write_bytes(band.read_bytes()[:200])
    outside = unique_name(41)
    write_safe(places["archive"], name=outside, size=60, seed=41)
    l1c = unique_name(42, level="L1C", baseline="0208")
    write_safe(places["archive"], name=l1c, size=60, seed=42)
    items = {
        "corrupt_scene": {"in_scene": corrupt, "inter_dir": inter_dir},
        "invalid_request": {"in_scene": outside, "inter_dir": "/data/intermediate/"},
        "sen2cor_not_configured": {"in_scene": l1c, "inter_dir": inter_dir},
        "scene_not_found": {"in_scene": unique_name(43), "inter_dir": inter_dir},
        "malformed": {"in_scene": "S2A_MSIL2A_20190812_T56LRR", "inter_dir": inter_dir},
    }
    expected = {
        "corrupt_scene": "T56LRR_20190812T235741_B04_10m.jp2 is corrupt",
        "invalid_request": "outside the scratch root",
        "sen2cor_not_configured": "set SEN2COR_8",
        "scene_not_found": str(places["archive"]),
        "malformed": "is not a Sentinel-2 product name",
    }
    env = ard_env(redis_url, namespace, places, ard_db_url)
    keys = Keys(namespace)

    with (
        running_service(DISPATCHER, own_port(env), tmp_path / "dispatcher.log"),
        running_service(WORKER, own_port(env), tmp_path / "worker.log", ["--pool", "ard"]),
    ):
        await redis_client.rpush("jobS2", *(json.dumps(item) for item in items.values()))  # type: ignore[misc]

        async def all_dead() -> bool:
            return bool(await redis_client.xlen(keys.dead) >= len(items))

        await wait_until(all_dead, timeout=180)

    letters = [fields for _id, fields in await redis_client.xrange(keys.dead)]
    assert len(letters) == len(items)
    for case, item in items.items():
        matching = [letter for letter in letters if item["in_scene"] in letter["payload"]]
        assert len(matching) == 1, (case, letters)
        letter = matching[0]
        assert expected[case] in letter["error"], (case, letter["error"])
        if case == "malformed":
            assert letter["service"] == "dispatcher"
        else:
            assert (letter["service"], letter["reason"]) == ("worker", case)
            assert letter["attempts"] == "1"
    assert scratch_contents(places) in ([], ["intermediate"])
    assert not list(places["output"].rglob("*.odc-metadata.yaml"))


async def test_worker_killed_mid_scene_leaves_nothing_indexed_and_another_finishes_it_once(
    redis_client: aioredis.Redis,
    redis_url: str,
    namespace: str,
    ard_db_url: str,  # noqa: F811
    datacube: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    places = folders(tmp_path)
    name = unique_name(44)
    scene = write_safe(places["archive"], name=name, size=60, seed=44)
    # The first worker blocks reading this band (a pipe nobody writes to) until it is killed.
    band = scene.band_files["nir"]
    contents = band.read_bytes()
    band.unlink()
    os.mkfifo(band)
    item = json.dumps({"in_scene": name, "inter_dir": str(places["scratch"])})
    job_id = job_id_of(item)
    env = ard_env(redis_url, namespace, places, ard_db_url, CONVEYOR_LEASE_SECONDS="2")
    dataset_id = str(ard_dataset_id(PRODUCT, name))

    with running_service(DISPATCHER, own_port(env), tmp_path / "dispatcher.log"):
        with running_service(
            WORKER, own_port(env), tmp_path / "first.log", ["--pool", "ard"]
        ) as first:
            await redis_client.rpush("jobS2", item)  # type: ignore[misc]

            async def fetching() -> bool:
                running = await job_state(redis_client, namespace, job_id) == "running"
                return running and bool(scratch_contents(places))

            await wait_until(fetching, timeout=120)
            first.kill()

        assert await job_state(redis_client, namespace, job_id) == "running"
        assert not datacube.index.datasets.has(dataset_id)
        assert not list(places["output"].rglob("*.odc-metadata.yaml"))
        band.unlink()
        band.write_bytes(contents)

        with running_service(
            WORKER, own_port(env), tmp_path / "second.log", ["--pool", "ard"]
        ) as second:

            async def finished() -> bool:
                return await job_state(redis_client, namespace, job_id) in ("done", "dead")

            await wait_until(finished, timeout=180)
            assert await job_state(redis_client, namespace, job_id) == "done", second.output

    assert await finished_results(redis_client, namespace, job_id) == ["done"]
    assert datacube.index.datasets.has(dataset_id)
    found = list(datacube.index.datasets.search(product=PRODUCT, region_code="56LRR"))
    assert [str(d.id) for d in found].count(dataset_id) == 1
    assert scratch_contents(places) == []
    assert await redis_client.xlen(Keys(namespace).dead) == 0


async def test_processes_option_runs_that_many_consumers_in_one_pod(
    redis_client: aioredis.Redis,
    redis_url: str,
    namespace: str,
    ard_db_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    places = folders(tmp_path)
    names = [unique_name(number) for number in (45, 46)]
    for number, name in enumerate(names):
        write_safe(places["archive"], name=name, size=60, seed=45 + number)
    items = [json.dumps({"in_scene": name, "inter_dir": str(places["scratch"])}) for name in names]
    # Without indexing: what is tested here is the two consumers, not the datacube.
    env = ard_env(
        redis_url, namespace, places, ard_db_url,
        CONVEYOR_CONSUMER_NAME="pod-a", CONVEYOR_INDEX_OUTPUTS="false",
    )  # fmt: skip
    keys = Keys(namespace)

    with (
        running_service(DISPATCHER, own_port(env), tmp_path / "dispatcher.log"),
        running_service(
            WORKER, env, tmp_path / "worker.log", ["--pool", "ard", "--processes", "2"]
        ) as pod,
    ):
        try:
            await redis_client.rpush("jobS2", *items)  # type: ignore[misc]

            async def all_done() -> bool:
                states = [await job_state(redis_client, namespace, job_id_of(i)) for i in items]
                return all(state == "done" for state in states)

            await wait_until(all_done, timeout=180)
            consumers = await redis_client.xinfo_consumers(keys.jobs("ard"), WORKER_GROUP)
        finally:
            # SIGTERM, relayed to both processes; a SIGKILL would leave them running.
            assert pod.terminate(timeout=120) == 0

    assert sorted(consumer["name"] for consumer in consumers) == ["pod-a-0", "pod-a-1"]
    for name in names:
        assert (places["output"] / "fiji" / "Sentinel_2_test" / name).is_dir()

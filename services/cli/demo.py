"""`conveyor demo` (`make demo`): the whole system on embedded servers, from RPUSH to products.

Starts valkey-server and PostgreSQL from their wheels, synthesises and indexes the seed's Fiji
2019 Landsat 8 archive, pushes the original work items with RPUSH exactly as the old job
inserter did, runs a dispatcher and workers as real processes, follows progress, and prints
where the products are (with an RGB quicklook of each).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.acl import ROLES, read_password_file, username, write_password_files
from shared.embedded import (
    SECRETS_FOLDER,
    EmbeddedValkey,
    embedded_queue,
    free_port,
    stop_embedded_servers,
)
from shared.jobstate import FINAL_STATES
from shared.keys import Keys
from shared.seed import SEED_LATLON_ITEM, SEED_PRODUCT_ITEM, SEED_SCENE_ITEM

DEMO_TIMEOUT_SECONDS = 1800


def _service(
    module: str, env: dict[str, str], log_path: Path, *args: str
) -> subprocess.Popen[bytes]:
    handle = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], env=env, stdout=handle, stderr=subprocess.STDOUT
    )


def _stop(processes: list[subprocess.Popen[bytes]], timeout: float = 120) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def run_demo(*, state_dir: Path, output: Path, console: Console) -> int:
    from devtools.archive.demo import prepare_demo_archive

    state_dir.mkdir(parents=True, exist_ok=True)
    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    logs = state_dir / "logs"
    logs.mkdir(exist_ok=True)
    namespace = "conveyor"

    console.rule("[bold]odc-conveyor demo")
    # One ACL user per role, as in production: each service below runs as its own user, with
    # its password in a file (as a mounted Secret would be).
    password_files = write_password_files(state_dir / SECRETS_FOLDER, ROLES)
    # The same server every `conveyor` command of this state directory starts, so that
    # `conveyor status` after the demo sees the demo's queue.
    queue = embedded_queue(state_dir, namespace=namespace)
    queue_url = queue.start(reuse=True)
    console.print(
        f"queue: embedded valkey-server at {queue_url} (AOF under {queue.data_dir}), "
        f"one ACL user per role (passwords under {state_dir / 'secrets'})"
    )

    def as_user(role: str, environment: dict[str, str]) -> dict[str, str]:
        return environment | {
            "CONVEYOR_REDIS_USERNAME": username(role, namespace),
            "CONVEYOR_REDIS_PASSWORD_FILE": str(password_files[role].resolve()),
        }

    processes: list[subprocess.Popen[bytes]] = []
    try:
        archive = prepare_demo_archive(state_dir=state_dir, console=console)
        env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
        env.update(
            CONVEYOR_REDIS_URL=queue_url,
            CONVEYOR_NAMESPACE=namespace,
            CONVEYOR_STATE_DIR=str(state_dir.resolve()),
            CONVEYOR_OUTPUT_URL=str(output),
            CONVEYOR_LOG_FORMAT="json",
            CONVEYOR_SCRATCH_ROOT=str((state_dir / "scratch").resolve()),
            CONVEYOR_INDEX_OUTPUTS="true",
            **archive.environment,
        )
        metrics = {name: free_port() for name in ("dispatcher", "worker-product", "worker-ard")}
        processes.append(
            _service(
                "services.dispatcher",
                as_user("dispatcher", env | {"CONVEYOR_METRICS_PORT": str(metrics["dispatcher"])}),
                logs / "dispatcher.log",
            )
        )  # fmt: skip
        processes.append(
            _service(
                "services.worker",
                as_user("worker", env | {"CONVEYOR_METRICS_PORT": str(metrics["worker-product"])}),
                logs / "worker-product.log", "--pool", "product",
            )
        )  # fmt: skip
        scene_items: list[str] = []
        landsat = _landsat_items(archive, state_dir)
        if archive.safe_dir is not None and (archive.scene_name or archive.landsat_scenes):
            ard_env = env | {
                "CONVEYOR_METRICS_PORT": str(metrics["worker-ard"]),
                "CONVEYOR_ARD_SOURCE": str(archive.safe_dir),
                "CONVEYOR_ARD_OUTPUT_URL": str(output / "ard"),
            }
            processes.append(
                _service(
                    "services.worker", as_user("worker", ard_env), logs / "worker-ard.log",
                    "--pool", "ard",
                )
            )  # fmt: skip
        console.print(
            "metrics while the demo runs: "
            + ", ".join(f"{name} http://127.0.0.1:{port}/metrics" for name, port in metrics.items())
        )
        if archive.safe_dir is not None and archive.scene_name is not None:
            scene_item = json.loads(SEED_SCENE_ITEM) | {
                "in_scene": archive.scene_name,
                "inter_dir": str((state_dir / "scratch" / "intermediate").resolve()),
            }
            scene_items.append(json.dumps(scene_item))
        results = asyncio.run(
            _push_and_follow(
                queue,
                namespace,
                {
                    role: read_password_file(password_files[role])
                    for role in ("producer", "operator")
                },
                [SEED_PRODUCT_ITEM, SEED_LATLON_ITEM],
                scene_items,
                console,
                landsat=landsat,
            )
        )  # fmt: skip
    finally:
        _stop(processes)
        queue.stop()
        stop_embedded_servers(state_dir / "postgres")
    return _report(results, output, console, logs)


@dataclass(frozen=True)
class LandsatItems:
    """`RPUSH jobLS` scene items, and the product and `jobWater` items that use their ARD once
    it is indexed."""

    scenes: list[str]
    products: list[str]
    water: list[str] = field(default_factory=list)

    def scene_request_ids(self) -> set[str]:
        from shared.messages import parse_request

        return {parse_request(json.loads(item))[0].request_id for item in self.scenes}


def _landsat_items(archive: Any, state_dir: Path) -> LandsatItems:
    """A jobLS item per USGS download, then a geomedian of each product over its scene, and the
    Collection 1 scene's water classification, named by the id its ARD is indexed under."""
    from devtools.archive.demo import LANDSAT_PERIOD
    from services.worker.ard.metadata import ard_dataset_id

    inter_dir = str((state_dir / "scratch" / "intermediate").resolve())
    scenes, products, water = [], [], []
    for scene in archive.landsat_scenes:
        item = {"in_scene": scene.name, "inter_dir": inter_dir, "s3_dir": "fiji/landsat/"}
        scenes.append(json.dumps(item))
        left, bottom, right, top = scene.bounds
        request = {
            "job_code": "geomedian", "product": scene.product,
            "query_x_from": str(left), "query_y_from": str(bottom),
            "query_x_to": str(right), "query_y_to": str(top),
            "query_crs": scene.crs, "output_crs": scene.crs,
            "time_from": LANDSAT_PERIOD[0].isoformat(), "time_to": LANDSAT_PERIOD[1].isoformat(),
            "prefix": f"commonsensing/fiji/{scene.product}_geomedian/2019-01",
        }  # fmt: skip
        products.append(json.dumps(request))
        if scene.product == "ls8_usgs_sr_scene":
            classify = {
                "job_code": "water_classification",
                "dataset_id": str(ard_dataset_id(scene.product, scene.name)),
                "prefix": "commonsensing/fiji",
            }
            water.append(json.dumps(classify))
    return LandsatItems(scenes, products, water)


async def _push_and_follow(
    queue: EmbeddedValkey,
    namespace: str,
    passwords: dict[str, str],
    product_items: list[str],
    scene_items: list[str],
    console: Console,
    *,
    landsat: LandsatItems | None = None,
) -> list[dict[str, Any]]:
    keys = Keys(namespace)

    def client(role: str) -> aioredis.Redis:
        return aioredis.Redis(
            host=queue.host,
            port=queue.port,
            username=username(role, namespace),
            password=passwords[role],
            decode_responses=True,
        )

    # Work arrives as upstream sends it, through the producer's user; the demo follows it as an
    # operator would.
    producer, redis = client("producer"), client("operator")
    start_id = f"{int(time.time() * 1000)}-0"
    console.print("RPUSH jobProduct: the seed item (projected) and the same box in lat/lon")
    await producer.rpush("jobProduct", *product_items)  # type: ignore[misc]
    if scene_items:
        console.print("RPUSH jobS2: one Sentinel-2 L2A scene")
        await producer.rpush("jobS2", *scene_items)  # type: ignore[misc]
    landsat = landsat or LandsatItems([], [])
    if landsat.scenes:
        console.print("RPUSH jobLS: a Landsat 8 scene as USGS Collection 1 and 2 tarballs")
        await producer.rpush("jobLS", *landsat.scenes)  # type: ignore[misc]
    landsat_scenes, landsat_pushed = landsat.scene_request_ids(), not landsat.products
    # Followed by request id (the same items always make the same requests), so a demo run again
    # finds its requests finished, or sees them finish, rather than waiting for new results.
    request_ids = _request_ids(
        [*product_items, *scene_items, *landsat.scenes, *landsat.products, *landsat.water]
    )
    finished: set[str] = set()
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console,
    )  # fmt: skip
    deadline = time.monotonic() + DEMO_TIMEOUT_SECONDS
    with progress:
        requests_task = progress.add_task("requests", total=len(request_ids))
        jobs_task = progress.add_task("jobs", total=None)
        while len(finished) < len(request_ids) and time.monotonic() < deadline:
            for request_id in request_ids:
                state = await redis.hget(keys.request(request_id), "state")  # type: ignore[misc]
                if state == "finished":
                    finished.add(request_id)
            if not landsat_pushed and landsat_scenes <= finished:
                # The Landsat ARD is indexed now: product jobs can load it.
                console.print("RPUSH jobProduct: a geomedian of each Landsat scene's product")
                await producer.rpush("jobProduct", *landsat.products)  # type: ignore[misc]
                if landsat.water:
                    console.print("RPUSH jobWater: the Landsat 8 scene's water classification")
                    await producer.rpush("jobWater", *landsat.water)  # type: ignore[misc]
                landsat_pushed = True
            job_ids = await _job_ids(redis, keys, request_ids)
            job_states = [await redis.hget(keys.job(job_id), "state") for job_id in job_ids]  # type: ignore[misc]
            finished_jobs = sum(1 for state in job_states if state in FINAL_STATES)
            progress.update(jobs_task, total=len(job_ids) or None, completed=finished_jobs)
            progress.update(requests_task, completed=len(finished))
            dead = len(await redis.xrange(keys.dead, start_id))
            if dead:
                console.print(f"[red]{dead} dead letter(s)[/]: see `conveyor dead list`")
                break
            await asyncio.sleep(1.0)
    await producer.aclose()
    jobs = []
    for job_id in await _job_ids(redis, keys, request_ids):
        record = await redis.hgetall(keys.job(job_id))  # type: ignore[misc]
        record["outputs"] = json.loads(record.get("outputs") or "[]")
        jobs.append(record)
    await redis.aclose()
    return jobs


def _request_ids(items: list[str]) -> list[str]:
    from shared.messages import parse_request

    ids = [parse_request(json.loads(item))[0].request_id for item in items]
    return list(dict.fromkeys(ids))


async def _job_ids(redis: aioredis.Redis, keys: Keys, request_ids: list[str]) -> list[str]:
    job_ids: list[str] = []
    for request_id in request_ids:
        job_ids.extend(await redis.lrange(keys.request_jobs(request_id), 0, -1))  # type: ignore[misc]
    return list(dict.fromkeys(job_ids))


def _report(jobs: list[dict[str, Any]], output: Path, console: Console, logs: Path) -> int:
    from services.worker.outputs.quicklook import quicklooks_for_outputs

    table = Table(title="jobs")
    for column in ("code", "tile", "period", "state", "seconds", "outputs"):
        table.add_column(column)
    failed = 0
    for job in jobs:
        stages = json.loads(job.get("stages") or "{}")
        table.add_row(
            job.get("job_code", ""), job.get("tile") or job.get("scene", ""),
            job.get("period", ""), job.get("state", ""), f"{stages.get('total', 0):.1f}",
            str(len(job["outputs"])),
        )  # fmt: skip
        if job.get("state") not in ("done", "skipped", "nodata"):
            failed += 1
    console.print(table)
    quicklooks = quicklooks_for_outputs(output)
    console.print(f"products under [bold]{output}[/]")
    for path in quicklooks:
        console.print(f"  quicklook {path}")
    console.print(f"service logs under {logs}")
    console.print(
        "\nlook at what ran (the same embedded queue, under the same state directory):\n"
        "  [bold]conveyor status[/]            streams, consumers, job states, server memory\n"
        "  [bold]conveyor job ID[/]            one job or request: attempts, timings, outputs\n"
        "  [bold]conveyor dead list[/]         dead letters with their reasons\n"
        "  metrics: each service serves /metrics while it runs (dispatcher :9101, workers\n"
        "  :9102, autoscaler :9103 by default; the demo's ports are printed above)"
    )
    if failed or not jobs:
        console.print(f"[red]{failed} job(s) did not finish[/]")
        return 1
    console.print("[green]done[/]")
    return 0

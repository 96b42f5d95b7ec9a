"""One geomedian tile job through the worker service against a bare script, on the same data.

    .venv/bin/python benchmarks/geomedian_job.py [--size 1024] [--repeats 3] [--workdir DIR]

Set-up (not timed): embedded PostgreSQL and Valkey; a synthetic Landsat 8 archive for the year
over a `size` x `size` tile at 30 m inside the seed's Fiji box (EPSG:3460), indexed.

Then `repeats` times:

* service: a fresh `python -m services.worker` process (default settings: in-process Dask
  cluster, 2 threads). Its start-up (spawn to /healthz) is timed on its own. Two jobs are then
  queued exactly as the dispatcher queues them (the job `plan_jobs` makes from the work item with
  `CONVEYOR_TILE_SIZE_PIXELS=size`, XADDed with the dispatcher's job and request records in one
  MULTI): a *first* job, which pays the process's one-off costs (Dask cluster, index connection),
  and a *warm* one (same tile, another prefix). Each is timed from the XADD to its event on the
  results stream; its peak RSS is the process's VmHWM (reset between the two jobs).
* bare: a separate process running `dc.load` (same datasets, geobox and chunks),
  `odc.algo.geomedian_with_mads` (the product's parameters) on the same whole-observation mask,
  and odc-geo `write_cog` of the same ten bands with the same COG options. Its core time runs
  from the dataset search to the last COG; its process time from spawn to exit; its peak RSS is
  the process's ru_maxrss.

It prints best and median of each, warm job / bare core (target at most 1.25) and, with the
one-off costs on both sides, first job / bare process; and each peak RSS divided by the bytes of
the loaded cube (measurements x dates x rows x columns x itemsize; target at most 2.5).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared.seed import SEED_BOX_EPSG3460  # noqa: E402

PRODUCT = "ls8_usgs_sr_scene"
CRS = "EPSG:3460"
RESOLUTION = 30.0
BANDS = ("red", "green", "blue", "nir", "swir1", "swir2")
MASK_BAND = "pixel_qa"
REFLECTANCE_NODATA = -9999
# Landsat 8 pixel_qa clear land and clear water, as the original worker chose good pixels.
GOOD_PIXEL_QA = (322, 386, 834, 898, 1346, 324, 388, 836, 900, 1348)
NAMESPACE = "bench"
TIME_TARGET = 1.25
MEMORY_TARGET = 2.5
ARCHIVE_MARGIN_PIXELS = 64
JOB_TIMEOUT_SECONDS = 1800.0
SAMPLE_SECONDS = 0.02


# -- the tile and its work item ----------------------------------------------------------------


def tile_bounds(
    size: int, at: tuple[float, float] | None = None
) -> tuple[float, float, float, float]:
    """The tile of the origin-anchored `size`-pixel grid that holds the point `at`, so the
    dispatcher's tiling (`tile_size_pixels=size`) makes exactly this one job.

    By default the east-most whole tile of the seed box's bottom row. (At 1024 px its western
    few km are also seen by the neighbouring Landsat path, on other days: 46 dates a year. The
    tile at 2215000 3503000, two thirds inside the box, is seen by one path: 23 dates.)
    """
    edge = size * RESOLUTION
    if at is None:
        _left, bottom_edge, right_edge, _top = SEED_BOX_EPSG3460
        at = (math.floor(right_edge / edge) * edge - edge / 2, math.ceil(bottom_edge / edge) * edge)
    left = math.floor(at[0] / edge) * edge
    bottom = math.floor(at[1] / edge) * edge
    return (left, bottom, left + edge, bottom + edge)


def work_item(bounds: Sequence[float], year: int, prefix: str) -> dict[str, str]:
    """A `jobProduct` work item as the original deployment sent them (numbers as strings)."""
    return {
        "job_code": "geomedian",
        "product": PRODUCT,
        "query_x_from": str(bounds[0]),
        "query_y_from": str(bounds[1]),
        "query_x_to": str(bounds[2]),
        "query_y_to": str(bounds[3]),
        "query_crs": CRS,
        "time_from": f"{year}-01-01",
        "time_to": f"{year}-12-31",
        "output_crs": CRS,
        "prefix": prefix,
    }


# -- set-up: servers and archive ---------------------------------------------------------------


@dataclass
class Servers:
    root: Path
    db_url: str
    redis_url: str
    valkey: Any


@dataclass
class Bench:
    """What every run shares: servers, the tile, and the worker settings both sides use."""

    servers: Servers
    work: Path
    bounds: tuple[float, float, float, float]
    year: int
    size: int
    #: The worker's read chunk (its default unless `--chunk-pixels` sets it) and Dask threads.
    chunk_pixels: int
    chunk_pixels_given: bool
    threads: int
    #: Part of every output prefix, so that a kept workdir's earlier products are not found.
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])


def worker_defaults() -> tuple[int, int]:
    """(default_chunk_pixels, dask_threads) of a worker started with no settings."""
    from services.worker.settings import WorkerSettings

    fields = WorkerSettings.model_fields
    return int(fields["default_chunk_pixels"].default), int(fields["dask_threads"].default)


def start_servers(root: Path) -> Servers:
    from shared.embedded import EmbeddedValkey, embedded_postgres_url

    db_url = embedded_postgres_url(root / "postgres")
    valkey = EmbeddedValkey(root / "valkey", appendfsync="no")
    redis_url = valkey.start()
    return Servers(root=root, db_url=db_url, redis_url=redis_url, valkey=valkey)


def stop_servers(servers: Servers) -> None:
    from shared.embedded import stop_embedded_servers

    servers.valkey.stop()
    stop_embedded_servers(servers.root)


def build_archive(db_url: str, folder: Path, bounds: Sequence[float], year: int) -> int:
    """Synthesise and index the year's scenes over the tile (and a margin); returns scenes."""
    from devtools.archive import (
        DatacubeSettings,
        add_products,
        generate_archive,
        index_datasets,
        init_index,
        open_datacube,
    )

    margin = ARCHIVE_MARGIN_PIXELS * RESOLUTION
    area = (bounds[0] - margin, bounds[1] - margin, bounds[2] + margin, bounds[3] + margin)
    settings = DatacubeSettings(db_url=db_url)  # type: ignore[arg-type]
    init_index(settings)
    datacube = open_datacube(settings)
    try:
        add_products(datacube, [PRODUCT])
        records = generate_archive(
            PRODUCT, area, date(year, 1, 1), date(year, 12, 31), folder, crs=CRS
        )
        index_datasets(datacube, [record.metadata_path for record in records])
    finally:
        datacube.close()
    return len(records)


# -- memory of a running process ---------------------------------------------------------------


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the most resident memory the process has had (since start or the last reset)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def reset_peak_rss(pid: int) -> bool:
    """Restart VmHWM from the current RSS (Linux `clear_refs` 5); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class TreeSampler:
    """Samples the summed RSS of a process and its children, to catch memory outside VmHWM's
    view (child processes); keeps the largest sum seen."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                members = [self.process, *self.process.children(recursive=True)]
                total = sum(member.memory_info().rss for member in members)
            except psutil.Error:
                return
            self.peak = max(self.peak, total)
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the service -------------------------------------------------------------------------------


@dataclass
class ServiceJob:
    seconds: float
    peak_rss: int
    tree_peak_rss: int
    rss_before: int
    state: str
    stages: dict[str, float]
    outputs: list[str]


@dataclass
class ServiceRun:
    startup_seconds: float
    idle_rss: int
    first: ServiceJob
    warm: ServiceJob
    peak_was_reset: bool


class WorkerProcess:
    """`python -m services.worker` as deployed, with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        from shared.embedded import free_port

        self.metrics_port = free_port()
        self._log = log_path.open("ab")
        self.log_path = log_path
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.worker"],
            cwd=REPO,
            env=env | {"CONVEYOR_METRICS_PORT": str(self.metrics_port)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the worker exited with {self.process.returncode}:\n{tail}")

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds from spawn until /healthz answers."""
        deadline = time.perf_counter() + timeout
        url = f"http://127.0.0.1:{self.metrics_port}/healthz"
        while time.perf_counter() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - self.started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.02)
        raise RuntimeError(f"the worker did not answer /healthz within {timeout}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def worker_env(bench: Bench) -> dict[str, str]:
    """The worker's environment: its defaults, but for where the queue, index and output are."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CONVEYOR_", "DASK_", "ODC_", "DATACUBE_"))
        and key not in ("REDIS_SERVICE_HOST",)
    }
    env = inherited | {
        "CONVEYOR_REDIS_URL": bench.servers.redis_url,
        "CONVEYOR_NAMESPACE": NAMESPACE,
        "CONVEYOR_DB_URL": bench.servers.db_url,
        "CONVEYOR_OUTPUT_URL": str(bench.work / "service-out"),
        "CONVEYOR_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    if bench.chunk_pixels_given:
        env["CONVEYOR_DEFAULT_CHUNK_PIXELS"] = str(bench.chunk_pixels)
    return env


def queue_as_dispatcher(redis: Any, item: dict[str, str], size: int) -> tuple[str, float]:
    """What the dispatcher does with `item` (tile size `size` px): plan its one job, XADD it and
    record job and request in one MULTI. Returns the job id and the perf_counter at queueing."""
    from services.dispatcher.planning import plan_jobs
    from shared.jobs import ProductJob, encode_job
    from shared.jobstate import queued_commands
    from shared.keys import Keys
    from shared.messages import parse_request

    keys = Keys(NAMESPACE)
    request, _ignored = parse_request(item)
    jobs = plan_jobs(request, tile_size=None, tile_size_pixels=size)
    if len(jobs) != 1 or not isinstance(jobs[0], ProductJob) or jobs[0].area.shape != (size, size):
        raise RuntimeError(f"expected one {size}x{size} tile job, planned {jobs}")
    job = jobs[0]
    commands: list[Sequence[str | int | float]] = [
        ("XADD", keys.jobs(job.pool), "*", *encode_job(job).popitem())
    ]
    commands += queued_commands(keys, request, jobs, time.time())
    pipe = redis.pipeline(transaction=True)
    for command in commands:
        pipe.execute_command(*command)
    queued = time.perf_counter()
    pipe.execute()
    return job.job_id, queued


def wait_for_result(
    redis: Any, worker: WorkerProcess, job_id: str, after: str
) -> tuple[dict[str, str], float]:
    """The results-stream event of `job_id` and the perf_counter when it was read."""
    from shared.keys import Keys

    results = Keys(NAMESPACE).results
    deadline = time.perf_counter() + JOB_TIMEOUT_SECONDS
    last = after
    while time.perf_counter() < deadline:
        worker.check_alive()
        for _stream, entries in redis.xread({results: last}, block=200) or []:
            for entry_id, fields in entries:
                last = entry_id
                if fields.get("type") == "job" and fields.get("job_id") == job_id:
                    if fields["state"] in ("done", "skipped", "nodata", "dead"):
                        return fields, time.perf_counter()
    raise RuntimeError(f"job {job_id} gave no final result within {JOB_TIMEOUT_SECONDS}s")


def last_result_id(redis: Any) -> str:
    from shared.keys import Keys

    newest = redis.xrevrange(Keys(NAMESPACE).results, count=1)
    return str(newest[0][0]) if newest else "0-0"


def run_service_job(
    redis: Any, worker: WorkerProcess, item: dict[str, str], size: int
) -> ServiceJob:
    from shared.keys import Keys

    after = last_result_id(redis)
    rss_before = rss_bytes(worker.pid)
    with TreeSampler(worker.pid) as sampler:
        job_id, queued = queue_as_dispatcher(redis, item, size)
        fields, finished = wait_for_result(redis, worker, job_id, after)
    record = redis.hgetall(Keys(NAMESPACE).job(job_id))
    if fields["state"] != "done":
        raise RuntimeError(f"job {job_id} ended {fields['state']}: {record.get('error')}")
    return ServiceJob(
        seconds=finished - queued,
        peak_rss=peak_rss_bytes(worker.pid),
        tree_peak_rss=sampler.peak,
        rss_before=rss_before,
        state=fields["state"],
        stages=json.loads(record.get("stages") or "{}"),
        outputs=json.loads(record.get("outputs") or "[]"),
    )


def service_run(bench: Bench, label: str) -> ServiceRun:
    """A fresh worker process; its start-up, then a first and a warm job (distinct prefixes)."""
    import redis as redis_sync

    redis = redis_sync.Redis.from_url(bench.servers.redis_url, decode_responses=True)
    worker = WorkerProcess(worker_env(bench), bench.work / f"worker-{label}.log")
    try:
        startup = worker.wait_ready()
        idle_rss = rss_bytes(worker.pid)
        first_item = work_item(
            bench.bounds, bench.year, f"bench/geomedian/{bench.run_id}/{label}-first"
        )
        first = run_service_job(redis, worker, first_item, bench.size)
        was_reset = reset_peak_rss(worker.pid)
        warm_item = work_item(
            bench.bounds, bench.year, f"bench/geomedian/{bench.run_id}/{label}-warm"
        )
        warm = run_service_job(redis, worker, warm_item, bench.size)
    finally:
        worker.stop()
        redis.close()
    return ServiceRun(startup, idle_rss, first, warm, was_reset)


# -- the bare script ---------------------------------------------------------------------------


@dataclass
class BareRun:
    core_seconds: float
    process_seconds: float
    import_seconds: float
    stages: dict[str, float]
    peak_rss: int
    cube_bytes: int
    cube_shape: dict[str, int]
    outputs: dict[str, str] = field(default_factory=dict)


def bare_run(bench: Bench, label: str) -> BareRun:
    """The bare script in its own process (so its peak RSS is its own)."""
    spec = {
        "db_url": bench.servers.db_url,
        "bounds": list(bench.bounds),
        "year": bench.year,
        "chunk_pixels": bench.chunk_pixels,
        "threads": bench.threads,
        "out": str(bench.work / "bare-out" / bench.run_id / label),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASK_", "ODC_", "DATACUBE_"))}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, __file__, "--bare", json.dumps(spec)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    stdout = process.stdout.read() if process.stdout else ""
    _pid, status, usage = os.wait4(process.pid, 0)
    process_seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"the bare script failed ({process.returncode}):\n{stdout[-3000:]}")
    report = json.loads(stdout.strip().splitlines()[-1])
    return BareRun(
        core_seconds=report["core_seconds"],
        process_seconds=process_seconds,
        import_seconds=report["import_seconds"],
        stages=report["stages"],
        peak_rss=usage.ru_maxrss * 1024,  # kilobytes on Linux
        cube_bytes=report["cube_bytes"],
        cube_shape=report["cube_shape"],
        outputs=report["outputs"],
    )


def bare_job(spec: dict[str, Any]) -> dict[str, Any]:
    """dc.load + geomedian_with_mads + write_cog, nothing else; runs in the bare process."""
    imports_started = time.perf_counter()
    from datetime import datetime, timedelta
    from datetime import time as day_time

    import numpy as np
    from odc.algo import geomedian_with_mads, keep_good_only
    from odc.geo.cog import write_cog
    from odc.geo.geobox import GeoBox

    from services.worker.loading import cell_longitude, solar_day_grouping
    from services.worker.products.geomedian import geomedian_settings
    from shared.datacube import DatacubeSettings, open_datacube
    from shared.solar_day import solar_day_at

    started = time.perf_counter()
    datacube = open_datacube(DatacubeSettings(db_url=spec["db_url"]))
    geobox = GeoBox.from_bbox(spec["bounds"], crs=CRS, resolution=RESOLUTION)
    tile = geobox.extent
    latitudes = tile.to_crs("EPSG:4326").boundingbox
    longitude = cell_longitude(geobox)
    year = spec["year"]
    # As the worker loads: searched by time (a day wider: the year is in solar days at the tile)
    # and latitude, footprints intersected in the tile's CRS (the Fiji footprints cross the
    # antimeridian and a longitude search misses them); reflectance bilinear, pixel_qa nearest,
    # one observation per solar day at the tile.
    candidates = datacube.find_datasets(
        product=PRODUCT,
        time=(
            datetime.combine(date(year, 1, 1) - timedelta(days=1), day_time.min, tzinfo=UTC),
            datetime.combine(date(year, 12, 31) + timedelta(days=1), day_time.max, tzinfo=UTC),
        ),
        lat=(latitudes.bottom, latitudes.top),
    )
    datasets = [
        d
        for d in candidates
        if d.extent is not None
        and solar_day_at(d.center_time, longitude).year == year
        and d.extent.to_crs(tile.crs).intersects(tile)
    ]
    chunk = spec["chunk_pixels"]
    cube = datacube.load(
        datasets=datasets,
        measurements=[*BANDS, MASK_BAND],
        like=geobox,
        group_by=solar_day_grouping(longitude),
        dask_chunks={"time": 1, "y": chunk, "x": chunk},
        resampling={"*": "bilinear", MASK_BAND: "nearest"},
    )
    searched = time.perf_counter()

    good = cube[MASK_BAND].isin(list(GOOD_PIXEL_QA))
    for band in BANDS:
        good = good & (cube[band] != REFLECTANCE_NODATA)
    clean = keep_good_only(cube[list(BANDS)], good)
    # dask's threaded scheduler, with as many threads as the worker's Dask has.
    result = geomedian_with_mads(clean, **geomedian_settings()).compute(
        scheduler="threads", num_workers=spec["threads"]
    )
    computed = time.perf_counter()

    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    levels = [2**n for n in range(1, 16) if math.ceil(max(geobox.shape) / 2 ** (n - 1)) > 512]
    outputs: dict[str, str] = {}
    for name in (*BANDS, "smad", "emad", "bcmad", "count"):
        layer = result[name]
        if name in BANDS:
            nodata: float = REFLECTANCE_NODATA
        elif name == "count":
            layer, nodata = layer.astype("int16"), -999
        else:
            nodata = math.nan
        floating = np.dtype(layer.dtype).kind == "f"
        path = out / f"{name}.tif"
        write_cog(
            layer,
            path,
            overwrite=True,
            blocksize=512,
            overview_levels=levels,
            overview_resampling="nearest" if name == "count" else "average",
            nodata=nodata,
            compress="DEFLATE",
            zlevel=6,
            predictor=3 if floating else 2,
        )
        outputs[name] = str(path)
    written = time.perf_counter()
    datacube.close()
    return {
        "import_seconds": started - imports_started,
        "core_seconds": written - started,
        "stages": {
            "search": searched - started,
            "load+compute": computed - searched,
            "write": written - computed,
        },
        "cube_bytes": int(cube.nbytes),
        "cube_shape": {str(dim): int(length) for dim, length in cube.sizes.items()},
        "datasets": len(datasets),
        "outputs": outputs,
        "maxrss_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


# -- checking and reporting --------------------------------------------------------------------


def same_pixels(service_outputs: Sequence[str], bare_outputs: dict[str, str]) -> list[str]:
    """Bands whose service COG differs from the bare script's (both should be identical)."""
    import numpy as np
    import rasterio

    differing = []
    for band in (*BANDS, "count"):
        service_path = next(url for url in service_outputs if url.endswith(f"_{band}.tif"))
        with rasterio.open(service_path.removeprefix("file://")) as one:
            first = one.read(1)
        with rasterio.open(bare_outputs[band]) as other:
            second = other.read(1)
        if not np.array_equal(first, second):
            differing.append(band)
    return differing


def best_median(values: Sequence[float]) -> str:
    return f"best {min(values):7.2f}   median {statistics.median(values):7.2f}"


def mebibytes(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"


def verdict(ratio: float, target: float) -> str:
    return f"target <= {target}: {'met' if ratio <= target else 'MISSED'}"


def report(bench: Bench, scenes: int, services: list[ServiceRun], bares: list[BareRun]) -> None:
    cube = bares[0].cube_bytes
    shape = bares[0].cube_shape
    dates = shape.get("time")
    chunk_source = "--chunk-pixels" if bench.chunk_pixels_given else "the worker's default"
    print(
        f"geomedian_job: {bench.size}x{bench.size} px at 30 m {bench.bounds} EPSG:3460, "
        f"Landsat 8 {bench.year}: {dates} dates ({scenes} scenes); {len(services)} repeats"
    )
    print(
        f"  reads in {bench.chunk_pixels} px chunks ({chunk_source}), {bench.threads} Dask threads;"
        f" {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end"
    )
    print(
        f"  loaded cube: {len(BANDS) + 1} measurements x {dates} x {shape.get('y')} x "
        f"{shape.get('x')} x 2 bytes = {mebibytes(cube)}"
    )

    warm = [run.warm.seconds for run in services]
    core = [run.core_seconds for run in bares]
    rows = [
        ("service: worker start-up (spawn to /healthz)", [r.startup_seconds for r in services]),
        ("service: first job (queued to result)", [r.first.seconds for r in services]),
        ("service: warm job (queued to result)", warm),
        ("bare: core (search, load, geomedian, COGs)", core),
        ("bare: imports", [r.import_seconds for r in bares]),
        ("bare: whole process (spawn to exit)", [r.process_seconds for r in bares]),
    ]
    print("  seconds")
    for label, values in rows:
        print(f"    {label:46s} {best_median(values)}")
    stage_names = sorted({stage for run in services for stage in run.warm.stages} - {"total"})
    stages = ", ".join(
        f"{name} {statistics.median(run.warm.stages.get(name, 0.0) for run in services):.2f}"
        for name in stage_names
    )
    bare_stages = ", ".join(
        f"{name} {statistics.median(run.stages[name] for run in bares):.2f}"
        for name in bares[0].stages
    )
    print(f"    service warm job's stages (median): {stages}")
    print(f"    bare stages (median): {bare_stages}")
    warm_ratio = statistics.median(warm) / statistics.median(core)
    print(
        f"  wall time, warm job / bare core: {warm_ratio:.2f} median, "
        f"{min(warm) / min(core):.2f} best   ({verdict(warm_ratio, TIME_TARGET)})"
    )
    with_start = statistics.median(r.startup_seconds + r.first.seconds for r in services)
    bare_process = statistics.median(r.process_seconds for r in bares)
    print(
        f"  wall time with the one-off costs, (start-up + first job) / bare process: "
        f"{with_start / bare_process:.2f} median"
    )

    memory: list[tuple[str, list[int]]] = [
        ("service: first job (VmHWM since spawn)", [r.first.peak_rss for r in services]),
        ("service: warm job (VmHWM reset before it)", [r.warm.peak_rss for r in services]),
        ("service: warm job (sampled process tree)", [r.warm.tree_peak_rss for r in services]),
        ("service: idle worker after start-up", [r.idle_rss for r in services]),
        ("service: before the warm job", [r.warm.rss_before for r in services]),
        ("bare script (ru_maxrss)", [r.peak_rss for r in bares]),
    ]
    print("  peak RSS, worst of the repeats, and / cube bytes")
    for label, peaks in memory:
        print(f"    {label:46s} {mebibytes(max(peaks)):>9s}  {max(peaks) / cube:5.2f}x")
    service_peak = max(
        max(r.first.peak_rss, r.warm.peak_rss, r.warm.tree_peak_rss) for r in services
    )
    memory_ratio = service_peak / cube
    bare_ratio = max(r.peak_rss for r in bares) / cube
    print(
        f"  peak memory / cube bytes: service {memory_ratio:.2f}, bare {bare_ratio:.2f}   "
        f"({verdict(memory_ratio, MEMORY_TARGET)})"
    )
    if not all(run.peak_was_reset for run in services):
        print("  note: VmHWM could not be reset here; warm peaks include the first job's")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1024, help="Tile edge in pixels (30 m).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--year", type=int, default=2019)
    parser.add_argument(
        "--at",
        nargs=2,
        type=float,
        metavar=("X", "Y"),
        default=None,
        help="EPSG:3460 point whose tile to use (default: the seed box's east-most tile).",
    )
    parser.add_argument(
        "--chunk-pixels",
        type=int,
        default=None,
        help="Run the worker with CONVEYOR_DEFAULT_CHUNK_PIXELS set to this (default: unset, "
        "the worker's own default); the bare script reads in the same chunks either way.",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="Kept afterwards if given.")
    parser.add_argument("--bare", default=None, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.bare is not None:
        print(json.dumps(bare_job(json.loads(arguments.bare))))
        return

    work = arguments.workdir or Path(tempfile.mkdtemp(prefix="geomedian-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    # PostgreSQL runs as an unprivileged user: its data directory's parents must be traversable.
    work.chmod(0o755)
    default_chunk, threads = worker_defaults()
    servers = start_servers(work / "state")
    bench = Bench(
        servers=servers,
        work=work,
        bounds=tile_bounds(arguments.size, tuple(arguments.at) if arguments.at else None),
        year=arguments.year,
        size=arguments.size,
        chunk_pixels=arguments.chunk_pixels or default_chunk,
        chunk_pixels_given=arguments.chunk_pixels is not None,
        threads=threads,
    )
    try:
        started = time.perf_counter()
        scenes = build_archive(servers.db_url, work / "archive", bench.bounds, bench.year)
        seconds = time.perf_counter() - started
        print(f"archive: {scenes} scenes over {bench.bounds} in {seconds:.1f} s", file=sys.stderr)
        services: list[ServiceRun] = []
        bares: list[BareRun] = []
        for repeat in range(arguments.repeats):
            # Alternate which goes first, so that drift in the machine's load hits both alike.
            if repeat % 2:
                service = service_run(bench, f"run{repeat}")
                bare = bare_run(bench, f"run{repeat}")
            else:
                bare = bare_run(bench, f"run{repeat}")
                service = service_run(bench, f"run{repeat}")
            services.append(service)
            bares.append(bare)
            differing = same_pixels(service.warm.outputs, bare.outputs)
            print(
                f"repeat {repeat}: service first {service.first.seconds:.2f} s, warm "
                f"{service.warm.seconds:.2f} s; bare {bare.core_seconds:.2f} s core; "
                f"outputs {'identical' if not differing else 'DIFFER in ' + ', '.join(differing)}",
                file=sys.stderr,
            )
        report(bench, scenes, services, bares)
    finally:
        stop_servers(servers)
        if arguments.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The chaos suite: the delivery guarantees checked while everything that can fail, fails.

Real processes on the embedded servers (valkey with AOF `everysec`, a replica for failovers,
PostgreSQL holding a small synthetic Landsat 8 archive): two dispatchers and three product
workers making real NDVI products on 32 px tiles. Work items arrive with `RPUSH jobProduct` and
`XADD conveyor:events` while, every few seconds, a random worker is SIGKILLed and replaced, and
in turn: a dispatcher is SIGKILLed, a worker drains on SIGTERM, a pending entry is deleted with
`XDEL`, the server is `kill -9`ed and restarted from its AOF, the server fails over to its
replica and back, and the server is down for a while. Then every invariant is checked from what
the run left behind: the queue, the job records, the outputs on disk and the workers' logs.

`run_chaos(plan, work_dir, db_url)` returns a `ChaosReport`; `report.table()` prints it and
`report.passed` says whether every invariant held. `scripts/chaos.py` runs the full form.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
import yaml
from redis.exceptions import ResponseError

from shared.embedded import EmbeddedValkey, free_port
from shared.keys import DISPATCHER_GROUP, WORKER_GROUP, Keys
from shared.messages import ProductRequest, parse_request
from shared.outages import QUEUE_ERRORS, is_outage
from tests.archive_support import build_archive
from tests.processes import ServiceProcess, service_env, wait_until
from tests.queue_support import Replica, fail_over, wait_replicating

T = TypeVar("T")

TILE_PIXELS = 32
RESOLUTION = 30.0
TILE_METRES = TILE_PIXELS * RESOLUTION
# Whole tiles of the grid anchored at the CRS origin, inside the seed's Fiji box.
ORIGIN = (TILE_METRES * 2219, TILE_METRES * 3646)
PERIOD = (date(2019, 1, 1), date(2019, 1, 31))
PRODUCT = "ls8_usgs_sr_scene"
FINAL = {"done", "nodata", "skipped", "dead"}


@dataclass(frozen=True)
class ChaosPlan:
    """How big the run is and how hard it is shaken."""

    requests: int
    tiles_x: int
    tiles_y: int
    workers: int = 3
    dispatchers: int = 2
    lease_seconds: float = 6.0
    max_attempts: int = 5
    drain_seconds: float = 2.0
    push_interval: float = 1.0
    worker_kill_interval: float = 10.0
    fault_gap: float = 12.0
    outage_seconds: float = 30.0
    failover_seconds: float = 5.0
    deadline_seconds: float = 3600.0
    seed: int = 11
    faults: bool = True
    concurrency: int = 1

    @property
    def jobs(self) -> int:
        return self.requests * self.tiles_x * self.tiles_y


FULL = ChaosPlan(requests=20, tiles_x=10, tiles_y=10)
SHORT = ChaosPlan(
    requests=4, tiles_x=10, tiles_y=5, push_interval=0.3, worker_kill_interval=4.0,
    fault_gap=3.0, outage_seconds=6.0, failover_seconds=2.0, deadline_seconds=300.0,
)  # fmt: skip


def work_item(number: int, plan: ChaosPlan) -> dict[str, str]:
    x, y = ORIGIN
    return {
        "job_code": "ndvi",
        "product": PRODUCT,
        "query_x_from": str(x),
        "query_y_from": str(y),
        "query_x_to": str(x + TILE_METRES * plan.tiles_x),
        "query_y_to": str(y + TILE_METRES * plan.tiles_y),
        "query_crs": "EPSG:3460",
        "time_from": PERIOD[0].isoformat(),
        "time_to": PERIOD[1].isoformat(),
        "output_crs": "EPSG:3460",
        "prefix": f"chaos/{number:03d}",
    }


def archive_bounds(plan: ChaosPlan) -> tuple[float, float, float, float]:
    x, y = ORIGIN
    margin = 2 * TILE_METRES
    return (
        x - margin,
        y - margin,
        x + TILE_METRES * plan.tiles_x + margin,
        y + TILE_METRES * plan.tiles_y + margin,
    )


# -- processes and faults ---------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    role: str
    service: ServiceProcess
    killed_at: float | None = None
    terminated: bool = False

    @property
    def alive(self) -> bool:
        return self.service.process.poll() is None


@dataclass
class Fault:
    name: str
    started: float
    ended: float = 0.0


class Fleet:
    """The services of the run, as real processes with a log file each."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: list[Proc] = []
        self.counter: dict[str, int] = defaultdict(int)

    def start(self, role: str) -> Proc:
        self.counter[role] += 1
        name = f"{role}-{self.counter[role]}"
        module = "services.worker" if role == "worker" else "services.dispatcher"
        env = self.env | {"CONVEYOR_METRICS_PORT": str(free_port())}
        service = ServiceProcess(module, env, ["--consumer", name], self.logs / f"{name}.log")
        proc = Proc(name, role, service)
        self.procs.append(proc)
        return proc

    def live(self, role: str) -> list[Proc]:
        return [p for p in self.procs if p.role == role and p.alive and not p.terminated]

    def working(self, role: str) -> list[Proc]:
        """Live services past their start-up (killing one still importing shows nothing)."""
        started = f'"{role} started"'
        return [p for p in self.live(role) if started in p.service.output]

    def kill(self, proc: Proc) -> None:
        proc.killed_at = time.time()
        proc.service.kill()

    async def terminate(self, proc: Proc, timeout: float = 120.0) -> int:
        proc.terminated = True
        return await asyncio.to_thread(proc.service.terminate, timeout)

    async def stop_all(self) -> None:
        running = [p for p in self.procs if p.alive]
        for proc in running:
            proc.terminated = True
            proc.service.process.terminate()
        for proc in running:
            try:
                await asyncio.to_thread(proc.service.process.wait, 120)
            except Exception:
                self.kill(proc)
        for proc in self.procs:
            proc.service.close()


async def through_outages(step: Callable[[], Awaitable[T]], limit: float = 120.0) -> T:
    """Run a harness query, waiting out the outages this harness itself causes."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return await step()
        except QUEUE_ERRORS as error:
            if not is_outage(error) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


# -- the run ------------------------------------------------------------------------------------


@dataclass
class ChaosRun:
    plan: ChaosPlan
    work: Path
    namespace: str
    server: EmbeddedValkey
    replica: Replica
    redis: aioredis.Redis
    fleet: Fleet
    output: Path
    bodies: list[dict[str, str]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    finished_at: float = 0.0
    started_at: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def keys(self) -> Keys:
        return Keys(self.namespace)

    def request_ids(self) -> list[str]:
        return [parse_request(body)[0].request_id for body in self.bodies]

    async def push_work(self) -> None:
        for number in range(self.plan.requests):
            body = work_item(number, self.plan)
            payload = json.dumps(body)
            if number % 2 == 0:
                await through_outages(lambda p=payload: self.redis.rpush("jobProduct", p))  # type: ignore[misc]
            else:
                await through_outages(
                    lambda p=payload: self.redis.xadd(
                        self.keys.events, {"payload": p, "_source": "chaos"}
                    )
                )
            self.bodies.append(body)
            await asyncio.sleep(self.plan.push_interval)

    async def complete(self) -> bool:
        if len(self.bodies) < self.plan.requests:
            return False
        if await self.redis.llen("jobProduct"):  # type: ignore[misc]
            return False
        for request_id in self.request_ids():
            if await self.redis.hget(self.keys.request(request_id), "state") != "finished":  # type: ignore[misc]
                return False
        for stream, group in ((self.keys.events, DISPATCHER_GROUP),
                              (self.keys.jobs("product"), WORKER_GROUP)):  # fmt: skip
            if (await self.redis.xpending(stream, group))["pending"]:
                return False
        return True

    async def jobs_done(self) -> int:
        return int(await self.redis.xlen(self.keys.results))

    # -- faults ---------------------------------------------------------------------------------

    async def keep_killing_workers(self, rng: random.Random) -> None:
        while True:
            await asyncio.sleep(self.plan.worker_kill_interval)
            working = self.fleet.working("worker")
            if len(working) < self.plan.workers:
                continue  # the last replacement is still starting: kill once the fleet is whole
            victim = rng.choice(working)
            fault = Fault(f"SIGKILL {victim.name}", time.time())
            self.fleet.kill(victim)
            self.fleet.start("worker")
            fault.ended = time.time()
            self.faults.append(fault)

    async def kill_a_dispatcher(self, rng: random.Random) -> None:
        victim = rng.choice(self.fleet.working("dispatcher") or self.fleet.live("dispatcher"))
        fault = Fault(f"SIGKILL {victim.name}", time.time())
        self.fleet.kill(victim)
        self.fleet.start("dispatcher")
        fault.ended = time.time()
        self.faults.append(fault)

    async def drain_a_worker(self, rng: random.Random) -> None:
        victim = rng.choice(self.fleet.working("worker") or self.fleet.live("worker"))
        fault = Fault(f"SIGTERM {victim.name} (drain)", time.time())
        self.fleet.start("worker")
        code = await self.fleet.terminate(victim)
        if code != 0:
            self.notes.append(f"{victim.name} exited {code} after SIGTERM (expected 0)")
        fault.ended = time.time()
        self.faults.append(fault)

    async def kill_a_worker_then_delete_an_entry_it_held(self, rng: random.Random) -> None:
        working = self.fleet.working("worker") or self.fleet.live("worker")
        victim = rng.choice(working)
        fault = Fault(f"SIGKILL {victim.name} (then XDEL)", time.time())
        self.fleet.kill(victim)
        self.fleet.start("worker")
        fault.ended = time.time()
        self.faults.append(fault)
        await self.delete_a_pending_entry(rng)

    async def delete_a_pending_entry(self, rng: random.Random) -> None:
        stream = self.keys.jobs("product")

        killed = {p.name for p in self.fleet.procs if p.killed_at is not None}

        async def pick() -> str | None:
            # Preferably an orphan (held by a killed worker): then nobody finishes its job, and
            # the deletion has to be found while reclaiming.
            pending = await self.redis.xpending_range(stream, WORKER_GROUP, "-", "+", 200)
            orphans = [p for p in pending if p["consumer"] in killed]
            chosen = orphans or pending
            return str(rng.choice(chosen)["message_id"]) if chosen else None

        deadline = time.monotonic() + 60
        while (entry_id := await through_outages(pick)) is None:
            if time.monotonic() > deadline:
                self.notes.append("no pending entry to XDEL")
                return
            await asyncio.sleep(0.1)
        fault = Fault(f"XDEL {entry_id}", time.time())
        await through_outages(lambda: self.redis.xdel(stream, entry_id))
        fault.ended = time.time()
        self.faults.append(fault)

    async def kill_the_server(self) -> None:
        fault = Fault("kill -9 valkey-server, restart from its AOF", time.time())
        self.server.kill()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(self.server.start)
        fault.ended = time.time()
        self.faults.append(fault)

    async def fail_over_and_back(self) -> None:
        await wait_replicating(self.replica, timeout=120)
        fault = Fault("failover to the replica and back", time.time())
        await fail_over(self.server.port, self.replica.port)
        await asyncio.sleep(self.plan.failover_seconds)
        await fail_over(self.replica.port, self.server.port)
        fault.ended = time.time()
        self.faults.append(fault)

    async def outage(self) -> None:
        fault = Fault(f"server down {self.plan.outage_seconds:g} s", time.time())
        await asyncio.to_thread(self.server.stop)
        await asyncio.sleep(self.plan.outage_seconds)
        await asyncio.to_thread(self.server.start)
        fault.ended = time.time()
        self.faults.append(fault)

    async def shake(self) -> None:
        rng = random.Random(self.plan.seed)

        async def some_result() -> bool:
            return bool(await through_outages(self.jobs_done))

        await wait_until(some_result, timeout=self.plan.deadline_seconds, interval=0.2)
        killer = asyncio.create_task(self.keep_killing_workers(rng))
        sequence: list[Callable[[], Awaitable[None]]] = [
            lambda: self.kill_a_dispatcher(rng),
            lambda: self.drain_a_worker(rng),
            lambda: self.kill_a_worker_then_delete_an_entry_it_held(rng),
            self.kill_the_server,
            self.fail_over_and_back,
            self.outage,
        ]
        try:
            for fault in sequence:
                await asyncio.sleep(self.plan.fault_gap)
                await fault()
            await asyncio.Event().wait()  # workers keep being killed until the work is done
        finally:
            killer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await killer


async def run_chaos(
    plan: ChaosPlan, work: Path, db_url: str, *, say: Callable[[str], None] = print
) -> ChaosReport:
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    started = time.monotonic()
    tell = say

    def say(message: str) -> None:
        tell(f"[{time.monotonic() - started:6.1f} s] {message}")

    say(f"archive: synthesising {PRODUCT} for {PERIOD[0]}..{PERIOD[1]} and indexing it")
    archive = await asyncio.to_thread(
        build_archive, db_url, work / "archive", PRODUCT, archive_bounds(plan), *PERIOD
    )
    server = EmbeddedValkey(work / "valkey", appendfsync="everysec")
    url = await asyncio.to_thread(server.start)
    replica = Replica(server.port, work / "replica")
    namespace = "conveyor"
    output = work / "out"
    env = service_env(
        url, namespace, **archive.environment,
        CONVEYOR_OUTPUT_URL=str(output), CONVEYOR_TILE_SIZE_PIXELS=str(TILE_PIXELS),
        CONVEYOR_LEASE_SECONDS=str(plan.lease_seconds),
        CONVEYOR_MAX_ATTEMPTS=str(plan.max_attempts), CONVEYOR_BLOCK_MS="500",
        CONVEYOR_DRAIN_SECONDS=str(plan.drain_seconds), CONVEYOR_DASK_THREADS="1",
        CONVEYOR_CONCURRENCY=str(plan.concurrency),
        CONVEYOR_CONSUMER_IDLE_SECONDS=str(plan.lease_seconds * 5),
    )  # fmt: skip
    from shared.redis_connection import connect

    redis = connect(url)
    fleet = Fleet(env, work / "logs")
    (work / "logs").mkdir(exist_ok=True)
    run = ChaosRun(plan, work, namespace, server, replica, redis, fleet, output)
    try:
        say("starting the services")
        for _ in range(plan.dispatchers):
            fleet.start("dispatcher")
        for _ in range(plan.workers):
            fleet.start("worker")
        run.started_at = time.time()
        say(f"running {plan.jobs} jobs ({plan.requests} requests) under faults")
        pusher = asyncio.create_task(run.push_work())
        shaker = asyncio.create_task(run.shake() if plan.faults else asyncio.Event().wait())
        deadline = time.monotonic() + plan.deadline_seconds
        last_report = 0.0
        while time.monotonic() < deadline:
            try:
                if await run.complete():
                    break
                if time.monotonic() - last_report > 15:
                    last_report = time.monotonic()
                    say(f"  {await run.jobs_done()} results, {len(run.faults)} faults so far")
            except QUEUE_ERRORS as error:
                if not is_outage(error):
                    raise
            if shaker.done() and shaker.exception() is not None:
                raise shaker.exception()  # type: ignore[misc]
            await asyncio.sleep(1.0)
        else:
            run.notes.append(f"not finished within {plan.deadline_seconds:g} s")
        run.finished_at = time.time()
        shaker.cancel()
        pusher.cancel()
        await asyncio.gather(shaker, pusher, return_exceptions=True)
        say("stopping the services")
        await fleet.stop_all()
        say("auditing")
        report = await audit(run)
        say("audited")
        report.seconds = time.monotonic() - started
        return report
    finally:
        await fleet.stop_all()
        await redis.aclose()
        replica.stop()
        server.stop()


# -- the audit ----------------------------------------------------------------------------------


@dataclass
class Check:
    invariant: str
    goal: str
    value: str
    ok: bool | None  # None: informational


@dataclass
class ChaosReport:
    plan: ChaosPlan
    checks: list[Check]
    faults: list[Fault]
    details: list[str]
    jobs: int = 0
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(check.ok is not False for check in self.checks)

    def table(self) -> str:
        rows = [("invariant", "goal", "measured", "")]
        for check in self.checks:
            verdict = "" if check.ok is None else ("ok" if check.ok else "FAILED")
            rows.append((check.invariant, check.goal, check.value, verdict))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = []
        for index, row in enumerate(rows):
            lines.append(
                "| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |"
            )
            if index == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)


async def audit(run: ChaosRun) -> ChaosReport:
    keys = run.keys
    redis = run.redis
    details: list[str] = list(run.notes)
    requests = [parse_request(body)[0] for body in run.bodies]
    dead_letters = [fields for _id, fields in await redis.xrange(keys.dead)]
    dead_jobs = {f.get("job_id"): f for f in dead_letters if f.get("job_id") and f.get("reason")}

    lost = 0
    items_lost = 0
    counters_wrong = 0
    jobs_total = 0
    committed_expected: set[Path] = set()
    outcomes: dict[str, int] = defaultdict(int)
    for request in requests:
        record = await redis.hgetall(keys.request(request.request_id))  # type: ignore[misc]
        if not record:
            items_lost += 1
            details.append(f"request {request.request_id} was never dispatched")
            continue
        job_ids = await redis.lrange(keys.request_jobs(request.request_id), 0, -1)  # type: ignore[misc]
        planned = planned_jobs(request)
        if sorted(job_ids) != sorted(planned):
            details.append(f"request {request.request_id}: its job list differs from its plan")
            counters_wrong += 1
        jobs_total += len(planned)
        states: dict[str, int] = defaultdict(int)
        for job_id, metadata in planned.items():
            state = await redis.hget(keys.job(job_id), "state") or "missing"  # type: ignore[misc]
            outcomes[state] += 1
            if state in FINAL:
                states[state] += 1
            if state in ("done", "skipped"):
                committed_expected.add(run.output / metadata)
                if not (run.output / metadata).exists():
                    lost += 1
                    details.append(f"job {job_id} is {state} but {metadata} is missing")
            elif state == "dead":
                if job_id not in dead_jobs:
                    lost += 1
                    details.append(f"job {job_id} is dead without a dead letter")
            elif state != "nodata":
                lost += 1
                details.append(f"job {job_id} ended {state}")
        recorded = {s: int(record.get(f"jobs_{s}", 0)) for s in FINAL}
        finished = int(record.get("jobs_finished", 0))
        if (
            recorded != {s: states.get(s, 0) for s in FINAL}
            or finished != sum(recorded.values())
            or int(record.get("jobs_total", -1)) != len(planned)
            or (record.get("state") == "finished") != (finished == len(planned))
        ):
            counters_wrong += 1
            details.append(f"request {request.request_id}: counters {record} vs states {states}")

    broken, partials = check_outputs(run.output)
    overlaps = count_overlaps(run, details)
    pending = 0
    for stream, group in ((keys.events, DISPATCHER_GROUP), (keys.jobs("product"), WORKER_GROUP)):
        try:
            pending += int((await redis.xpending(stream, group))["pending"])
        except ResponseError as error:
            # No stream or group: nothing pending there; the rows above say what was lost.
            if "NOGROUP" not in str(error):
                raise
            details.append(f"{stream}: no group {group} at the end of the run")
    legacy = sum([await redis.llen(name) for name in ("jobProduct", "jobS2")])  # type: ignore[misc]
    recovery = await recovery_times(run)

    checks = [
        Check("jobs lost (neither committed nor dead-lettered with a reason)", "0",
              f"{lost} of {jobs_total}", lost == 0),
        Check("work items never dispatched", "0", f"{items_lost} of {len(requests)}",
              items_lost == 0),
        Check("overlapping executions of one job", "0", str(overlaps), overlaps == 0),
        Check("committed outputs with a missing band, or temporary files left", "0",
              f"{broken} + {partials}", broken + partials == 0),
        Check("requests whose counters disagree with their jobs' outcomes", "0",
              f"{counters_wrong} of {len(requests)}", counters_wrong == 0),
        Check("entries left pending, items left in the legacy lists", "0",
              f"{pending} + {legacy}", pending + legacy == 0),
    ]  # fmt: skip
    kinds = fault_kinds(run.faults)
    checks.append(
        Check("kinds of fault injected", f"all {len(FAULT_KINDS)}",
              f"{len(kinds)} ({', '.join(sorted(kinds))})", kinds == set(FAULT_KINDS))
    )  # fmt: skip
    for name, seconds in recovery:
        checks.append(Check(f"recovery after {name}", "printed", seconds, None))
    outcome_text = ", ".join(f"{state} {count}" for state, count in sorted(outcomes.items()))
    details.insert(0, f"job outcomes: {outcome_text}; dead letters: {len(dead_letters)}")
    return ChaosReport(run.plan, checks, run.faults, details, jobs=jobs_total)


FAULT_KINDS = {
    "SIGKILL worker": "a worker SIGKILLed",
    "SIGKILL dispatcher": "a dispatcher SIGKILLed",
    "SIGTERM": "a worker drained",
    "XDEL": "a pending entry deleted",
    "kill -9": "the server killed",
    "failover": "a failover",
    "server down": "an outage",
}


def fault_kinds(faults: list[Fault]) -> set[str]:
    return {kind for fault in faults for kind in FAULT_KINDS if fault.name.startswith(kind)}


def planned_jobs(request: ProductRequest | Any) -> dict[str, str]:
    """Job id -> the metadata document its product is committed by, as the services plan it."""
    from services.dispatcher.planning import plan_jobs
    from services.worker.outputs import BandSpec, output_spec_for_job
    from services.worker.outputs.naming import layout_for
    from services.worker.product_runner import output_product_name
    from services.worker.products import get_product
    from shared.jobs import ProductJob

    planned = {}
    for job in plan_jobs(request, tile_size=None, tile_size_pixels=TILE_PIXELS):
        assert isinstance(job, ProductJob)
        product = get_product(job.job_code)
        bands = {
            name: BandSpec(dtype=band.dtype, nodata=band.nodata, units=band.units,
                           overview_resampling=band.overview_resampling)
            for name, band in product.outputs.items()
        }  # fmt: skip
        spec = output_spec_for_job(
            job, product_name=output_product_name(job), bands=bands, sources=()
        )
        planned[job.job_id] = layout_for(spec).metadata_key
    return planned


def check_outputs(output: Path) -> tuple[int, int]:
    """(committed products missing a file, temporary files left) under `output`."""
    broken = 0
    for metadata in output.rglob("*.odc-metadata.yaml"):
        document = yaml.safe_load(metadata.read_text())
        for band in document.get("measurements", {}).values():
            if not (metadata.parent / band["path"]).is_file():
                broken += 1
                break
    partials = sum(1 for _ in output.rglob("*.partial"))
    return broken, partials


@dataclass
class Execution:
    job_id: str
    owner: str
    started: float
    ended: float | None


def executions(run: ChaosRun) -> list[Execution]:
    """Every job execution the workers logged, with its owner; a SIGKILLed worker's open ones
    end when it was killed."""
    found: list[Execution] = []
    for proc in run.fleet.procs:
        if proc.role != "worker" or not proc.service.log_path.exists():
            continue
        open_ones: dict[str, Execution] = {}
        for line in proc.service.log_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            name = event.get("event")
            if name not in ("job execution started", "job execution ended"):
                continue
            stamp = datetime.fromisoformat(event["timestamp"]).timestamp()
            job_id = str(event["job_id"])
            if name == "job execution started":
                open_ones[job_id] = Execution(job_id, str(event["owner"]), stamp, None)
            elif job_id in open_ones:
                execution = open_ones.pop(job_id)
                execution.ended = stamp
                found.append(execution)
        for execution in open_ones.values():
            execution.ended = proc.killed_at
            found.append(execution)
    return found


def count_overlaps(run: ChaosRun, details: list[str]) -> int:
    by_job: dict[str, list[Execution]] = defaultdict(list)
    for execution in executions(run):
        by_job[execution.job_id].append(execution)
    overlaps = 0
    for job_id, spans in by_job.items():
        spans.sort(key=lambda e: e.started)
        latest_end = math.inf if spans[0].ended is None else spans[0].ended
        for span in spans[1:]:
            if span.started < latest_end:
                overlaps += 1
                details.append(f"job {job_id}: {span.owner} started while another ran it")
            latest_end = max(latest_end, math.inf if span.ended is None else span.ended)
    return overlaps


async def recovery_times(run: ChaosRun) -> list[tuple[str, str]]:
    """For each fault: seconds from its start until a job finished after it was over."""
    finished = [
        int(entry_id.split("-")[0]) / 1000
        for entry_id, fields in await run.redis.xrange(run.keys.results)
        if fields.get("type") == "job" and fields.get("state") in FINAL
    ]
    finished.sort()
    rows: list[tuple[str, str]] = []
    worker_kills: list[float] = []
    for fault in run.faults:
        after = next((t for t in finished if t > fault.ended), None)
        seconds = None if after is None else after - fault.started
        if fault.name.startswith("SIGKILL worker"):
            if seconds is not None:
                worker_kills.append(seconds)
            continue
        rows.append(
            (fault.name, "no job finished after it" if seconds is None else f"{seconds:.1f} s")
        )
    if worker_kills:
        rows.insert(0, (
            f"each of {len(worker_kills)} worker SIGKILLs",
            f"median {statistics.median(worker_kills):.1f} s, max {max(worker_kills):.1f} s",
        ))  # fmt: skip
    return rows


def environment_summary() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} CPUs, load average {load:.1f}"

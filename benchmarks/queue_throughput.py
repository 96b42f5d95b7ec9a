"""Queue throughput: no-op jobs through our streams layer against a raw loop and three peers.

Every contender gets the same job count on the same embedded valkey-server (AOF on, flushed and
its AOF rewritten between runs) and enqueues all jobs first with its own library's API (the
enqueue rate is reported apart). Then 2 consumer processes start; each waits, connected, at a
start gate (a hook of the library: taskiq WORKER_STARTUP, arq on_startup, celery worker_ready),
so that interpreter start-up is neither timed nor staggers them. Consumption is timed from the
gate opening until Redis shows every job acknowledged or completed (stream lag + pending, arq's
queue, celery's queue + unacked), polled every few milliseconds. Each job calls a probe that
counts it, and the counts must add up to the jobs enqueued. Contenders:

  ours      `shared.streams.ConsumerGroup`: read a batch, handle each entry, ack the batch
  raw       bare redis-py: pipelined XADD; XACK + next XREADGROUP in one round trip (the ceiling)
  taskiq    taskiq-redis `RedisStreamBroker`, `taskiq worker --workers 2`
  arq       arq, 2 `run_worker` processes
  celery    Celery + Redis broker, 2 `celery worker --pool solo` processes

`ours-ack-each` (run only when named) acknowledges each entry on its own, as `services.worker`
does today. Peers run at their fastest honest settings (see `benchmarks/contenders/`).

    .venv/bin/python benchmarks/queue_throughput.py --jobs 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    # Run as `python benchmarks/queue_throughput.py`: make the `benchmarks` package importable.
    sys.path.insert(0, str(REPO))

from benchmarks.contenders.environment import (  # noqa: E402
    CELERY_PREFETCH_ENV,
    PROBE_DIR_ENV,
    REDIS_URL_ENV,
)
from benchmarks.contenders.probe import (  # noqa: E402
    open_start_gate,
    processes_ready,
    read_probes,
)
from shared.embedded import EmbeddedValkey  # noqa: E402
from shared.logging import configure_logging  # noqa: E402

CONTENDERS_PACKAGE = "benchmarks.contenders"
CONSUMER_PROCESSES = 2
OURS = "ours"
RAW = "raw"


@dataclass(frozen=True)
class Tuning:
    """Consumer settings; ours and raw share theirs, peers get their fastest honest settings."""

    readers: int
    batch: int
    block_ms: int
    taskiq_max_async_tasks: int
    arq_max_jobs: int
    arq_poll_delay: float
    celery_prefetch: int
    celery_pool: str


@dataclass(frozen=True)
class RunPlan:
    url: str
    probe_dir: Path
    tuning: Tuning


Remaining = Callable[[redis.Redis], int]


@dataclass(frozen=True)
class Contender:
    name: str
    module: str
    is_peer: bool
    describe: Callable[[Tuning], str]
    consumers: Callable[[RunPlan], list[list[str]]]
    remaining: Remaining


@dataclass
class RunResult:
    """One run: `consume_seconds` from the start gate opening to the last job acknowledged,
    `startup_seconds` from spawning the consumers until all of them were ready at the gate."""

    name: str
    jobs: int
    enqueue_seconds: float = 0.0
    consume_seconds: float = 0.0
    startup_seconds: float = 0.0
    handled: int | None = None
    error: str | None = None

    @property
    def consume_rate(self) -> float:
        return self.jobs / self.consume_seconds if self.consume_seconds > 0 else 0.0

    @property
    def enqueue_rate(self) -> float:
        return self.jobs / self.enqueue_seconds if self.enqueue_seconds > 0 else 0.0


# -- how each contender is run and how Redis says it is done ---------------------------------


def stream_remaining(stream: str, group: str) -> Remaining:
    """Entries not yet delivered (lag) plus delivered but not acknowledged (pending)."""

    def remaining(client: redis.Redis) -> int:
        pipe = client.pipeline(transaction=False)
        pipe.xlen(stream)
        pipe.xinfo_groups(stream)
        length, groups = pipe.execute()
        for info in groups:
            if info["name"] == group:
                lag = info.get("lag")
                if lag is None:
                    lag = int(length) - int(info.get("entries-read") or 0)
                return int(lag) + int(info["pending"])
        return int(length)

    return remaining


def arq_remaining(client: redis.Redis) -> int:
    # arq removes a job from its queue sorted set only when the job has finished.
    return int(client.zcard("arq:queue"))  # type: ignore[arg-type]


def celery_remaining(client: redis.Redis) -> int:
    # With late acks a delivered task stays in kombu's `unacked` hash until it has run.
    pipe = client.pipeline(transaction=False)
    pipe.llen("celery")
    pipe.hlen("unacked")
    return sum(int(count) for count in pipe.execute())


def module_command(module: str, *arguments: str) -> list[str]:
    return [sys.executable, "-m", f"{CONTENDERS_PACKAGE}.{module}", *arguments]


def stream_consumers(module: str, *extra: str) -> Callable[[RunPlan], list[list[str]]]:
    def commands(plan: RunPlan) -> list[list[str]]:
        return [
            module_command(
                module,
                "consume",
                "--url",
                plan.url,
                "--consumer",
                f"bench-{number}",
                "--probe-dir",
                str(plan.probe_dir),
                "--readers",
                str(plan.tuning.readers),
                "--batch",
                str(plan.tuning.batch),
                "--block-ms",
                str(plan.tuning.block_ms),
                *extra,
            )
            for number in range(1, CONSUMER_PROCESSES + 1)
        ]

    return commands


def taskiq_consumers(plan: RunPlan) -> list[list[str]]:
    # One supervisor with 2 worker processes: the CLI's own way of running 2 consumers.
    return [
        [
            sys.executable,
            "-m",
            "taskiq",
            "worker",
            f"{CONTENDERS_PACKAGE}.taskiq_peer:broker",
            "--workers",
            str(CONSUMER_PROCESSES),
            "--log-level",
            "WARNING",
            "--max-async-tasks",
            str(plan.tuning.taskiq_max_async_tasks),
        ]
    ]


def arq_consumers(plan: RunPlan) -> list[list[str]]:
    return [
        module_command(
            "arq_peer",
            "consume",
            "--url",
            plan.url,
            "--consumer",
            f"bench-{number}",
            "--probe-dir",
            str(plan.probe_dir),
            "--max-jobs",
            str(plan.tuning.arq_max_jobs),
            "--poll-delay",
            str(plan.tuning.arq_poll_delay),
        )
        for number in range(1, CONSUMER_PROCESSES + 1)
    ]


def celery_consumers(plan: RunPlan) -> list[list[str]]:
    return [
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            f"{CONTENDERS_PACKAGE}.celery_peer",
            "worker",
            "--pool",
            plan.tuning.celery_pool,
            "--concurrency",
            "1",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
            "-n",
            f"bench-{number}@127.0.0.1",
        ]
        for number in range(1, CONSUMER_PROCESSES + 1)
    ]


def _stream_setup(tuning: Tuning) -> str:
    return f"{CONSUMER_PROCESSES} proc x {tuning.readers} readers, batch {tuning.batch}"


CONTENDERS: dict[str, Contender] = {
    contender.name: contender
    for contender in (
        Contender(
            OURS, "streams_layer", False, _stream_setup,
            stream_consumers("streams_layer"), stream_remaining("bench:jobs:product", "workers"),
        ),
        Contender(
            RAW, "raw_redis", False, _stream_setup,
            stream_consumers("raw_redis"), stream_remaining("raw:jobs", "workers"),
        ),
        Contender(
            "taskiq", "taskiq_peer", True,
            lambda t: f"{CONSUMER_PROCESSES} proc x {t.taskiq_max_async_tasks} async tasks",
            taskiq_consumers, stream_remaining("taskiq", "taskiq"),
        ),
        Contender(
            "arq", "arq_peer", True,
            lambda t: f"{CONSUMER_PROCESSES} proc, max_jobs {t.arq_max_jobs}, "
            f"poll {t.arq_poll_delay:g}s",
            arq_consumers, arq_remaining,
        ),
        Contender(
            "celery", "celery_peer", True,
            lambda t: f"{CONSUMER_PROCESSES} proc {t.celery_pool} x1, prefetch {t.celery_prefetch}",
            celery_consumers, celery_remaining,
        ),
        Contender(
            "ours-ack-each", "streams_layer", False,
            lambda t: f"{_stream_setup(t)}, 1 ack/entry",
            stream_consumers("streams_layer", "--ack-each"),
            stream_remaining("bench:jobs:product", "workers"),
        ),
    )
}  # fmt: skip
DEFAULT_CONTENDERS = (OURS, RAW, "taskiq", "arq", "celery")


# -- processes: every one started here is stopped here, whatever happens -------------------


@dataclass
class Processes:
    """Consumer process groups started by the benchmark (each in its own session)."""

    running: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, command: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                list(command), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.running.append(process)

    def check_running(self, deadline: float, situation: str) -> None:
        """Fail the run if a consumer has exited or time is up."""
        for process in self.running:
            if process.poll() is not None:
                raise RuntimeError(f"a consumer exited with {process.returncode} {situation}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out {situation}")

    def stop(self, grace_seconds: float = 10.0) -> None:
        """SIGTERM every group (consumers then write their final counts), SIGKILL stragglers."""
        for process in self.running:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for process in self.running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
        for process in self.running:
            # The group, not just the leader: taskiq's workers are children of its supervisor.
            _signal_group(process, signal.SIGKILL)
            process.wait()
        self.running.clear()


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _raise_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


# -- one run -----------------------------------------------------------------------------------


def reset_server(client: redis.Redis) -> None:
    """An empty server with a small AOF, so no rewrite starts in the middle of a run."""
    client.flushall()
    with contextlib.suppress(redis.ResponseError):
        client.bgrewriteaof()
    while True:
        persistence: dict[str, Any] = client.info("persistence")  # type: ignore[assignment]
        if not persistence["aof_rewrite_in_progress"] and not persistence["aof_rewrite_scheduled"]:
            return
        time.sleep(0.05)


def subprocess_env(url: str, probe_dir: Path, tuning: Tuning) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    env.update(
        {
            REDIS_URL_ENV: url,
            PROBE_DIR_ENV: str(probe_dir),
            CELERY_PREFETCH_ENV: str(tuning.celery_prefetch),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        }
    )
    return env


def enqueue(contender: Contender, url: str, jobs: int, env: dict[str, str], log: Path) -> float:
    command = module_command(contender.module, "produce", "--url", url, "--jobs", str(jobs))
    completed = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    log.write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0:
        raise RuntimeError(f"producer exited with {completed.returncode}; see {log}")
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    return float(report["seconds"])


def run_once(
    contender: Contender,
    *,
    jobs: int,
    url: str,
    client: redis.Redis,
    tuning: Tuning,
    work_dir: Path,
    poll_seconds: float,
    timeout_seconds: float,
) -> RunResult:
    result = RunResult(contender.name, jobs)
    probe_dir = work_dir / "probes"
    probe_dir.mkdir(parents=True)
    env = subprocess_env(url, probe_dir, tuning)
    reset_server(client)
    result.enqueue_seconds = enqueue(contender, url, jobs, env, work_dir / "producer.log")
    queued = contender.remaining(client)
    if queued != jobs:
        raise RuntimeError(f"{jobs} jobs enqueued but Redis shows {queued} waiting")

    consumers = Processes()
    try:
        spawned_at = time.monotonic()
        plan = RunPlan(url, probe_dir, tuning)
        for number, command in enumerate(contender.consumers(plan), start=1):
            consumers.start(command, env, work_dir / f"consumer-{number}.log")
        deadline = spawned_at + timeout_seconds
        while processes_ready(probe_dir) < CONSUMER_PROCESSES:
            consumers.check_running(deadline, "before all consumers were ready")
            time.sleep(poll_seconds)
        open_start_gate(probe_dir)
        started_at = time.monotonic()
        while (left := contender.remaining(client)) > 0:
            consumers.check_running(deadline, f"with {left} of {jobs} jobs left")
            time.sleep(poll_seconds)
        done_at = time.monotonic()
    finally:
        consumers.stop()
    probes = read_probes(probe_dir)
    if probes.first_job_at is None:
        raise RuntimeError(f"no consumer reported a job; see {work_dir}")
    result.consume_seconds = done_at - started_at
    result.startup_seconds = started_at - spawned_at
    result.handled = probes.handled
    if result.handled is not None and result.handled != jobs:
        raise RuntimeError(f"consumers handled {result.handled} jobs, expected {jobs}")
    return result


def log_tail(work_dir: Path, lines: int = 15) -> str:
    tails: list[str] = []
    for path in sorted(work_dir.glob("*.log")):
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
        if text:
            tails.append(f"--- {path.name}\n" + "\n".join(text))
    return "\n".join(tails)


# -- report --------------------------------------------------------------------------------


def best(results: list[RunResult]) -> RunResult | None:
    finished = [result for result in results if result.error is None]
    return max(finished, key=lambda result: result.consume_rate, default=None)


def report(
    names: Sequence[str],
    results: dict[str, list[RunResult]],
    tuning: Tuning,
    jobs: int,
    load: tuple[float, float],
) -> str:
    best_by_name = {name: best(results[name]) for name in names}
    raw = best_by_name.get(RAW)
    lines = [
        f"{jobs} no-op jobs, {CONSUMER_PROCESSES} consumer processes, best of "
        f"{max(len(runs) for runs in results.values())} runs; "
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at start, {load[1]:.1f} at end",
        "jobs/s: from the consumers' start (all ready, started together) to the last job acked;",
        "start-up: from spawning the consumer processes until all were ready to consume",
        "",
        f"{'contender':<14} {'consumers':<42} {'enqueue/s':>10} {'jobs/s':>9} {'vs raw':>7} "
        f"{'start-up s':>11}",
    ]
    for name in names:
        result = best_by_name[name]
        setup = CONTENDERS[name].describe(tuning)
        if result is None:
            failure = next((run.error for run in results[name] if run.error), "no run")
            lines.append(f"{name:<14} {setup:<42} failed: {failure}")
            continue
        versus_raw = f"{result.consume_rate / raw.consume_rate:.0%}" if raw else "-"
        enqueue_rate = max(run.enqueue_rate for run in results[name] if run.error is None)
        lines.append(
            f"{name:<14} {setup:<42} {enqueue_rate:>10,.0f} {result.consume_rate:>9,.0f} "
            f"{versus_raw:>7} {result.startup_seconds:>11.2f}"
        )
    ours = best_by_name.get(OURS)
    peers = [
        result
        for name, result in best_by_name.items()
        if result is not None and CONTENDERS[name].is_peer
    ]
    best_peer = max(peers, key=lambda result: result.consume_rate, default=None)
    lines.append("")
    if ours is not None and raw is not None:
        share = ours.consume_rate / raw.consume_rate
        verdict = "met" if share >= 0.5 else "MISSED"
        lines.append(f"ours / raw: {share:.0%} (target >= 50%: {verdict})")
    if ours is not None and best_peer is not None:
        factor = ours.consume_rate / best_peer.consume_rate
        verdict = "met" if factor >= 2 else "MISSED"
        lines.append(
            f"ours / best peer ({best_peer.name}): {factor:.1f}x (target >= 2x: {verdict})"
        )
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=20000, help="jobs per contender and run")
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender; best is shown")
    parser.add_argument(
        "--contenders",
        default=",".join(DEFAULT_CONTENDERS),
        help=f"comma-separated, from {', '.join(CONTENDERS)}",
    )
    parser.add_argument(
        "--readers",
        type=int,
        default=1,
        help="ours/raw: concurrent read loops per process (the worker and dispatcher run one)",
    )
    parser.add_argument("--batch", type=int, default=100, help="ours/raw: entries per read")
    parser.add_argument("--block-ms", type=int, default=2000, help="ours/raw: XREADGROUP BLOCK")
    parser.add_argument("--taskiq-max-async-tasks", type=int, default=100)
    parser.add_argument("--arq-max-jobs", type=int, default=100)
    parser.add_argument("--arq-poll-delay", type=float, default=0.001, help="seconds")
    parser.add_argument("--celery-prefetch", type=int, default=4, help="prefetch multiplier")
    parser.add_argument("--celery-pool", choices=("solo", "prefork"), default="solo")
    parser.add_argument(
        "--appendfsync", choices=("always", "everysec", "no"), default="everysec",
        help="AOF fsync policy of the embedded valkey-server (AOF is always on)",
    )  # fmt: skip
    parser.add_argument("--poll-ms", type=float, default=5.0, help="completion polling interval")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--keep", action="store_true", help="keep the logs and server data")
    arguments = parser.parse_args(argv)
    names = [name.strip() for name in arguments.contenders.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s) {', '.join(unknown)}; known: {', '.join(CONTENDERS)}")
    if arguments.jobs < 1 or arguments.repeat < 1:
        parser.error("--jobs and --repeat must be at least 1")
    arguments.names = names
    return arguments


def rounds(names: Sequence[str], repeat: int) -> Iterator[tuple[int, str]]:
    """Each round runs every contender once, starting one further along, so that no contender
    always runs first (or right after the same neighbour)."""
    for round_number in range(repeat):
        offset = round_number % len(names)
        for name in [*names[offset:], *names[:offset]]:
            yield round_number + 1, name


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    configure_logging("console", "WARNING")
    tuning = Tuning(
        readers=arguments.readers,
        batch=arguments.batch,
        block_ms=arguments.block_ms,
        taskiq_max_async_tasks=arguments.taskiq_max_async_tasks,
        arq_max_jobs=arguments.arq_max_jobs,
        arq_poll_delay=arguments.arq_poll_delay,
        celery_prefetch=arguments.celery_prefetch,
        celery_pool=arguments.celery_pool,
    )
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_on_signal)
    load_at_start = os.getloadavg()[0]
    work_root = Path(tempfile.mkdtemp(prefix="queue-throughput-"))
    server = EmbeddedValkey(work_root / "valkey", appendfsync=arguments.appendfsync)
    results: dict[str, list[RunResult]] = {name: [] for name in arguments.names}
    failed = False
    try:
        url = server.start()
        client: redis.Redis = redis.Redis.from_url(url, decode_responses=True)
        print(f"valkey-server {url} (AOF on, appendfsync {arguments.appendfsync})", file=sys.stderr)
        for round_number, name in rounds(arguments.names, arguments.repeat):
            work_dir = work_root / f"round-{round_number}" / name
            try:
                result = run_once(
                    CONTENDERS[name],
                    jobs=arguments.jobs,
                    url=url,
                    client=client,
                    tuning=tuning,
                    work_dir=work_dir,
                    poll_seconds=arguments.poll_ms / 1000,
                    timeout_seconds=arguments.timeout,
                )
            except (RuntimeError, subprocess.TimeoutExpired, redis.RedisError) as error:
                failed = True
                result = RunResult(name, arguments.jobs, error=str(error))
                print(f"round {round_number} {name}: FAILED {error}", file=sys.stderr)
                print(log_tail(work_dir), file=sys.stderr)
            else:
                print(
                    f"round {round_number} {name}: enqueue {result.enqueue_seconds:.2f}s, "
                    f"consume {result.consume_seconds:.2f}s = {result.consume_rate:,.0f} jobs/s, "
                    f"start-up {result.startup_seconds:.2f}s, handled {result.handled}",
                    file=sys.stderr,
                )
            results[name].append(result)
        client.close()
        load = (load_at_start, os.getloadavg()[0])
        print(report(arguments.names, results, tuning, arguments.jobs, load))
    finally:
        server.stop()
        if arguments.keep:
            print(f"logs and data kept in {work_root}", file=sys.stderr)
        else:
            shutil.rmtree(work_root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

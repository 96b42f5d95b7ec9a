"""Replay an arrival trace through autoscalers with simulated workers, and compare them.

Three contenders see the same jobs:

- `conveyor`: our `decide`, polled every `poll_interval_seconds`;
- `keda+hpa`: the model in `keda_hpa.py` (KEDA 30 s poll on lag, HPA 15 s sync, 300 s window);
- `oracle`: the lower bound in `oracle.py`.

Simulated workers behave like pods of the worker Deployment: a new one is ready after
`startup_seconds`; a ready one takes the oldest waiting job as soon as it is idle (one job at a
time, as with `CONVEYOR_CONCURRENCY=1`); scaling down stops the not-yet-ready ones first and then
the most recently ready (Kubernetes' ReplicaSet order); a stopped worker with a job finishes it
before it exits (SIGTERM drain), an idle one exits at once. Worker-seconds count every worker's
life from creation to exit, start-up included.

Metrics per contender: worker-seconds, queue wait (p50/p99/max, arrival to start), scale events
(changes of the replica count) and flaps. A **flap** is a scale event in the opposite direction
of the previous one less than `flap_window_seconds` (60 s) after it: capacity was added and
removed again (or removed and added again) before a new worker could even have paid for its
start-up. Reaction time is from a marked burst's first job to the first scale-up after it.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from services.autoscaler.policy import History, Observation, ScalingPolicy, decide
from services.autoscaler.simulation.keda_hpa import KedaHpaModel, KedaHpaSettings
from services.autoscaler.simulation.oracle import oracle_schedule
from services.autoscaler.simulation.traces import Trace

StopOrder = Literal["newest", "idle-first"]


@dataclass(frozen=True)
class SimulationSettings:
    poll_interval_seconds: float = 2.0
    startup_seconds: float = 30.0
    flap_window_seconds: float = 60.0
    sample_every_seconds: float = 5.0
    stop_order: StopOrder = "newest"


@dataclass(frozen=True)
class ClusterView:
    """What an autoscaler can read: the queue and the Deployment's replicas."""

    lag: int
    pending: int
    current_replicas: int
    ready_workers: int


class Controller(Protocol):
    name: str

    def ticks(self) -> Sequence[tuple[float, str]]:
        """(interval, tick name) of each periodic loop."""
        ...

    def on_tick(self, tick: str, now: float, view: ClusterView) -> int | None:
        """The new replica count, or None to leave it."""
        ...


@dataclass
class PolicyController:
    """Our policy, as the service runs it: observe, decide, apply."""

    policy: ScalingPolicy
    poll_interval_seconds: float = 2.0
    name: str = "conveyor"
    history: History = field(default_factory=History)
    reasons: dict[str, int] = field(default_factory=dict)

    def ticks(self) -> Sequence[tuple[float, str]]:
        return [(self.poll_interval_seconds, "poll")]

    def on_tick(self, tick: str, now: float, view: ClusterView) -> int | None:
        observation = Observation(
            pool="simulated",
            timestamp=now,
            lag=view.lag,
            pending=view.pending,
            current_replicas=view.current_replicas,
            consumers=view.ready_workers,
        )
        decision = decide(observation, self.history, self.policy)
        self.history = decision.history
        self.reasons[decision.reason.value] = self.reasons.get(decision.reason.value, 0) + 1
        return decision.desired_replicas if decision.changes else None


@dataclass
class KedaHpaController:
    settings: KedaHpaSettings
    name: str = "keda+hpa"
    model: KedaHpaModel = field(init=False)

    def __post_init__(self) -> None:
        self.model = KedaHpaModel(self.settings)

    def ticks(self) -> Sequence[tuple[float, str]]:
        return [
            (self.settings.polling_interval_seconds, "keda"),
            (self.settings.hpa_sync_seconds, "hpa"),
        ]

    def on_tick(self, tick: str, now: float, view: ClusterView) -> int | None:
        if tick == "keda":
            return self.model.keda_poll(now, view.lag, view.current_replicas)
        return self.model.hpa_sync(now, view.lag, view.current_replicas)


@dataclass
class _Worker:
    number: int
    created: float
    ready_at: float
    ready: bool = False
    job: int | None = None
    stopping: bool = False
    exited: float | None = None
    idle_since: float = 0.0


@dataclass(frozen=True)
class ScaleEvent:
    time: float
    from_replicas: int
    to_replicas: int
    pending: int

    @property
    def direction(self) -> int:
        return 1 if self.to_replicas > self.from_replicas else -1


@dataclass(frozen=True)
class Timeline:
    """Samples for the plot: time, backlog (waiting + running jobs), replicas."""

    times: tuple[float, ...]
    backlog: tuple[int, ...]
    replicas: tuple[int, ...]


@dataclass(frozen=True)
class RunSummary:
    name: str
    worker_seconds: float
    busy_seconds: float
    wait_p50: float
    wait_p99: float
    wait_max: float
    scale_events: int
    flaps: int
    reactions: tuple[float | None, ...]
    """Per marked burst: seconds from its first job to the first scale-up after it."""
    unsafe_scale_downs: int
    """Scale-downs below what the running jobs need (a lag-only scaler's blind spot)."""
    unfinished_jobs: int
    timeline: Timeline = field(repr=False)
    events: tuple[ScaleEvent, ...] = field(default=(), repr=False)

    def flap_events(self, window_seconds: float) -> list[tuple[ScaleEvent, ScaleEvent]]:
        """(event, the reversal that made it a flap) pairs."""
        return [
            (first, second)
            for first, second in itertools.pairwise(self.events)
            if first.direction != second.direction and second.time - first.time < window_seconds
        ]

    @property
    def worst_reaction(self) -> float | None:
        known = [r for r in self.reactions if r is not None]
        return max(known) if known else None


@dataclass(frozen=True)
class Comparison:
    trace: Trace
    settings: SimulationSettings
    runs: tuple[RunSummary, ...]

    def run(self, name: str) -> RunSummary:
        for summary in self.runs:
            if summary.name == name:
                return summary
        raise KeyError(name)


class _Simulation:
    """Event-driven replay of one trace under one controller."""

    _DONE, _READY, _ARRIVAL, _TICK, _SAMPLE = range(5)

    def __init__(self, trace: Trace, controller: Controller, settings: SimulationSettings) -> None:
        self.trace = trace
        self.controller = controller
        self.settings = settings
        self.queue: deque[int] = deque()
        self.workers: list[_Worker] = []
        self.idle: deque[_Worker] = deque()
        self.replicas = 0
        self.running = 0
        self.starts: list[float | None] = [None] * trace.jobs
        self.events: list[tuple[float, int, int, object]] = []
        self.sequence = itertools.count()
        self.scale_events: list[ScaleEvent] = []
        self.samples: tuple[list[float], list[int], list[int]] = ([], [], [])

    def _push(self, time: float, kind: int, payload: object = None) -> None:
        heapq.heappush(self.events, (time, kind, next(self.sequence), payload))

    def view(self) -> ClusterView:
        return ClusterView(
            lag=len(self.queue),
            pending=self.running,
            current_replicas=self.replicas,
            ready_workers=sum(1 for w in self.workers if w.ready and w.exited is None),
        )

    def _live(self) -> list[_Worker]:
        return [w for w in self.workers if w.exited is None and not w.stopping]

    def _dispatch(self, now: float) -> None:
        while self.queue and self.idle:
            worker = self.idle.popleft()
            if worker.exited is not None or worker.stopping or worker.job is not None:
                continue
            job = self.queue.popleft()
            worker.job = job
            self.starts[job] = now
            self.running += 1
            self._push(now + self.trace.durations[job], self._DONE, worker)

    def _scale(self, now: float, replicas: int) -> None:
        if replicas == self.replicas:
            return
        self.scale_events.append(ScaleEvent(now, self.replicas, replicas, self.running))
        self.replicas = replicas
        live = self._live()
        if replicas > len(live):
            for _ in range(replicas - len(live)):
                worker = _Worker(len(self.workers), now, now + self.settings.startup_seconds)
                self.workers.append(worker)
                self._push(worker.ready_at, self._READY, worker)
        elif replicas < len(live):
            for worker in self._victims(live, len(live) - replicas):
                worker.stopping = True
                if worker.job is None:
                    worker.exited = now

    def _victims(self, live: list[_Worker], count: int) -> list[_Worker]:
        starting = sorted((w for w in live if not w.ready), key=lambda w: -w.created)
        ready = [w for w in live if w.ready]
        if self.settings.stop_order == "idle-first":
            ready.sort(key=lambda w: (w.job is not None, -w.ready_at))
        else:
            ready.sort(key=lambda w: -w.ready_at)
        return (starting + ready)[:count]

    def run(self) -> RunSummary:
        for arrival_index, arrival in enumerate(self.trace.arrivals):
            self._push(arrival, self._ARRIVAL, arrival_index)
        horizon = self.trace.horizon_seconds
        for interval, tick in self.controller.ticks():
            self._push(0.0, self._TICK, (interval, tick))
        self._push(0.0, self._SAMPLE, None)
        while self.events:
            now, kind, _seq, payload = heapq.heappop(self.events)
            if now > horizon:
                break
            if kind == self._ARRIVAL:
                assert isinstance(payload, int)
                self.queue.append(payload)
                self._dispatch(now)
            elif kind == self._DONE:
                assert isinstance(payload, _Worker)
                payload.job = None
                self.running -= 1
                if payload.stopping:
                    payload.exited = now
                else:
                    self.idle.append(payload)
                    self._dispatch(now)
            elif kind == self._READY:
                assert isinstance(payload, _Worker)
                if payload.exited is None and not payload.stopping:
                    payload.ready = True
                    self.idle.append(payload)
                    self._dispatch(now)
            elif kind == self._TICK:
                assert isinstance(payload, tuple)
                interval, tick = payload
                desired = self.controller.on_tick(tick, now, self.view())
                if desired is not None:
                    self._scale(now, desired)
                self._push(now + interval, self._TICK, payload)
            else:
                times, backlog, replicas = self.samples
                times.append(now)
                backlog.append(len(self.queue) + self.running)
                replicas.append(self.replicas)
                self._push(now + self.settings.sample_every_seconds, self._SAMPLE, None)
        return self._summary(horizon)

    def _summary(self, horizon: float) -> RunSummary:
        worker_seconds = sum(
            (min(w.exited, horizon) if w.exited is not None else horizon) - w.created
            for w in self.workers
        )
        waits = [
            start - arrival
            for start, arrival in zip(self.starts, self.trace.arrivals, strict=True)
            if start is not None
        ]
        unfinished = sum(1 for start in self.starts if start is None)
        times, backlog, replicas = self.samples
        return RunSummary(
            name=self.controller.name,
            worker_seconds=worker_seconds,
            busy_seconds=self.trace.busy_seconds,
            **_wait_stats(waits),
            scale_events=len(self.scale_events),
            flaps=count_flaps(
                [(e.time, e.direction) for e in self.scale_events],
                self.settings.flap_window_seconds,
            ),
            reactions=reactions(self.trace, [e.time for e in self.scale_events if e.direction > 0]),
            unsafe_scale_downs=sum(
                1 for e in self.scale_events if e.direction < 0 and e.to_replicas < e.pending
            ),
            unfinished_jobs=unfinished,
            timeline=Timeline(tuple(times), tuple(backlog), tuple(replicas)),
            events=tuple(self.scale_events),
        )


def _wait_stats(waits: Sequence[float]) -> dict[str, float]:
    if not waits:
        return {"wait_p50": 0.0, "wait_p99": 0.0, "wait_max": 0.0}
    values = np.asarray(waits)
    return {
        "wait_p50": float(np.percentile(values, 50)),
        "wait_p99": float(np.percentile(values, 99)),
        "wait_max": float(values.max()),
    }


def count_flaps(events: Sequence[tuple[float, int]], window_seconds: float) -> int:
    """Scale events (time, direction +1/-1) that reverse the previous one within the window."""
    flaps = 0
    for (previous_time, previous_direction), (time, direction) in itertools.pairwise(events):
        if direction != previous_direction and time - previous_time < window_seconds:
            flaps += 1
    return flaps


def reactions(
    trace: Trace, scale_up_times: Sequence[float], lookahead_seconds: float = 0.0
) -> tuple[float | None, ...]:
    """Per marked burst: from its first job to the first scale-up after it (negative when the
    scale-up came before, as the oracle's do, `lookahead_seconds` ahead)."""
    ups = np.asarray(sorted(scale_up_times))
    result: list[float | None] = []
    for start, end in trace.bursts:
        first = trace.first_arrival_in(start, end)
        if first is None:
            continue
        index = int(np.searchsorted(ups, first - lookahead_seconds - 1e-9, side="left"))
        result.append(float(ups[index] - first) if index < ups.size else None)
    return tuple(result)


def simulate(trace: Trace, controller: Controller, settings: SimulationSettings) -> RunSummary:
    return _Simulation(trace, controller, settings).run()


def _replicas_at(alive: Sequence[tuple[float, float]]) -> list[tuple[float, int]]:
    """(time, replicas from then on) of a set of worker lives, one row per distinct time."""
    changes = sorted([(start, 1) for start, _end in alive] + [(end, -1) for _start, end in alive])
    steps: list[tuple[float, int]] = []
    replicas = 0
    for time, change in changes:
        replicas += change
        if steps and steps[-1][0] == time:
            steps[-1] = (time, replicas)
        else:
            steps.append((time, replicas))
    return steps


def oracle_summary(trace: Trace, max_replicas: int, settings: SimulationSettings) -> RunSummary:
    schedule = oracle_schedule(trace, max_replicas, settings.startup_seconds)
    arrivals = np.asarray(trace.arrivals)
    starts = np.asarray(schedule.starts)
    waits = list(starts - arrivals)
    steps = _replicas_at(schedule.alive)
    events: list[tuple[float, int]] = []
    scale_events: list[ScaleEvent] = []
    previous = 0
    for time, count in steps:
        if count != previous:
            events.append((time, 1 if count > previous else -1))
            scale_events.append(ScaleEvent(time, previous, count, 0))
            previous = count
    times = np.arange(0.0, trace.horizon_seconds, settings.sample_every_seconds)
    step_times = np.asarray([t for t, _ in steps], dtype=float)
    step_values = np.asarray([0] + [r for _, r in steps], dtype=int)
    sampled = step_values[np.searchsorted(step_times, times, side="right")]
    ends = np.sort(starts + np.asarray(trace.durations))
    outstanding = np.searchsorted(arrivals, times, side="right") - np.searchsorted(
        ends, times, side="right"
    )
    return RunSummary(
        name="oracle",
        worker_seconds=schedule.worker_seconds,
        busy_seconds=trace.busy_seconds,
        **_wait_stats(waits),
        scale_events=len(events),
        flaps=count_flaps(events, settings.flap_window_seconds),
        reactions=reactions(
            trace, [t for t, direction in events if direction > 0], settings.startup_seconds
        ),
        unsafe_scale_downs=0,
        unfinished_jobs=0,
        timeline=Timeline(
            tuple(float(t) for t in times),
            tuple(int(b) for b in outstanding),
            tuple(int(r) for r in sampled),
        ),
        events=tuple(scale_events),
    )


def compare(
    trace: Trace,
    policy: ScalingPolicy,
    settings: SimulationSettings | None = None,
    keda: KedaHpaSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Our policy, KEDA+HPA (same target per replica and max replicas) and the oracle."""
    settings = settings or SimulationSettings()
    keda = keda or KedaHpaSettings(
        lag_count=policy.target_backlog_per_replica, max_replica_count=policy.max_replicas
    )
    runs = []
    for controller in (
        PolicyController(policy, settings.poll_interval_seconds),
        KedaHpaController(keda),
    ):
        if progress is not None:
            progress(f"{trace.name}: {controller.name}")
        runs.append(simulate(trace, controller, settings))
    runs.append(oracle_summary(trace, policy.max_replicas, settings))
    return Comparison(trace=trace, settings=settings, runs=tuple(runs))

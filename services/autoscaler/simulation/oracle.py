"""The oracle: the fewest worker-seconds any autoscaler could spend on a trace, knowing the future.

It runs the jobs first-come first-served on at most `max_replicas` workers, each job starting as
soon as it arrives and a worker is free (so jobs wait only when the cap binds), with workers that
were started `startup_seconds` ahead so that they are ready exactly when needed.

The cost is then optimal level by level: let N(t) be the jobs running at t. The k-th worker is
needed while N(t) >= k. Between two such spells it is kept idle when the gap is shorter than a
start-up (cheaper than stopping and starting again) and otherwise stopped and started again
`startup_seconds` before the next spell. Every start costs one start-up, as for real workers.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from services.autoscaler.simulation.traces import Trace


@dataclass(frozen=True)
class OracleSchedule:
    starts: tuple[float, ...]
    """When each job starts (same order as the trace's arrivals)."""
    alive: tuple[tuple[float, float], ...]
    """(from, to) of every worker's life, start-up included."""
    worker_seconds: float


def fifo_starts(trace: Trace, max_replicas: int) -> list[float]:
    """Start times of jobs served first-come first-served by `max_replicas` ready workers."""
    free_at: list[float] = [0.0] * max_replicas
    heapq.heapify(free_at)
    starts = []
    for arrival, duration in zip(trace.arrivals, trace.durations, strict=True):
        earliest = heapq.heappop(free_at)
        start = max(arrival, earliest)
        starts.append(start)
        heapq.heappush(free_at, start + duration)
    return starts


def _levels(starts: list[float], ends: list[float]) -> list[list[tuple[float, float]]]:
    """For each level k (from 1), the spells during which at least k jobs run."""
    events = sorted([(t, 1) for t in starts] + [(t, -1) for t in ends], key=lambda e: (e[0], e[1]))
    levels: list[list[tuple[float, float]]] = []
    opened: list[float] = []
    running = 0
    for time, change in events:
        if change > 0:
            running += 1
            if len(levels) < running:
                levels.append([])
            opened.append(time)
        else:
            spell_start = opened.pop()
            levels[running - 1].append((spell_start, time))
            running -= 1
    return levels


def oracle_schedule(trace: Trace, max_replicas: int, startup_seconds: float) -> OracleSchedule:
    starts = fifo_starts(trace, max_replicas)
    ends = [start + duration for start, duration in zip(starts, trace.durations, strict=True)]
    alive: list[tuple[float, float]] = []
    for spells in _levels(starts, ends):
        spells.sort()
        life_start, life_end = spells[0][0] - startup_seconds, spells[0][1]
        for spell_start, spell_end in spells[1:]:
            if spell_start - life_end < startup_seconds:
                life_end = max(life_end, spell_end)
            else:
                alive.append((life_start, life_end))
                life_start, life_end = spell_start - startup_seconds, spell_end
        alive.append((life_start, life_end))
    worker_seconds = sum(end - start for start, end in alive)
    return OracleSchedule(starts=tuple(starts), alive=tuple(alive), worker_seconds=worker_seconds)

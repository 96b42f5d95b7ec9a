"""Arrival traces for the simulator: jobs over time and how long each one runs.

A trace is described by a small JSON spec (see `trace_specs/*.json`) and generated from its seed, so
every run of the same spec sees the same jobs:

```json
{
  "name": "burst",
  "seed": 11,
  "horizon_seconds": 7200,
  "job_seconds": {"distribution": "lognormal", "median": 60, "sigma": 0.5, "min": 5, "max": 900},
  "segments": [{"start": 300, "end": 360, "rate": 4.0, "burst": true}],
  "repeat": {"every": 1200, "until": 6000},
  "sinusoid": {"base": 0.02, "peak": 0.2, "period": 86400, "trough_at": 0},
  "rate_noise": {"every": 300, "sigma": 0.2}
}
```

The arrival rate (jobs per second) at time t is the sum of the segments covering t (a constant
`rate`, or a ramp from `rate_from` to `rate_to`), repeated every `repeat.every` seconds, plus the
sinusoid, times a log-normal noise factor drawn per `rate_noise.every` block. Arrivals are a
Poisson process of that rate. Segments marked `burst` are where the reaction time is measured.

A CSV of `arrival_seconds,duration_seconds` rows is a trace too (no bursts marked).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

BUILTIN_TRACES: tuple[str, ...] = ("burst", "sawtooth", "diurnal")


@dataclass(frozen=True)
class Trace:
    name: str
    arrivals: tuple[float, ...]
    """Arrival times in seconds from the start, ascending."""
    durations: tuple[float, ...]
    """How long each job runs once a worker has it, seconds."""
    horizon_seconds: float
    bursts: tuple[tuple[float, float], ...] = ()
    """(start, end) of the marked bursts."""
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.arrivals) != len(self.durations):
            raise ValueError("a trace needs one duration per arrival")

    @property
    def jobs(self) -> int:
        return len(self.arrivals)

    @property
    def busy_seconds(self) -> float:
        return float(sum(self.durations))

    def first_arrival_in(self, start: float, end: float) -> float | None:
        index = int(np.searchsorted(np.asarray(self.arrivals), start, side="left"))
        if index < len(self.arrivals) and self.arrivals[index] <= end:
            return self.arrivals[index]
        return None


def _segment_rate(segment: dict[str, Any], t: np.ndarray) -> np.ndarray:
    start, end = float(segment["start"]), float(segment["end"])
    inside = (t >= start) & (t < end)
    if "rate" in segment:
        return np.where(inside, float(segment["rate"]), 0.0)
    rate_from, rate_to = float(segment["rate_from"]), float(segment["rate_to"])
    fraction = np.clip((t - start) / max(end - start, 1e-9), 0.0, 1.0)
    return np.where(inside, rate_from + (rate_to - rate_from) * fraction, 0.0)


def _expanded_segments(spec: dict[str, Any]) -> list[dict[str, Any]]:
    segments = [dict(segment) for segment in spec.get("segments", [])]
    repeat = spec.get("repeat")
    if not repeat:
        return segments
    every, until = float(repeat["every"]), float(repeat["until"])
    expanded = []
    copies = max(1, math.ceil(until / every))
    for copy in range(copies):
        offset = copy * every
        for segment in segments:
            if float(segment["start"]) + offset >= until:
                continue
            moved = dict(segment)
            moved["start"] = float(segment["start"]) + offset
            moved["end"] = min(float(segment["end"]) + offset, until)
            expanded.append(moved)
    return expanded


def arrival_rate(spec: dict[str, Any], t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Jobs per second at each time in `t` (seconds), noise included."""
    rate = np.zeros_like(t, dtype=float)
    for segment in _expanded_segments(spec):
        rate += _segment_rate(segment, t)
    sinusoid = spec.get("sinusoid")
    if sinusoid:
        base, peak = float(sinusoid["base"]), float(sinusoid["peak"])
        period, trough = float(sinusoid["period"]), float(sinusoid.get("trough_at", 0.0))
        rate += base + (peak - base) * 0.5 * (1.0 - np.cos(2.0 * np.pi * (t - trough) / period))
    noise = spec.get("rate_noise")
    if noise:
        every, sigma = float(noise["every"]), float(noise["sigma"])
        blocks = math.ceil((float(t.max()) + 1.0) / every) if t.size else 0
        factors = rng.lognormal(mean=-0.5 * sigma * sigma, sigma=sigma, size=blocks)
        rate *= factors[(t // every).astype(int)]
    return rate


def _durations(spec: dict[str, Any], count: int, rng: np.random.Generator) -> np.ndarray:
    shape = spec.get("job_seconds", {"distribution": "lognormal", "median": 60.0, "sigma": 0.5})
    distribution = shape.get("distribution", "lognormal")
    if distribution == "lognormal":
        values = rng.lognormal(math.log(float(shape["median"])), float(shape["sigma"]), count)
    elif distribution == "exponential":
        values = rng.exponential(float(shape["mean"]), count)
    elif distribution == "constant":
        values = np.full(count, float(shape["seconds"]))
    else:
        raise ValueError(f"job_seconds.distribution {distribution!r}: use lognormal, exponential "
                         "or constant")  # fmt: skip
    return np.clip(values, float(shape.get("min", 0.1)), float(shape.get("max", math.inf)))


def generate(spec: dict[str, Any], seed: int | None = None) -> Trace:
    """The trace a spec describes, drawn from its seed (or `seed` when given)."""
    rng = np.random.default_rng(spec.get("seed", 0) if seed is None else seed)
    horizon = float(spec["horizon_seconds"])
    seconds = np.arange(0.0, horizon, 1.0)
    rate = arrival_rate(spec, seconds + 0.5, rng)
    counts = rng.poisson(np.clip(rate, 0.0, None))
    arrivals = np.repeat(seconds, counts) + rng.random(int(counts.sum()))
    arrivals.sort()
    durations = _durations(spec, arrivals.size, rng)
    bursts = tuple(
        (float(segment["start"]), float(segment["end"]))
        for segment in _expanded_segments(spec)
        if segment.get("burst")
    )
    return Trace(
        name=str(spec.get("name", "trace")),
        arrivals=tuple(float(a) for a in arrivals),
        durations=tuple(float(d) for d in durations),
        horizon_seconds=horizon,
        bursts=bursts,
        description=str(spec.get("description", "")),
    )


def builtin_spec(name: str) -> dict[str, Any]:
    if name not in BUILTIN_TRACES:
        raise ValueError(f"no built-in trace {name!r}; choose one of {', '.join(BUILTIN_TRACES)}")
    text = (
        resources.files("services.autoscaler.simulation.trace_specs")
        .joinpath(f"{name}.json")
        .read_text()
    )
    spec: dict[str, Any] = json.loads(text)
    return spec


def load_trace(name_or_path: str, seed: int | None = None) -> Trace:
    """A built-in trace by name, a JSON spec file, or a CSV of arrival_seconds,duration_seconds."""
    if name_or_path in BUILTIN_TRACES:
        return generate(builtin_spec(name_or_path), seed)
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(
            f"trace {name_or_path!r} is neither a built-in ({', '.join(BUILTIN_TRACES)}) "
            "nor an existing file"
        )
    if path.suffix == ".csv":
        return _read_csv(path)
    return generate(json.loads(path.read_text()), seed)


def _read_csv(path: Path) -> Trace:
    rows: list[tuple[float, float]] = []
    with path.open(newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=2):
            try:
                rows.append((float(row["arrival_seconds"]), float(row["duration_seconds"])))
            except (KeyError, TypeError, ValueError):
                raise ValueError(
                    f"{path}:{number}: expected numeric arrival_seconds,duration_seconds"
                ) from None
    rows.sort()
    last_end = max((arrival + duration for arrival, duration in rows), default=0.0)
    return Trace(
        name=path.stem,
        arrivals=tuple(arrival for arrival, _ in rows),
        durations=tuple(duration for _, duration in rows),
        horizon_seconds=last_end + 1800.0,
    )

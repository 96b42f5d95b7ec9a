"""Autoscaler on three traces: our policy against a KEDA+HPA replay and a perfect-foresight oracle.

For each built-in trace (burst, sawtooth, diurnal) the simulator replays the same seeded jobs
through `decide` (2 s poll), a model of KEDA's redis-streams scaler in lag mode driving an HPA
with their defaults (30 s poll, 15 s sync, tolerance 0.1, 300 s scale-down window, 300 s
cooldown), and the oracle. Workers take 30 s to start and drain their job when stopped. Printed
per trace, with the targets:

  first scale-up   seconds from a burst's first job to the first scale-up  (<= one poll, 2 s)
  worker-seconds   ours / oracle                                              (<= 1.15)
  flaps            reversals of direction within 60 s                         (0)
  vs KEDA+HPA      worker-seconds, wait p50/p99 and first scale-up, ours / theirs

PNGs of backlog and replicas go to docs/autoscaler/<trace>.png with a summary in
docs/autoscaler/results.md. `--seeds N` also replays N other seeds of each trace and reports the
range, so that a default tuned on one draw is seen on others.

    .venv/bin/python benchmarks/autoscaler_traces.py [--seeds 5] [--strict]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from services.autoscaler.policy import ScalingPolicy  # noqa: E402
from services.autoscaler.simulation.plot import plot_comparison  # noqa: E402
from services.autoscaler.simulation.simulator import (  # noqa: E402
    Comparison,
    SimulationSettings,
    compare,
)
from services.autoscaler.simulation.traces import BUILTIN_TRACES, load_trace  # noqa: E402

WORKER_SECONDS_TARGET = 1.15
OUTPUT = REPO / "docs" / "autoscaler"


@dataclass(frozen=True)
class TraceResult:
    trace: str
    jobs: int
    bursts: int
    reaction: float | None
    keda_reaction: float | None
    vs_oracle: float
    keda_vs_oracle: float
    flaps: int
    flaps_after_zero: int
    keda_flaps: int
    vs_keda_worker_seconds: float
    wait_p50: float
    wait_p99: float
    keda_wait_p50: float
    keda_wait_p99: float
    unsafe_keda: int

    def meets(self, poll_interval: float) -> dict[str, bool]:
        return {
            "first scale-up": self.bursts == 0
            or (self.reaction is not None and self.reaction <= poll_interval),
            "worker-seconds": self.vs_oracle <= WORKER_SECONDS_TARGET,
            "flaps": self.flaps == 0,
        }


def summarise(comparison: Comparison, flap_window: float) -> TraceResult:
    ours, keda, oracle = (comparison.run(n) for n in ("conveyor", "keda+hpa", "oracle"))
    after_zero = sum(
        1 for first, _second in ours.flap_events(flap_window) if first.to_replicas == 0
    )
    return TraceResult(
        trace=comparison.trace.name,
        jobs=comparison.trace.jobs,
        bursts=len(ours.reactions),
        reaction=ours.worst_reaction,
        keda_reaction=keda.worst_reaction,
        vs_oracle=ours.worker_seconds / oracle.worker_seconds,
        keda_vs_oracle=keda.worker_seconds / oracle.worker_seconds,
        flaps=ours.flaps,
        flaps_after_zero=after_zero,
        keda_flaps=keda.flaps,
        vs_keda_worker_seconds=ours.worker_seconds / keda.worker_seconds,
        wait_p50=ours.wait_p50,
        wait_p99=ours.wait_p99,
        keda_wait_p50=keda.wait_p50,
        keda_wait_p99=keda.wait_p99,
        unsafe_keda=keda.unsafe_scale_downs,
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}"


def report_lines(result: TraceResult, poll_interval: float) -> list[str]:
    met = result.meets(poll_interval)
    mark = {True: "met", False: "MISSED"}
    reaction = (
        f"  first scale-up after a burst's first job (worst of {result.bursts}): "
        f"{_seconds(result.reaction)} (target <= {poll_interval:g} s: "
        f"{mark[met['first scale-up']]}); KEDA+HPA {_seconds(result.keda_reaction)}"
        if result.bursts
        else "  first scale-up: no bursts marked in this trace"
    )
    return [
        f"{result.trace} ({result.jobs} jobs)",
        reaction,
        f"  worker-seconds vs oracle: {result.vs_oracle:.3f} "
        f"(target <= {WORKER_SECONDS_TARGET}: {mark[met['worker-seconds']]}); "
        f"KEDA+HPA {result.keda_vs_oracle:.3f}",
        f"  flaps: {result.flaps} (target 0: {mark[met['flaps']]}; "
        f"{result.flaps_after_zero} of them a job arriving just after a scale to zero); "
        f"KEDA+HPA {result.keda_flaps}",
        f"  ours / KEDA+HPA: worker-seconds {result.vs_keda_worker_seconds:.2f}, "
        f"wait p50 {result.wait_p50:.1f} / {result.keda_wait_p50:.1f} s, "
        f"wait p99 {result.wait_p99:.1f} / {result.keda_wait_p99:.1f} s, "
        f"first scale-up {_ratio(result.reaction, result.keda_reaction)}; "
        f"KEDA+HPA scale-downs below running jobs: {result.unsafe_keda}",
    ]


def markdown(
    results: Sequence[TraceResult],
    spread: dict[str, tuple[float, float, int, int]],
    policy: ScalingPolicy,
    settings: SimulationSettings,
) -> str:
    lines = [
        "# Autoscaler on three traces",
        "",
        "Generated by `benchmarks/autoscaler_traces.py` (simulated time; start-up "
        f"{settings.startup_seconds:g} s, our poll {settings.poll_interval_seconds:g} s, "
        f"max {policy.max_replicas} replicas, one job per worker, flap = reversal within "
        f"{settings.flap_window_seconds:g} s). KEDA+HPA: redis-streams scaler in lag mode, "
        f"lagCount {policy.target_backlog_per_replica:g}, 30 s poll, 300 s cooldown; HPA 15 s "
        "sync, tolerance 0.1, 300 s scale-down window, +100 %/+4 pods per 15 s.",
        "",
        "| trace | first scale-up (ours / KEDA) | worker-s vs oracle (ours / KEDA) "
        "| flaps (ours / KEDA) | worker-s ours/KEDA | wait p50 s (ours / KEDA) "
        "| wait p99 s (ours / KEDA) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.trace} | {_seconds(r.reaction)} / {_seconds(r.keda_reaction)} "
            f"| {r.vs_oracle:.3f} / {r.keda_vs_oracle:.3f} | {r.flaps} / {r.keda_flaps} "
            f"| {r.vs_keda_worker_seconds:.2f} | {r.wait_p50:.1f} / {r.keda_wait_p50:.1f} "
            f"| {r.wait_p99:.1f} / {r.keda_wait_p99:.1f} |"
        )
    if spread:
        lines += [
            "",
            "Other seeds of the same traces (ours): worker-seconds vs oracle and flaps, min-max",
            "",
            "| trace | worker-s vs oracle | flaps |",
            "|---|---|---|",
        ]
        for trace, (low, high, fewest, most) in spread.items():
            lines.append(f"| {trace} | {low:.3f}-{high:.3f} | {fewest}-{most} |")
    lines += ["", *[f"![{r.trace}]({r.trace}.png)" for r in results], ""]
    return "\n".join(lines)


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--traces", nargs="+", default=list(BUILTIN_TRACES))
    parser.add_argument("--seeds", type=int, default=5, help="Extra seeds per trace (0: none).")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="Where PNGs go.")
    parser.add_argument("--strict", action="store_true", help="Exit 1 when a target is missed.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    policy = ScalingPolicy()
    settings = SimulationSettings()
    print(f"policy: {policy}")
    results: list[TraceResult] = []
    spread: dict[str, tuple[float, float, int, int]] = {}
    for name in arguments.traces:
        comparison = compare(load_trace(name), policy, settings)
        plot_comparison(comparison, arguments.output / f"{comparison.trace.name}.png")
        result = summarise(comparison, settings.flap_window_seconds)
        results.append(result)
        print("\n".join(report_lines(result, settings.poll_interval_seconds)))
        if arguments.seeds:
            others = [
                summarise(
                    compare(load_trace(name, seed), policy, settings),
                    settings.flap_window_seconds,
                )
                for seed in range(1000, 1000 + arguments.seeds)
            ]
            spread[name] = (
                min(o.vs_oracle for o in others),
                max(o.vs_oracle for o in others),
                min(o.flaps for o in others),
                max(o.flaps for o in others),
            )
            low, high, fewest, most = spread[name]
            print(f"  {arguments.seeds} other seeds: worker-seconds vs oracle "
                  f"{low:.3f}-{high:.3f}, flaps {fewest}-{most}")  # fmt: skip
    arguments.output.mkdir(parents=True, exist_ok=True)
    (arguments.output / "results.md").write_text(markdown(results, spread, policy, settings))
    print(f"\nPNGs and results.md in {arguments.output}")
    missed = [
        f"{r.trace}: {target}"
        for r in results
        for target, ok in r.meets(settings.poll_interval_seconds).items()
        if not ok
    ]
    if missed:
        print("targets missed: " + "; ".join(missed))
    return 1 if missed and arguments.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())

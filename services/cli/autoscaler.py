"""`conveyor autoscaler run | simulate`: the service, and the policy replayed against KEDA+HPA."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from services.autoscaler.__main__ import main as service_main
from services.autoscaler.__main__ import settings_from
from services.autoscaler.simulation.simulator import (
    Comparison,
    SimulationSettings,
    StopOrder,
    compare,
)
from services.autoscaler.simulation.traces import BUILTIN_TRACES, load_trace

autoscaler_app = typer.Typer(
    help="Scale worker pools from stream lag; replay traces against KEDA+HPA.",
    no_args_is_help=True,
)
console = Console()


autoscaler_app.command("run")(service_main)


def comparison_as_dict(comparison: Comparison) -> dict[str, Any]:
    oracle = comparison.run("oracle")
    runs = []
    for run_summary in comparison.runs:
        row = asdict(run_summary)
        row.pop("timeline")
        row.pop("events")
        row["worker_seconds_vs_oracle"] = run_summary.worker_seconds / oracle.worker_seconds
        runs.append(row)
    return {
        "trace": comparison.trace.name,
        "jobs": comparison.trace.jobs,
        "settings": asdict(comparison.settings),
        "runs": runs,
    }


def comparison_table(comparison: Comparison) -> Table:
    """One column per autoscaler, one row per measure (fits a narrow terminal)."""
    oracle = comparison.run("oracle")
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"{comparison.trace.name}: {comparison.trace.jobs} jobs, "
        f"{comparison.trace.busy_seconds / 3600:.1f} busy worker-hours",
        caption="first scale-up: from a burst's first job (worst burst); "
        "unsafe: scale-downs below the jobs running",
    )
    table.add_column("")
    for summary in comparison.runs:
        table.add_column(summary.name, justify="right")

    def row(label: str, values: list[str]) -> None:
        table.add_row(label, *values)

    runs = comparison.runs
    row("worker-hours", [f"{r.worker_seconds / 3600:.2f}" for r in runs])
    row("x oracle", [f"{r.worker_seconds / oracle.worker_seconds:.3f}" for r in runs])
    row("wait p50 s", [f"{r.wait_p50:.1f}" for r in runs])
    row("wait p99 s", [f"{r.wait_p99:.1f}" for r in runs])
    row("wait max s", [f"{r.wait_max:.1f}" for r in runs])
    row("scale events", [str(r.scale_events) for r in runs])
    row("flaps", [str(r.flaps) for r in runs])
    row(
        "first scale-up s",
        ["-" if r.worst_reaction is None else f"{r.worst_reaction:.1f}" for r in runs],
    )
    row("unsafe scale-downs", [str(r.unsafe_scale_downs) for r in runs])
    return table


@autoscaler_app.command()
def simulate(
    traces: Annotated[
        list[str] | None,
        typer.Argument(
            help=f"Built-in traces ({', '.join(BUILTIN_TRACES)}), JSON trace specs or CSV files "
            "of arrival_seconds,duration_seconds. Default: all built-in."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override the trace's seed.")] = None,
    pool: Annotated[
        str | None, typer.Option(help="Use this pool's policy from the environment.")
    ] = None,
    poll_interval: Annotated[float, typer.Option(help="Our poll interval, seconds.")] = 2.0,
    startup_seconds: Annotated[
        float, typer.Option(help="From a worker's creation to its first job.")
    ] = 30.0,
    flap_window: Annotated[
        float, typer.Option(help="A reversal within this many seconds is a flap.")
    ] = 60.0,
    stop_order: Annotated[
        str, typer.Option(help="Which workers a scale-down stops: newest or idle-first.")
    ] = "newest",
    max_replicas: Annotated[int | None, typer.Option(help="Override max_replicas.")] = None,
    target_backlog: Annotated[
        float | None, typer.Option(help="Override target_backlog_per_replica.")
    ] = None,
    scale_down_window: Annotated[
        float | None, typer.Option(help="Override scale_down_window_seconds.")
    ] = None,
    cooldown: Annotated[
        float | None, typer.Option(help="Override scale_to_zero_cooldown_seconds.")
    ] = None,
    plot_dir: Annotated[
        Path | None, typer.Option(help="Write <trace>.png of backlog and replicas here.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON, not tables.")] = False,
) -> None:
    """Replay arrival traces through our policy, a KEDA+HPA model and a perfect-foresight oracle."""
    if stop_order not in ("newest", "idle-first"):
        raise typer.BadParameter("use newest or idle-first", param_hint="--stop-order")
    settings = settings_from()
    policy = settings.policy_for(pool or settings.pools[0])
    try:
        if max_replicas is not None:
            policy = replace(policy, max_replicas=max_replicas)
        if target_backlog is not None:
            policy = replace(policy, target_backlog_per_replica=target_backlog)
        if scale_down_window is not None:
            policy = replace(policy, scale_down_window_seconds=scale_down_window)
        if cooldown is not None:
            policy = replace(policy, scale_to_zero_cooldown_seconds=cooldown)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    order: StopOrder = "newest" if stop_order == "newest" else "idle-first"
    simulation = SimulationSettings(
        poll_interval_seconds=poll_interval,
        startup_seconds=startup_seconds,
        flap_window_seconds=flap_window,
        stop_order=order,
    )
    results = []
    for name in traces or list(BUILTIN_TRACES):
        try:
            trace = load_trace(name, seed)
        except (OSError, ValueError) as error:
            console.print(f"[red]cannot load trace[/] {name}: {error}")
            raise typer.Exit(2) from None
        comparison = compare(trace, policy, simulation)
        if plot_dir is not None:
            from services.autoscaler.simulation.plot import plot_comparison

            path = plot_comparison(comparison, plot_dir / f"{trace.name}.png")
            if not json_output:
                console.print(f"plot: {path}")
        if json_output:
            results.append(comparison_as_dict(comparison))
        else:
            console.print(comparison_table(comparison))
    if json_output:
        console.print_json(json.dumps({"policy": asdict(policy), "traces": results}))

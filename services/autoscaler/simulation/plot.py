"""A PNG of backlog and replicas over time for each contender of a comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from services.autoscaler.simulation.simulator import Comparison

COLOURS = {"conveyor": "#1f77b4", "keda+hpa": "#d62728", "oracle": "#7f7f7f"}


def plot_comparison(comparison: Comparison, path: Path) -> Path:
    """Draw backlog (waiting + running jobs) and replicas against time; returns the path."""
    horizon = comparison.trace.horizon_seconds
    unit, scale = ("hours", 3600.0) if horizon > 4 * 3600 else ("minutes", 60.0)
    figure = Figure(figsize=(11, 6.5), dpi=110)
    FigureCanvasAgg(figure)
    backlog_axes, replica_axes = figure.subplots(2, 1, sharex=True)
    oracle = comparison.run("oracle")
    for run in comparison.runs:
        times = np.asarray(run.timeline.times) / scale
        ratio = run.worker_seconds / oracle.worker_seconds if oracle.worker_seconds else 0.0
        label = (
            f"{run.name}: {run.worker_seconds / 3600:.1f} worker-h ({ratio:.2f}x oracle), "
            f"wait p99 {run.wait_p99:.0f}s, flaps {run.flaps}"
        )
        colour = COLOURS.get(run.name)
        width = 0.9 if run.name == "oracle" else 1.2
        backlog_axes.plot(
            times, run.timeline.backlog, color=colour, linewidth=width, label=run.name
        )
        replica_axes.step(
            times, run.timeline.replicas, where="post", color=colour, linewidth=width, label=label
        )
    backlog_axes.set_ylabel("backlog (lag + pending)")
    backlog_axes.set_title(
        f"{comparison.trace.name}: {comparison.trace.jobs} jobs, "
        f"start-up {comparison.settings.startup_seconds:g}s, "
        f"poll {comparison.settings.poll_interval_seconds:g}s"
    )
    backlog_axes.legend(loc="upper right", fontsize=8)
    replica_axes.set_ylabel("replicas")
    replica_axes.set_xlabel(unit)
    replica_axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=1)
    for axes in (backlog_axes, replica_axes):
        axes.grid(alpha=0.3)
        for start, end in comparison.trace.bursts:
            axes.axvspan(start / scale, end / scale, color="#ffdd88", alpha=0.25, linewidth=0)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path

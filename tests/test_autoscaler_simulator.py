"""The simulator: replaying traces through our policy, the KEDA+HPA model and the oracle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.autoscaler.policy import ScalingPolicy
from services.autoscaler.simulation.keda_hpa import KedaHpaSettings
from services.autoscaler.simulation.simulator import (
    KedaHpaController,
    PolicyController,
    SimulationSettings,
    compare,
    count_flaps,
    oracle_summary,
    simulate,
)
from services.autoscaler.simulation.traces import Trace, load_trace
from services.cli.autoscaler import autoscaler_app


def long_jobs_trace() -> Trace:
    """Three 20-minute jobs: lag drops to zero at once while they run."""
    return Trace("long-jobs", (10.0, 11.0, 12.0), (1200.0, 1200.0, 1200.0), 3600.0, ((10, 20),))


def test_a_lag_only_scaler_scales_running_long_jobs_to_zero_and_ours_does_not() -> None:
    trace = long_jobs_trace()
    settings = SimulationSettings()
    ours = simulate(trace, PolicyController(ScalingPolicy()), settings)
    keda = simulate(trace, KedaHpaController(KedaHpaSettings()), settings)
    assert keda.unsafe_scale_downs >= 1, "KEDA sees lag 0 and goes to zero after its cooldown"
    assert ours.unsafe_scale_downs == 0
    assert ours.unfinished_jobs == keda.unfinished_jobs == 0


def test_our_first_scale_up_comes_within_one_poll_of_a_burst_and_keda_within_its_poll() -> None:
    trace = load_trace("burst")
    comparison = compare(trace, ScalingPolicy())
    ours, keda, oracle = (comparison.run(n) for n in ("conveyor", "keda+hpa", "oracle"))
    assert all(r is not None and r <= 2.0 for r in ours.reactions)
    assert all(r is not None and r <= 30.0 for r in keda.reactions)
    assert all(r is not None and r < 0 for r in oracle.reactions), "the oracle starts ahead"
    assert oracle.worker_seconds <= ours.worker_seconds
    assert oracle.worker_seconds >= trace.busy_seconds


def test_a_replay_is_the_same_every_time_for_the_same_seed() -> None:
    first = compare(load_trace("sawtooth", seed=5), ScalingPolicy())
    again = compare(load_trace("sawtooth", seed=5), ScalingPolicy())
    other = compare(load_trace("sawtooth", seed=6), ScalingPolicy())
    assert [r.worker_seconds for r in first.runs] == [r.worker_seconds for r in again.runs]
    assert first.trace.arrivals != other.trace.arrivals


def test_the_oracle_never_makes_a_job_wait_unless_the_cap_binds() -> None:
    trace = load_trace("sawtooth")
    uncapped = oracle_summary(trace, max_replicas=1000, settings=SimulationSettings())
    assert uncapped.wait_max == 0.0
    capped = oracle_summary(trace, max_replicas=5, settings=SimulationSettings())
    assert capped.wait_max > 0.0


def test_a_flap_is_a_reversal_within_the_window() -> None:
    events = [(0.0, 1), (10.0, 1), (40.0, -1), (200.0, -1), (230.0, 1), (400.0, -1)]
    assert count_flaps(events, 60.0) == 2  # 10 -> 40 (up then down), 200 -> 230 (down then up)


def test_a_csv_trace_is_replayed(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("arrival_seconds,duration_seconds\n5,30\n6,30\n7.5,45\n")
    trace = load_trace(str(path))
    assert trace.jobs == 3 and trace.busy_seconds == 105.0
    summary = simulate(trace, PolicyController(ScalingPolicy()), SimulationSettings())
    assert summary.unfinished_jobs == 0


def test_an_unknown_trace_is_refused_with_the_choices() -> None:
    with pytest.raises(FileNotFoundError, match="burst, sawtooth, diurnal"):
        load_trace("nonesuch")


def test_conveyor_autoscaler_simulate_prints_json_and_draws_the_png(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        autoscaler_app,
        ["simulate", "burst", "--json", "--plot-dir", str(tmp_path), "--max-replicas", "10"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["policy"]["max_replicas"] == 10
    [burst] = report["traces"]
    assert [run["name"] for run in burst["runs"]] == ["conveyor", "keda+hpa", "oracle"]
    assert all(run["unfinished_jobs"] == 0 for run in burst["runs"])
    assert (tmp_path / "burst.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_conveyor_autoscaler_simulate_prints_a_table() -> None:
    result = CliRunner().invoke(autoscaler_app, ["simulate", "sawtooth"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "sawtooth" in result.output and "keda+hpa" in result.output

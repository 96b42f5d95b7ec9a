"""The ARD benchmark runs end to end on a tiny scene and prints its comparison."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ard_benchmark_runs_the_runner_and_the_bare_conversion_and_prints_the_ratio() -> None:
    command = [sys.executable, "-m", "benchmarks.ard_scene", "--size", "60", "--repeats", "1"]
    completed = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "runner / bare rasterio COG, sequential:" in completed.stdout
    assert "CPU seconds" in completed.stdout


def test_ard_benchmark_covers_a_landsat_tarball_too() -> None:
    command = [sys.executable, "-m", "benchmarks.ard_scene", "--mission", "landsat"]
    command += ["--size", "60", "--repeats", "1"]
    completed = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "_L2SP_" in completed.stdout and ".tar" in completed.stdout
    assert "runner / bare rasterio COG, sequential:" in completed.stdout

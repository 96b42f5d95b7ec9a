"""The queue benchmark runs end to end with tiny counts and prints its comparison."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_queue_benchmark_runs_its_contenders_and_prints_the_ratios() -> None:
    # Three contenders keep this quick; each peer is run the same way as arq is here.
    command = [sys.executable, "benchmarks/queue_throughput.py", "--jobs", "50"]
    command += ["--contenders", "ours,raw,arq", "--timeout", "60"]
    completed = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    table = completed.stdout
    for contender in ("ours", "raw", "arq"):
        assert any(line.startswith(f"{contender} ") for line in table.splitlines()), table
    assert "ours / raw:" in table
    assert "ours / best peer (arq):" in table
    assert "handled 50" in completed.stderr

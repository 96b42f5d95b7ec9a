"""The chaos audit itself: it must see what it is there to count."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.chaos.harness import check_outputs, count_overlaps


def log_line(event: str, job_id: str, owner: str, timestamp: str) -> str:
    return json.dumps({"event": event, "job_id": job_id, "owner": owner, "timestamp": timestamp})


def fake_run(tmp_path: Path, logs: dict[str, tuple[list[str], float | None]]) -> Any:
    procs = []
    for name, (lines, killed_at) in logs.items():
        path = tmp_path / f"{name}.log"
        path.write_text("\n".join(lines) + "\n")
        procs.append(
            SimpleNamespace(
                role="worker", killed_at=killed_at, service=SimpleNamespace(log_path=path)
            )
        )
    return SimpleNamespace(fleet=SimpleNamespace(procs=procs))


def test_an_execution_started_while_a_killed_workers_one_still_ran_is_an_overlap(
    tmp_path: Path,
) -> None:
    from datetime import datetime

    killed_at = datetime.fromisoformat("2026-01-01T00:00:05Z").timestamp()
    run = fake_run(
        tmp_path,
        {
            # Killed at 00:05 while running job a (no end logged).
            "w1": (
                [log_line("job execution started", "a", "w1", "2026-01-01T00:00:01Z")],
                killed_at,
            ),
            "w2": (
                [
                    log_line("job execution started", "a", "w2", "2026-01-01T00:00:04Z"),
                    log_line("job execution ended", "a", "w2", "2026-01-01T00:00:06Z"),
                    # Job b: one after the other, not overlapping.
                    log_line("job execution started", "b", "w2", "2026-01-01T00:00:07Z"),
                    log_line("job execution ended", "b", "w2", "2026-01-01T00:00:08Z"),
                ],
                None,
            ),
            "w3": (
                [
                    log_line("job execution started", "b", "w3", "2026-01-01T00:00:08.5Z"),
                    log_line("job execution ended", "b", "w3", "2026-01-01T00:00:09Z"),
                ],
                None,
            ),
        },
    )
    details: list[str] = []
    assert count_overlaps(run, details) == 1
    assert details == ["job a: w2 started while another ran it"]


def test_a_product_missing_a_band_and_a_leftover_temporary_file_are_counted(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "a_red.tif").write_bytes(b"x")
    (folder / "a.odc-metadata.yaml").write_text(
        "measurements:\n  red: {path: a_red.tif}\n  nir: {path: a_nir.tif}\n"
    )
    (folder / "b_red.tif").write_bytes(b"x")
    (folder / "b.odc-metadata.yaml").write_text("measurements:\n  red: {path: b_red.tif}\n")
    (folder / ".a_nir.tif.0a1b.partial").write_bytes(b"half")
    assert check_outputs(tmp_path) == (1, 1)

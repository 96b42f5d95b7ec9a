"""`conveyor archive …` against a real PostgreSQL: set up, synthesise, index, and again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.archive import archive_app

BOX = ["2166000", "3581000", "2172000", "3587000"]


@pytest.fixture
def environment(fresh_database: Callable[[str], str], tmp_path: Path) -> dict[str, str]:
    return {
        "CONVEYOR_DB_URL": fresh_database("cli"),
        "CONVEYOR_STATE_DIR": str(tmp_path / "state"),
    }


def test_archive_commands_set_up_synthesise_and_index_idempotently(
    environment: dict[str, str], tmp_path: Path
) -> None:
    runner = CliRunner()

    def run(*arguments: str) -> str:
        result = runner.invoke(archive_app, list(arguments), env=environment)
        assert result.exit_code == 0, result.output
        return result.output

    assert "index created" in run("init")
    assert "already initialised" in run("init")
    assert "ls8_usgs_sr_scene: added" in run("add-products")
    assert "ls8_usgs_sr_scene: unchanged" in run("add-products")
    out = tmp_path / "archive"
    synthesised = run(
        "synthesise", "ls8_usgs_sr_scene", "--bbox", *BOX, "--crs", "EPSG:3460",
        "--time-from", "2019-01-01", "--time-to", "2019-01-20", "--out-dir", str(out),
    )  # fmt: skip
    scenes = len(list(out.rglob("*.odc-metadata.yaml")))
    assert scenes > 0
    assert f"{scenes} scenes of ls8_usgs_sr_scene" in synthesised
    assert f"indexed {scenes}, already indexed 0" in synthesised
    assert f"indexed 0, already indexed {scenes}" in run("index", str(out))


def test_archive_commands_report_problems_without_a_traceback(
    environment: dict[str, str], tmp_path: Path
) -> None:
    runner = CliRunner()
    unknown = runner.invoke(
        archive_app,
        ["synthesise", "ls9_usgs_sr_scene", "--bbox", *BOX, "--crs", "EPSG:3460",
         "--out-dir", str(tmp_path), "--no-index"],
        env=environment,
    )  # fmt: skip
    assert unknown.exit_code == 1
    assert "InvalidRequest" in unknown.output and "ls8_usgs_sr_scene" in unknown.output
    not_ready = runner.invoke(archive_app, ["index", str(tmp_path)], env=environment)
    assert not_ready.exit_code == 1
    assert "not initialised" in not_ready.output and "conveyor archive init" in not_ready.output
    assert runner.invoke(archive_app, ["init"], env=environment).exit_code == 0
    missing = runner.invoke(archive_app, ["index", str(tmp_path / "nowhere")], env=environment)
    assert missing.exit_code == 1
    assert "nowhere does not exist" in missing.output.replace("\n", "")
    broken = runner.invoke(
        archive_app,
        ["init"],
        env=environment | {"CONVEYOR_DB_URL": "postgresql://u:s3cret@127.0.0.1:1/datacube"},
    )
    assert broken.exit_code == 1
    assert "127.0.0.1" in broken.output and "s3cret" not in broken.output

"""`make validate` makes products of a small archive through the worker's runner, recomputes them
from the scene files with its independent references, and fails when a product is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--windows", "1", "--size", "96", "--geomedian-pixels", "40"]


def validate(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devtools.validate", *arguments, *QUICK],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={"PYTHONPATH": str(ROOT), "CONVEYOR_LOG_LEVEL": "WARNING", "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture(scope="module")
def own_products(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    workdir = tmp_path_factory.mktemp("validate")
    run = validate("--outputs", str(workdir / "none"), "--workdir", str(workdir))
    return workdir, run.stdout + run.stderr if run.returncode else run.stdout


def rows(report: str) -> dict[tuple[str, str], list[str]]:
    table = {}
    for line in report.splitlines():
        fields = line.split()
        if len(fields) == 7 and fields[0].startswith("ls8_"):
            table[(fields[0], fields[1])] = fields[2:]
    return table


def test_without_demo_output_it_checks_products_of_its_own_archive(
    own_products: tuple[Path, str],
) -> None:
    _workdir, report = own_products
    table = rows(report)
    assert "0 beyond tolerance" in report, report
    products = {product for product, _band in table}
    assert products == {
        "ls8_geomedian", "ls8_ndvi", "ls8_water", "ls8_shoreline", "ls8_fc_percentiles",
    }  # fmt: skip
    assert all(fields[-1] == "yes" and int(fields[0]) > 0 for fields in table.values())
    assert float(table[("ls8_geomedian", "red")][1]) <= 10
    # WOfS against the synthetic archive's truth: pure water always wet, land never.
    assert int(table[("ls8_water", "frequency~truth")][0]) > 0


def test_a_wrong_pixel_in_a_product_is_reported_and_fails(own_products: tuple[Path, str]) -> None:
    workdir, _report = own_products
    frequencies = sorted((workdir / "outputs").rglob("*_frequency.tif"))
    assert frequencies
    for frequency in frequencies:
        with rasterio.open(frequency, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as raster:
            values = raster.read(1)
            values[np.isfinite(values)] = np.clip(values[np.isfinite(values)] + 0.25, 0, 1.5)
            raster.write(values, 1)

    run = validate("--outputs", str(workdir / "outputs"), "--archive", str(workdir / "archive"))

    assert run.returncode == 1, run.stdout + run.stderr
    assert rows(run.stdout)[("ls8_water", "frequency")][-1] == "NO"
    assert rows(run.stdout)[("ls8_water", "count_wet")][-1] == "yes"

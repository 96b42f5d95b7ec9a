"""The dispatcher checks job codes and options against `shared/catalogue.py`: it never loads a
product plugin or the libraries they compute with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("odc.algo", "skimage", "fc", "rasterio", "datacube", "services.worker", "scipy")

PROGRAM = f"""
import json, sys
import services.dispatcher.__main__
import services.dispatcher.service
from services.dispatcher.planning import plan_jobs
from shared.messages import parse_request
from shared.seed import SEED_PRODUCT_ITEM

for code in ("geomedian", "fc_percentiles", "water", "shoreline", "ndvi", "fractional_cover"):
    item = json.loads(SEED_PRODUCT_ITEM) | {{"job_code": code, "options": {{}}}}
    request, _ignored = parse_request(item)
    jobs = list(plan_jobs(request, tile_size=None, tile_size_pixels=640))
    assert len(jobs) == 42, len(jobs)
print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))
"""


def test_a_dispatcher_plans_every_product_without_loading_a_plugin_or_its_libraries() -> None:
    run = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []

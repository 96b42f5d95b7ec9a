"""The `conveyor` command against a real server, as a user runs it."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from typer.testing import CliRunner

from services.cli.app import app, console
from services.dispatcher.service import Dispatcher
from shared.config import DispatcherSettings
from shared.keys import Keys
from shared.seed import SEED_PRODUCT_ITEM
from tests.test_dispatcher import drain, small_item


@pytest.fixture
def cli_env(redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("CONVEYOR_REDIS_URL", redis_url)
    monkeypatch.setenv("CONVEYOR_NAMESPACE", namespace)
    return {"CONVEYOR_REDIS_URL": redis_url, "CONVEYOR_NAMESPACE": namespace}


@pytest.fixture
def sync_redis(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    return client


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_submit_a_file_of_work_items_like_the_original_inserter(
    cli_env: dict[str, str], sync_redis: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(small_item(n) for n in range(1827)) + "\n")
    code, output = run("submit", "--file", str(items))
    assert code == 0, output
    assert "submitted 1827 items" in output
    assert sync_redis.xlen(Keys(namespace).events) == 1827


def test_submit_refuses_invalid_items_with_reasons_and_sends_nothing(
    cli_env: dict[str, str], sync_redis: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    items = tmp_path / "items.jsonl"
    bad = json.loads(SEED_PRODUCT_ITEM) | {"time_to": "2019-02-30"}
    items.write_text(SEED_PRODUCT_ITEM + "\n" + json.dumps(bad) + "\n")
    code, output = run("submit", "--file", str(items))
    assert code == 1
    assert "items.jsonl:2" in output and "time_to" in output
    assert sync_redis.xlen(Keys(namespace).events) == 0


def test_submit_flags_and_legacy_lists(
    cli_env: dict[str, str], sync_redis: redis.Redis, namespace: str
) -> None:
    fields = [f"--field={name}={value}" for name, value in json.loads(small_item(3)).items()]
    assert run("submit", *fields)[0] == 0
    assert run("submit", "--legacy", SEED_PRODUCT_ITEM)[0] == 0
    assert sync_redis.xlen(Keys(namespace).events) == 1
    [pushed] = sync_redis.lrange("jobProduct", 0, -1)
    assert json.loads(pushed) == json.loads(SEED_PRODUCT_ITEM)
    water = {"job_code": "water_classification", "dataset_id": str(uuid.uuid4())}
    assert run("submit", "--legacy", json.dumps(water))[0] == 0
    assert [json.loads(item) for item in sync_redis.lrange("jobWater", 0, -1)] == [water]


def test_status_job_and_dead_letters_show_what_happened(
    cli_env: dict[str, str], sync_redis: redis.Redis, redis_url: str, namespace: str
) -> None:
    sync_redis.rpush("jobProduct", SEED_PRODUCT_ITEM, '{"job_code": "geomedian"}')
    dispatch_everything(redis_url, namespace)

    code, output = run("status", "--json")
    report = json.loads(output)
    assert code == 0
    jobs_stream = next(s for s in report["streams"] if s["stream"].endswith(":jobs:product"))
    # The seed box meets 42 cells of the output grid: one job each.
    assert jobs_stream["length"] == 42 and jobs_stream["lag"] == 42
    assert report["dead_letters"] == 1
    assert report["jobs_by_state"] == {"queued": 42}

    code, output = run("status")
    assert code == 0 and "dead letters: 1" in output

    job_id = report["recent_jobs"][0]["job_id"]
    code, output = run("job", job_id)
    assert code == 0 and json.loads(output)["state"] == "queued"
    assert run("job", "no-such-job")[0] == 1

    code, output = run("dead", "list", "--json")
    [dead] = json.loads(output)
    assert "field 'product' is required" in dead["error"]

    code, output = run("dead", "replay", "--all")
    assert code == 0 and "replayed 1" in output
    assert sync_redis.xlen(Keys(namespace).dead) == 0
    dispatch_everything(redis_url, namespace)
    assert sync_redis.xlen(Keys(namespace).dead) == 1, "still invalid: dead again"


def dispatch_everything(redis_url: str, namespace: str) -> None:
    async def dispatch() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        settings = DispatcherSettings(redis_url=redis_url, namespace=namespace)
        await drain(Dispatcher(client, settings, check=None))
        await client.aclose()

    asyncio.run(dispatch())


def test_validate_reports_each_invalid_line_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 1000)  # one line per reason, however long
    items = tmp_path / "items.jsonl"
    bad_date = json.loads(SEED_PRODUCT_ITEM) | {"time_from": "2019-13-01"}
    incomplete = {"job_code": "geomedian", "product": "ls8_usgs_sr_scene"}
    lines = [SEED_PRODUCT_ITEM, "{}", "not json", json.dumps(bad_date), "", json.dumps(incomplete)]
    items.write_text("\n".join(lines) + "\n")
    code, output = run("validate", str(items))
    assert code == 1
    reasons = {}
    for line in output.splitlines():
        where, separator, reason = line.partition(": ")
        if separator and where.startswith(str(items)):
            reasons[int(where.rsplit(":", 1)[1])] = reason
    assert sorted(reasons) == [2, 3, 4, 6], "each invalid line once, by its number; none other"
    assert "neither job_code" in reasons[2] and "in_scene" in reasons[2]
    assert "not valid JSON" in reasons[3]
    assert reasons[4] == "time_from: '2019-13-01' is not a date (expected YYYY-MM-DD)"
    for missing in ("time_from", "time_to", "output_crs", "prefix"):
        assert f"field '{missing}' is required" in reasons[6]
    assert output.splitlines()[-1] == "4 invalid"


def test_validate_of_valid_items_says_none_is_invalid_and_exits_zero(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text(SEED_PRODUCT_ITEM + "\n\n" + SEED_PRODUCT_ITEM + "\n")
    code, output = run("validate", str(items))
    assert (code, output.strip()) == (0, "0 invalid")


def test_submit_legacy_puts_each_item_on_the_original_list_of_its_kind() -> None:
    from services.cli.app import legacy_list_for

    assert legacy_list_for({"in_scene": "LC08_L2SP_073072_20190104_20200830_02_T1"}) == "jobLS"
    assert legacy_list_for({"in_scene": "LE07_L1TP_072074_20190214_20190302_01_T1"}) == "jobLS"
    sentinel = "S2A_MSIL2A_20190812T235741_N0213_R030_T56LRR_20190813T014708"
    assert legacy_list_for({"in_scene": sentinel}) == "jobS2"
    assert legacy_list_for({"job_code": "water_classification", "dataset_id": "x"}) == "jobWater"
    assert legacy_list_for({"job_code": "geomedian"}) == "jobProduct"

"""10,000 generated malformed events against a running dispatcher: all dead-lettered, none served,
and the valid work sent between them is still dispatched."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.keys import Keys
from tests.processes import ServiceProcess, running_service, service_env
from tests.test_dispatcher import small_item
from tests.test_messages import malformed_items

BATCH = 50
EXAMPLES = 200  # x BATCH = 10,000 malformed events


@st.composite
def malformed_events(draw: st.DrawFn) -> dict[str, str]:
    """A malformed event in any of the forms an event can take on the stream."""
    form = draw(st.integers(0, 3))
    if form == 0:
        return {"payload": json.dumps(draw(malformed_items()))}
    if form == 1:
        return {name: str(value) for name, value in draw(malformed_items()).items()} or {"x": "y"}
    if form == 2:
        text = draw(st.text(max_size=40))
        try:
            if isinstance(json.loads(text), dict):
                text = "{" + text
        except ValueError:
            pass
        return {"payload": text}
    return {"payload": json.dumps(draw(st.lists(st.integers(), max_size=3)))}


class Counts:
    malformed = 0
    valid = 0


@pytest.fixture(scope="module")
def running_dispatcher(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcess, redis.Redis, Keys]]:
    namespace = f"fuzz{int(time.time())}"
    env = service_env(redis_url, namespace, CONVEYOR_BLOCK_MS="50", CONVEYOR_BATCH_SIZE="200")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    log_path = Path(tmp_path_factory.mktemp("fuzz")) / "dispatcher.log"
    with running_service("services.dispatcher", env, log_path) as service:
        yield service, client, Keys(namespace)
    client.close()


def _wait_for_settled(client: redis.Redis, keys: Keys, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        groups = client.xinfo_groups(keys.events) if client.exists(keys.events) else []
        if groups and groups[0]["lag"] == 0 and groups[0]["pending"] == 0:
            return
        time.sleep(0.02)
    raise AssertionError("the dispatcher did not settle")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(events=st.lists(malformed_events(), min_size=BATCH, max_size=BATCH))
def test_ten_thousand_malformed_events_are_all_dead_lettered_while_valid_work_flows(
    running_dispatcher: tuple[ServiceProcess, redis.Redis, Keys], events: list[dict[str, Any]]
) -> None:
    service, client, keys = running_dispatcher
    dead_before = client.xlen(keys.dead)
    jobs_before = client.xlen(keys.jobs("product"))
    pipe = client.pipeline(transaction=False)
    for event in events:
        pipe.xadd(keys.events, event)
    pipe.xadd(keys.events, {"payload": small_item(Counts.valid)})
    pipe.execute()
    Counts.malformed += len(events)
    Counts.valid += 1
    _wait_for_settled(client, keys)
    assert service.process.poll() is None, "the dispatcher is still serving"
    assert client.xlen(keys.dead) - dead_before == len(events)
    assert client.xlen(keys.jobs("product")) - jobs_before == 1


def test_every_dead_letter_carries_a_reason_and_the_original_event(
    running_dispatcher: tuple[ServiceProcess, redis.Redis, Keys],
) -> None:
    _service, client, keys = running_dispatcher
    assert Counts.malformed >= BATCH * EXAMPLES
    assert client.xlen(keys.dead) == Counts.malformed
    for _entry_id, fields in client.xrange(keys.dead):
        assert fields["reason"] == "invalid_request"
        assert len(fields["error"]) > 10
        json.loads(fields["payload"])

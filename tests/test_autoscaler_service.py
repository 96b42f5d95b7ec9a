"""The service against the real queue: one leader among several instances, what it reads from
the streams, /metrics, and a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from services.autoscaler.backends.dry_run import DryRunBackend
from services.autoscaler.observe import read_queue
from services.autoscaler.service import Autoscaler
from services.autoscaler.settings import AutoscalerSettings
from shared.embedded import free_port
from shared.keys import Keys
from tests.processes import running_service, service_env, wait_until


def instance(redis: aioredis.Redis, namespace: str, name: str, **overrides: object) -> Autoscaler:
    settings = AutoscalerSettings(
        namespace=namespace,
        pools=["product"],
        instance_id=name,
        **overrides,  # type: ignore[arg-type]
    )
    return Autoscaler(redis, settings, DryRunBackend())


def leader_gauge(autoscaler: Autoscaler) -> float | None:
    return autoscaler.metrics.registry.get_sample_value("conveyor_autoscaler_leader")


async def backlog(redis: aioredis.Redis, namespace: str, entries: int) -> list[str]:
    stream = Keys(namespace).jobs("product")
    await redis.xgroup_create(stream, "workers", id="0", mkstream=True)
    return [await redis.xadd(stream, {"n": str(n)}) for n in range(entries)]


async def test_only_one_of_two_instances_acts_and_the_other_takes_over_when_it_stops(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    await backlog(redis_client, namespace, 5)
    first, second = (instance(redis_client, namespace, name) for name in ("first", "second"))
    for _ in range(3):
        assert (await first.poll())["product"].desired_replicas == 5
        assert await second.poll() == {}
    assert leader_gauge(first) == 1 and leader_gauge(second) == 0
    assert await first.backend.current_replicas("product") == 5
    assert await second.backend.current_replicas("product") == 0
    assert await redis_client.get(f"{namespace}:autoscaler:leader") == "first"

    await first.lease.release()  # as on SIGTERM
    assert (await second.poll())["product"].desired_replicas == 5
    assert await first.poll() == {}
    assert leader_gauge(second) == 1 and leader_gauge(first) == 0


async def test_a_leader_that_stops_renewing_loses_the_lease_when_it_expires(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    first = instance(redis_client, namespace, "first", leader_lease_seconds=0.3)
    second = instance(redis_client, namespace, "second", leader_lease_seconds=0.3)
    await first.poll()
    assert first.leading and not second.leading

    async def second_took_over() -> bool:
        await second.poll()
        return second.leading

    await wait_until(second_took_over)  # first never renews: it has hung
    assert await first.poll() == {} and not first.leading, "the old leader stands down"


async def test_an_unknown_lag_is_counted_from_the_stream_and_marked_estimated(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    entry_ids = await backlog(redis_client, namespace, 6)
    stream = Keys(namespace).jobs("product")
    await redis_client.xreadgroup("workers", "w1", {stream: ">"}, count=1)
    await redis_client.xdel(stream, entry_ids[3])  # the server can no longer tell the lag
    [info] = await redis_client.xinfo_groups(stream)
    assert info["lag"] is None
    reading = await read_queue(redis_client, Keys(namespace), "product")
    assert reading.lag == 4 and reading.lag_estimated and reading.pending == 1
    decision = (await instance(redis_client, namespace, "solo").poll())["product"]
    assert decision.lag_estimated and decision.desired_replicas == 5
    assert "(estimated)" in decision.message


async def test_metrics_are_served_with_the_autoscaler_names(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    await backlog(redis_client, namespace, 3)
    port = free_port()
    autoscaler = instance(
        redis_client, namespace, "solo", metrics_port=port, metrics_host="127.0.0.1",
        poll_interval_seconds=0.1,
    )  # fmt: skip
    running = asyncio.create_task(autoscaler.run())
    try:
        async with aiohttp.ClientSession() as session:

            async def scraped() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                        # The second poll sees the size the first one set.
                        text = await response.text()
                        return 'conveyor_autoscaler_current_replicas{pool="product"} 3.0' in text
                except aiohttp.ClientError:
                    return False

            await wait_until(scraped)
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
    finally:
        autoscaler.stop()
        await running
    for line in (
        'conveyor_autoscaler_observed_lag{pool="product"} 3.0',
        'conveyor_autoscaler_observed_pending{pool="product"} 0.0',
        'conveyor_autoscaler_current_replicas{pool="product"} 3.0',
        'conveyor_autoscaler_desired_replicas{pool="product"} 3.0',
        'conveyor_autoscaler_max_replicas{pool="product"} 20.0',
        "conveyor_autoscaler_leader 1.0",
    ):
        assert line in text
    assert (
        'conveyor_autoscaler_decisions_total{direction="up",pool="product",reason="activation"} 1.0'
        in text
    )
    assert "# TYPE conveyor_autoscaler_errors_total counter" in text
    assert await redis_client.get(f"{namespace}:autoscaler:leader") is None, "lease released"


async def test_python_m_services_autoscaler_exits_0_on_sigterm_and_releases_its_lease(
    redis_client: aioredis.Redis, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    env = service_env(redis_url, namespace, CONVEYOR_BACKEND="dry-run",
                      CONVEYOR_POOLS='["product"]', CONVEYOR_INSTANCE_ID="proc")  # fmt: skip
    with running_service("services.autoscaler", env, tmp_path / "autoscaler.log") as service:

        async def leading() -> bool:
            return await redis_client.get(f"{namespace}:autoscaler:leader") == "proc"

        await wait_until(leading)
        assert service.terminate() == 0
        assert '"event": "autoscaler stopped"' in service.output
    assert await redis_client.get(f"{namespace}:autoscaler:leader") is None


def test_settings_name_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="min_replicas 5 is above max_replicas 2"):
        AutoscalerSettings(min_replicas=5, max_replicas=2)
    with pytest.raises(ValueError, match="no Deployment named for pool"):
        AutoscalerSettings(backend="kubernetes", pools=["product", "ard"], deployments={})
    with pytest.raises(ValueError, match="unknown field"):
        AutoscalerSettings(pool_policies={"ard": {"max_replica": 2}})
    settings = AutoscalerSettings(pool_policies={"ard": {"max_replicas": 4}})
    assert settings.policy_for("ard").max_replicas == 4
    assert settings.policy_for("product").max_replicas == 20


def test_worker_concurrency_is_read_as_jobs_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_CONCURRENCY", "3")
    assert AutoscalerSettings().policy_for("product").jobs_per_worker == 3

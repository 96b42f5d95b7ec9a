"""Settings: the original environment keeps working, secrets stay secret."""

from __future__ import annotations

import pytest

from services.worker.settings import WorkerSettings
from shared.config import DispatcherSettings, QueueSettings, scrub_url
from shared.logging import scrub_secrets


def test_the_original_redis_service_environment_is_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_SERVICE_HOST", "redis.conveyor.svc")
    monkeypatch.setenv("REDIS_SERVICE_PORT", "6380")
    assert QueueSettings().configured_redis_url() == "redis://redis.conveyor.svc:6380/0"


def test_an_explicit_url_wins_over_the_legacy_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SERVICE_HOST", "old-host")
    monkeypatch.setenv("CONVEYOR_REDIS_URL", "rediss://user:pw@new-host:6380/1")
    assert QueueSettings().configured_redis_url() == "rediss://user:pw@new-host:6380/1"


def test_no_queue_configured_means_the_embedded_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_SERVICE_HOST", raising=False)
    monkeypatch.delenv("CONVEYOR_REDIS_URL", raising=False)
    assert QueueSettings().configured_redis_url() is None


def test_dask_scheduler_host_is_read_from_the_original_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DASK_SCHEDULER_HOST", "dask-scheduler:8786")
    assert WorkerSettings().dask_scheduler_host == "dask-scheduler:8786"


def test_namespace_and_service_settings_come_from_conveyor_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_NAMESPACE", "fiji")
    monkeypatch.setenv("CONVEYOR_TILE_SIZE_PIXELS", "1024")
    settings = DispatcherSettings()
    assert (settings.namespace, settings.tile_size_pixels) == ("fiji", 1024)


def test_secrets_never_appear_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_REDIS_URL", "redis://conveyor:hunter2@redis:6379/0")
    monkeypatch.setenv("CONVEYOR_REDIS_PASSWORD", "hunter3")
    text = repr(DispatcherSettings()) + str(DispatcherSettings().model_dump())
    assert "hunter2" not in text and "hunter3" not in text


@pytest.mark.parametrize(
    ("url", "scrubbed"),
    [
        ("redis://conveyor:hunter2@redis:6379/0", "redis://conveyor:***@redis:6379/0"),
        ("rediss://:hunter2@redis/0", "rediss://:***@redis/0"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
    ],
)
def test_urls_are_scrubbed_of_passwords(url: str, scrubbed: str) -> None:
    assert scrub_url(url) == scrubbed


def test_log_events_are_scrubbed_of_secrets() -> None:
    event = scrub_secrets(
        None, "info",
        {"event": "connect redis://u:hunter2@h:1/0 failed", "password": "hunter2", "n": 1},
    )  # fmt: skip
    assert "hunter2" not in str(event)
    assert event["n"] == 1

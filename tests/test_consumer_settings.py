"""One owner for lease, renewal, reclaim and backoff; what cannot be honoured is refused."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.worker.settings import WorkerSettings
from shared.config import ConsumerSettings, DispatcherSettings
from tests.processes import REPO, service_env


def test_worker_and_dispatcher_read_the_same_lease_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_LEASE_SECONDS", "90")
    monkeypatch.setenv("CONVEYOR_MAX_ATTEMPTS", "4")
    worker, dispatcher = WorkerSettings(), DispatcherSettings()
    assert (worker.lease_seconds, worker.max_attempts) == (90, 4)
    assert (dispatcher.lease_seconds, dispatcher.max_attempts) == (90, 4)
    assert worker.renew_interval == 30 and worker.reclaim_interval == 5
    assert worker.retry_backoff == 5 and worker.retry_backoff_max == 45


@pytest.mark.parametrize(
    ("values", "says"),
    [
        (
            {"lease_seconds": 120, "retry_backoff_max_seconds": 300},
            "CONVEYOR_RETRY_BACKOFF_MAX_SECONDS (300) is longer than CONVEYOR_LEASE_SECONDS (120)",
        ),
        (
            {"lease_seconds": 10, "retry_backoff_seconds": 20},
            "CONVEYOR_RETRY_BACKOFF_SECONDS (20) is longer than CONVEYOR_LEASE_SECONDS (10)",
        ),
        (
            {"lease_seconds": 30, "renew_interval_seconds": 20},
            "must be at most a third of CONVEYOR_LEASE_SECONDS (30)",
        ),
        (
            {"lease_seconds": 30, "reclaim_interval_seconds": 60},
            "CONVEYOR_RECLAIM_INTERVAL_SECONDS (60) must not exceed CONVEYOR_LEASE_SECONDS (30)",
        ),
        (
            {"retry_backoff_seconds": 10, "retry_backoff_max_seconds": 2},
            "is shorter than CONVEYOR_RETRY_BACKOFF_SECONDS (10)",
        ),
    ],
)
def test_settings_that_cannot_be_honoured_are_refused_saying_why(
    values: dict[str, float], says: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        ConsumerSettings(**values)  # type: ignore[arg-type]
    assert says in str(refused.value)


def test_a_worker_started_with_a_backoff_longer_than_its_lease_exits_saying_why(
    redis_url: str, namespace: str
) -> None:
    env = service_env(
        redis_url, namespace, CONVEYOR_LEASE_SECONDS="60", CONVEYOR_RETRY_BACKOFF_SECONDS="90"
    )
    done = subprocess.run(
        [sys.executable, "-m", "services.worker"], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "CONVEYOR_RETRY_BACKOFF_SECONDS (90) is longer than CONVEYOR_LEASE_SECONDS (60)" in (
        done.stderr
    )


leases = st.floats(min_value=0.5, max_value=3600)


@given(
    lease=leases,
    backoff=st.none() | st.floats(min_value=0, max_value=7200),
    backoff_max=st.none() | st.floats(min_value=0, max_value=7200),
    renew=st.none() | st.floats(min_value=0.01, max_value=3600),
    attempt=st.integers(min_value=1, max_value=60),
)
def test_accepted_settings_always_keep_backoffs_and_renewals_inside_the_lease(
    lease: float,
    backoff: float | None,
    backoff_max: float | None,
    renew: float | None,
    attempt: int,
) -> None:
    values = {
        "lease_seconds": lease,
        "retry_backoff_seconds": backoff,
        "retry_backoff_max_seconds": backoff_max,
        "renew_interval_seconds": renew,
    }
    try:
        settings = ConsumerSettings.model_validate(
            {name: value for name, value in values.items() if value is not None}
        )
    except ValidationError:
        return
    assert settings.backoff_for(attempt) <= settings.lease_seconds
    assert settings.backoff_for(attempt) <= settings.backoff_for(attempt + 1)
    assert settings.renew_interval <= settings.lease_seconds / 3
    assert settings.reclaim_interval <= settings.lease_seconds
    assert 0 < settings.local_deadline_margin < settings.lease_seconds - settings.renew_interval

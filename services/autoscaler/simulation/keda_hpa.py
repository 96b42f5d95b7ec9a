"""A model of KEDA's redis-streams scaler (lag mode) driving a Kubernetes HPA, with their defaults.

- KEDA polls the scaler every `polling_interval` (30 s). Its metric is the group's lag (entries
  not yet delivered; pending entries are not counted). The scaler is active when the lag exceeds
  `activation_lag_count` (0). At zero replicas an active scaler scales to one; when it has not been
  active for `cooldown_period` (300 s) KEDA scales to `min_replica_count` (0), whatever is pending.
- The HPA syncs every 15 s while replicas > 0, on an AverageValue external metric:
  `ratio = lag / (target x current)`; outside the tolerance (0.1) the recommendation is
  `ceil(lag / target)`. Scale-down is stabilised over 300 s (highest recommendation); scale-up
  by the default policies, the larger of +100 % and +4 pods per 15 s, counted from the replicas at
  the start of the period; bounds max(1, min_replica_count)..max_replica_count.

This is what the simulator replays beside our policy on the same trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from services.autoscaler.policy import replicas_for


@dataclass(frozen=True)
class KedaHpaSettings:
    lag_count: float = 1.0
    """KEDA's `lagCount`: target lag per replica (the same target our policy uses by default)."""
    activation_lag_count: int = 0
    polling_interval_seconds: float = 30.0
    cooldown_period_seconds: float = 300.0
    min_replica_count: int = 0
    max_replica_count: int = 20
    hpa_sync_seconds: float = 15.0
    tolerance: float = 0.1
    scale_down_window_seconds: float = 300.0
    scale_up_percent: float = 100.0
    scale_up_pods: int = 4
    scale_up_period_seconds: float = 15.0


@dataclass
class KedaHpaModel:
    """State of KEDA's operator and the HPA controller for one ScaledObject."""

    settings: KedaHpaSettings
    last_active: float | None = None
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    scale_up_events: list[tuple[float, int]] = field(default_factory=list)

    def keda_poll(self, now: float, lag: int, current: int) -> int | None:
        """KEDA's own loop: 0 -> 1 on activity, -> min after the cooldown. None: no change."""
        settings = self.settings
        active = lag > settings.activation_lag_count
        if active:
            self.last_active = now
        if current == 0 and active:
            return max(1, settings.min_replica_count)
        if current > 0 and not active and settings.min_replica_count == 0:
            idle_since = self.last_active if self.last_active is not None else 0.0
            if now - idle_since >= settings.cooldown_period_seconds:
                return 0
        return None

    def hpa_sync(self, now: float, lag: int, current: int) -> int | None:
        """One HPA reconcile; the HPA does nothing while the target has zero replicas."""
        settings = self.settings
        if current == 0:
            return None
        ratio = lag / (settings.lag_count * current)
        if abs(1.0 - ratio) <= settings.tolerance:
            recommendation = current
        else:
            recommendation = replicas_for(lag, settings.lag_count)
        window_start = now - settings.scale_down_window_seconds
        self.recommendations = [(t, r) for t, r in self.recommendations if t >= window_start] + [
            (now, recommendation)
        ]
        down_recommendation = max(r for _t, r in self.recommendations)
        stabilised = current
        if stabilised < recommendation:
            stabilised = recommendation
        if stabilised > down_recommendation:
            stabilised = down_recommendation

        period_start_time = now - settings.scale_up_period_seconds
        self.scale_up_events = [(t, n) for t, n in self.scale_up_events if t > period_start_time]
        added = sum(n for _t, n in self.scale_up_events)
        period_start = current - added
        limit = max(
            math.ceil(period_start * (1 + settings.scale_up_percent / 100.0)),
            period_start + settings.scale_up_pods,
        )
        desired = min(stabilised, max(limit, current)) if stabilised > current else stabilised
        desired = max(max(1, settings.min_replica_count), min(desired, settings.max_replica_count))
        if desired > current:
            self.scale_up_events.append((now, desired - current))
        return desired if desired != current else None

"""The autoscaler's Prometheus metrics, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.autoscaler.observe import QueueReading
from services.autoscaler.policy import Decision, ScalingPolicy


class AutoscalerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.observed_lag = Gauge(
            "conveyor_autoscaler_observed_lag",
            "Entries not yet delivered to the workers (estimated when the server cannot tell; "
            "-1 when unknown)",
            ["pool"], registry=self.registry,
        )  # fmt: skip
        self.observed_pending = Gauge(
            "conveyor_autoscaler_observed_pending",
            "Entries delivered to workers and not yet acknowledged",
            ["pool"], registry=self.registry,
        )  # fmt: skip
        self.current_replicas = Gauge(
            "conveyor_autoscaler_current_replicas", "Replicas the backend reports", ["pool"],
            registry=self.registry,
        )  # fmt: skip
        self.desired_replicas = Gauge(
            "conveyor_autoscaler_desired_replicas", "Replicas the policy decided", ["pool"],
            registry=self.registry,
        )  # fmt: skip
        self.max_replicas = Gauge(
            "conveyor_autoscaler_max_replicas", "The policy's upper bound", ["pool"],
            registry=self.registry,
        )  # fmt: skip
        self.decisions = Counter(
            "conveyor_autoscaler_decisions",
            "Decisions by direction (up, down, none) and reason",
            ["pool", "direction", "reason"], registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "conveyor_autoscaler_errors",
            "Failed observations or scale calls, by kind",
            ["pool", "kind"], registry=self.registry,
        )  # fmt: skip
        self.leader = Gauge(
            "conveyor_autoscaler_leader", "1 while this instance holds the lease and acts",
            registry=self.registry,
        )  # fmt: skip

    def record(self, reading: QueueReading, decision: Decision, policy: ScalingPolicy) -> None:
        pool = decision.pool
        self.observed_lag.labels(pool=pool).set(-1 if reading.lag is None else reading.lag)
        self.observed_pending.labels(pool=pool).set(reading.pending)
        self.current_replicas.labels(pool=pool).set(decision.current_replicas)
        self.desired_replicas.labels(pool=pool).set(decision.desired_replicas)
        self.max_replicas.labels(pool=pool).set(policy.max_replicas)
        self.decisions.labels(
            pool=pool, direction=decision.direction, reason=decision.reason.value
        ).inc()

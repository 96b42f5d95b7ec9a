"""Settings of `python -m services.autoscaler` (environment, prefix CONVEYOR_)."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from services.autoscaler.policy import ScalingPolicy
from shared.config import QueueSettings
from shared.keys import POOLS

BackendName = Literal["kubernetes", "local", "dry-run"]
_POLICY_FIELDS = tuple(f.name for f in fields(ScalingPolicy))
_DEFAULT_POLICY = ScalingPolicy()


class AutoscalerSettings(QueueSettings):
    pools: list[str] = Field(
        default_factory=lambda: list(POOLS),
        description="Pools the autoscaler sizes.",
    )
    poll_interval_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often the backlog is read and a decision made.",
    )
    backend: BackendName = Field(
        default="dry-run",
        validation_alias=AliasChoices("CONVEYOR_AUTOSCALER_BACKEND", "CONVEYOR_BACKEND", "backend"),
        description="kubernetes (the worker Deployments' scale), local (worker processes on this "
        "host) or dry-run (decide and log only).",
    )

    # Kubernetes
    deployments: dict[str, str] = Field(
        default_factory=lambda: {pool: f"worker-{pool}" for pool in POOLS},
        validation_alias=AliasChoices(
            "CONVEYOR_AUTOSCALER_DEPLOYMENTS", "CONVEYOR_DEPLOYMENTS", "deployments"
        ),
        description="Deployment of each pool's workers (JSON object pool -> name).",
    )
    kubernetes_namespace: str = Field(
        description="Namespace of the worker Deployments.",
        default="default",
        validation_alias=AliasChoices("CONVEYOR_KUBERNETES_NAMESPACE", "POD_NAMESPACE"),
    )
    kubeconfig: Path | None = Field(
        default=None,
        description="Outside a cluster: kubeconfig file (default ~/.kube/config or $KUBECONFIG).",
    )
    kubernetes_attempts: int = Field(
        default=5,
        ge=1,
        description="Tries of a scale patch (conflicts, 5xx) before the poll gives up.",
    )

    # Local processes
    local_command: list[str] | None = Field(
        default=None,
        description="Worker command; {pool} is replaced. Default: python -m services.worker "
        "--pool {pool}.",
    )
    local_metrics_port_base: int = Field(
        default=9200,
        ge=0,
        description="Worker slot i serves /metrics on this + i (0: any free port).",
    )
    local_stop_grace_seconds: float = Field(
        default=660.0,
        gt=0,
        description="After SIGTERM, how long a worker may drain before it is killed.",
    )

    # Dry run
    dry_run_replicas: dict[str, int] = Field(
        default_factory=dict,
        description="Replicas the dry-run backend pretends each pool has.",
    )

    # Policy (see services/autoscaler/policy.py)
    target_backlog_per_replica: float = Field(
        default=_DEFAULT_POLICY.target_backlog_per_replica,
        description="Lag + pending per worker the policy aims at.",
    )
    jobs_per_worker: int = Field(
        default=_DEFAULT_POLICY.jobs_per_worker,
        ge=1,
        validation_alias=AliasChoices("CONVEYOR_JOBS_PER_WORKER", "CONVEYOR_CONCURRENCY"),
        description="Jobs one worker runs at once (the workers' CONVEYOR_CONCURRENCY).",
    )
    tolerance: float = Field(
        default=_DEFAULT_POLICY.tolerance,
        description="Relative change below which replicas stay as they are.",
    )
    min_replicas: int = Field(
        default=_DEFAULT_POLICY.min_replicas,
        description="Fewest workers per pool.",
    )
    max_replicas: int = Field(
        default=_DEFAULT_POLICY.max_replicas,
        description="Most workers per pool.",
    )
    scale_up_max_percent: float = Field(
        default=_DEFAULT_POLICY.scale_up_max_percent,
        description="Most growth per scale-up period, in percent...",
    )
    scale_up_max_pods: int = Field(
        default=_DEFAULT_POLICY.scale_up_max_pods,
        description="...or in pods, whichever is more.",
    )
    scale_up_period_seconds: float = Field(
        default=_DEFAULT_POLICY.scale_up_period_seconds,
        description="Scale-up rate-limit period.",
    )
    scale_down_window_seconds: float = Field(
        default=_DEFAULT_POLICY.scale_down_window_seconds,
        description="Scale down to the highest wish of this window.",
    )
    scale_to_zero_cooldown_seconds: float = Field(
        default=_DEFAULT_POLICY.scale_to_zero_cooldown_seconds,
        description="Lag and pending both zero this long before a pool goes to zero.",
    )
    activation_backlog: int = Field(
        default=_DEFAULT_POLICY.activation_backlog,
        description="Backlog above which a pool at zero gets its first worker.",
    )
    reversal_guard_seconds: float = Field(
        default=_DEFAULT_POLICY.reversal_guard_seconds,
        description="No scale-down this soon after a scale-up...",
    )
    reversal_tolerance: float = Field(
        default=_DEFAULT_POLICY.reversal_tolerance,
        description="...unless the backlog fell by more than this factor.",
    )
    pool_policies: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='Per-pool overrides, e.g. {"ard": {"max_replicas": 4}}.',
    )

    # Service
    leader_lease_seconds: float = Field(
        default=15.0,
        gt=0,
        description="Lease of the one autoscaler instance that acts.",
    )
    instance_id: str | None = Field(default=None, description="Default hostname-pid.")
    lag_estimate_limit: int = Field(
        default=1000, ge=1, description="When the lag is unknown, count at most this many entries."
    )
    metrics_port: int = Field(
        default=9103,
        description="Port of /metrics and /healthz.",
    )
    metrics_host: str = Field(
        default="0.0.0.0",
        description="Address /metrics and /healthz listen on.",
    )

    @field_validator("pools")
    @classmethod
    def _known_pools(cls, pools: list[str]) -> list[str]:
        if not pools:
            raise ValueError("name at least one pool to scale")
        return pools

    @model_validator(mode="after")
    def _valid_policies(self) -> AutoscalerSettings:
        for pool in self.pools:
            self.policy_for(pool)  # raises ValueError with what is wrong
        unknown = sorted(set(self.pool_policies) - set(self.pools))
        if unknown:
            raise ValueError(f"pool_policies names pools not in pools: {', '.join(unknown)}")
        if self.backend == "kubernetes":
            missing = [pool for pool in self.pools if pool not in self.deployments]
            if missing:
                raise ValueError(
                    f"no Deployment named for pool(s) {', '.join(missing)}: "
                    'set CONVEYOR_DEPLOYMENTS=\'{"pool": "deployment-name"}\''
                )
        return self

    def policy_for(self, pool: str) -> ScalingPolicy:
        base = ScalingPolicy(**{name: getattr(self, name) for name in _POLICY_FIELDS})
        overrides = self.pool_policies.get(pool, {})
        unknown = sorted(set(overrides) - set(_POLICY_FIELDS))
        if unknown:
            raise ValueError(
                f"pool_policies[{pool!r}] has unknown field(s) {', '.join(unknown)}; "
                f"known: {', '.join(_POLICY_FIELDS)}"
            )
        typed = {name: type(getattr(base, name))(value) for name, value in overrides.items()}
        return replace(base, **typed)

    def worker_command(self) -> list[str]:
        from services.autoscaler.backends.local import DEFAULT_WORKER_COMMAND

        return self.local_command or list(DEFAULT_WORKER_COMMAND)

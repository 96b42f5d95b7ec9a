"""The autoscaler service: every poll, the leader observes each pool, decides, and applies.

Only the instance holding the lease `{ns}:autoscaler:leader` acts; the others keep trying to
take it and serve /metrics with `conveyor_autoscaler_leader 0`. A new leader starts each pool's
history as if the current size had just been recommended, so it never scales down before it has
seen a full window. Errors from the queue or the backend are counted, logged with what to do,
and retried at the next poll; nothing in the loop ends the service but SIGTERM/SIGINT.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace

import redis.asyncio as aioredis
import structlog
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from services.autoscaler.backends import ScaleBackend
from services.autoscaler.leader import LeaderLease
from services.autoscaler.metrics import AutoscalerMetrics
from services.autoscaler.observe import read_queue
from services.autoscaler.policy import Decision, History, decide
from services.autoscaler.settings import AutoscalerSettings
from shared.errors import ConveyorError
from shared.keys import Keys
from shared.outages import QUEUE_ERRORS
from shared.service import (
    Stoppable,
    default_consumer_name,
    install_stop_handlers,
    metrics_served,
)

log = structlog.get_logger(__name__)

_QUEUE_ERRORS: tuple[type[BaseException], ...] = (*QUEUE_ERRORS, RedisError)
default_instance_id = default_consumer_name


async def build_backend(settings: AutoscalerSettings, redis_url: str) -> ScaleBackend:
    """The configured backend; `redis_url` is handed to local workers."""
    if settings.backend == "kubernetes":
        from services.autoscaler.backends.kubernetes import (
            KubernetesBackend,
            kubernetes_api_client,
        )

        api_client = await kubernetes_api_client(settings.kubeconfig)
        return KubernetesBackend(
            api_client,
            {pool: settings.deployments[pool] for pool in settings.pools},
            settings.kubernetes_namespace,
            attempts=settings.kubernetes_attempts,
        )
    if settings.backend == "local":
        from services.autoscaler.backends.local import LocalProcessBackend

        # Each worker names its own consumer (hostname-pid) and gets its own metrics port.
        environment = {
            name: value
            for name, value in os.environ.items()
            if name not in ("CONVEYOR_CONSUMER_NAME", "CONVEYOR_METRICS_PORT")
        }
        environment.update(CONVEYOR_REDIS_URL=redis_url, CONVEYOR_NAMESPACE=settings.namespace)
        return LocalProcessBackend(
            settings.worker_command(),
            environment=environment,
            metrics_port_base=settings.local_metrics_port_base,
            stop_grace_seconds=settings.local_stop_grace_seconds,
        )
    from services.autoscaler.backends.dry_run import DryRunBackend

    return DryRunBackend(settings.dry_run_replicas)


class Autoscaler(Stoppable):
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: AutoscalerSettings,
        backend: ScaleBackend,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.redis = redis
        self.settings = settings
        self.backend = backend
        self.clock = clock
        self.keys = Keys(settings.namespace)
        self.instance_id = settings.instance_id or default_instance_id()
        self.lease = LeaderLease(
            redis, self.keys.leader("autoscaler"), self.instance_id, settings.leader_lease_seconds
        )
        self.metrics = AutoscalerMetrics(registry)
        self.policies = {pool: settings.policy_for(pool) for pool in settings.pools}
        self.histories: dict[str, History] = {}
        self.leading = False
        self.log = log.bind(instance=self.instance_id, namespace=settings.namespace)

    async def poll(self) -> dict[str, Decision]:
        """One round: hold the lease, then observe, decide and apply for every pool."""
        try:
            leading = await self.lease.acquire_or_renew()
        except _QUEUE_ERRORS as error:
            self.metrics.errors.labels(pool="", kind="queue_unavailable").inc()
            self.log.warning("cannot reach the queue to renew the lease; not acting",
                             error=str(error))  # fmt: skip
            leading = False
        if leading != self.leading:
            self.log.info("leadership " + ("taken" if leading else "lost"))
            self.histories.clear()
            self.leading = leading
        self.metrics.leader.set(1 if leading else 0)
        if not leading:
            return {}
        decisions = {}
        for pool in self.settings.pools:
            decision = await self.poll_pool(pool)
            if decision is not None:
                decisions[pool] = decision
        return decisions

    async def poll_pool(self, pool: str) -> Decision | None:
        policy = self.policies[pool]
        try:
            reading = await read_queue(
                self.redis, self.keys, pool, estimate_limit=self.settings.lag_estimate_limit
            )
        except _QUEUE_ERRORS as error:
            self.metrics.errors.labels(pool=pool, kind="queue_unavailable").inc()
            self.log.warning("cannot read the queue; keeping the pool as it is", pool=pool,
                             error=str(error))  # fmt: skip
            return None
        try:
            current = await self.backend.current_replicas(pool)
        except ConveyorError as error:
            self.metrics.errors.labels(pool=pool, kind=error.reason).inc()
            self.log.error("cannot read the pool's replicas", pool=pool, error=str(error))
            return None
        now = self.clock()
        history = self.histories.get(pool) or History.taking_over(current, now)
        decision = decide(reading.observation(current, now), history, policy)
        self.metrics.record(reading, decision, policy)
        self.histories[pool] = decision.history
        event = self.log.info if decision.changes else self.log.debug
        event("decision", pool=pool, current=decision.current_replicas,
              desired=decision.desired_replicas, direction=decision.direction,
              reason=decision.reason.value, lag=reading.lag, lag_estimated=reading.lag_estimated,
              pending=reading.pending, message=decision.message)  # fmt: skip
        if decision.changes:
            try:
                await self.backend.scale(pool, decision.desired_replicas)
            except ConveyorError as error:
                self.metrics.errors.labels(pool=pool, kind=error.reason).inc()
                self.log.error("scaling failed", pool=pool, desired=decision.desired_replicas,
                               error=str(error))  # fmt: skip
                # The size did not change: do not let the reversal guard believe it did.
                self.histories[pool] = replace(decision.history, last_change=history.last_change)
        return decision

    async def run(self, *, serve_http: bool = True) -> None:
        async with metrics_served(
            self.metrics.registry, self.settings.metrics_host, self.settings.metrics_port,
            enabled=serve_http,
        ):  # fmt: skip
            self.log.info("autoscaler started", backend=self.settings.backend,
                          pools=self.settings.pools,
                          poll_interval_seconds=self.settings.poll_interval_seconds)  # fmt: skip
            try:
                while not self.stopping.is_set():
                    started = time.monotonic()
                    await self.poll()
                    elapsed = time.monotonic() - started
                    await self.sleep(self.settings.poll_interval_seconds - elapsed)
            finally:
                if self.lease.held:
                    try:
                        await self.lease.release()
                    except _QUEUE_ERRORS as error:
                        self.log.warning("could not release the lease; it expires by itself",
                                         error=str(error))  # fmt: skip
                self.metrics.leader.set(0)
                self.log.info("autoscaler stopped")


# The one skeleton's handlers, under the name this module always offered.
install_signal_handlers = install_stop_handlers


async def serve(settings: AutoscalerSettings) -> None:
    """Run the service until SIGTERM/SIGINT, then release the lease and stop local workers."""
    from shared.redis_connection import connect, queue_url

    url, started_server = queue_url(settings, "autoscaler")
    redis = connect(url, settings)
    backend = await build_backend(settings, url)
    try:
        check = getattr(backend, "check", None)
        if check is not None:
            try:
                await check()
            except ConveyorError as error:
                log.error("backend check failed; will keep trying every poll", error=str(error))
        autoscaler = Autoscaler(redis, settings, backend)
        install_signal_handlers(autoscaler.stop)
        await autoscaler.run()
    finally:
        await backend.close()
        await redis.aclose()
        if started_server is not None:
            started_server.stop()

"""The Kubernetes backend: read and patch the `scale` subresource of each pool's apps/v1 Deployment.

Credentials come from the pod's service account in a cluster, else from a kubeconfig. A patch
carries the resourceVersion it was computed from, so a concurrent change (a person running
`kubectl scale`, a rollout) answers 409 Conflict and the patch is recomputed from a fresh read.
A 403 names the permission to grant; an API server that cannot be reached (or answers 5xx/429)
is retried with exponential backoff and then reported as `BackendUnavailable`, never a crash.

RBAC the autoscaler needs in the workers' namespace:

```yaml
rules:
  - apiGroups: ["apps"]
    resources: ["deployments"]
    verbs: ["get"]
  - apiGroups: ["apps"]
    resources: ["deployments/scale"]
    verbs: ["get", "patch"]
```
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import structlog
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from services.autoscaler.backends import (
    BackendUnavailable,
    ScalePermissionDenied,
    ScaleTargetMissing,
)
from shared.errors import Permanent

log = structlog.get_logger(__name__)

T = TypeVar("T")
_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
_UNREACHABLE = (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError)


class _Conflict(Exception):
    """A patch lost a race with another writer; read again and retry."""


async def kubernetes_api_client(kubeconfig: Path | None = None) -> client.ApiClient:
    """An API client from the service account in a pod, or from a kubeconfig outside one."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and kubeconfig is None:
        config.load_incluster_config(client_configuration=configuration)
    else:
        await config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None,
            client_configuration=configuration,
        )
    return client.ApiClient(configuration=configuration)


def _status_message(error: ApiException) -> str:
    """The API server's own message from a Status body, if there is one."""
    try:
        body = json.loads(error.body) if error.body else {}
    except (TypeError, ValueError):
        return str(error.reason or "")
    return str(body.get("message") or error.reason or "")


class KubernetesBackend:
    def __init__(
        self,
        api_client: client.ApiClient,
        deployments: Mapping[str, str],
        namespace: str,
        *,
        attempts: int = 5,
        backoff_seconds: float = 0.5,
        backoff_max_seconds: float = 8.0,
        request_timeout_seconds: float = 10.0,
    ) -> None:
        self.api_client = api_client
        self.apps = client.AppsV1Api(api_client)
        self.deployments = dict(deployments)
        self.namespace = namespace
        self.attempts = max(1, attempts)
        self.backoff_seconds = backoff_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.request_timeout_seconds = request_timeout_seconds

    def deployment(self, pool: str) -> str:
        try:
            return self.deployments[pool]
        except KeyError:
            raise ScaleTargetMissing(
                f"no Deployment configured for pool {pool!r}; set CONVEYOR_DEPLOYMENTS"
            ) from None

    async def check(self) -> None:
        """Fail early, with the fix, when a Deployment is missing or may not be read."""
        for pool in self.deployments:
            name = self.deployment(pool)
            await self._with_retries(
                pool,
                "get deployments",
                lambda name=name: self.apps.read_namespaced_deployment(  # type: ignore[misc]
                    name, self.namespace, _request_timeout=self.request_timeout_seconds
                ),
            )

    async def current_replicas(self, pool: str) -> int:
        scale = await self._read_scale(pool)
        return int(scale.spec.replicas or 0)

    async def scale(self, pool: str, replicas: int) -> None:
        name = self.deployment(pool)
        for attempt in range(1, self.attempts + 1):
            scale = await self._read_scale(pool)
            if int(scale.spec.replicas or 0) == replicas:
                return
            body = {
                "metadata": {"resourceVersion": scale.metadata.resource_version},
                "spec": {"replicas": replicas},
            }
            try:
                await self._with_retries(
                    pool,
                    "patch deployments/scale",
                    lambda body=body: self.apps.patch_namespaced_deployment_scale(  # type: ignore[misc]
                        name, self.namespace, body, _request_timeout=self.request_timeout_seconds
                    ),
                    conflict_is_retryable=True,
                )
            except _Conflict:
                log.info("scale conflict; reading again", pool=pool, deployment=name,
                         attempt=attempt)  # fmt: skip
                continue
            log.info("scaled", pool=pool, deployment=name, namespace=self.namespace,
                     replicas=replicas)  # fmt: skip
            return
        raise BackendUnavailable(
            f"deployments/{name} in namespace {self.namespace} kept changing under us: "
            f"{self.attempts} patches in a row conflicted; will try again at the next poll"
        )

    async def close(self) -> None:
        await self.api_client.close()

    async def _read_scale(self, pool: str) -> Any:
        name = self.deployment(pool)
        return await self._with_retries(
            pool,
            "get deployments/scale",
            lambda: self.apps.read_namespaced_deployment_scale(
                name, self.namespace, _request_timeout=self.request_timeout_seconds
            ),
        )

    async def _with_retries(
        self,
        pool: str,
        permission: str,
        call: Callable[[], Awaitable[T]],
        *,
        conflict_is_retryable: bool = False,
    ) -> T:
        """Run one API call, retrying what may pass, translating what will not."""
        name = self.deployment(pool)
        delay = self.backoff_seconds
        last_problem = ""
        for attempt in range(1, self.attempts + 1):
            try:
                return await call()
            except ApiException as error:
                if error.status == 409 and conflict_is_retryable:
                    raise _Conflict() from error
                if error.status == 403:
                    raise ScalePermissionDenied(
                        f"the autoscaler may not {permission} in namespace {self.namespace} "
                        f"(Deployment {name}, pool {pool}): grant its service account a Role "
                        f'with apiGroups ["apps"], resources ["deployments/scale"], verbs '
                        f'["get", "patch"] (and "get" on "deployments"). '
                        f"The API server said: {_status_message(error)}"
                    ) from None
                if error.status == 404:
                    raise ScaleTargetMissing(
                        f"Deployment {name} (pool {pool}) not found in namespace "
                        f"{self.namespace}; create it or fix CONVEYOR_DEPLOYMENTS / "
                        "CONVEYOR_KUBERNETES_NAMESPACE"
                    ) from None
                if error.status == 401:
                    raise Permanent(
                        "the Kubernetes API refused the autoscaler's credentials (401); check "
                        "the service account token or kubeconfig"
                    ) from None
                if error.status not in _RETRIED_STATUSES:
                    raise Permanent(
                        f"{permission} for Deployment {name} in namespace {self.namespace} "
                        f"failed with HTTP {error.status}: {_status_message(error)}"
                    ) from None
                last_problem = f"HTTP {error.status} {_status_message(error)}".strip()
            except _UNREACHABLE as error:
                last_problem = f"{type(error).__name__}: {error}".strip()
            if attempt < self.attempts:
                log.warning("kubernetes API call failed; retrying", pool=pool,
                            call=permission, attempt=attempt, problem=last_problem,
                            retry_in=delay)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max_seconds)
        raise BackendUnavailable(
            f"the Kubernetes API at {self.api_client.configuration.host} did not answer "
            f"{permission} for Deployment {name} after {self.attempts} attempts "
            f"({last_problem}); will try again at the next poll"
        )

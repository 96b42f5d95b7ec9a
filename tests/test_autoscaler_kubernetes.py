"""The Kubernetes backend: the real kubernetes-asyncio client against an HTTP server in the test
that speaks the apps/v1 Deployment and `scale` endpoints (409, 403 and an API that is down too)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from kubernetes_asyncio import client

from services.autoscaler.backends import (
    BackendUnavailable,
    ScalePermissionDenied,
    ScaleTargetMissing,
)
from services.autoscaler.backends.kubernetes import KubernetesBackend, kubernetes_api_client
from services.autoscaler.service import Autoscaler
from services.autoscaler.settings import AutoscalerSettings
from shared.embedded import free_port
from shared.keys import Keys

NAMESPACE = "eo-workers"
SCALE_PATH = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"
DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"


def status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip
    return web.json_response(body, status=code)


@dataclass
class Deployment:
    replicas: int
    resource_version: int = 1


@dataclass
class FakeApiServer:
    """Deployments by (namespace, name), and faults to inject."""

    deployments: dict[tuple[str, str], Deployment] = field(default_factory=dict)
    forbidden_verbs: set[str] = field(default_factory=set)
    concurrent_writes_before_patch: int = 0
    server_errors: int = 0
    requests: list[tuple[str, str, str]] = field(default_factory=list)

    def scale_body(self, namespace: str, name: str) -> dict[str, Any]:
        deployment = self.deployments[(namespace, name)]
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": name, "namespace": namespace,
                         "resourceVersion": str(deployment.resource_version)},
            "spec": {"replicas": deployment.replicas},
            "status": {"replicas": deployment.replicas, "selector": f"app={name}"},
        }  # fmt: skip

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(SCALE_PATH, self.get_scale)
        app.router.add_patch(SCALE_PATH, self.patch_scale)
        app.router.add_get(DEPLOYMENT_PATH, self.get_deployment)
        return app

    def _lookup(
        self, request: web.Request, verb: str, resource: str
    ) -> tuple[str, str] | web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        self.requests.append((request.method, request.path, request.content_type))
        if self.server_errors:
            self.server_errors -= 1
            return status(503, "ServiceUnavailable", "etcd is restarting")
        if verb in self.forbidden_verbs:
            return status(
                403, "Forbidden",
                f'deployments.apps "{name}" is forbidden: User '
                f'"system:serviceaccount:{namespace}:autoscaler" cannot {verb} resource '
                f'"{resource}" in API group "apps" in the namespace "{namespace}"',
            )  # fmt: skip
        if (namespace, name) not in self.deployments:
            return status(404, "NotFound", f'deployments.apps "{name}" not found')
        return namespace, name

    async def get_scale(self, request: web.Request) -> web.Response:
        found = self._lookup(request, "get", "deployments/scale")
        if isinstance(found, web.Response):
            return found
        return web.json_response(self.scale_body(*found))

    async def patch_scale(self, request: web.Request) -> web.Response:
        found = self._lookup(request, "patch", "deployments/scale")
        if isinstance(found, web.Response):
            return found
        deployment = self.deployments[found]
        if self.concurrent_writes_before_patch:
            # Someone else (kubectl scale, a rollout) wrote between our read and our patch.
            self.concurrent_writes_before_patch -= 1
            deployment.resource_version += 1
        patch = json.loads(await request.text())
        expected = patch.get("metadata", {}).get("resourceVersion")
        if expected is not None and expected != str(deployment.resource_version):
            return status(
                409, "Conflict",
                'Operation cannot be fulfilled on deployments.apps: the object has been '
                "modified; please apply your changes to the latest version and try again",
            )  # fmt: skip
        deployment.replicas = int(patch["spec"]["replicas"])
        deployment.resource_version += 1
        return web.json_response(self.scale_body(*found))

    async def get_deployment(self, request: web.Request) -> web.Response:
        found = self._lookup(request, "get", "deployments")
        if isinstance(found, web.Response):
            return found
        namespace, name = found
        deployment = self.deployments[found]
        labels = {"app": name}
        return web.json_response({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace,
                         "resourceVersion": str(deployment.resource_version)},
            "spec": {
                "replicas": deployment.replicas,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels},
                             "spec": {"containers": [{"name": "worker", "image": "conveyor"}]}},
            },
            "status": {"replicas": deployment.replicas},
        })  # fmt: skip


async def start(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeApiServer, int]]:
    fake = FakeApiServer(
        deployments={(NAMESPACE, "conveyor-worker-product"): Deployment(replicas=2),
                     (NAMESPACE, "conveyor-worker-ard"): Deployment(replicas=0)}
    )  # fmt: skip
    port = free_port()
    runner = await start(fake.app(), port)
    yield fake, port
    await runner.cleanup()


def backend_for(port: int, **options: Any) -> KubernetesBackend:
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    return KubernetesBackend(
        client.ApiClient(configuration=configuration),
        {"product": "conveyor-worker-product", "ard": "conveyor-worker-ard"},
        NAMESPACE,
        backoff_seconds=0.01,
        **options,
    )


async def test_reads_and_patches_the_deployment_scale_subresource(
    api: tuple[FakeApiServer, int],
) -> None:
    fake, port = api
    backend = backend_for(port)
    try:
        await backend.check()
        assert await backend.current_replicas("product") == 2
        await backend.scale("product", 7)
        assert fake.deployments[(NAMESPACE, "conveyor-worker-product")].replicas == 7
        assert await backend.current_replicas("product") == 7
    finally:
        await backend.close()
    patches = [r for r in fake.requests if r[0] == "PATCH"]
    assert patches == [
        ("PATCH", "/apis/apps/v1/namespaces/eo-workers/deployments/conveyor-worker-product/scale",
         "application/strategic-merge-patch+json")
    ]  # fmt: skip


async def test_a_conflicting_write_is_retried_from_a_fresh_read(
    api: tuple[FakeApiServer, int],
) -> None:
    fake, port = api
    fake.concurrent_writes_before_patch = 2
    backend = backend_for(port)
    try:
        await backend.scale("product", 5)
    finally:
        await backend.close()
    assert fake.deployments[(NAMESPACE, "conveyor-worker-product")].replicas == 5
    assert [method for method, _path, _type in fake.requests].count("PATCH") == 3


async def test_forbidden_names_the_missing_permission_and_namespace(
    api: tuple[FakeApiServer, int],
) -> None:
    fake, port = api
    fake.forbidden_verbs = {"patch"}
    backend = backend_for(port)
    try:
        with pytest.raises(ScalePermissionDenied) as raised:
            await backend.scale("product", 5)
    finally:
        await backend.close()
    message = str(raised.value)
    assert "patch deployments/scale in namespace eo-workers" in message
    assert '"deployments/scale"' in message and "cannot patch" in message
    assert fake.deployments[(NAMESPACE, "conveyor-worker-product")].replicas == 2


async def test_a_missing_deployment_says_which_and_where(api: tuple[FakeApiServer, int]) -> None:
    fake, port = api
    del fake.deployments[(NAMESPACE, "conveyor-worker-ard")]
    backend = backend_for(port)
    try:
        with pytest.raises(
            ScaleTargetMissing, match=r"conveyor-worker-ard .* namespace eo-workers"
        ):
            await backend.check()
    finally:
        await backend.close()


async def test_an_api_that_is_down_is_retried_then_reported_and_works_once_back() -> None:
    port = free_port()
    backend = backend_for(port, attempts=3)
    fake = FakeApiServer(deployments={(NAMESPACE, "conveyor-worker-product"): Deployment(3)})
    try:
        with pytest.raises(BackendUnavailable, match="after 3 attempts"):
            await backend.current_replicas("product")
        runner = await start(fake.app(), port)
        try:
            fake.server_errors = 2  # still starting up: two 503s, then served
            await backend.scale("product", 4)
            assert fake.deployments[(NAMESPACE, "conveyor-worker-product")].replicas == 4
        finally:
            await runner.cleanup()
    finally:
        await backend.close()


async def test_the_backend_loads_a_kubeconfig_outside_a_cluster(
    api: tuple[FakeApiServer, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake, port = api
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "autoscaler", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "autoscaler"}}],
    }))  # fmt: skip
    backend = KubernetesBackend(
        await kubernetes_api_client(kubeconfig),
        {"product": "conveyor-worker-product"},
        NAMESPACE,
    )
    try:
        assert await backend.current_replicas("product") == 2
    finally:
        await backend.close()


async def test_the_service_scales_the_deployment_from_stream_lag_and_survives_a_403(
    api: tuple[FakeApiServer, int], redis_client: aioredis.Redis, namespace: str
) -> None:
    fake, port = api
    keys = Keys(namespace)
    await redis_client.xgroup_create(keys.jobs("product"), "workers", id="0", mkstream=True)
    for number in range(6):
        await redis_client.xadd(keys.jobs("product"), {"n": str(number)})
    settings = AutoscalerSettings(
        namespace=namespace, pools=["product"], backend="kubernetes",
        kubernetes_namespace=NAMESPACE, instance_id="a",
    )  # fmt: skip
    backend = backend_for(port)
    autoscaler = Autoscaler(redis_client, settings, backend)
    try:
        decisions = await autoscaler.poll()
        # A fresh leader starts from the current 2 replicas; lag 6 calls for 6.
        assert decisions["product"].desired_replicas == 6
        assert fake.deployments[(NAMESPACE, "conveyor-worker-product")].replicas == 6

        fake.forbidden_verbs = {"patch"}
        await redis_client.xadd(keys.jobs("product"), {"n": "burst"})
        for number in range(30):
            await redis_client.xadd(keys.jobs("product"), {"n": str(number)})
        await autoscaler.poll()  # must not raise
        errors = autoscaler.metrics.registry.get_sample_value(
            "conveyor_autoscaler_errors_total", {"pool": "product", "kind": "forbidden"}
        )
        assert errors == 1
        assert fake.deployments[(NAMESPACE, "conveyor-worker-product")].replicas == 6
    finally:
        await backend.close()


async def test_the_service_keeps_polling_while_the_api_is_down(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    await redis_client.xgroup_create(Keys(namespace).jobs("product"), "workers", mkstream=True)
    settings = AutoscalerSettings(
        namespace=namespace, pools=["product"], backend="kubernetes", instance_id="a"
    )
    backend = backend_for(free_port(), attempts=2)
    autoscaler = Autoscaler(redis_client, settings, backend)
    try:
        assert await autoscaler.poll() == {}
        assert await autoscaler.poll() == {}
    finally:
        await backend.close()
    errors = autoscaler.metrics.registry.get_sample_value(
        "conveyor_autoscaler_errors_total", {"pool": "product", "kind": "api_unavailable"}
    )
    assert errors == 2 and autoscaler.leading

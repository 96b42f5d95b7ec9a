"""What users deploy is correct without a cluster: the kustomize overlays render, every object
validates against the Kubernetes schemas (and the CRDs' own), pods are locked down, the
autoscaler may do exactly what it needs, and every metric a rule or dashboard queries exists.

`kubectl` (Debian's kubernetes-client) and `promtool` (Debian's prometheus) come from
scripts/system-deps.sh, which `make test` runs.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import redis as redis_client
import yaml

from shared.acl import ROLES, acl_template, username
from shared.embedded import free_port, valkey_server_binary

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = REPO_ROOT / "manifests"
DEPLOY = REPO_ROOT / "deploy"
RULE_FILES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
DASHBOARD_FILES = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))

OVERLAYS = {
    "base": MANIFESTS / "base",
    "dev": MANIFESTS / "overlays" / "dev",
    "prod": MANIFESTS / "overlays" / "prod",
    "keda": MANIFESTS / "overlays" / "keda",
    "external-redis": MANIFESTS / "overlays" / "external-redis",
    "dask": MANIFESTS / "overlays" / "dask",
}
# Oldest and a recent Kubernetes minor that the manifests must be valid for.
KUBERNETES_VERSIONS = ("1.29", "1.33")
WORKER_DEPLOYMENTS = {"worker-product", "worker-ard"}
CONVEYOR_COMPONENTS = ("dispatcher", "worker", "autoscaler")

Manifest = dict[str, Any]
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# --- tools ----------------------------------------------------------------------------------


def system_tool(name: str) -> str:
    """Path of a system tool, failing (never skipping) with how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not installed: run `bash scripts/system-deps.sh` (it installs Debian's "
            "kubernetes-client and prometheus packages, for kubectl and promtool)",
            pytrace=False,
        )
    return path


def run_tool(*command: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """Run a tool; a non-zero exit fails the test with the tool's own output."""
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    if completed.returncode != 0:
        pytest.fail(
            f"`{' '.join(command)}` exited {completed.returncode}:\n"
            f"{completed.stdout}\n{completed.stderr}",
            pytrace=False,
        )
    return completed


@cache
def _render(overlay: str) -> str:
    kubectl = system_tool("kubectl")
    return run_tool(kubectl, "kustomize", str(OVERLAYS[overlay])).stdout


def render(overlay: str) -> list[Manifest]:
    """The objects `kubectl kustomize` renders for an overlay (fresh copies)."""
    return [doc for doc in yaml.load_all(_render(overlay), Loader=YAML_LOADER) if doc]


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def pod_templates(objects: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    """(workload name, pod template) for every object that runs pods."""
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
            yield f"CronJob/{obj['metadata']['name']}", template


def all_containers(pod_spec: Manifest) -> list[Manifest]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def env_value(container: Manifest, name: str) -> Any:
    for variable in container.get("env", []):
        if variable["name"] == name:
            return variable.get("value", variable.get("valueFrom"))
    return None


def selector_matches(selector: Manifest, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics (matchLabels and matchExpressions)."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


# --- metric names ---------------------------------------------------------------------------

# What the services export (README, "Observability"), by exposition type.
EXPORTED_METRICS: dict[str, str] = {
    # dispatcher
    "conveyor_events_consumed_total": "counter",
    "conveyor_jobs_dispatched_total": "counter",
    "conveyor_dead_letters_total": "counter",
    "conveyor_dispatch_latency_seconds": "histogram",
    "conveyor_stream_length": "gauge",
    "conveyor_stream_lag": "gauge",
    "conveyor_stream_pending": "gauge",
    "conveyor_dead_letters_stored": "gauge",
    "conveyor_dead_letters_cap": "gauge",
    "conveyor_consumers_removed_total": "counter",
    # worker
    "conveyor_jobs_total": "counter",
    "conveyor_stage_duration_seconds": "histogram",
    "conveyor_jobs_in_flight": "gauge",
    "conveyor_job_retries_total": "counter",
    "conveyor_bytes_written_total": "counter",
    "conveyor_jobs_stopped_total": "counter",
    "conveyor_lease_renewal_failures_total": "counter",
    # autoscaler
    "conveyor_autoscaler_observed_lag": "gauge",
    "conveyor_autoscaler_observed_pending": "gauge",
    "conveyor_autoscaler_current_replicas": "gauge",
    "conveyor_autoscaler_desired_replicas": "gauge",
    "conveyor_autoscaler_max_replicas": "gauge",
    "conveyor_autoscaler_decisions_total": "counter",
    "conveyor_autoscaler_errors_total": "counter",
    "conveyor_autoscaler_leader": "gauge",
}
# Series Prometheus makes itself for every scrape target, never on a service's /metrics.
SCRAPE_SERIES = frozenset({"up"})
# Series of redis_exporter (beside Redis in the StatefulSet and in Compose), from INFO's
# `used_memory` and `maxmemory`: not on a conveyor service's /metrics either.
EXPORTER_SERIES = frozenset({"redis_memory_used_bytes", "redis_memory_max_bytes"})

_PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
    | {"offset", "bool", "inf", "nan", "start", "end"}
)
_STRING_LITERAL = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def series_names_in(expression: str) -> set[str]:
    """Names of the series a PromQL expression selects (not functions, labels or keywords).

    Grafana's `$variables` may stand anywhere a duration or label value does.
    """
    text = _STRING_LITERAL.sub('""', expression)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", "5m", text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _LABEL_LIST.sub(" ", text)  # label lists of aggregations and vector matching
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        word, is_call = match.group(1), match.group(2)
        if is_call or word in _PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def rule_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every alerting and recording rule."""
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                found.append((f"{path.name}:{name}", str(rule["expr"])))
    return found


def dashboard_panels(dashboard: Manifest) -> Iterator[Manifest]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every query of every dashboard panel."""
    found = []
    for path in DASHBOARD_FILES:
        dashboard = json.loads(path.read_text())
        for panel in dashboard_panels(dashboard):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    where = f"{path.name}:{panel['title']}:{target['refId']}"
                    found.append((where, target["expr"]))
    return found


def series_queried() -> set[str]:
    """Every series name the alert rules and the dashboards query, `up` included."""
    names: set[str] = set()
    for _where, expression in [*rule_expressions(), *dashboard_expressions()]:
        names |= series_names_in(expression)
    return names


def metric_names_used() -> set[str]:
    """Every metric name the alert rules and dashboard panels query that a service must export.

    Names are as they appear on /metrics (`conveyor_jobs_total`,
    `conveyor_stage_duration_seconds_bucket`); series Prometheus adds itself (`up`) and
    redis_exporter's are left out.
    """
    return series_queried() - SCRAPE_SERIES - EXPORTER_SERIES


def exported_series_names() -> set[str]:
    """The series names the services' /metrics carry, histograms expanded."""
    names: set[str] = set()
    for name, kind in EXPORTED_METRICS.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


# --- CRD schemas ----------------------------------------------------------------------------
# kubernetes-validate knows only built-in kinds. These schemas are written from the CRDs'
# OpenAPI specs (prometheus-operator monitoring.coreos.com/v1, KEDA keda.sh/v1alpha1), with the
# fields these manifests may use, and reject anything else so that a typo cannot slip through.

_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_DURATION = {
    "type": "string",
    "pattern": r"^(0|([0-9]+(ms|[smhdwy]))+)$",
}


def _crd(api_version: str, kind: str, spec: Manifest) -> Manifest:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
    }


SERVICE_MONITOR_SCHEMA = _crd(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    {
        "type": "object",
        "required": ["selector", "endpoints"],
        "additionalProperties": False,
        "properties": {
            "selector": _LABEL_SELECTOR,
            "namespaceSelector": {
                "type": "object",
                "properties": {
                    "any": {"type": "boolean"},
                    "matchNames": {"type": "array", "items": {"type": "string"}},
                },
                "additionalProperties": False,
            },
            "jobLabel": {"type": "string"},
            "targetLabels": {"type": "array", "items": {"type": "string"}},
            "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "sampleLimit": {"type": "integer", "minimum": 0},
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "targetPort": {"type": ["string", "integer"]},
                        "path": {"type": "string"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": _DURATION,
                        "scrapeTimeout": _DURATION,
                        "honorLabels": {"type": "boolean"},
                        "honorTimestamps": {"type": "boolean"},
                        "relabelings": {"type": "array", "items": {"type": "object"}},
                        "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                        "tlsConfig": {"type": "object"},
                    },
                },
            },
        },
    },
)

PROMETHEUS_RULE_SCHEMA = _crd(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "rules"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": _DURATION,
                        "limit": {"type": "integer"},
                        "rules": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["expr"],
                                "additionalProperties": False,
                                "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                "properties": {
                                    "alert": {"type": "string"},
                                    "record": {"type": "string"},
                                    "expr": {"type": ["string", "integer"]},
                                    "for": _DURATION,
                                    "keep_firing_for": _DURATION,
                                    "labels": {
                                        "type": "object",
                                        "additionalProperties": {"type": "string"},
                                    },
                                    "annotations": {
                                        "type": "object",
                                        "additionalProperties": {"type": "string"},
                                    },
                                },
                            },
                        },
                    },
                },
            }
        },
    },
)

_KEDA_TRIGGER = {
    "type": "object",
    "required": ["type", "metadata"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string"},
        "name": {"type": "string"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "authenticationRef": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
            },
        },
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "useCachedMetrics": {"type": "boolean"},
    },
}

SCALED_OBJECT_SCHEMA = _crd(
    "keda.sh/v1alpha1",
    "ScaledObject",
    {
        "type": "object",
        "required": ["scaleTargetRef", "triggers"],
        "additionalProperties": False,
        "properties": {
            "scaleTargetRef": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "kind": {"type": "string"},
                    "apiVersion": {"type": "string"},
                    "envSourceContainerName": {"type": "string"},
                },
            },
            "pollingInterval": {"type": "integer", "minimum": 1},
            "cooldownPeriod": {"type": "integer", "minimum": 0},
            "initialCooldownPeriod": {"type": "integer", "minimum": 0},
            "idleReplicaCount": {"type": "integer", "minimum": 0},
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "advanced": {"type": "object"},
            "fallback": {
                "type": "object",
                "required": ["failureThreshold", "replicas"],
                "properties": {
                    "failureThreshold": {"type": "integer"},
                    "replicas": {"type": "integer"},
                },
            },
            "triggers": {"type": "array", "minItems": 1, "items": _KEDA_TRIGGER},
        },
    },
)

TRIGGER_AUTHENTICATION_SCHEMA = _crd(
    "keda.sh/v1alpha1",
    "TriggerAuthentication",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "secretTargetRef": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["parameter", "name", "key"],
                    "additionalProperties": False,
                    "properties": {
                        "parameter": {"type": "string"},
                        "name": {"type": "string"},
                        "key": {"type": "string"},
                    },
                },
            },
            "env": {"type": "array", "items": {"type": "object"}},
            "podIdentity": {"type": "object"},
        },
    },
)

CRD_SCHEMAS: dict[tuple[str, str], Manifest] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_SCHEMA,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE_SCHEMA,
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT_SCHEMA,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION_SCHEMA,
}


# --- rendering and schemas ------------------------------------------------------------------


@cache
def schema_problems(object_json: str) -> tuple[str, ...]:
    """Why an object (as canonical JSON) is invalid; cached, as overlays share most objects."""
    obj = json.loads(object_json)
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    crd_schema = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if crd_schema is not None:
        return tuple(
            f"{where}: {error.message} at {list(error.absolute_path)}"
            for error in jsonschema.Draft202012Validator(crd_schema).iter_errors(obj)
        )
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{where}: {obj['apiVersion']} has no schema in Kubernetes {version}")
        except kubernetes_validate.ValidationError as error:
            problems.append(
                f"{where} (Kubernetes {version}): {error.message} at {list(error.path)}"
            )
    return tuple(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates_against_its_schema(overlay: str) -> None:
    objects = render(overlay)
    assert objects, f"{overlay} rendered nothing"
    problems = [
        problem for obj in objects for problem in schema_problems(json.dumps(obj, sort_keys=True))
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_one_namespace_and_names_are_unique(overlay: str) -> None:
    objects = render(overlay)
    namespaces = {obj["metadata"].get("namespace") for obj in objects if obj["kind"] != "Namespace"}
    assert namespaces == {"conveyor"}
    keys = [(obj["kind"], obj["metadata"]["name"]) for obj in objects]
    assert len(keys) == len(set(keys))


def test_crd_schemas_reject_a_misspelt_field() -> None:
    scaled_object = named(render("keda"), "ScaledObject", "worker-product")
    scaled_object["spec"]["maxReplicas"] = scaled_object["spec"].pop("maxReplicaCount")
    errors = list(jsonschema.Draft202012Validator(SCALED_OBJECT_SCHEMA).iter_errors(scaled_object))
    assert any("maxReplicas" in error.message for error in errors)


def test_kubernetes_schemas_reject_a_misspelt_field() -> None:
    deployment = named(render("base"), "Deployment", "dispatcher")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


# --- pods -----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_non_root_read_only_without_capabilities(overlay: str) -> None:
    problems = []
    for workload, template in pod_templates(render(overlay)):
        spec = template["spec"]
        pod_security = spec.get("securityContext", {})
        if pod_security.get("runAsNonRoot") is not True:
            problems.append(f"{workload}: pod securityContext.runAsNonRoot is not true")
        if pod_security.get("runAsUser", 1) == 0:
            problems.append(f"{workload}: pod runs as uid 0")
        if pod_security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{workload}: pod seccompProfile is not RuntimeDefault")
        for container in all_containers(spec):
            where = f"{workload} container {container['name']}"
            security = container.get("securityContext", {})
            if security.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem is writable")
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: privilege escalation is allowed")
            if security.get("runAsUser", 1) == 0 or security.get("runAsNonRoot") is False:
                problems.append(f"{where}: runs as root")
            if security.get("privileged"):
                problems.append(f"{where}: privileged")
            capabilities = security.get("capabilities", {})
            if capabilities.get("drop") != ["ALL"] or capabilities.get("add"):
                problems.append(f"{where}: capabilities are not exactly drop [ALL]")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_a_writable_tmp_and_resource_requests(overlay: str) -> None:
    problems = []
    for workload, template in pod_templates(render(overlay)):
        spec = template["spec"]
        empty_dirs = {volume["name"] for volume in spec.get("volumes", []) if "emptyDir" in volume}
        for container in all_containers(spec):
            where = f"{workload} container {container['name']}"
            tmp_mounts = [
                mount
                for mount in container.get("volumeMounts", [])
                if mount["mountPath"] == "/tmp" and mount["name"] in empty_dirs
            ]
            if not tmp_mounts:
                problems.append(f"{where}: /tmp is not an emptyDir (read-only root needs one)")
            requests = container.get("resources", {}).get("requests", {})
            if not {"cpu", "memory"} <= requests.keys():
                problems.append(f"{where}: no cpu and memory requests")
            if "memory" not in container.get("resources", {}).get("limits", {}):
                problems.append(f"{where}: no memory limit")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_autoscaler_gets_a_service_account_token(overlay: str) -> None:
    for workload, template in pod_templates(render(overlay)):
        spec = template["spec"]
        if spec.get("serviceAccountName") == "autoscaler":
            assert spec.get("automountServiceAccountToken") is True, workload
        else:
            assert spec.get("automountServiceAccountToken") is False, workload


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_replicas_are_left_to_the_autoscaler(overlay: str) -> None:
    workers = [
        obj
        for obj in of_kind(render(overlay), "Deployment")
        if obj["metadata"]["name"] in WORKER_DEPLOYMENTS
    ]
    assert {obj["metadata"]["name"] for obj in workers} == WORKER_DEPLOYMENTS
    for worker in workers:
        assert "replicas" not in worker["spec"], (
            f"{worker['metadata']['name']} sets replicas: every `kubectl apply` would undo the "
            "autoscaler's choice"
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_get_a_grace_period_longer_than_their_drain(overlay: str) -> None:
    for worker in of_kind(render(overlay), "Deployment"):
        if worker["metadata"]["name"] not in WORKER_DEPLOYMENTS:
            continue
        spec = worker["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        drain_seconds = float(env_value(container, "CONVEYOR_DRAIN_SECONDS"))
        grace_seconds = spec["terminationGracePeriodSeconds"]
        # A job must fit: at least 10 minutes to finish, and time left after the drain to hand
        # back what did not finish before the kubelet kills the pod.
        assert drain_seconds >= 600
        assert grace_seconds >= drain_seconds + 60, worker["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_run_as_their_modules_with_their_metrics_ports(overlay: str) -> None:
    expected = {
        "dispatcher": (["python", "-m", "services.dispatcher"], 9101),
        "worker-product": (["python", "-m", "services.worker"], 9102),
        "worker-ard": (["python", "-m", "services.worker"], 9102),
        "autoscaler": (["python", "-m", "services.autoscaler"], 9103),
    }
    deployments = {obj["metadata"]["name"]: obj for obj in of_kind(render(overlay), "Deployment")}
    for name, (command, port) in expected.items():
        if name not in deployments:
            continue
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["command"] == command
        assert env_value(container, "CONVEYOR_METRICS_PORT") == str(port)
        assert [p["containerPort"] for p in container["ports"]] == [port]
        for pool in ("product", "ard"):
            if name == f"worker-{pool}":
                assert container["args"][:2] == ["--pool", pool]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_configmap_and_secret_a_pod_reads_is_defined_or_documented(overlay: str) -> None:
    objects = render(overlay)
    config_maps = {obj["metadata"]["name"]: obj for obj in of_kind(objects, "ConfigMap")}
    secrets = {obj["metadata"]["name"]: obj for obj in of_kind(objects, "Secret")}
    secret_keys_read: set[tuple[str, str]] = set()
    for workload, template in pod_templates(objects):
        spec = template["spec"]
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, workload
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                assert volume["secret"].get("items"), f"{workload} mounts all of {name}"
                secret_keys_read |= {(name, item["key"]) for item in volume["secret"]["items"]}
        for container in all_containers(spec):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps, workload
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    secret_keys_read.add((ref["name"], ref["key"]))
    # One Secret, with these keys, is all any overlay needs (manifests/README.md tells how to
    # create it); only the dev overlay carries one, with throwaway values.
    assert {name for name, _key in secret_keys_read} == {"conveyor-secrets"}
    required_keys = {key for _name, key in secret_keys_read}
    assert required_keys <= {f"redis-password-{role}" for role in ROLES} | {"db-password"}
    for obj in of_kind(objects, "TriggerAuthentication"):
        required_keys |= {ref["key"] for ref in obj["spec"]["secretTargetRef"]}
    if overlay == "dev":
        data = secrets["conveyor-secrets"].get("data", {})
        assert required_keys <= data.keys()
    else:
        assert not secrets, f"{overlay} must not carry a Secret: no passwords in the repository"


def test_worker_pods_read_the_datacube_configuration_and_its_password_from_the_secret() -> None:
    objects = render("base")
    conf = named(objects, "ConfigMap", "datacube-conf")["data"]["datacube.conf"]
    assert "db_password" not in conf and "password" not in conf.lower().replace("db_password", "")
    for name in WORKER_DEPLOYMENTS:
        spec = named(objects, "Deployment", name)["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
        assert mounts["/etc/datacube"]["readOnly"] is True
        assert env_value(container, "ODC_CONFIG_PATH") == "/etc/datacube/datacube.conf"
        assert env_value(container, "DATACUBE_CONFIG_PATH") == "/etc/datacube/datacube.conf"
        assert env_value(container, "ODC_DEFAULT_DB_PASSWORD") == {
            "secretKeyRef": {"name": "conveyor-secrets", "key": "db-password"}
        }


def test_ard_workers_accept_the_original_items_scratch_directory() -> None:
    # The original jobS2 items say "inter_dir": "/data/intermediate/".
    spec = named(render("base"), "Deployment", "worker-ard")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert env_value(container, "CONVEYOR_SCRATCH_ROOT") == "/data"
    scratch = next(m for m in container["volumeMounts"] if m["mountPath"] == "/data")
    assert any(v["name"] == scratch["name"] and "emptyDir" in v for v in spec["volumes"])


# --- queue ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["base", "dev", "prod", "keda"])
def test_redis_keeps_an_append_only_file_on_a_volume_behind_an_acl_password(overlay: str) -> None:
    objects = render(overlay)
    redis = named(objects, "StatefulSet", "redis")
    conf_lines = {
        line.strip()
        for line in named(objects, "ConfigMap", "redis-conf")["data"]["redis.conf"].splitlines()
    }
    assert {
        "appendonly yes",
        "appendfsync everysec",
        "dir /data",
        "maxmemory-policy noeviction",
    } <= conf_lines
    assert "aclfile /run/redis/users.acl" in conf_lines
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    spec = redis["spec"]["template"]["spec"]
    container, exporter = spec["containers"]
    assert container["image"].startswith("redis:7")
    # redis_exporter beside it, as the exporter's ACL user, for the memory alert.
    assert exporter["image"].startswith("oliver006/redis_exporter:")
    assert env_value(exporter, "REDIS_USER") == username("exporter")
    assert env_value(exporter, "REDIS_EXPORTER_CONFIG_COMMAND") == "-"
    # maxmemory follows the container's memory limit, whatever the overlay sets.
    assert env_value(container, "REDIS_MEMORY_LIMIT") == {
        "resourceFieldRef": {"containerName": "redis", "resource": "limits.memory"}
    }
    assert {"mountPath": "/data", "name": claim["metadata"]["name"]} in container["volumeMounts"]
    script = container["command"][-1]
    assert "exec redis-server /etc/redis/redis.conf --maxmemory" in script
    template = named(objects, "ConfigMap", "redis-conf")["data"]["users.acl.template"]
    assert template.startswith("user default off")
    # Passwords reach Redis only as files from the Secret, never in its environment.
    assert env_value(container, "REDIS_PASSWORD") is None
    passwords = next(volume for volume in spec["volumes"] if volume["name"] == "passwords")
    assert {item["key"] for item in passwords["secret"]["items"]} == {
        f"redis-password-{role}" for role in ROLES
    }
    service = named(objects, "Service", "redis")
    assert selector_matches(
        {"matchLabels": service["spec"]["selector"]},
        spec and redis["spec"]["template"]["metadata"]["labels"],
    )


def test_redis_start_script_creates_every_role_from_the_secret_with_maxmemory(
    tmp_path: Path,
) -> None:
    """The StatefulSet's start-up script and redis.conf, run with the project's valkey-server."""
    redis_server = valkey_server_binary()
    objects = render("base")
    container = named(objects, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"][0]
    script = container["command"][-1]
    config = named(objects, "ConfigMap", "redis-conf")["data"]
    port = free_port()
    for folder in ("run", "data", "etc", "secrets"):
        (tmp_path / folder).mkdir()
    conf = (
        config["redis.conf"]
        .replace("port 6379", f"port {port}")
        .replace("bind * -::*", "bind 127.0.0.1")
        .replace("dir /data", f"dir {tmp_path / 'data'}")
        .replace("/run/redis/users.acl", str(tmp_path / "run" / "users.acl"))
    )
    (tmp_path / "etc" / "redis.conf").write_text(conf)
    (tmp_path / "etc" / "users.acl.template").write_text(config["users.acl.template"])
    # As Kubernetes mounts the Secret's keys (kubectl --from-literal: no final newline).
    passwords = {role: f"{role} s3cret pass!" for role in ROLES}
    for role, password in passwords.items():
        (tmp_path / "secrets" / role).write_text(password)
    script = (
        script.replace("/run/redis/users.acl", str(tmp_path / "run" / "users.acl"))
        .replace("/etc/redis/", f"{tmp_path / 'etc'}/")
        .replace("/run/secrets/redis/", f"{tmp_path / 'secrets'}/")
        .replace("exec redis-server", f"exec {redis_server}")
    )
    limit = 512 * 1024 * 1024
    env = {"PATH": "/usr/bin:/bin", "REDIS_MEMORY_LIMIT": str(limit)}
    process = subprocess.Popen(
        ["sh", "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_until_listening(process, port)
        for role, password in passwords.items():
            client = redis_client.Redis(
                host="127.0.0.1", port=port, username=username(role), password=password
            )
            assert client.ping() is True, role
        operator = redis_client.Redis(
            host="127.0.0.1",
            port=port,
            username=username("operator"),
            password=passwords["operator"],
        )
        memory = operator.info("memory")
        assert memory["maxmemory"] == limit // 10 * 7
        assert memory["maxmemory_policy"] == "noeviction"
        with pytest.raises(redis_client.exceptions.NoPermissionError):
            operator.config_get("appendfsync")
        acl = (tmp_path / "run" / "users.acl").read_text()
        assert "s3cret" not in acl and "-password-sha256>" not in acl
        with pytest.raises(redis_client.AuthenticationError):
            redis_client.Redis(
                host="127.0.0.1", port=port, username=username("worker"), password="wrong"
            ).ping()
        with pytest.raises(redis_client.AuthenticationError):
            redis_client.Redis(host="127.0.0.1", port=port).ping()
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("absent", ["missing", "empty"])
def test_redis_start_script_stops_when_a_role_has_no_password(tmp_path: Path, absent: str) -> None:
    container = named(render("base"), "StatefulSet", "redis")["spec"]["template"]["spec"][
        "containers"
    ][0]
    template = named(render("base"), "ConfigMap", "redis-conf")["data"]["users.acl.template"]
    (tmp_path / "etc").mkdir()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "etc" / "users.acl.template").write_text(template)
    for role in ROLES:
        if role != "keda":
            (tmp_path / "secrets" / role).write_text("x")
        elif absent == "empty":
            (tmp_path / "secrets" / role).write_text("\n")
    script = (
        container["command"][-1]
        .replace("/run/redis/users.acl", str(tmp_path / "users.acl"))
        .replace("/etc/redis/", f"{tmp_path / 'etc'}/")
        .replace("/run/secrets/redis/", f"{tmp_path / 'secrets'}/")
        .replace("exec redis-server", "exec true")
    )
    completed = subprocess.run(
        ["sh", "-c", script], env={"PATH": "/usr/bin:/bin", "REDIS_MEMORY_LIMIT": "1"},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    # Never an empty password (whose digest would let anyone in as that user).
    assert completed.returncode != 0
    assert "keda" in completed.stderr


def test_the_shipped_acl_templates_are_what_shared_acl_renders() -> None:
    rendered = acl_template()
    assert (DEPLOY / "redis" / "users.acl.template").read_text() == rendered, (
        "deploy/redis/users.acl.template is stale: regenerate it with `conveyor acl template`"
    )
    for overlay in ("base", "dev", "prod", "keda"):
        config = named(render(overlay), "ConfigMap", "redis-conf")["data"]
        assert config["users.acl.template"] == rendered, (
            f"the {overlay} redis-conf ConfigMap's users.acl.template is stale: copy "
            "`conveyor acl template` into manifests/base/redis/redis.yaml"
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_connects_as_its_own_acl_user_with_a_password_file(overlay: str) -> None:
    roles_of = {"dispatcher": "dispatcher", "worker": "worker", "autoscaler": "autoscaler"}
    for workload, template in pod_templates(render(overlay)):
        component = template["metadata"]["labels"].get("app.kubernetes.io/component")
        if component not in roles_of:
            continue
        spec = template["spec"]
        (container,) = spec["containers"]
        role = roles_of[component]
        assert env_value(container, "CONVEYOR_REDIS_USERNAME") == username(role), workload
        assert env_value(container, "CONVEYOR_REDIS_PASSWORD") is None, workload
        path = env_value(container, "CONVEYOR_REDIS_PASSWORD_FILE")
        mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"]))
        assert mount.get("readOnly") is True
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["items"] == [
            {"key": f"redis-password-{role}", "path": path.rsplit("/", 1)[1]}
        ], workload


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_names_the_ard_output_so_items_never_choose_the_bucket(
    overlay: str,
) -> None:
    objects = render(overlay)
    config = named(objects, "ConfigMap", "conveyor-config")["data"]
    for name in ("CONVEYOR_ARD_OUTPUT_URL", "CONVEYOR_ARD_SOURCE"):
        url = config.get(name, "")
        assert re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]+(/.*)?", url), (overlay, name, url)
    spec = named(objects, "Deployment", "worker-ard")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert {"configMapRef": {"name": "conveyor-config"}} in container["envFrom"]
    assert env_value(container, "CONVEYOR_ARD_OUTPUT_URL") is None  # not overridden per pod


def _wait_until_listening(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            pytest.fail(f"the redis start-up script exited {process.returncode}: {stderr}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail("redis did not listen within 15 s")


def test_external_redis_overlay_runs_no_queue_and_points_at_the_external_url() -> None:
    objects = render("external-redis")
    assert not of_kind(objects, "StatefulSet")
    assert "redis" not in {obj["metadata"]["name"] for obj in of_kind(objects, "Service")}
    assert "redis-conf" not in {obj["metadata"]["name"] for obj in of_kind(objects, "ConfigMap")}
    url = named(objects, "ConfigMap", "conveyor-config")["data"]["CONVEYOR_REDIS_URL"]
    assert url.startswith(("redis://", "rediss://")) and "//redis:" not in url
    # The autoscaler still runs there.
    assert named(objects, "Deployment", "autoscaler")


# --- autoscaler RBAC ------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["base", "dev", "prod", "external-redis"])
def test_autoscaler_may_only_get_and_patch_the_worker_deployments_scale(overlay: str) -> None:
    objects = render(overlay)
    assert not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")
    (role,) = of_kind(objects, "Role")
    worker_names = sorted(
        obj["metadata"]["name"]
        for obj in of_kind(objects, "Deployment")
        if obj["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == "worker"
    )
    normalised = sorted(
        (
            tuple(rule["apiGroups"]),
            tuple(rule["resources"]),
            tuple(sorted(rule["verbs"])),
            tuple(sorted(rule.get("resourceNames", []))),
        )
        for rule in role["rules"]
    )
    assert normalised == sorted(
        [
            (("apps",), ("deployments/scale",), ("get", "patch"), tuple(worker_names)),
            (("apps",), ("deployments",), ("get",), tuple(worker_names)),
        ]
    )
    (binding,) = of_kind(objects, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "autoscaler", "namespace": "conveyor"}
    ]
    spec = named(objects, "Deployment", "autoscaler")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "autoscaler"
    (container,) = spec["containers"]
    assert env_value(container, "CONVEYOR_AUTOSCALER_BACKEND") == "kubernetes"
    # The Deployments it is told to scale are exactly those the Role names.
    deployments = json.loads(env_value(container, "CONVEYOR_AUTOSCALER_DEPLOYMENTS"))
    assert sorted(deployments.values()) == worker_names
    assert set(deployments) == {"product", "ard"}


# --- KEDA -----------------------------------------------------------------------------------


def test_keda_overlay_scales_workers_on_pending_entries_and_lag_without_the_autoscaler() -> None:
    objects = render("keda")
    names = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
    assert ("Deployment", "autoscaler") not in names
    assert not of_kind(objects, "Role") and not of_kind(objects, "ServiceAccount")
    assert not [obj for obj in objects if obj["metadata"]["name"].startswith("conveyor-autoscaler")]

    authentications = {
        obj["metadata"]["name"]: obj for obj in of_kind(objects, "TriggerAuthentication")
    }
    deployments = {obj["metadata"]["name"] for obj in of_kind(objects, "Deployment")}
    scaled = {
        obj["spec"]["scaleTargetRef"]["name"]: obj for obj in of_kind(objects, "ScaledObject")
    }
    assert set(scaled) == WORKER_DEPLOYMENTS and set(scaled) <= deployments

    for pool in ("product", "ard"):
        triggers = scaled[f"worker-{pool}"]["spec"]["triggers"]
        assert {trigger["type"] for trigger in triggers} == {"redis-streams"}
        for trigger in triggers:
            metadata = trigger["metadata"]
            assert metadata["stream"] == f"conveyor:jobs:{pool}"
            assert metadata["consumerGroup"] == "workers"
            assert metadata["address"] == "redis.conveyor.svc.cluster.local:6379"
            authentication = authentications[trigger["authenticationRef"]["name"]]
            refs = {ref["parameter"]: ref for ref in authentication["spec"]["secretTargetRef"]}
            assert (refs["password"]["name"], refs["password"]["key"]) == (
                "conveyor-secrets",
                "redis-password-keda",
            )
            assert refs["username"]["key"] == "redis-username-keda"
        # One trigger counts pending entries (jobs in flight are never scaled away), one counts
        # lag (entries waiting, and waking the pool from zero).
        modes = sorted(
            "pending" if "pendingEntriesCount" in t["metadata"] else "lag"
            for t in triggers
            if "pendingEntriesCount" in t["metadata"] or "lagCount" in t["metadata"]
        )
        assert modes == ["lag", "pending"]
        assert all(int(t["metadata"].get("pendingEntriesCount", "1")) >= 1 for t in triggers)
        assert all(int(t["metadata"].get("lagCount", "1")) >= 1 for t in triggers)

    # KEDA's operator, in its own namespace, may reach the queue.
    redis_labels = named(objects, "StatefulSet", "redis")["spec"]["template"]["metadata"]["labels"]
    assert any(
        selector_matches(policy["spec"]["podSelector"], redis_labels)
        and any(
            peer.get("namespaceSelector", {})
            .get("matchLabels", {})
            .get("kubernetes.io/metadata.name")
            == "keda"
            for rule in policy["spec"].get("ingress", [])
            for peer in rule.get("from", [])
        )
        for policy in of_kind(objects, "NetworkPolicy")
    )


# --- network policies -----------------------------------------------------------------------


def _policies_for(
    objects: list[Manifest], labels: dict[str, str], direction: str
) -> list[Manifest]:
    policy_type = "Ingress" if direction == "ingress" else "Egress"
    return [
        policy
        for policy in of_kind(objects, "NetworkPolicy")
        if policy_type in policy["spec"].get("policyTypes", [])
        and selector_matches(policy["spec"]["podSelector"], labels)
    ]


def _allows(rules: list[Manifest], port: int, peer_labels: dict[str, str] | None) -> bool:
    for rule in rules:
        ports = [p["port"] for p in rule.get("ports", [])]
        if ports and port not in ports:
            continue
        peers = rule.get("to", rule.get("from", []))
        if not peers:
            return True
        for peer in peers:
            if "ipBlock" in peer and peer_labels is None:
                return True
            if (
                peer_labels is not None
                and "podSelector" in peer
                and "namespaceSelector" not in peer
            ):
                if selector_matches(peer["podSelector"], peer_labels):
                    return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_let_each_service_reach_the_queue(
    overlay: str,
) -> None:
    objects = render(overlay)
    deny = [
        policy
        for policy in of_kind(objects, "NetworkPolicy")
        if policy["spec"]["podSelector"] == {}
        and set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not policy["spec"].get("ingress")
        and not policy["spec"].get("egress")
    ]
    assert deny, "no default-deny policy"

    templates = dict(pod_templates(objects))
    redis_labels = templates.get("StatefulSet/redis", {}).get("metadata", {}).get("labels")
    for workload, template in templates.items():
        labels = template["metadata"]["labels"]
        component = labels.get("app.kubernetes.io/component")
        if component not in CONVEYOR_COMPONENTS:
            continue
        egress = [
            rule
            for p in _policies_for(objects, labels, "egress")
            for rule in p["spec"].get("egress", [])
        ]
        assert _allows(egress, 53, None), f"{workload} cannot resolve names"
        if redis_labels is not None:
            assert _allows(egress, 6379, redis_labels), f"{workload} cannot reach redis"
            ingress = [
                rule
                for p in _policies_for(objects, redis_labels, "ingress")
                for rule in p["spec"].get("ingress", [])
            ]
            assert _allows(ingress, 6379, labels), f"redis does not admit {workload}"
        else:
            assert _allows(egress, 6379, None) or _allows(egress, 6380, None), (
                f"{workload} cannot reach the external queue"
            )
        port = int(template["spec"]["containers"][0]["ports"][0]["containerPort"])
        ingress = [
            rule
            for p in _policies_for(objects, labels, "ingress")
            for rule in p["spec"].get("ingress", [])
        ]
        assert any(port in [p["port"] for p in rule.get("ports", [])] for rule in ingress), (
            f"Prometheus cannot scrape {workload} on {port}"
        )
        if component == "worker":
            for needed in (5432, 443):
                assert _allows(egress, needed, None), f"{workload} cannot reach port {needed}"
        if component == "autoscaler":
            assert _allows(egress, 443, None), "the autoscaler cannot reach the Kubernetes API"


# --- services and monitoring ----------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_monitor_finds_a_service_that_finds_pods(overlay: str) -> None:
    objects = render(overlay)
    pod_labels = [template["metadata"]["labels"] for _w, template in pod_templates(objects)]
    services = of_kind(objects, "Service")
    for service in services:
        assert any(
            selector_matches({"matchLabels": service["spec"]["selector"]}, labels)
            for labels in pod_labels
        ), f"Service {service['metadata']['name']} selects no pods"
    monitors = of_kind(objects, "ServiceMonitor")
    job_names = set()
    for monitor in monitors:
        selected = [
            service
            for service in services
            if selector_matches(monitor["spec"]["selector"], service["metadata"].get("labels", {}))
        ]
        assert len(selected) == 1, monitor["metadata"]["name"]
        port_names = {port["name"] for port in selected[0]["spec"]["ports"]}
        assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= port_names
        assert all(endpoint["path"] == "/metrics" for endpoint in monitor["spec"]["endpoints"])
        job_names.add(selected[0]["metadata"]["name"])  # the operator's default job label
    expected_jobs = {"conveyor-dispatcher", "conveyor-worker"}
    if overlay != "keda":
        expected_jobs.add("conveyor-autoscaler")
    if overlay != "external-redis":
        expected_jobs.add("redis")  # redis_exporter beside the StatefulSet
    assert job_names == expected_jobs
    assert of_kind(objects, "PrometheusRule")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_disruption_budgets_cover_each_pool_without_blocking_scale_to_zero(
    overlay: str,
) -> None:
    objects = render(overlay)
    budgets = of_kind(objects, "PodDisruptionBudget")
    for name in WORKER_DEPLOYMENTS:
        labels = named(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if selector_matches(b["spec"]["selector"], labels)]
        assert len(covering) == 1, name
        assert "maxUnavailable" in covering[0]["spec"] and "minAvailable" not in covering[0]["spec"]


# --- metric names ---------------------------------------------------------------------------


def test_series_names_are_found_in_promql() -> None:
    expression = (
        'sum by (pool, le) (rate(conveyor_stage_duration_seconds_bucket{stage=~"load|write"}[5m])) '
        "/ on (pool) group_left (job_code) "
        "max without (instance) (conveyor_jobs_in_flight offset 1h) "
        '> 0.5 and label_replace(up{job="x"}, "pool", "$1", "stream", ".*:jobs:(.*)") '
        "unless histogram_quantile(0.95, foo_total[$__rate_interval]) > bool 1e3"
    )
    assert series_names_in(expression) == {
        "conveyor_stage_duration_seconds_bucket",
        "conveyor_jobs_in_flight",
        "up",
        "foo_total",
    }


def test_rules_and_dashboards_query_only_metrics_the_services_export() -> None:
    used = metric_names_used()
    assert used, "no metric names found in the rules and dashboards"
    unknown = used - exported_series_names()
    assert not unknown, f"queried but not exported by any service: {sorted(unknown)}"
    assert series_queried() - used <= SCRAPE_SERIES | EXPORTER_SERIES


def test_rules_and_dashboards_cover_each_service() -> None:
    used = metric_names_used()
    for needed in (
        "conveyor_stream_lag",
        "conveyor_stream_pending",
        "conveyor_jobs_total",
        "conveyor_dead_letters_total",
        "conveyor_stage_duration_seconds_bucket",
        "conveyor_autoscaler_desired_replicas",
        "conveyor_autoscaler_current_replicas",
        "conveyor_autoscaler_max_replicas",
    ):
        assert needed in used, needed


def test_dask_overlay_points_product_workers_at_its_scheduler_and_lets_the_cluster_talk() -> None:
    objects = render("dask")
    templates = dict(pod_templates(objects))
    product = templates["Deployment/worker-product"]
    [container] = product["spec"]["containers"]
    env = {variable["name"]: variable.get("value") for variable in container.get("env", [])}
    service = named(objects, "Service", "dask-scheduler")
    [port] = service["spec"]["ports"]
    assert env["DASK_SCHEDULER_HOST"] == f"tcp://{service['metadata']['name']}:{port['port']}"
    # Only the product pool computes on the cluster; the ard pool keeps its own threads.
    [ard] = templates["Deployment/worker-ard"]["spec"]["containers"]
    assert "DASK_SCHEDULER_HOST" not in {variable["name"] for variable in ard.get("env", [])}

    scheduler = templates["Deployment/dask-scheduler"]
    workers = templates["Deployment/dask-worker"]
    [worker_container] = workers["spec"]["containers"]
    assert worker_container["command"] == ["dask", "worker"]
    assert worker_container["args"][0] == env["DASK_SCHEDULER_HOST"]
    # The workers run the conveyor's image: they unpickle its tasks.
    assert worker_container["image"] == container["image"]

    def labels(template: Manifest) -> dict[str, str]:
        return dict(template["metadata"]["labels"])

    def egress(template: Manifest) -> list[Manifest]:
        return [
            rule
            for policy in _policies_for(objects, labels(template), "egress")
            for rule in policy["spec"].get("egress", [])
        ]

    def ingress(template: Manifest) -> list[Manifest]:
        return [
            rule
            for policy in _policies_for(objects, labels(template), "ingress")
            for rule in policy["spec"].get("ingress", [])
        ]

    assert _allows(egress(product), 8786, labels(scheduler))
    assert _allows(ingress(scheduler), 8786, labels(product))
    assert _allows(egress(workers), 8786, labels(scheduler))
    assert _allows(ingress(scheduler), 8786, labels(workers))
    assert _allows(egress(scheduler), 8788, labels(workers))
    assert _allows(ingress(workers), 8788, labels(scheduler))
    assert _allows(ingress(workers), 8788, labels(workers))
    assert not _allows(ingress(scheduler), 8786, labels(templates["Deployment/worker-ard"]))

"""The image (Dockerfile, .dockerignore) and the one-host deployment (docker-compose.yml).

No Docker engine runs here: the compose file is checked against the Compose specification's
schema and for what it must contain; the Dockerfile is read stage by stage.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.test_deploy import REPO_ROOT, run_tool

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
CONVEYOR_SERVICES = ("dispatcher", "worker", "autoscaler")
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|cc|c\+\+|clang|make|cmake|build-essential|libc6-dev|python3-dev|gfortran)\b"
)


# --- Dockerfile -----------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def dockerfile_stages(text: str) -> list[Stage]:
    """Stages of a Dockerfile, with line continuations joined and ARG defaults substituted."""
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and not stages:
            key, _, default = arguments.partition("=")
            global_args[key.strip()] = default.strip()
            continue
        if instruction == "FROM":
            for key, value in global_args.items():
                arguments = arguments.replace(f"${{{key}}}", value).replace(f"${key}", value)
            words = arguments.split()
            words = [word for word in words if not word.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
            continue
        assert stages, f"instruction before FROM: {line}"
        stages[-1].instructions.append((instruction, arguments))
    return stages


def test_image_is_multi_stage_with_a_builder_that_compiles() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    assert len(stages) >= 2
    builder = stages[0]
    assert any(BUILD_TOOLS.search(run) for run in builder.arguments("RUN")), "builder has no gcc"


def test_image_installs_exactly_the_locked_dependencies_checking_their_hashes() -> None:
    builder = dockerfile_stages(DOCKERFILE.read_text())[0]
    assert "requirements.lock ./" in builder.arguments("COPY")
    installs = [run for run in builder.arguments("RUN") if "pip install" in run]
    locked, project = installs
    assert "--require-hashes" in locked and "-r requirements.lock" in locked
    assert "--no-deps" in locked  # nothing the lock does not name
    # The project itself adds nothing: no dependencies, no index, no build isolation download.
    assert all(flag in project for flag in ("--no-deps", "--no-index", "--no-build-isolation"))
    assert "pip check" in project


def _lock_entries() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of requirements.lock."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = (REPO_ROOT / "requirements.lock").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split()
        name, _, version = requirement.partition("==")
        assert version, f"{requirement} is not pinned with =="
        hashes = [
            option.removeprefix("--hash=") for option in options if option.startswith("--hash=")
        ]
        entries[canonicalize_name(name.split("[")[0])] = (version, hashes)
    return entries


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    import tomllib

    entries = _lock_entries()
    assert all(hashes for _version, hashes in entries.values()), "an entry without a hash"
    assert all(
        all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes)
        for _version, hashes in entries.values()
    )
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    wanted = [Requirement(text) for text in project["project"]["dependencies"]]
    wanted += [Requirement(text) for text in project["build-system"]["requires"]]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{requirement} is not in requirements.lock: run `make lock`"
        version = entries[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside {requirement}: run `make lock`"
        )
    # Extras' own dependencies are locked too.
    assert {"hiredis", "psycopg-binary", "distributed"} <= set(entries)


def test_final_image_has_no_compiler_and_runs_as_an_unprivileged_user() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    final = stages[-1]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", final.base), final.base
    for run in final.arguments("RUN"):
        assert not BUILD_TOOLS.search(run), f"build tools in the final stage: {run}"
        assert "apt-get install" not in run, f"packages installed in the final stage: {run}"
    # The environment comes from the builder; nothing is compiled or downloaded here.
    assert not [run for run in final.arguments("RUN") if "pip " in run]
    assert "--from=builder /opt/conveyor /opt/conveyor" in final.arguments("COPY")
    assert any("PATH=/opt/conveyor/bin:" in env for env in final.arguments("ENV"))
    users = final.arguments("USER")
    assert users, "the final stage never leaves root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert not user.isdigit() or int(user) == 10001


def test_final_image_writes_only_under_tmp() -> None:
    final = dockerfile_stages(DOCKERFILE.read_text())[-1]
    environment = " ".join(final.arguments("ENV"))
    assert re.search(r"\bHOME=/tmp\b", environment)
    assert re.search(r"\bTMPDIR=/tmp\b", environment)
    assert "PYTHONDONTWRITEBYTECODE=1" in environment  # no .pyc next to read-only sources
    assert "CONVEYOR_LOG_FORMAT=json" in environment


def test_build_context_holds_only_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the context should start from nothing"
    included = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    copied: set[str] = set()
    for stage in dockerfile_stages(DOCKERFILE.read_text()):
        for arguments in stage.arguments("COPY"):
            words = [word for word in arguments.split() if not word.startswith("--")]
            if any(word.startswith("--from") for word in arguments.split()):
                continue
            copied |= {source.rstrip("/") for source in words[:-1]}
    assert copied == included
    assert all((REPO_ROOT / path).exists() for path in included)


# --- docker-compose.yml ---------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


def check_jsonschema() -> str:
    executable = Path(sys.executable).parent / "check-jsonschema"
    if not executable.exists():
        pytest.fail(
            "check-jsonschema is not installed in this environment: `pip install -e '.[dev]'`",
            pytrace=False,
        )
    return str(executable)


def test_compose_file_validates_against_the_compose_specification() -> None:
    output = run_tool(
        check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)
    ).stdout
    assert "ok" in output


def test_compose_runs_the_whole_system() -> None:
    services = compose()["services"]
    assert {
        "redis",
        "postgres",
        "minio",
        "dispatcher",
        "worker",
        "autoscaler",
        "prometheus",
        "grafana",
    } <= set(services)
    assert services["redis"]["image"].startswith("redis:7")
    assert services["postgres"]["image"].startswith(("postgres:", "postgis/postgis:"))
    commands = {name: services[name]["command"] for name in CONVEYOR_SERVICES}
    assert commands["dispatcher"] == ["python", "-m", "services.dispatcher"]
    assert commands["worker"][:5] == ["python", "-m", "services.worker", "--pool", "product"]
    assert commands["autoscaler"] == ["python", "-m", "services.autoscaler"]
    assert services["autoscaler"]["environment"]["CONVEYOR_AUTOSCALER_BACKEND"] == "local"


def test_compose_redis_keeps_an_append_only_file_on_a_volume() -> None:
    redis = compose()["services"]["redis"]
    script = redis["command"][-1]
    assert "--appendonly yes" in script and "--appendfsync everysec" in script
    assert "--maxmemory-policy noeviction" in script and "--maxmemory " in script
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    # The users come from the template shared/acl.py renders (tests/test_deploy.py checks it).
    assert "./deploy/redis/users.acl.template:/etc/redis/users.acl.template:ro" in redis["volumes"]


def test_compose_redis_script_creates_every_role_and_refuses_a_missing_password(
    tmp_path: Path,
) -> None:
    """The Compose start-up script, as Compose hands it to sh ($$ unescaped), with valkey."""
    from shared.acl import ROLES, username
    from shared.embedded import free_port, valkey_server_binary
    from tests.test_deploy import _wait_until_listening

    redis_service = compose()["services"]["redis"]
    script = (
        redis_service["command"][-1]
        .replace("$$", "$")
        .replace(
            "/etc/redis/users.acl.template", str(REPO_ROOT / "deploy/redis/users.acl.template")
        )
        .replace("/run/redis/users.acl", str(tmp_path / "users.acl"))
        .replace("exec redis-server", f"exec {valkey_server_binary()}")
        .replace("--dir /data", f"--dir {tmp_path}")
        .rstrip()
    )
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "REDIS_MAXMEMORY": "64mb"}
    env |= {f"REDIS_PASSWORD_{role.upper()}": f"{role}-pass" for role in ROLES}
    missing = {key: value for key, value in env.items() if key != "REDIS_PASSWORD_WORKER"}
    refused = subprocess.run(["sh", "-c", script], env=missing, capture_output=True, text=True)
    assert refused.returncode != 0 and "REDIS_PASSWORD_WORKER" in refused.stderr
    process = subprocess.Popen(
        ["sh", "-c", script + f" --port {port} --bind 127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_until_listening(process, port)
        for role in ROLES:
            client = redis.Redis(port=port, username=username(role), password=f"{role}-pass")
            assert client.ping() is True
        operator = redis.Redis(port=port, username=username("operator"), password="operator-pass")
        assert operator.info("memory")["maxmemory"] == 64 * 1024 * 1024
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_compose_conveyor_containers_are_locked_down_and_configured() -> None:
    document = compose()
    services = document["services"]
    for name in CONVEYOR_SERVICES:
        service = services[name]
        assert service["image"] == "odc-conveyor:local" and service["build"]["context"] == "."
        assert service["user"] == "10001:10001", name
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert any(mount.startswith("/tmp") for mount in service["tmpfs"]), name
        environment = service["environment"]
        assert environment["CONVEYOR_REDIS_URL"] == "redis://redis:6379/0", name
        # Each as its own ACL user.
        assert environment["CONVEYOR_REDIS_USERNAME"] == f"conveyor-{name}", name
        assert environment["CONVEYOR_REDIS_PASSWORD"].startswith(
            f"${{REDIS_PASSWORD_{name.upper()}:-"
        ), name
        assert environment["CONVEYOR_LOG_FORMAT"] == "json", name
        assert environment["CONVEYOR_METRICS_PORT"] == str(
            {"dispatcher": 9101, "worker": 9102, "autoscaler": 9103}[name]
        )
        assert "healthcheck" in service, name
    for name in ("worker", "autoscaler"):
        environment = services[name]["environment"]
        assert environment["CONVEYOR_OUTPUT_URL"].startswith("s3://")
        # Where ARD goes is the operator's choice, never a work item's `s3_bucket`.
        assert re.fullmatch(
            r"s3://[a-z0-9][a-z0-9.-]+(/.*)?", environment["CONVEYOR_ARD_OUTPUT_URL"]
        )
        assert environment["CONVEYOR_ARD_SOURCE"].startswith("s3://")
        assert environment["AWS_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert environment["ODC_CONFIG_PATH"] == "/etc/datacube/datacube.conf"
        assert "./deploy/datacube.conf:/etc/datacube/datacube.conf:ro" in services[name]["volumes"]
        # A stopping worker gets longer than its drain to finish or hand back its jobs.
        grace = int(services[name]["stop_grace_period"].rstrip("s"))
        assert grace > int(environment["CONVEYOR_DRAIN_SECONDS"])


def test_compose_prometheus_loads_the_rules_and_grafana_the_dashboard() -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules/*.yml"]  # relative to /etc/prometheus/prometheus.yml
    targets = {
        target
        for scrape in config["scrape_configs"]
        for static in scrape.get("static_configs", [])
        for target in static["targets"]
    }
    assert {"dispatcher:9101", "autoscaler:9103", "redis-exporter:9121"} <= targets
    exporter = services["redis-exporter"]["environment"]
    assert exporter["REDIS_USER"] == "conveyor-exporter"
    assert exporter["REDIS_EXPORTER_CONFIG_COMMAND"] == "-"
    dns_names = {
        name
        for scrape in config["scrape_configs"]
        for sd in scrape.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    assert "worker" in dns_names
    grafana = services["grafana"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]


def test_compose_bind_mounts_exist_in_the_repository() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"

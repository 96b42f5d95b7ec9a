"""The configuration table of the README, made from the settings classes themselves.

`python -m devtools.settings_table` prints it; the test suite checks that the README holds
exactly this table, so a setting cannot be added, removed or given another default without the
README saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

BEGIN = "<!-- settings table: python -m devtools.settings_table -->"
END = "<!-- end of settings table -->"


#: What a setting means when its field carries no description of its own.
MEANINGS = {
    "AWS_ACCESS_KEY_ID": "S3 credentials (leave out with IRSA or workload identity).",
    "AWS_SECRET_ACCESS_KEY": "S3 credentials.",
    "AWS_SESSION_TOKEN": "S3 session token, with temporary credentials.",
    "AWS_DEFAULT_REGION": "S3 region.",
    "CONVEYOR_ACTIVATION_BACKLOG": "Backlog above which a pool at zero gets its first worker.",
    "CONVEYOR_DASK_THREADS": "Threads computing products in a worker process (shared by its "
    "jobs), when there is no DASK_SCHEDULER_HOST.",
    "CONVEYOR_DEFAULT_CHUNK_PIXELS": "x/y Dask chunk of a load when the request names none.",
    "CONVEYOR_DRY_RUN_REPLICAS": "Replicas the dry-run backend pretends each pool has.",
    "CONVEYOR_EMBEDDED_DATABASE": "Database name in the embedded PostgreSQL.",
    "CONVEYOR_KUBERNETES_ATTEMPTS": "Tries of a scale patch (conflicts, 5xx) before the poll "
    "gives up.",
    "CONVEYOR_KUBERNETES_NAMESPACE": "Namespace of the worker Deployments.",
    "CONVEYOR_LEADER_LEASE_SECONDS": "Lease of the one autoscaler instance that acts.",
    "CONVEYOR_LEGACY_BRIDGE": "Move the CONVEYOR_LEGACY_LISTS into the events stream.",
    "CONVEYOR_LOG_FORMAT": "json (services) or console.",
    "CONVEYOR_LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR.",
    "CONVEYOR_MAX_REPLICAS": "Most workers per pool.",
    "CONVEYOR_MIN_REPLICAS": "Fewest workers per pool.",
    "CONVEYOR_METRICS_HOST": "Address /metrics and /healthz listen on.",
    "CONVEYOR_METRICS_PORT": "Port of /metrics and /healthz.",
    "CONVEYOR_NAMESPACE": "Prefix of every key.",
    "CONVEYOR_OUTPUT_NAMING": "Naming of requests that do not choose: odc or legacy.",
    "CONVEYOR_POLL_INTERVAL_SECONDS": "How often the backlog is read and a decision made.",
    "CONVEYOR_POOL": "Pool a worker serves: product or ard.",
    "CONVEYOR_POOLS": "Pools the autoscaler sizes.",
    "CONVEYOR_REDIS_TLS_CA_FILE": "CA bundle for rediss:// (default: the system's).",
    "CONVEYOR_REDIS_USERNAME": "ACL user when it is not in the URL.",
    "CONVEYOR_REVERSAL_GUARD_SECONDS": "No scale-down this soon after a scale-up...",
    "CONVEYOR_REVERSAL_TOLERANCE": "...unless the backlog fell by more than this factor.",
    "CONVEYOR_S3_MAX_CONCURRENT_PARTS": "Parts of one object uploaded at once.",
    "CONVEYOR_S3_MULTIPART_PART_BYTES": "Size of each part.",
    "CONVEYOR_SCALE_DOWN_WINDOW_SECONDS": "Scale down to the highest wish of this window.",
    "CONVEYOR_SCALE_TO_ZERO_COOLDOWN_SECONDS": "Lag and pending both zero this long before "
    "a pool goes to zero.",
    "CONVEYOR_SCALE_UP_MAX_PERCENT": "Most growth per scale-up period, in percent...",
    "CONVEYOR_SCALE_UP_MAX_PODS": "...or in pods, whichever is more.",
    "CONVEYOR_SCALE_UP_PERIOD_SECONDS": "Scale-up rate-limit period.",
    "CONVEYOR_TARGET_BACKLOG_PER_REPLICA": "Lag + pending per worker the policy aims at.",
    "CONVEYOR_TOLERANCE": "Relative change below which replicas stay as they are.",
    "DASK_SCHEDULER_HOST": "host[:port] or tcp://... of a shared Dask scheduler; unset: the "
    "worker computes in its own threads.",
    "REDIS_SERVICE_HOST": "The original deployment's queue host (used when there is no "
    "CONVEYOR_REDIS_URL).",
    "REDIS_SERVICE_PORT": "The original deployment's queue port.",
}


@dataclass(frozen=True)
class Variable:
    names: tuple[str, ...]
    defaults: tuple[tuple[str, str], ...]  # (service, default)
    meaning: str

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(service for service, _default in self.defaults)

    def default(self) -> str:
        values = {default for _service, default in self.defaults}
        if len(values) == 1:
            return values.pop()
        return ", ".join(f"{default} ({service})" for service, default in self.defaults)


def _classes() -> list[tuple[str, type[BaseSettings]]]:
    from services.autoscaler.settings import AutoscalerSettings
    from services.worker.ard.limits import ArchiveLimits
    from services.worker.outputs.settings import S3Settings
    from services.worker.settings import WorkerSettings
    from shared.config import DispatcherSettings
    from shared.datacube import DatacubeSettings

    return [
        ("dispatcher", DispatcherSettings),
        ("worker", WorkerSettings),
        ("autoscaler", AutoscalerSettings),
        ("worker", S3Settings),
        ("worker", DatacubeSettings),
        ("ard worker", ArchiveLimits),
    ]


def _names(cls: type[BaseSettings], field_name: str, field: FieldInfo) -> tuple[str, ...]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        names = [str(choice) for choice in alias.choices if isinstance(choice, str)]
        return tuple(name for name in names if name.isupper()) or (names[0].upper(),)
    if isinstance(alias, str):
        return (alias.upper(),)
    prefix = str(cls.model_config.get("env_prefix", ""))
    return (f"{prefix}{field_name}".upper(),)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None or value == [] or value == {}:
        return ""
    if hasattr(value, "get_secret_value"):
        return "(secret)"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`"


def variables() -> Iterator[Variable]:
    seen: dict[tuple[str, ...], Variable] = {}
    for service, cls in _classes():
        for field_name, field in cls.model_fields.items():
            names = _names(cls, field_name, field)
            described = field.description or MEANINGS.get(names[0], "")
            meaning = " ".join(described.split()).replace("|", "\\|")
            known = seen.get(names)
            if known is None:
                seen[names] = Variable(names, ((service, _default(field)),), meaning)
            elif service not in known.services:
                defaults = (*known.defaults, (service, _default(field)))
                seen[names] = Variable(names, defaults, known.meaning or meaning)
    yield from sorted(seen.values(), key=lambda variable: variable.names)


def table() -> str:
    lines = [
        BEGIN,
        "| variable | default | read by | meaning |",
        "|---|---|---|---|",
    ]
    for variable in variables():
        names = ", ".join(f"`{name}`" for name in variable.names)
        lines.append(
            f"| {names} | {variable.default()} | {', '.join(variable.services)} "
            f"| {variable.meaning} |"
        )
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    print(table())


if __name__ == "__main__":
    main()

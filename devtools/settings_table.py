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
            meaning = " ".join((field.description or "").split()).replace("|", "\\|")
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

"""Deterministic dataset ids: the same inputs always give the same id, as in odc-stats.

The id is a uuid5 in odc-stats' namespace over the algorithm, its version and, one per line and
lower-cased, sorted `key=value` tags (period, tile, product) and the sorted source dataset ids.
Recomputing a product from the same sources therefore yields the same dataset, which the index
recognises instead of adding a twin.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID, uuid5

from services.worker.outputs.spec import OutputSpec

# odc-stats' namespace for derived datasets, so the scheme is the one ODC users know.
ODC_NAMESPACE = UUID("6f34c6f4-13d6-43c0-8e4e-42b6c13203af")


def source_uuids(sources: Iterable[str | UUID]) -> list[UUID]:
    """The ids as UUIDs, sorted; a malformed id is an error, not a silently different hash."""
    parsed: list[UUID] = []
    for source in sources:
        try:
            parsed.append(source if isinstance(source, UUID) else UUID(str(source)))
        except ValueError:
            raise ValueError(f"source dataset id {source!r} is not a UUID") from None
    return sorted(set(parsed))


def derived_dataset_id(
    algorithm: str,
    version: str,
    sources: Iterable[str | UUID],
    *,
    deployment_id: str = "",
    **tags: object,
) -> UUID:
    """uuid5 over algorithm, version, deployment, sorted `key=value` tags and sorted sources."""
    lines = [
        algorithm,
        version,
        deployment_id,
        *sorted(f"{key}={value}" for key, value in tags.items()),
        *(str(source) for source in source_uuids(sources)),
    ]
    return uuid5(ODC_NAMESPACE, "\n".join(line.lower() for line in lines))


def dataset_id(spec: OutputSpec) -> UUID:
    """The id of the dataset `spec` describes: job code, version, sources, period and tile."""
    return derived_dataset_id(
        spec.job_code,
        spec.version,
        spec.sources,
        time=spec.period.label,
        tile=spec.tile,
        product=spec.product_name,
    )

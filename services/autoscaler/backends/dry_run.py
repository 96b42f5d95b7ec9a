"""The dry-run backend: decisions are logged and remembered, nothing is changed."""

from __future__ import annotations

from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


class DryRunBackend:
    def __init__(self, replicas: Mapping[str, int] | None = None) -> None:
        self.replicas: dict[str, int] = dict(replicas or {})

    async def current_replicas(self, pool: str) -> int:
        return self.replicas.get(pool, 0)

    async def scale(self, pool: str, replicas: int) -> None:
        log.info("dry run: would scale", pool=pool, replicas=replicas,
                 previous=self.replicas.get(pool, 0))  # fmt: skip
        self.replicas[pool] = replicas

    async def close(self) -> None:
        return None

"""Where decisions are applied: a Kubernetes Deployment's scale, local processes, or nowhere."""

from __future__ import annotations

from typing import Protocol

from shared.errors import Permanent, Retryable


class ScaleBackend(Protocol):
    async def current_replicas(self, pool: str) -> int:
        """How many workers the pool has now (what was asked for, not yet necessarily ready)."""
        ...

    async def scale(self, pool: str, replicas: int) -> None:
        """Set the pool's size; stopping workers drain what they hold."""
        ...

    async def close(self) -> None:
        """Release what the backend holds (connections; local workers are stopped)."""
        ...


class BackendUnavailable(Retryable):
    """The backend could not be reached after retries; the next poll tries again."""

    reason = "api_unavailable"


class ScalePermissionDenied(Permanent):
    """The credentials lack a permission; the message names it."""

    reason = "forbidden"


class ScaleTargetMissing(Permanent):
    """The Deployment (or other target) does not exist."""

    reason = "not_found"

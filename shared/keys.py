"""Key names under the namespace: the one place that spells them."""

from __future__ import annotations

from dataclasses import dataclass

POOLS: tuple[str, ...] = ("product", "ard")
#: The original deployment's Redis lists, and the pool each one's items are for.
LEGACY_LISTS: dict[str, str] = {
    "jobProduct": "product",
    "jobS2": "ard",
    "jobLS": "ard",
    "jobWater": "ard",
}
DISPATCHER_GROUP = "dispatcher"
WORKER_GROUP = "workers"


@dataclass(frozen=True)
class Keys:
    namespace: str = "conveyor"

    @property
    def events(self) -> str:
        return f"{self.namespace}:events"

    def jobs(self, pool: str) -> str:
        return f"{self.namespace}:jobs:{pool}"

    @property
    def dead(self) -> str:
        return f"{self.namespace}:dead"

    @property
    def results(self) -> str:
        return f"{self.namespace}:results"

    def job(self, job_id: str) -> str:
        return f"{self.namespace}:job:{job_id}"

    def request(self, request_id: str) -> str:
        return f"{self.namespace}:request:{request_id}"

    def request_jobs(self, request_id: str) -> str:
        return f"{self.namespace}:request:{request_id}:jobs"

    def dispatched(self, request_id: str) -> str:
        """Idempotency key: present once a request's jobs are in their stream."""
        return f"{self.namespace}:dispatched:{request_id}"

    def expanded(self, job_id: str, run: str = "1") -> str:
        """Set of the jobs a search job (water classification) has added, per run of its
        request: each is added once however often the search runs."""
        return f"{self.namespace}:expanded:{job_id}:{run}"

    @property
    def job_index(self) -> str:
        """Sorted set of job ids by last update time, for `conveyor status`."""
        return f"{self.namespace}:jobs:index"

    def last_errors(self, stream: str) -> str:
        """Hash entry id -> last error of entries that failed and wait for a retry."""
        return f"{stream}:errors"

    def entry_jobs(self, stream: str) -> str:
        """Hash entry id -> job id of entries being worked on, so that an entry deleted while
        pending can still be recorded against its job."""
        return f"{stream}:entries"

    @property
    def dead_index(self) -> str:
        """Hash "<stream> <entry id>" -> dead-letter id: one dead letter per entry, however often
        the step that writes it is retried."""
        return f"{self.namespace}:dead:index"

    def leader(self, role: str) -> str:
        return f"{self.namespace}:{role}:leader"

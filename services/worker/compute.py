"""Dask for the worker: the user's scheduler (`DASK_SCHEDULER_HOST`) or an in-process cluster.

The client is asynchronous and shares the worker's event loop, so computing a product is an
`await` that leaves the loop free to renew leases while the threads do the work.

The in-process cluster is tuned so that a job streams through memory: it reads pixels as the
computation consumes them rather than all at once, and what it frees goes back to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

import dask
import structlog

from services.worker.settings import WorkerSettings

log = structlog.get_logger(__name__)


def scheduler_address(host: str) -> str:
    """`dask-scheduler`, `dask-scheduler:8786` or `tcp://…` as the original deployment gave it."""
    address = host.strip()
    if "://" not in address:
        address = f"tcp://{address}"
    if address.count(":") < 2:
        address = f"{address}:8786"
    return address


#: distributed queues a group of tasks on the scheduler, releasing them to the worker only as
#: its threads free up, when the group is "root-ish": many tasks with small dependencies. Each
#: chunk `dc.load` reads depends on a task holding its dataset, so with more than a handful of
#: datasets the reads are not root-ish, all go to the worker at once, and it reads the whole cube
#: before computing anything (for a year of Landsat 8 at 1024 px: peak RSS 890 MiB instead of
#: 650). With one worker in this process there is no placement for the heuristic to protect.
IN_PROCESS_SCHEDULER_CONFIG: dict[str, object] = {
    "distributed.scheduler.rootish-taskgroup-dependencies": 1_000_000,
}
#: glibc's `mallopt` parameter: allocations of at least this many bytes get their own mapping.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 64 * 1024


def return_freed_memory_to_the_system() -> bool:
    """Make glibc give every array of 64 KiB or more its own mapping, unmapped when it is freed.

    By default glibc raises that threshold after large frees (up to 32 MiB), after which chunk
    arrays are carved from its heaps and what they free stays there, fragmented: measured on a
    year of Landsat 8 at 1024 px, peak RSS 25% higher during a job and twice the idle size
    after it. (dask's Nanny sets `MALLOC_TRIM_THRESHOLD_` for the same reason; an in-process
    cluster has no Nanny, and trimming alone recovered less.) Returns False where the C library
    has no `mallopt`.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


class DaskCompute:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._client: Any = None
        self._cluster: Any = None

    async def client(self) -> Any:
        if self._client is not None:
            return self._client
        from distributed import Client, LocalCluster

        if self.settings.dask_scheduler_host:
            address = scheduler_address(self.settings.dask_scheduler_host)
            self._client = await Client(address, asynchronous=True)
            log.info("dask scheduler", address=address)
        else:
            returns_memory = return_freed_memory_to_the_system()
            # The scheduler reads its configuration when it is created.
            with dask.config.set(IN_PROCESS_SCHEDULER_CONFIG):
                self._cluster = await LocalCluster(
                    n_workers=1,
                    threads_per_worker=self.settings.dask_threads,
                    processes=False,
                    asynchronous=True,
                    dashboard_address=None,
                    memory_limit=self.settings.dask_memory_limit,
                )
            self._client = await Client(self._cluster, asynchronous=True)
            log.info(
                "dask in-process cluster",
                threads=self.settings.dask_threads,
                returns_freed_memory=returns_memory,
            )
        return self._client

    async def compute(self, lazy: Any) -> Any:
        client = await self.client()
        return await client.compute(lazy)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._cluster is not None:
            await self._cluster.close()
            self._cluster = None

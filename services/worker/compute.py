"""Dask for the worker: the user's scheduler (`DASK_SCHEDULER_HOST`) or an in-process cluster.

The client is asynchronous and shares the worker's event loop, so computing a product is an
`await` that leaves the loop free to renew leases while the threads do the work.
"""

from __future__ import annotations

from typing import Any

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
            self._cluster = await LocalCluster(
                n_workers=1,
                threads_per_worker=self.settings.dask_threads,
                processes=False,
                asynchronous=True,
                dashboard_address=None,
                memory_limit=self.settings.dask_memory_limit,
            )
            self._client = await Client(self._cluster, asynchronous=True)
            log.info("dask in-process cluster", threads=self.settings.dask_threads)
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

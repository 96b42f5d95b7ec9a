"""Dask for the worker: the user's scheduler (`DASK_SCHEDULER_HOST`) or threads in this process.

Either way computing a product is an `await` that leaves the event loop free to renew leases:
the asynchronous distributed client shares the loop; the threaded scheduler runs off it.

Without a scheduler, dask's threaded scheduler runs the graph on `dask_threads` threads shared by
the jobs running at once. It streams: a chunk's dates are read as the computation needs them.
An in-process distributed cluster did the same work about 30% slower (its scheduler and worker
take the GIL on the event loop for every task) and either read the whole cube ahead of the
computation or, told to queue the reads, waited between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from services.worker.settings import WorkerSettings

log = structlog.get_logger(__name__)

#: glibc's `mallopt` parameter: allocations of at least this many bytes get their own mapping.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 64 * 1024


class ComputeCancelled(Exception):
    """The job awaiting a computation was cancelled; the computation stops at its next task."""


def scheduler_address(host: str) -> str:
    """`dask-scheduler`, `dask-scheduler:8786` or `tcp://…` as the original deployment gave it."""
    address = host.strip()
    if "://" not in address:
        address = f"tcp://{address}"
    if address.count(":") < 2:
        address = f"{address}:8786"
    return address


def return_freed_memory_to_the_system() -> bool:
    """Make glibc give every array of 64 KiB or more its own mapping, unmapped when it is freed.

    By default glibc raises that threshold after large frees (up to 32 MiB), after which chunk
    arrays are carved from its heaps and what they free stays there, fragmented: measured on a
    year of Landsat 8 at 1024 px, peak RSS 25% higher during a job and twice the idle size
    after it. (dask's Nanny sets `MALLOC_TRIM_THRESHOLD_` for its worker processes for the same
    reason; trimming alone recovered less here.) Returns False where the C library has no
    `mallopt`.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def compute_in_threads(lazy: Any, pool: ThreadPoolExecutor, cancelled: threading.Event) -> Any:
    """`lazy` computed by dask's threaded scheduler on `pool`; stops once `cancelled` is set.

    Blocks: call it off the event loop.
    """
    import dask

    def stop_if_cancelled(_key: object, _graph: Mapping[Any, Any], _state: object) -> None:
        if cancelled.is_set():
            raise ComputeCancelled("the computation's job was cancelled")

    # Callbacks given here, not through `dask.callbacks.Callback`, whose registry is global and
    # would reach the other jobs computing at the same time.
    callbacks = [(None, None, stop_if_cancelled, None, None)]
    (result,) = dask.compute(lazy, scheduler="threads", pool=pool, callbacks=callbacks)
    return result


async def _until_done(future: asyncio.Future[Any]) -> None:
    """Wait for `future` to finish, whatever it raises and however often this wait is cancelled."""
    while not future.done():
        with contextlib.suppress(BaseException):
            await asyncio.shield(future)


class DaskCompute:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None

    async def client(self) -> Any:
        """The distributed client of `DASK_SCHEDULER_HOST` (only when it is set).

        A client that lost its scheduler has cancelled every future it held (the attempts
        computing on it failed, to be retried); it is dropped and a new one connects, to the
        scheduler that replaced it. The cluster is shared: nothing here restarts it.
        """
        if self._client is not None and self._client.status == "running":
            return self._client
        if not self.settings.dask_scheduler_host:
            raise RuntimeError("no DASK_SCHEDULER_HOST: this worker computes in its own threads")
        from distributed import Client

        if self._client is not None:
            lost, self._client = self._client, None
            log.warning("dask scheduler connection lost: reconnecting", status=lost.status)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lost.close(), timeout=5)
        address = scheduler_address(self.settings.dask_scheduler_host)
        self._client = await Client(address, asynchronous=True)
        log.info("dask scheduler", address=address)
        return self._client

    def threads(self) -> ThreadPoolExecutor:
        """The pool every in-process computation shares, made on first use."""
        if self._pool is None:
            returns_memory = return_freed_memory_to_the_system()
            self._pool = ThreadPoolExecutor(
                self.settings.dask_threads, thread_name_prefix="dask-compute"
            )
            log.info(
                "dask threads in this process",
                threads=self.settings.dask_threads,
                returns_freed_memory=returns_memory,
            )
        return self._pool

    async def compute(self, lazy: Any) -> Any:
        """The computed result. Cancelling the caller stops the computation and returns only
        once it has stopped, so that whoever takes the job over next never runs beside it."""
        if self.settings.dask_scheduler_host:
            client = await self.client()
            future = client.compute(lazy)
            try:
                return await future
            except asyncio.CancelledError:
                await client.cancel([future], force=True)
                raise
        cancelled = threading.Event()
        running = asyncio.ensure_future(
            asyncio.to_thread(compute_in_threads, lazy, self.threads(), cancelled)
        )
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            # The thread cannot be interrupted: this makes it stop before its next task, and
            # the wait below lasts until it has.
            cancelled.set()
            await _until_done(running)
            raise

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

"""Keeping a held entry's lease: renewed well inside it, given up before it lapses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import structlog

from shared.outages import QUEUE_ERRORS, is_outage

if TYPE_CHECKING:
    from shared.streams import ConsumerGroup

log = structlog.get_logger(__name__)


class Lease:
    """Keeps entries' leases renewed while their holder works on them.

    Renewals run every `renew_interval`; one that fails (an outage) is retried at once and then
    every fraction of a second. The lease on the server lapses `lease_seconds` after the last
    renewal that reached it, which cannot be earlier than when that renewal was sent; so when no
    renewal has succeeded by `local_deadline_margin` before that, the holder must stop: `lost`
    is set (reason `lapsed`). It is set too when another consumer holds the entry now (reason
    `taken_over`), or when the entry was deleted from the stream while held (reason `deleted`,
    the ids in `deleted_ids`: the holder dead-letters them with `dead_letter_deleted`). Entries
    released with `release` are no longer renewed.
    """

    def __init__(self, group: ConsumerGroup, entry_ids: Iterable[str], claimed_at: float) -> None:
        self.group = group
        self.entry_ids = set(entry_ids)
        self.lost_ids: set[str] = set()
        self.deleted_ids: set[str] = set()
        self.lost = asyncio.Event()
        self.reason = ""
        settings = group.settings
        if claimed_at <= 0:  # not known (callers pass the time of the read): counted from now
            claimed_at = time.monotonic()
        self._valid_until = claimed_at + settings.lease_seconds - settings.local_deadline_margin
        self._next_renewal = claimed_at + settings.renew_interval

    def release(self, entry_id: str) -> None:
        self.entry_ids.discard(entry_id)

    @property
    def valid_for(self) -> float:
        """Seconds until the holder must have stopped, unless a renewal succeeds."""
        return self._valid_until - time.monotonic()

    def _lose(self, reason: str, entry_ids: Iterable[str]) -> None:
        self.reason = reason
        self.lost_ids.update(entry_ids)
        self.entry_ids.difference_update(entry_ids)
        self.lost.set()

    async def keep(self) -> None:
        settings = self.group.settings
        retry_in = 0.05
        while self.entry_ids:
            await asyncio.sleep(
                max(0.0, min(self._next_renewal, self._valid_until) - time.monotonic())
            )
            sent = time.monotonic()
            if sent >= self._valid_until:
                self._lose("lapsed", list(self.entry_ids))
                log.error(
                    "lease could not be renewed before it lapsed: stopping the work here rather "
                    "than racing the consumer that reclaims it", entries=sorted(self.lost_ids),
                )  # fmt: skip
                return
            held = sorted(self.entry_ids)
            try:
                renewed_ids, deleted = await asyncio.wait_for(
                    self.group.renew_held(held), self._valid_until - sent
                )
            except TimeoutError:
                continue  # the deadline check above ends it
            except QUEUE_ERRORS as error:
                if not is_outage(error):
                    raise
                log.warning("lease renewal failed; retrying", error=str(error), entries=held)
                if self.group.on_renewal_failure is not None:
                    self.group.on_renewal_failure(error)
                self._next_renewal = time.monotonic() + retry_in
                retry_in = min(retry_in * 2, max(0.05, settings.renew_interval / 4), 1.0)
                continue
            retry_in = 0.05
            renewed = set(renewed_ids)
            if deleted:
                self.deleted_ids.update(deleted)
                self._lose("deleted", deleted)
                log.warning("entries deleted from the stream while held", entries=deleted)
            taken = [e for e in held if e not in renewed and e not in self.deleted_ids]
            if taken:
                self._lose("taken_over", taken)
                log.warning("lease lost: another consumer holds these entries now", entries=taken)
                if not self.entry_ids:
                    return
            self._valid_until = sent + settings.lease_seconds - settings.local_deadline_margin
            self._next_renewal = sent + settings.renew_interval

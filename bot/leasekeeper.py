"""Holding leases while working: one renewal loop per process for every lease it holds.

A cycle holds its subscription's lease for as long as it works on it
(``storage/leases.py``). Renewing each lease from a task of its own cost every
cycle a task started and cancelled, mostly for idle polls that end long before
a renewal is due. Instead one loop renews all held leases together, in one
statement every third of the lease time. A lease that statement does not get
back was taken by another process (this one stalled past the lease time): the
work holding it is cancelled, and its open intents are settled by whoever holds
the lease now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from storage.leases import Leases

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Claims a lease for a piece of work, renews it with all the others, gives it back."""

    def __init__(self, leases: Leases) -> None:
        self.leases = leases
        self.renewals = 0
        """Renewal statements made so far: lets tests wait for one instead of sleeping."""
        # The tasks working under each held lease (a command and the scheduler may
        # both work on one subscription: the lease is given back when both are done).
        self._held: dict[int, set[asyncio.Task[Any]]] = {}
        self._loop: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def hold(
        self, subscription_id: int, *, claimed_at: datetime | None = None
    ) -> AsyncIterator[bool]:
        """Hold the subscription's lease while the current task works: yields whether it is ours.

        ``claimed_at``: when the caller claimed it (the scheduler claims a batch in
        one statement); a claim that recent is not repeated.
        """
        fresh_for = self.leases.lease_time / 3
        if claimed_at is None or datetime.now(UTC) - claimed_at > fresh_for:
            got = await self.leases.claim([subscription_id], datetime.now(UTC))
            if subscription_id not in got:
                yield False
                return
        work = asyncio.current_task()
        if not self.leases.shared or work is None:  # the only process: nothing to renew
            yield True
            return
        holders = self._held.setdefault(subscription_id, set())
        holders.add(work)
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._renew(), name="lease-renewal")
        try:
            yield True
        finally:
            holders.discard(work)
            if not holders and self._held.get(subscription_id) is holders:
                del self._held[subscription_id]
                await self.leases.release([subscription_id])

    async def close(self) -> None:
        """Stop renewing (the work holding leases is being stopped too)."""
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.leases.lease_time.total_seconds() / 3)
            try:
                await self._renew_once()
            except Exception:  # the next turn tries again, well within the lease time
                log.exception("Renewing %d lease(s) failed", len(self._held))

    async def _renew_once(self) -> None:
        held = dict(self._held)
        if not held:
            return
        got = await self.leases.renew(held, datetime.now(UTC))
        self.renewals += 1
        for subscription_id, holders in held.items():
            # Not renewed: taken by another process. Unless its work ended meanwhile
            # (released it) and new work holds a fresh claim (a new set of holders).
            if subscription_id in got or self._held.get(subscription_id) is not holders:
                continue
            del self._held[subscription_id]
            log.warning("Lost the lease of subscription %s: stopping work on it", subscription_id)
            for work in holders:
                work.cancel()

"""Writes that many tasks make at nearly the same time, coalesced into one statement.

An idle poll round is thousands of tiny writes (a poll's success, a lease given
back), each alone in its transaction. Batched, the polls finishing within a few
milliseconds of each other share one round trip: the cost of a round grows
with the number of batches, not of subscriptions. Each caller still returns
only once its row is written, so nothing reads as done before it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Hashable, KeysView, Sequence
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
RowT = TypeVar("RowT")

BATCH_SECONDS = 0.005
"""How long a batch waits for company: short next to any poll, long next to a statement."""


class WriteBatcher(Generic[Key, RowT]):
    """Collects rows for ``write`` (one call per batch); one row per key, the latest wins."""

    def __init__(
        self,
        write: Callable[[Sequence[RowT]], Awaitable[None]],
        *,
        delay: float = BATCH_SECONDS,
    ) -> None:
        self._write = write
        self._delay = delay
        self._rows: dict[Key, RowT] = {}
        self._next: asyncio.Future[None] | None = None
        # Batches taken but not yet written, with their keys (see ``settled``).
        self._in_flight: dict[asyncio.Future[None], KeysView[Key]] = {}

    async def add(self, key: Key, row: RowT) -> None:
        """Queue ``row``; returns once the batch holding it is written (or raises its error)."""
        await self.queue(key, row)

    def queue(self, key: Key, row: RowT) -> asyncio.Future[None]:
        """Queue ``row`` now; the result is done once the batch holding it is written."""
        self._rows[key] = row
        if self._next is None:
            self._next = asyncio.ensure_future(self._flush())
        return asyncio.shield(self._next)

    async def settled(self, keys: Collection[Key]) -> None:
        """Wait until no queued or unwritten batch holds any of ``keys``.

        For a write that must not be overtaken by a batch still on its way
        (a lease claimed again must not be deleted by its earlier release).
        """
        waiting = [future for future, held in self._in_flight.items() if not held.isdisjoint(keys)]
        if self._next is not None and not self._rows.keys().isdisjoint(keys):
            waiting.append(self._next)
        if waiting:
            await asyncio.gather(*map(asyncio.shield, waiting), return_exceptions=True)

    async def _flush(self) -> None:
        await asyncio.sleep(self._delay)  # let the callers finishing together join
        rows, self._rows = self._rows, {}
        current = self._next
        self._next = None
        assert current is not None
        self._in_flight[current] = rows.keys()
        try:
            await self._write(list(rows.values()))
        finally:
            del self._in_flight[current]

"""Leases: one process at a time works on a subscription (SPEC §8).

With PostgreSQL several bot processes share the database, each running some of
the Discord shards; during a rolling restart two of them may run the same shard
for a while. Before polling or delivering a subscription a process claims its
lease: a row naming the holder and an expiry. A lease another process holds is
not taken until it expires; the holder renews it while it works and releases it
when done, so a process that dies (SIGKILL) blocks the subscription for one
lease time at most. Claims are made in one statement for a whole batch, and the
releases of cycles ending together are written as one statement too
(``storage/batching.py``), so an idle round costs a few round trips per batch,
not one per subscription.

Expiry compares the processes' own clocks (UTC): the lease time is kept long
next to any plausible clock skew between them.

With SQLite there is one process per file (``storage/lock.py``): ``SoleHolder``
grants every claim without a write.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from storage.batching import WriteBatcher
from storage.db import Database
from storage.records import to_db_time

LEASE_TIME = timedelta(seconds=90)


class Leases:
    """Claims, renews and releases subscription leases for one holder."""

    shared = True
    """Other processes may hold leases too, so held ones must be renewed."""

    def __init__(self, db: Database, holder: str, *, lease_time: timedelta = LEASE_TIME) -> None:
        self.db = db
        self.holder = holder
        self.lease_time = lease_time
        self._releases: WriteBatcher[int, int] = WriteBatcher(self._delete)

    async def claim(self, subscription_ids: Iterable[int], now: datetime) -> set[int]:
        """Claim (or renew) these leases; returns the ids now held by this holder."""
        ids = sorted(set(subscription_ids))
        if not ids:
            return set()
        # A release of ours still on its way would delete the lease claimed here.
        await self._releases.settled(ids)
        async with self.db.write() as tx:
            rows = await tx.fetch(
                """
                INSERT INTO leases (subscription_id, holder, expires_at)
                SELECT id, ?, ? FROM subscriptions
                WHERE id IN (SELECT CAST(value AS INTEGER) FROM json_each(?))
                ON CONFLICT (subscription_id) DO UPDATE
                SET holder = excluded.holder, expires_at = excluded.expires_at
                WHERE leases.holder = excluded.holder OR leases.expires_at < ?
                RETURNING subscription_id
                """,
                (
                    self.holder,
                    to_db_time(now + self.lease_time),
                    json.dumps(ids),
                    to_db_time(now),
                ),
            )
        return {int(row[0]) for row in rows}

    async def renew(self, subscription_ids: Iterable[int], now: datetime) -> set[int]:
        """Extend these held leases; returns the ids still held by this holder.

        Unlike ``claim`` it never takes a lease that is not ours any more: one
        released meanwhile stays released, one another process took is lost.
        """
        ids = sorted(set(subscription_ids))
        if not ids:
            return set()
        async with self.db.write() as tx:
            rows = await tx.fetch(
                """
                UPDATE leases SET expires_at = ?
                WHERE holder = ? AND subscription_id IN (SELECT CAST(value AS INTEGER)
                                                         FROM json_each(?))
                RETURNING subscription_id
                """,
                (to_db_time(now + self.lease_time), self.holder, json.dumps(ids)),
            )
        return {int(row[0]) for row in rows}

    def release(self, subscription_ids: Iterable[int]) -> Awaitable[Any]:
        """Give these leases up (others may take them without waiting); await it to know
        they are. Queued at once (a later ``claim`` of ours waits for it); cycles ending
        within a few milliseconds of each other share one DELETE.
        """
        return asyncio.gather(*(self._releases.queue(id_, id_) for id_ in set(subscription_ids)))

    async def _delete(self, ids: Sequence[int]) -> None:
        await self.db.write_one(
            """
            DELETE FROM leases
            WHERE holder = ? AND subscription_id IN (SELECT CAST(value AS INTEGER)
                                                     FROM json_each(?))
            """,
            (self.holder, json.dumps(sorted(ids))),
        )

    async def holders(self, subscription_ids: Iterable[int], now: datetime) -> dict[int, str]:
        """Who holds unexpired leases on these subscriptions (for status and tests)."""
        rows = await self.db.fetch(
            """
            SELECT subscription_id, holder FROM leases
            WHERE expires_at >= ?
              AND subscription_id IN (SELECT CAST(value AS INTEGER) FROM json_each(?))
            """,
            (to_db_time(now), json.dumps(sorted(set(subscription_ids)))),
        )
        return {int(row[0]): str(row[1]) for row in rows}


class SoleHolder(Leases):
    """SQLite: one process per database, so every claim is granted, nothing written."""

    shared = False

    async def claim(self, subscription_ids: Iterable[int], now: datetime) -> set[int]:
        return set(subscription_ids)

    async def renew(self, subscription_ids: Iterable[int], now: datetime) -> set[int]:
        return set(subscription_ids)

    def release(self, subscription_ids: Iterable[int]) -> Awaitable[Any]:
        return asyncio.gather()  # done already: there is nothing to give back


def leases_for(db: Database, holder: str) -> Leases:
    """Real leases on PostgreSQL, none needed on SQLite (``LEASE_TIME`` read at call time)."""
    kind = Leases if db.backend == "postgres" else SoleHolder
    return kind(db, holder, lease_time=LEASE_TIME)

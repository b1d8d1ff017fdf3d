"""WebSub push state: one row per pushable feed of a subscription (schema v7).

``bot/websub.py`` decides what to ask the hub and when; this module only
records it. Every transition that answers the hub (a verification, a denial) is
one conditional UPDATE, so two processes sharing PostgreSQL, or a verification
racing a timeout, can never both win: the caller learns from the returned flag
whether its transition happened.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from storage.db import Database
from storage.records import from_db_time, optional_time, to_db_time


class PushState(StrEnum):
    """Where one feed's hub subscription stands."""

    SUBSCRIBING = "subscribing"  # asked the hub; waiting for it to verify our intent
    ACTIVE = "active"  # verified; the hub pushes until ``lease_expires_at``
    UNSUBSCRIBING = "unsubscribing"  # detached; the hub is (to be) asked to stop
    UNAVAILABLE = "unavailable"  # no push for now (``reason`` says why); polling only


class PushRowMissingError(Exception):
    """An update meant for one push row touched none (it was removed meanwhile)."""


@dataclass(frozen=True, slots=True)
class PushTopic:
    """One feed's push state. ``subscription_id`` is None once its subscription is gone."""

    id: int
    subscription_id: int | None
    feed_url: str
    hub_url: str | None
    topic_url: str | None
    callback_token: str
    secret: str
    state: PushState
    reason: str | None
    requested_at: datetime | None
    """When the request now awaiting the hub's verification was sent (None: none is)."""
    lease_expires_at: datetime | None
    due_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> PushTopic:
        return cls(
            id=row["id"],
            subscription_id=row["subscription_id"],
            feed_url=row["feed_url"],
            hub_url=row["hub_url"],
            topic_url=row["topic_url"],
            callback_token=row["callback_token"],
            secret=row["secret"],
            state=PushState(row["state"]),
            reason=row["reason"],
            requested_at=optional_time(row["requested_at"]),
            lease_expires_at=optional_time(row["lease_expires_at"]),
            due_at=from_db_time(row["due_at"]),
            updated_at=from_db_time(row["updated_at"]),
        )

    def pushing(self, now: datetime) -> bool:
        """True while the hub has a verified, unexpired subscription for this feed."""
        return (
            self.state is PushState.ACTIVE
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )


class PushRepo:
    """The ``push_topics`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self,
        *,
        subscription_id: int,
        feed_url: str,
        hub_url: str | None,
        topic_url: str | None,
        callback_token: str,
        secret: str,
        state: PushState,
        reason: str | None,
        due_at: datetime,
        now: datetime,
    ) -> PushTopic:
        async with self.db.write() as tx:
            row = await tx.fetchone(
                """
                INSERT INTO push_topics (
                    subscription_id, feed_url, hub_url, topic_url, callback_token, secret,
                    state, reason, due_at, updated_at
                ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                RETURNING *
                """,
                (
                    subscription_id,
                    feed_url,
                    hub_url,
                    topic_url,
                    callback_token,
                    secret,
                    state.value,
                    reason,
                    to_db_time(due_at),
                    to_db_time(now),
                ),
            )
        assert row is not None
        return PushTopic.from_row(row)

    async def get(self, push_id: int) -> PushTopic | None:
        row = await self.db.fetchone("SELECT * FROM push_topics WHERE id = ?", (push_id,))
        return PushTopic.from_row(row) if row else None

    async def by_token(self, token: str) -> PushTopic | None:
        row = await self.db.fetchone("SELECT * FROM push_topics WHERE callback_token = ?", (token,))
        return PushTopic.from_row(row) if row else None

    async def for_subscription(self, subscription_id: int) -> list[PushTopic]:
        rows = await self.db.fetch(
            "SELECT * FROM push_topics WHERE subscription_id = ? ORDER BY id", (subscription_id,)
        )
        return [PushTopic.from_row(row) for row in rows]

    async def claim_due(
        self, now: datetime, *, hold_until: datetime, limit: int = 100
    ) -> list[PushTopic]:
        """Take the rows whose ``due_at`` has come (deadlines, renewals, retries).

        Their ``due_at`` moves to ``hold_until`` in the same statement, so another
        process sharing the database does not take them too (under PostgreSQL's
        read committed, its UPDATE re-checks ``due_at`` once the first commits);
        whoever attends a row sets its real next ``due_at``.
        """
        async with self.db.write() as tx:
            rows = await tx.fetch(
                """
                UPDATE push_topics SET due_at = ?
                WHERE due_at <= ? AND id IN (
                    SELECT id FROM push_topics WHERE due_at <= ? ORDER BY due_at LIMIT ?
                )
                RETURNING *
                """,
                (to_db_time(hold_until), to_db_time(now), to_db_time(now), limit),
            )
        return [PushTopic.from_row(row) for row in rows]

    async def pushed_subscriptions(
        self, subscription_ids: Iterable[int], now: datetime
    ) -> set[int]:
        """Which of these subscriptions have every feed pushed under an unexpired lease."""
        rows = await self.db.fetch(
            """
            SELECT subscription_id FROM push_topics
            WHERE subscription_id IN (SELECT CAST(value AS INTEGER) FROM json_each(?))
            GROUP BY subscription_id
            HAVING min(CASE WHEN state = 'active' AND lease_expires_at > ? THEN 1 ELSE 0 END) = 1
            """,
            (json.dumps(sorted(set(subscription_ids))), to_db_time(now)),
        )
        return {int(row[0]) for row in rows}

    async def requested(
        self, push_id: int, state: PushState, *, due_at: datetime, now: datetime
    ) -> None:
        """A (re)subscribe or unsubscribe request is being sent: verification awaited until
        ``due_at``."""
        await self._update_one(
            """
            UPDATE push_topics
            SET state = ?, reason = NULL, requested_at = ?, due_at = ?, updated_at = ?
            WHERE id = ?
            """,
            (state.value, to_db_time(now), to_db_time(due_at), to_db_time(now), push_id),
        )

    async def verify_subscribe(
        self,
        push_id: int,
        topic_url: str,
        *,
        lease_expires_at: datetime,
        due_at: datetime,
        now: datetime,
    ) -> bool:
        """The hub verified a subscribe we asked for; False when none was awaited."""
        changed = await self.db.write_one(
            """
            UPDATE push_topics
            SET state = 'active', reason = NULL, requested_at = NULL, lease_expires_at = ?,
                due_at = ?, updated_at = ?
            WHERE id = ? AND topic_url = ? AND subscription_id IS NOT NULL
              AND state IN ('subscribing', 'active') AND requested_at IS NOT NULL
            """,
            (
                to_db_time(lease_expires_at),
                to_db_time(due_at),
                to_db_time(now),
                push_id,
                topic_url,
            ),
        )
        return changed == 1

    async def verify_unsubscribe(self, push_id: int, topic_url: str) -> bool:
        """The hub verified an unsubscribe we asked for: the row is done with."""
        changed = await self.db.write_one(
            """
            DELETE FROM push_topics
            WHERE id = ? AND topic_url = ? AND state = 'unsubscribing'
              AND requested_at IS NOT NULL
            """,
            (push_id, topic_url),
        )
        return changed == 1

    async def mark_unavailable(
        self,
        push_id: int,
        reason: str,
        *,
        due_at: datetime,
        now: datetime,
        only_if_requested: bool = False,
    ) -> bool:
        """No push for now; retried at ``due_at``. ``only_if_requested``: for a hub's
        denial, which counts only while one of our requests is pending."""
        condition = (
            " AND requested_at IS NOT NULL AND state IN ('subscribing', 'active')"
            if only_if_requested
            else ""
        )
        changed = await self.db.write_one(
            f"""
            UPDATE push_topics
            SET state = 'unavailable', reason = ?, requested_at = NULL, due_at = ?,
                updated_at = ?
            WHERE id = ?{condition}
            """,
            (reason, to_db_time(due_at), to_db_time(now), push_id),
        )
        return changed == 1

    async def retire(
        self,
        *,
        now: datetime,
        subscription_id: int | None = None,
        push_id: int | None = None,
    ) -> int:
        """Stop using a subscription's rows (it is being removed), or one row (its feed moved).

        Rows the hub may hold (verified, or asked) become detached ``unsubscribing``
        rows, due now, so the unsubscription is sent and its verification can
        still be answered after the subscription is gone; the others are deleted.
        Returns how many now wait to be unsubscribed.
        """
        if (subscription_id is None) == (push_id is None):
            raise ValueError("retire one subscription's rows or one row")
        which = "subscription_id = ?" if push_id is None else "id = ?"
        key = subscription_id if push_id is None else push_id
        # Verified, asked, or with a lease that may still run (a renewal that failed).
        held = (
            "hub_url IS NOT NULL AND (state = 'active' OR requested_at IS NOT NULL "
            "OR coalesce(lease_expires_at, '') > ?)"
        )
        async with self.db.write() as tx:
            await tx.execute(
                f"DELETE FROM push_topics WHERE {which} AND NOT ({held})", (key, to_db_time(now))
            )
            return await tx.execute(
                f"""
                UPDATE push_topics
                SET subscription_id = NULL, state = 'unsubscribing', requested_at = NULL,
                    due_at = ?, updated_at = ?
                WHERE {which}
                """,
                (to_db_time(now), to_db_time(now), key),
            )

    async def delete(self, push_id: int) -> None:
        await self.db.write_one("DELETE FROM push_topics WHERE id = ?", (push_id,))

    async def _update_one(self, sql: str, parameters: tuple[Any, ...]) -> None:
        if await self.db.write_one(sql, parameters) != 1:
            raise PushRowMissingError(f"push row {parameters[-1]} is gone")

"""The delivery outbox (SPEC §5): intent before the send, message id after.

A nonce is generated per intent and sent with ``enforce_nonce``, so Discord
itself refuses a second message for the same intent within its dedup window.
Intents still open at start-up were interrupted mid-send; the mirror settles
them by reading the thread before sending anything new.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from storage.db import Database
from storage.records import DeliveryIntent, to_db_time


class IntentRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(
        self,
        *,
        subscription_id: int,
        kind: str,
        target_id: int,
        channel_id: int,
        now: datetime,
        part: int = 0,
    ) -> DeliveryIntent:
        """Record the intent to send (durably) and return it with its nonce."""
        # Discord nonces are at most 25 characters.
        nonce = secrets.token_hex(12)
        async with self.db.write() as conn:
            cursor = await conn.execute(
                """
                INSERT INTO delivery_intents (subscription_id, kind, target_id, part,
                                              channel_id, nonce, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """,
                (subscription_id, kind, target_id, part, channel_id, nonce, to_db_time(now)),
            )
            intent_id = cursor.lastrowid
        assert intent_id is not None
        return DeliveryIntent(
            id=intent_id,
            subscription_id=subscription_id,
            kind=kind,
            target_id=target_id,
            part=part,
            channel_id=channel_id,
            nonce=nonce,
            created_at=now,
            completed_at=None,
            message_id=None,
        )

    async def complete(self, intent_id: int, *, message_id: int | None, now: datetime) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "UPDATE delivery_intents SET completed_at = ?, message_id = ? WHERE id = ?",
                (to_db_time(now), message_id, intent_id),
            )

    async def unfinished(self, subscription_id: int | None = None) -> list[DeliveryIntent]:
        async with self.db.conn.execute(
            """
            SELECT * FROM delivery_intents
            WHERE completed_at IS NULL AND (? IS NULL OR subscription_id = ?)
            ORDER BY id
            """,
            (subscription_id, subscription_id),
        ) as cursor:
            return [DeliveryIntent.from_row(row) async for row in cursor]

    async def unfinished_for_channel(self, channel_id: int) -> list[DeliveryIntent]:
        async with self.db.conn.execute(
            """
            SELECT * FROM delivery_intents
            WHERE completed_at IS NULL AND channel_id = ?
            ORDER BY id
            """,
            (channel_id,),
        ) as cursor:
            return [DeliveryIntent.from_row(row) async for row in cursor]

    async def prune(self, before: datetime) -> int:
        """Forget completed intents older than ``before``; they are only an audit trail."""
        async with self.db.write() as conn:
            cursor = await conn.execute(
                "DELETE FROM delivery_intents WHERE completed_at IS NOT NULL AND completed_at < ?",
                (to_db_time(before),),
            )
            return cursor.rowcount

"""The outbox (SPEC §5): every Discord write is an intent first, and its effect after.

An intent is recorded durably before the write (with a nonce Discord uses to
refuse a second message for it). When the write's answer is known, the intent is
completed *and* its effect applied in one transaction: the article gets its
thread, the comment its message id, a refused item is set aside. So the
database never says "sent" without the message id, nor holds a message id
whose intent still looks open.

To keep a backfill at one write transaction per message, ``complete`` can open
the next intents in the same transaction (the next comment's parts, planned
once the current one's outcome is known).

Intents left open by a crash are settled by the mirror (``bot/outbox.py``)
from what the channel shows; completed ones are only an audit trail and are
pruned after a while.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from storage.db import Database, Transaction
from storage.records import Intent, IntentKind, to_db_time

ARTICLE_KINDS = tuple(kind.value for kind in IntentKind if kind.about_article)


class OutboxError(Exception):
    """An effect found nothing to apply to: the outbox and its targets disagree."""


@dataclass(frozen=True, slots=True)
class NewIntent:
    subscription_id: int
    kind: IntentKind
    target_id: int
    channel_id: int
    part: int = 0
    total: int = 1


# --- effects: what a completed intent changes ------------------------------------------


@dataclass(frozen=True, slots=True)
class ThreadMade:
    """The article's thread exists (forum post, or thread from its message)."""

    thread_id: int
    starter_message_id: int


@dataclass(frozen=True, slots=True)
class ArticleMessagePosted:
    """A text channel's article message exists; its thread comes next."""

    message_id: int


@dataclass(frozen=True, slots=True)
class PartPosted:
    """Part ``intent.part`` of the comment is in Discord.

    ``total`` overrides the intent's planned part count (a v1 intent has none).
    """

    message_id: int
    total: int | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """Discord refused the item for good (a 4xx): it is set aside with the reason."""

    reason: str


@dataclass(frozen=True, slots=True)
class CommentEdited:
    """The comment's messages show ``content_hash``'s text.

    ``parts_sent``/``extra_message_ids`` are what is left after surplus parts
    were deleted; ``more_to_send`` puts it back in the queue for parts the new
    text needs beyond the messages it has.
    """

    content_hash: str
    parts_sent: int
    extra_message_ids: tuple[int, ...]
    more_to_send: bool


@dataclass(frozen=True, slots=True)
class ArticleEdited:
    content_hash: str


@dataclass(frozen=True, slots=True)
class MessageGone:
    """The comment's message was deleted in Discord: never mirror it again."""


@dataclass(frozen=True, slots=True)
class Abandoned:
    """Nothing was made and nothing is to be recorded (the item no longer waits)."""


Effect = (
    ThreadMade
    | ArticleMessagePosted
    | PartPosted
    | Refused
    | CommentEdited
    | ArticleEdited
    | MessageGone
    | Abandoned
)


class Outbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self, intents: Sequence[NewIntent], *, now: datetime) -> list[Intent]:
        """Record intents (one transaction for all) and return them with their nonces."""
        if not intents:
            return []
        async with self.db.write() as tx:
            return await _insert(tx, intents, now)

    async def complete(
        self,
        intent: Intent,
        effect: Effect,
        *,
        now: datetime,
        then_open: Sequence[NewIntent] = (),
    ) -> list[Intent]:
        """Close ``intent`` and apply ``effect`` in one transaction; open ``then_open`` too."""
        message_id = _message_of(effect)
        async with self.db.write() as tx:
            changed = await tx.execute(
                """
                UPDATE outbox SET completed_at = ?, message_id = ?
                WHERE id = ? AND completed_at IS NULL
                """,
                (to_db_time(now), message_id, intent.id),
            )
            if changed != 1:
                raise OutboxError(f"intent {intent.id} is not open")
            await _apply(tx, intent, effect, now)
            return await _insert(tx, then_open, now)

    async def open_in_channel(self, channel_id: int) -> list[Intent]:
        rows = await self.db.fetch(
            "SELECT * FROM outbox WHERE completed_at IS NULL AND channel_id = ? ORDER BY id",
            (channel_id,),
        )
        return [Intent.from_row(row) for row in rows]

    async def open_for_article(self, article_id: int) -> list[Intent]:
        """Open intents about the article itself (its thread, its message)."""
        rows = await self.db.fetch(
            """
            SELECT * FROM outbox
            WHERE completed_at IS NULL AND target_id = ?
              AND kind IN (SELECT value FROM json_each(?))
            ORDER BY id
            """,
            (article_id, json.dumps(ARTICLE_KINDS)),
        )
        return [Intent.from_row(row) for row in rows]

    async def prune(self, before: datetime) -> int:
        """Forget intents completed before ``before``; open ones are never pruned."""
        return await self.db.write_one(
            "DELETE FROM outbox WHERE completed_at IS NOT NULL AND completed_at < ?",
            (to_db_time(before),),
        )


async def _insert(tx: Transaction, intents: Sequence[NewIntent], now: datetime) -> list[Intent]:
    made: list[Intent] = []
    for new in intents:
        # Discord nonces are at most 25 characters.
        nonce = secrets.token_hex(12)
        row = await tx.fetchone(
            """
            INSERT INTO outbox (subscription_id, kind, target_id, part, total, channel_id,
                                nonce, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            RETURNING id
            """,
            (
                new.subscription_id,
                new.kind.value,
                new.target_id,
                new.part,
                new.total,
                new.channel_id,
                nonce,
                to_db_time(now),
            ),
        )
        assert row is not None
        made.append(
            Intent(
                id=int(row[0]),
                subscription_id=new.subscription_id,
                kind=new.kind,
                target_id=new.target_id,
                part=new.part,
                total=new.total,
                channel_id=new.channel_id,
                nonce=nonce,
                created_at=now,
                completed_at=None,
                message_id=None,
            )
        )
    return made


def _message_of(effect: Effect) -> int | None:
    if isinstance(effect, ThreadMade):
        return effect.starter_message_id
    if isinstance(effect, ArticleMessagePosted | PartPosted):
        return effect.message_id
    return None


async def _apply(tx: Transaction, intent: Intent, effect: Effect, now: datetime) -> None:
    """The effect's change to the intent's target; an effect that finds no row is an error."""
    table = "articles" if intent.kind.about_article else "comments"
    sql: str | None
    params: tuple[object, ...]
    match effect:
        case ThreadMade(thread_id, starter_message_id):
            sql = """
                UPDATE articles
                SET state = 'posted', thread_id = ?, starter_message_id = ?, needs_edit = 0,
                    refusal = NULL, refused_at = NULL
                WHERE id = ? AND state = 'pending'
            """
            params = (thread_id, starter_message_id, intent.target_id)
        case ArticleMessagePosted(message_id):
            sql = "UPDATE articles SET starter_message_id = ? WHERE id = ? AND state = 'pending'"
            params = (message_id, intent.target_id)
        case PartPosted(message_id, total):
            done = int(intent.part + 1 >= (total or intent.total))
            if intent.part == 0:
                sql = """
                    UPDATE comments
                    SET message_id = ?, parts_sent = 1, needs_edit = 0,
                        state = CASE WHEN ? = 1 THEN 'posted' ELSE state END
                    WHERE id = ? AND parts_sent = 0 AND state = 'pending'
                """
                params = (message_id, done, intent.target_id)
            else:
                row = await tx.fetchone(
                    "SELECT extra_message_ids FROM comments WHERE id = ?", (intent.target_id,)
                )
                extra = [*json.loads(row[0]), message_id] if row else [message_id]
                sql = """
                    UPDATE comments
                    SET extra_message_ids = ?, parts_sent = ?,
                        state = CASE WHEN ? = 1 THEN 'posted' ELSE state END
                    WHERE id = ? AND parts_sent = ? AND state = 'pending'
                """
                params = (json.dumps(extra), intent.part + 1, done, intent.target_id, intent.part)
        case Refused(reason):
            if intent.kind in (IntentKind.COMMENT_EDIT, IntentKind.ARTICLE_EDIT):
                # The message stays as it was; the refusal is shown until a resync.
                state = "state"
            else:
                state = "'set_aside'"
            sql = f"""
                UPDATE {table}
                SET state = {state}, needs_edit = 0, refusal = ?, refused_at = ?
                WHERE id = ?
            """
            params = (reason, to_db_time(now), intent.target_id)
        case CommentEdited(content_hash, parts_sent, extra_ids, more):
            sql = """
                UPDATE comments
                SET needs_edit = CASE WHEN content_hash = ? THEN 0 ELSE needs_edit END,
                    parts_sent = ?, extra_message_ids = ?,
                    state = CASE WHEN ? = 1 AND state = 'posted' THEN 'pending' ELSE state END
                WHERE id = ?
            """
            params = (
                content_hash,
                parts_sent,
                json.dumps(list(extra_ids)),
                int(more),
                intent.target_id,
            )
        case ArticleEdited(content_hash):
            sql = """
                UPDATE articles
                SET needs_edit = CASE WHEN content_hash = ? THEN 0 ELSE needs_edit END
                WHERE id = ?
            """
            params = (content_hash, intent.target_id)
        case MessageGone():
            sql = "UPDATE comments SET state = 'deleted', needs_edit = 0 WHERE id = ?"
            params = (intent.target_id,)
        case Abandoned():
            sql = None
            params = ()
    if sql is None:
        return
    if await tx.execute(sql, params) != 1:
        raise OutboxError(
            f"{type(effect).__name__} of intent {intent.id} ({intent.kind}) found no "
            f"{table} row {intent.target_id} in the expected state"
        )

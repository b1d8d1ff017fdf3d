"""Recording Discord results in storage the way delivery does: through the outbox.

Storage and ingestion tests need articles with threads and comments with
messages without running Discord; these helpers open the intent and complete it
with its effect, exactly as ``bot/delivery.py`` does after a send.
"""

from __future__ import annotations

from datetime import UTC, datetime

from storage import Outbox
from storage.outbox import NewIntent, PartPosted, ThreadMade
from storage.records import IntentKind

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def record_thread(
    outbox: Outbox, subscription_id: int, article_id: int, thread_id: int
) -> None:
    """The article's forum post ``thread_id`` was made (its first message has that id)."""
    new = NewIntent(subscription_id, IntentKind.FORUM_POST, article_id, channel_id=1)
    [intent] = await outbox.open([new], now=NOW)
    await outbox.complete(intent, ThreadMade(thread_id, thread_id), now=NOW)


async def record_comment(
    outbox: Outbox, subscription_id: int, comment_id: int, message_id: int
) -> None:
    """The single-message comment was posted as ``message_id``."""
    new = NewIntent(subscription_id, IntentKind.COMMENT_PART, comment_id, channel_id=1)
    [intent] = await outbox.open([new], now=NOW)
    await outbox.complete(intent, PartPosted(message_id), now=NOW)

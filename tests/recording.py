"""Storage set-up for tests: subscriptions, and Discord results recorded the way delivery does.

Storage and ingestion tests need a subscription, articles with threads and
comments with messages without running Discord; the recording helpers open the
intent and complete it with its effect, exactly as ``bot/delivery.py`` does
after a send.
"""

from __future__ import annotations

from datetime import UTC, datetime

from storage import Database, Outbox, SubscriptionRepo
from storage.outbox import NewIntent, PartPosted, ThreadMade
from storage.records import IntentKind, Subscription

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def add_subscription(
    db: Database,
    *,
    guild: int = 1,
    channel: int = 10,
    site: str = "https://blog.example",
    now: datetime = NOW,
) -> Subscription:
    """A Blogger subscription of ``site`` in ``channel``, due at ``now``."""
    return await SubscriptionRepo(db).add(
        guild_id=guild,
        channel_id=channel,
        feed_url=f"{site}/feeds/posts/default",
        blog_url=f"{site}/",
        blog_title="Example",
        dialect="blogger",
        comments_feed_url=f"{site}/feeds/comments/default",
        mirror_comments=True,
        backfill=1,
        interval_seconds=300,
        now=now,
        next_poll_at=now,
    )


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

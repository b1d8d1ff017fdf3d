"""The outbox on real SQLite files: intents, effects in one transaction, the v1→v2 migration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import pytest

from storage import ArticleRepo, CommentRepo, Database, Outbox, SubscriptionRepo
from storage.migrations import MIGRATIONS, SCHEMA_VERSION, _statements
from storage.outbox import (
    CommentEdited,
    NewIntent,
    OutboxError,
    PartPosted,
    Refused,
    ThreadMade,
)
from storage.records import (
    ArticleState,
    CommentState,
    IntentKind,
    NewArticle,
    NewComment,
    Subscription,
)
from tests.recording import add_subscription

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(database: Database) -> Database:
    """The repositories' database, on SQLite and on PostgreSQL."""
    return database


async def setup(db: Database) -> tuple[Subscription, int, list[int]]:
    """A subscription, one article and three pending comments."""
    sub = await add_subscription(db, now=NOW)
    articles, comments = ArticleRepo(db), CommentRepo(db)
    article = NewArticle(
        "a1", "https://blog.example/a1", "A1", "Me", NOW, NOW, "", None, (), None, "h"
    )
    await articles.insert_many(sub.id, [(article, ArticleState.PENDING)], now_text="t")
    stored = await articles.get_by_entry(sub.id, "a1")
    assert stored is not None
    await comments.insert_many(
        sub.id,
        [
            (
                stored.id,
                NewComment(f"c{n}", "a1", None, "X", None, NOW, "<p>hi</p>", "", False, "h"),
                CommentState.PENDING,
            )
            for n in range(3)
        ],
        now_text="t",
    )
    return sub, stored.id, [c.id for c in await comments.for_article(stored.id)]


def part(sub: Subscription, comment: int, index: int = 0, total: int = 1) -> NewIntent:
    return NewIntent(sub.id, IntentKind.COMMENT_PART, comment, 500, part=index, total=total)


async def test_open_complete_and_prune(db: Database) -> None:
    """Intents get distinct short nonces; completion closes them; only completed ones prune."""
    sub, _, [c0, c1, _c2] = await setup(db)
    outbox = Outbox(db)
    done, left = await outbox.open([part(sub, c0), part(sub, c1)], now=NOW)
    assert done.nonce != left.nonce and len(done.nonce) <= 25
    await outbox.complete(done, PartPosted(77), now=NOW)
    assert [i.id for i in await outbox.open_in_channel(500)] == [left.id]
    with pytest.raises(OutboxError):
        await outbox.complete(done, PartPosted(78), now=NOW)  # never twice
    assert await outbox.prune(NOW + timedelta(days=2)) == 1
    assert [i.id for i in await outbox.open_in_channel(500)] == [left.id]


async def test_completion_applies_its_effect_and_opens_the_next_in_one_transaction(
    db: Database,
) -> None:
    """One write transaction per message: complete, record the message, open the next intent."""
    sub, _, [c0, c1, _c2] = await setup(db)
    outbox, comments = Outbox(db), CommentRepo(db)
    [first] = await outbox.open([part(sub, c0)], now=NOW)
    before = db.transactions
    [following] = await outbox.complete(first, PartPosted(901), now=NOW, then_open=[part(sub, c1)])
    assert db.transactions == before + 1
    posted = await comments.get(c0)
    assert posted is not None and posted.state == CommentState.POSTED and posted.message_id == 901
    assert [i.id for i in await outbox.open_in_channel(500)] == [following.id]


async def test_a_failed_effect_rolls_the_completion_back(db: Database) -> None:
    """An effect that finds its target in another state changes nothing, intent included."""
    sub, _, [c0, *_] = await setup(db)
    outbox = Outbox(db)
    [intent] = await outbox.open([part(sub, c0, index=1, total=2)], now=NOW)
    with pytest.raises(OutboxError):
        await outbox.complete(intent, PartPosted(5), now=NOW)  # part 0 was never recorded
    assert [i.id for i in await outbox.open_in_channel(500)] == [intent.id]


async def test_parts_in_order_then_posted(db: Database) -> None:
    """A three-part comment stays pending until its last part is recorded."""
    sub, _, [c0, *_] = await setup(db)
    outbox, comments = Outbox(db), CommentRepo(db)
    for index, message in enumerate((100, 101, 102)):
        [intent] = await outbox.open([part(sub, c0, index, 3)], now=NOW)
        await outbox.complete(intent, PartPosted(message), now=NOW)
        record = await comments.get(c0)
        assert record is not None and record.parts_sent == index + 1
        assert record.state == (CommentState.POSTED if index == 2 else CommentState.PENDING)
    assert record.message_id == 100 and record.extra_message_ids == (101, 102)
    # An edit that needs a fourth part puts it back in the queue; one that needs one
    # part keeps only the first message.
    [edit] = await outbox.open([NewIntent(sub.id, IntentKind.COMMENT_EDIT, c0, 500)], now=NOW)
    await outbox.complete(edit, CommentEdited("h", 3, (101, 102), True), now=NOW)
    grown = await comments.get(c0)
    assert grown is not None and grown.state == CommentState.PENDING and grown.parts_sent == 3


async def test_refused_items_are_counted_and_resync_retries_them(db: Database) -> None:
    """A refusal sets the item aside with Discord's reason; resync makes it pending again."""
    sub, article_id, [c0, c1, _] = await setup(db)
    outbox, comments, subs = Outbox(db), CommentRepo(db), SubscriptionRepo(db)
    [thread] = await outbox.open(
        [NewIntent(sub.id, IntentKind.FORUM_POST, article_id, 10)], now=NOW
    )
    await outbox.complete(thread, ThreadMade(500, 500), now=NOW)
    first, second = await outbox.open([part(sub, c0), part(sub, c1)], now=NOW)
    await outbox.complete(first, Refused("50035: Invalid Form Body"), now=NOW)
    await outbox.complete(
        second, Refused("50006: Cannot send an empty message"), now=NOW + timedelta(seconds=1)
    )
    counts = await subs.counts(sub.id)
    assert counts.set_aside == 2 and counts.latest_refusal == "50006: Cannot send an empty message"
    refused = await comments.get(c0)
    assert refused is not None and refused.state == CommentState.SET_ASIDE
    assert refused.refusal == "50035: Invalid Form Body"
    await comments.prepare_resync(article_id, new_thread=False)
    assert (await subs.counts(sub.id)).set_aside == 0
    again = await comments.get(c0)
    assert again is not None and again.state == CommentState.PENDING and again.refusal is None


async def test_v1_database_with_open_intents_and_a_half_sent_comment_migrates(
    tmp_path: Path,
) -> None:
    """A v1 file mid-way: open intents carry over, the half-sent comment keeps its parts."""
    path = tmp_path / "v1.db"
    async with aiosqlite.connect(path) as conn:
        for statement in _statements(MIGRATIONS[0]):
            await conn.execute(statement)
        await conn.execute("PRAGMA user_version = 1")
        t = NOW.isoformat()
        await conn.execute(
            "INSERT INTO subscriptions (id, guild_id, channel_id, feed_url, dialect, "
            "interval_seconds, created_at, next_poll_at) "
            "VALUES (1, 1, 10, 'f', 'blogger', 300, ?, ?)",
            (t, t),
        )
        await conn.execute(
            "INSERT INTO articles (id, subscription_id, entry_id, url, title, author, published, "
            "updated, html, content_hash, state, thread_id, starter_message_id, first_seen_at) "
            "VALUES (1, 1, 'a1', 'u', 'T', 'A', ?, ?, '', 'h', 'posted', 500, 500, ?), "
            "(2, 1, 'a2', 'u2', 'T2', 'A', ?, ?, '', 'h', 'pending', NULL, NULL, ?)",
            (t, t, t, t, t, t),
        )
        await conn.execute(
            "INSERT INTO comments (id, subscription_id, article_id, entry_id, author, published, "
            "html, permalink, content_hash, state, message_id, extra_message_ids, parts_sent, "
            "first_seen_at) VALUES "
            "(1, 1, 1, 'c1', 'X', ?, 'long', 'p1', 'h', 'pending', 600, '[]', 1, ?), "
            "(2, 1, 1, 'c2', 'X', ?, 'short', 'p2', 'h', 'pending', NULL, '[]', 0, ?), "
            "(3, 1, 1, 'c3', 'X', ?, 'done', 'p3', 'h', 'posted', 601, '[]', 1, ?)",
            (t, t, t, t, t, t),
        )
        await conn.execute(
            "INSERT INTO delivery_intents (subscription_id, kind, target_id, part, channel_id, "
            "nonce, created_at, completed_at) VALUES "
            "(1, 'comment', 1, 1, 500, 'n-open-part', ?, NULL), "
            "(1, 'thread', 2, 0, 10, 'n-open-thread', ?, NULL), "
            "(1, 'comment', 3, 0, 500, 'n-done', ?, ?)",
            (t, t, t, t),
        )
        await conn.commit()
    db = await Database.open(path)
    try:
        async with db.conn.execute("PRAGMA user_version") as cursor:
            assert (await cursor.fetchone())[0] == SCHEMA_VERSION  # type: ignore[index]
        outbox, comments = Outbox(db), CommentRepo(db)
        [open_part] = await outbox.open_in_channel(500)
        assert (open_part.kind, open_part.target_id, open_part.part) == (
            IntentKind.COMMENT_PART,
            1,
            1,
        )
        assert open_part.nonce == "n-open-part" and open_part.total == 0
        [open_thread] = await outbox.open_for_article(2)
        assert open_thread.kind == IntentKind.ARTICLE_MESSAGE
        half = await comments.get(1)
        assert half is not None and half.parts_sent == 1 and half.message_id == 600
        assert not half.keyed  # its remaining parts are split the way part 1 was
        fresh = await comments.get(2)
        assert fresh is not None and fresh.keyed
        # Foreign keys hold after the rebuild: removing the subscription cascades.
        await SubscriptionRepo(db).delete(1)
        assert await comments.get(1) is None
        async with db.conn.execute("PRAGMA foreign_keys") as cursor:
            assert (await cursor.fetchone())[0] == 1  # type: ignore[index]
        async with db.conn.execute("SELECT count(*) FROM outbox") as cursor:
            assert (await cursor.fetchone())[0] == 0  # type: ignore[index]
    finally:
        await db.close()

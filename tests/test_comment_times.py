"""A comment's time keeps the blog's own UTC offset from the feed, through storage, to Discord.

Storage keeps times as UTC text (they sort as text); the offset is stored beside
them (schema v3), so a comment delivered after a restart still shows the time
the blog shows ("Thank you 18:08" answers the comment the blog shows at 18:08).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import aiosqlite
import pytest

from bot.convert import comment_of
from bot.preview import format_blog, load_local
from bot.render import render_comment
from bot.untrusted import Untrusted, open_pool
from storage import ArticleRepo, CommentRepo, Database
from storage.migrations import MIGRATIONS, SCHEMA_VERSION, _statements
from storage.records import ArticleState, CommentState, NewArticle, NewComment
from tests.feedserver import FIXTURES
from tests.recording import add_subscription

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BST = timezone(timedelta(hours=1))
EST = timezone(-timedelta(hours=5))
IST = timezone(timedelta(hours=5, minutes=30))


async def article_row(db: Database) -> tuple[int, int]:
    """A subscription with one article: ``(subscription id, article row id)``."""
    sub = await add_subscription(db, now=NOW)
    articles = ArticleRepo(db)
    new = NewArticle("a1", "https://blog.example/a1", "A1", "Me", NOW, NOW, "", None, (), None, "h")
    await articles.insert_many(sub.id, [(new, ArticleState.PENDING)], now_text="t")
    stored = await articles.get_by_entry(sub.id, "a1")
    assert stored is not None
    return sub.id, stored.id


def new_comment(entry_id: str, published: datetime) -> NewComment:
    return NewComment(
        entry_id, "a1", None, "Anonymous", None, published, "hi", f"https://b.example/#{entry_id}",
        False, "h",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("published", "local"),
    [
        (datetime(2019, 4, 3, 18, 8, tzinfo=BST), "18:08"),
        (datetime(2019, 4, 3, 18, 8, tzinfo=EST), "18:08"),
        (datetime(2019, 4, 3, 23, 52, tzinfo=IST), "23:52"),
        (datetime(2019, 4, 3, 18, 8, tzinfo=UTC), "18:08"),
    ],
)
async def test_comment_time_keeps_its_offset_through_storage(
    database: Database, published: datetime, local: str
) -> None:
    """Stored and read back, a comment has the same instant and offset, and shows its time."""
    db = database
    sub_id, article_id = await article_row(db)
    comments = CommentRepo(db)
    await comments.insert_many(
        sub_id, [(article_id, new_comment("c1", published), CommentState.PENDING)], now_text="t"
    )
    [record] = await comments.for_article(article_id)
    assert record.published == published
    assert record.published.utcoffset() == published.utcoffset()
    rendered = comment_of(record, "a1")
    assert rendered.published.utcoffset() == published.utcoffset()
    epoch = int(published.timestamp())
    assert render_comment(rendered)[0].startswith(f"**Anonymous** · {local} · <t:{epoch}:f>")


async def test_v2_database_migrates_and_old_comments_show_utc(tmp_path: Path) -> None:
    """Comments stored before v4 have no offset: they read back as UTC; new ones keep theirs."""
    path = tmp_path / "v2.db"
    async with aiosqlite.connect(path) as conn:
        for index in range(2):
            for statement in _statements(MIGRATIONS[index]):
                await conn.execute(statement)
        await conn.execute("PRAGMA user_version = 2")
        t = NOW.isoformat()
        await conn.execute(
            "INSERT INTO subscriptions (id, guild_id, channel_id, feed_url, dialect, "
            "interval_seconds, created_at, next_poll_at) "
            "VALUES (1, 1, 10, 'f', 'blogger', 300, ?, ?)",
            (t, t),
        )
        await conn.execute(
            "INSERT INTO articles (id, subscription_id, entry_id, url, title, author, published, "
            "updated, html, content_hash, state, first_seen_at) "
            "VALUES (1, 1, 'a1', 'u', 'T', 'A', ?, ?, '', 'h', 'posted', ?)",
            (t, t, t),
        )
        await conn.execute(
            "INSERT INTO comments (id, subscription_id, article_id, entry_id, author, published, "
            "html, permalink, content_hash, state, first_seen_at) "
            "VALUES (1, 1, 1, 'old', 'X', '2019-04-03T17:08:00.000000+00:00', 'hi', 'p', 'h', "
            "'pending', ?)",
            (t,),
        )
        await conn.commit()
    db = await Database.open(path)
    try:
        async with db.conn.execute("PRAGMA user_version") as cursor:
            assert (await cursor.fetchone())[0] == SCHEMA_VERSION  # type: ignore[index]
        comments = CommentRepo(db)
        old = await comments.get(1)
        assert old is not None
        assert old.published == datetime(2019, 4, 3, 17, 8, tzinfo=UTC)
        assert old.published.utcoffset() == timedelta(0)
        fresh = new_comment("new", datetime(2019, 4, 3, 18, 8, tzinfo=BST))
        await comments.insert_many(1, [(1, fresh, CommentState.PENDING)], now_text="t")
        new = next(c for c in await comments.for_article(1) if c.entry_id == "new")
        assert new.published.utcoffset() == timedelta(hours=1)
    finally:
        await db.close()


async def test_preview_shows_the_same_local_time_as_discord() -> None:
    """The preview renders from parsed entries: its headers carry the same blog-local times."""
    async with open_pool() as pool:
        untrusted = Untrusted(pool)
        out = await format_blog(await load_local(FIXTURES / "seed", untrusted), untrusted)
    assert "**Anonymous** · 18:08 · " in out
    assert "**Anonymous** · 07:45 · " in out

"""Storage on real SQLite files: migrations, repositories, the outbox."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import pytest

from storage import (
    SCHEMA_VERSION,
    ArticleRepo,
    CommentRepo,
    Database,
    DatabaseTooNewError,
    DuplicateSubscriptionError,
    Outbox,
    SubscriptionRepo,
)
from storage.records import (
    ArticleState,
    CommentState,
    FeedOutcome,
    HttpValidators,
    NewArticle,
    NewComment,
    Subscription,
    SubscriptionState,
)
from tests import recording
from tests.recording import record_comment, record_thread

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


async def add_subscription(
    repo: SubscriptionRepo, guild: int = 1, channel: int = 10
) -> Subscription:
    return await recording.add_subscription(repo.db, guild=guild, channel=channel, now=NOW)


def article(entry_id: str, *, published: datetime = NOW, title: str = "Post") -> NewArticle:
    return NewArticle(
        entry_id=entry_id,
        url=f"https://blog.example/{entry_id}.html",
        title=title,
        author="Jim",
        published=published,
        updated=published,
        html="<p>hi</p>",
        image_url=None,
        labels=("CRC",),
        comments_feed_url=None,
        content_hash=f"hash-{title}",
    )


def comment(entry_id: str, *, parent: str | None = None, minutes: int = 0) -> NewComment:
    return NewComment(
        entry_id=entry_id,
        article_entry_id="a1",
        parent_entry_id=parent,
        author="Anonymous",
        author_url=None,
        published=NOW + timedelta(minutes=minutes),
        html="text",
        permalink=f"https://blog.example/p.html#c{entry_id}",
        removed=False,
        content_hash="h1",
    )


@pytest.fixture
def db(database: Database) -> Database:
    """The repositories' database, on SQLite and on PostgreSQL."""
    return database


async def test_migrates_an_empty_database_and_creates_its_folder(tmp_path: Path) -> None:
    """A new file in a missing folder is created, migrated, in WAL mode with foreign keys."""
    path = tmp_path / "a" / "b" / "x.db"
    database = await Database.open(path)
    try:
        async with database.conn.execute("PRAGMA user_version") as cursor:
            assert (await cursor.fetchone())[0] == SCHEMA_VERSION  # type: ignore[index]
        async with database.conn.execute("PRAGMA journal_mode") as cursor:
            assert (await cursor.fetchone())[0] == "wal"  # type: ignore[index]
        async with database.conn.execute("PRAGMA foreign_keys") as cursor:
            assert (await cursor.fetchone())[0] == 1  # type: ignore[index]
    finally:
        await database.close()
    assert path.exists()
    reopened = await Database.open(path)  # migrating again is a no-op
    await reopened.close()


async def test_refuses_a_database_newer_than_the_code(tmp_path: Path) -> None:
    """A database from a newer blogmirror is refused with a clear message."""
    path = tmp_path / "new.db"
    async with aiosqlite.connect(path) as conn:
        await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        await conn.commit()
    with pytest.raises(DatabaseTooNewError, match="Upgrade blogmirror"):
        await Database.open(path)


async def test_failed_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    """A migration step that fails is rolled back whole: version and tables unchanged."""
    path = tmp_path / "clash.db"
    async with aiosqlite.connect(path) as conn:
        await conn.execute("CREATE TABLE articles (x)")  # makes step 1 fail half-way
        await conn.commit()
    with pytest.raises(sqlite3.OperationalError):
        await Database.open(path)
    async with aiosqlite.connect(path) as conn:
        async with conn.execute("PRAGMA user_version") as cursor:
            assert (await cursor.fetchone())[0] == 0  # type: ignore[index]
        async with conn.execute("SELECT name FROM sqlite_master WHERE name='subscriptions'") as c:
            assert await c.fetchone() is None


async def test_duplicate_subscription_is_refused(db: Database) -> None:
    """The same feed in the same channel twice is refused; another channel is fine."""
    repo = SubscriptionRepo(db)
    await add_subscription(repo)
    with pytest.raises(DuplicateSubscriptionError):
        await add_subscription(repo)
    other = await add_subscription(repo, channel=11)
    assert other.channel_id == 11


async def test_guild_lookups_are_isolated(db: Database) -> None:
    """A guild finds its own subscription by feed or blog URL, never another guild's."""
    repo = SubscriptionRepo(db)
    mine = await add_subscription(repo, guild=1)
    await add_subscription(repo, guild=2)
    assert [s.id for s in await repo.find_in_guild(1, "https://blog.example")] == [mine.id]
    found = await repo.find_in_guild(1, "https://blog.example/feeds/posts/default")
    assert [s.id for s in found] == [mine.id]
    assert [s.guild_id for s in await repo.list_for_guild(2)] == [2]
    assert await repo.find_in_guild(3, "https://blog.example/") == []


async def test_failures_count_up_and_success_resets(db: Database) -> None:
    """Consecutive failures are counted with the last error; a success clears the count."""
    repo = SubscriptionRepo(db)
    sub = await add_subscription(repo)
    later = NOW + timedelta(minutes=5)
    assert (
        await repo.record_failure(sub.id, now=NOW, error="boom", status=503, next_poll_at=later)
        == 1
    )
    assert (
        await repo.record_failure(sub.id, now=NOW, error="boom", status=503, next_poll_at=later)
        == 2
    )
    failing = await repo.get(sub.id)
    assert failing is not None
    assert (failing.consecutive_failures, failing.last_error_status) == (2, 503)
    await repo.record_success(sub.id, now=later, next_poll_at=later + timedelta(minutes=5))
    healthy = await repo.get(sub.id)
    assert healthy is not None and healthy.consecutive_failures == 0
    assert healthy.last_success_at == later
    assert healthy.last_error == "boom"  # kept for status, with its time


async def test_due_subscriptions_exclude_paused_and_future(db: Database) -> None:
    """Only active subscriptions whose time has come are due."""
    repo = SubscriptionRepo(db)
    due = await add_subscription(repo, channel=1)
    paused = await add_subscription(repo, channel=2)
    await repo.set_state(paused.id, SubscriptionState.PAUSED)
    assert [s.id for s in await repo.list_due(NOW, 10)] == [due.id]
    assert await repo.due_ids(NOW, 10) == [due.id]  # the scheduler's query
    assert await repo.list_due(NOW - timedelta(seconds=1), 10) == []
    assert await repo.due_ids(NOW - timedelta(seconds=1), 10) == []
    await repo.set_state(paused.id, SubscriptionState.ACTIVE, next_poll_at=NOW)
    assert {s.id for s in await repo.list_due(NOW, 10)} == {due.id, paused.id}
    assert set(await repo.due_ids(NOW, 10)) == {due.id, paused.id}


async def test_validators_round_trip(db: Database) -> None:
    """ETag, Last-Modified and body hash are stored per subscription and URL."""
    repo = SubscriptionRepo(db)
    sub = await add_subscription(repo)
    assert await repo.validators(sub.id, "u") is None
    await repo.store_validators(sub.id, "u", HttpValidators('"e1"', "Mon", "abc"), now=NOW)
    await repo.store_validators(sub.id, "u", HttpValidators('"e2"', None, "def"), now=NOW)
    assert await repo.validators(sub.id, "u") == HttpValidators('"e2"', None, "def")


async def test_validators_of_several_urls_in_one_query(db: Database) -> None:
    """A poll reads both feeds' validators, entry digests included, in one query."""
    repo = SubscriptionRepo(db)
    sub = await add_subscription(repo)
    other = await add_subscription(repo, channel=99)
    digests = bytes(range(256)) * 2  # any bytes survive the round trip
    await repo.store_validators(sub.id, "p", HttpValidators('"p"', None, "h", digests), now=NOW)
    await repo.store_validators(sub.id, "c", HttpValidators(None, "Mon", "i"), now=NOW)
    await repo.store_validators(other.id, "x", HttpValidators('"x"', None, "j"), now=NOW)
    assert await repo.validators_for(sub.id, ["p", "c", "x", "missing"]) == {
        "p": HttpValidators('"p"', None, "h", digests),
        "c": HttpValidators(None, "Mon", "i"),
    }


async def test_known_ids_in_one_query_and_duplicates_ignored(db: Database) -> None:
    """Known-id lookup returns only stored ids; inserting a known id is not an error."""
    sub = await add_subscription(SubscriptionRepo(db))
    articles = ArticleRepo(db)
    ids = [f"post-{n}" for n in range(1500)]  # more than SQLite's default variable limit
    inserted = await articles.insert_many(
        sub.id, [(article(i), ArticleState.SKIPPED) for i in ids[:1000]], now_text="t"
    )
    assert inserted == 1000
    again = await articles.insert_many(
        sub.id, [(article("post-1"), ArticleState.PENDING)], now_text="t"
    )
    assert again == 0
    known = await articles.known(sub.id, ids)
    assert set(known) == set(ids[:1000])
    assert known["post-1"].state == "skipped"


async def test_comment_lifecycle(db: Database) -> None:
    """Pending comments come back in publication order; posting, removal and deletion stick."""
    sub = await add_subscription(SubscriptionRepo(db))
    articles, comments = ArticleRepo(db), CommentRepo(db)
    await articles.insert_many(sub.id, [(article("a1"), ArticleState.PENDING)], now_text="t")
    a1 = await articles.get_by_entry(sub.id, "a1")
    assert a1 is not None
    await comments.insert_many(
        sub.id,
        [
            (a1.id, comment("c2", parent="c1", minutes=5), CommentState.PENDING),
            (a1.id, comment("c1", minutes=1), CommentState.PENDING),
        ],
        now_text="t",
    )
    pending = await comments.for_article(a1.id, [CommentState.PENDING])
    assert [c.entry_id for c in pending] == ["c1", "c2"]
    assert pending[1].parent_entry_id == "c1"
    await record_comment(Outbox(db), sub.id, pending[0].id, 555)
    assert await comments.message_ids(sub.id, ["c1", "c2"]) == {"c1": 555}
    removed = replace(comment("c1"), removed=True, html="", content_hash="h2")
    await comments.update_content(sub.id, [removed])
    c1 = await comments.get(pending[0].id)
    assert c1 is not None and c1.removed and c1.needs_edit and c1.html == ""
    # The blog showing the old text again never un-removes it.
    await comments.update_content(sub.id, [comment("c1")])
    c1 = await comments.get(pending[0].id)
    assert c1 is not None and c1.removed and c1.html == ""
    assert await comments.mark_message_deleted(555)
    c1 = await comments.get(pending[0].id)
    assert c1 is not None and c1.state == CommentState.DELETED
    assert await comments.article_entries(sub.id, ["c1", "zz"]) == {"c1": "a1"}


async def test_a_comments_body_is_recorded_in_one_transaction(db: Database) -> None:
    """New and changed comments, validators and the read mark commit together, or not at all."""
    subs = SubscriptionRepo(db)
    sub = await add_subscription(subs)
    articles, comments = ArticleRepo(db), CommentRepo(db)
    await articles.insert_many(sub.id, [(article("a1"), ArticleState.PENDING)], now_text="t")
    a1 = await articles.get_by_entry(sub.id, "a1")
    assert a1 is not None
    await comments.insert_many(sub.id, [(a1.id, comment("c1"), CommentState.PENDING)], now_text="t")
    seen = NOW + timedelta(minutes=5)
    outcome = FeedOutcome("c", HttpValidators('"c"', None, "h", b"held"), NOW, seen)
    changed = replace(comment("c1"), html="<p>edited</p>", content_hash="h2")
    new = [(a1.id, comment("c2", minutes=2), CommentState.PENDING)]
    transactions = db.transactions
    added = await comments.record(sub.id, new, [changed], now_text="t", outcome=outcome)
    assert (added, db.transactions - transactions) == (1, 1)
    assert set(await comments.known(sub.id, ["c1", "c2"])) == {"c1", "c2"}
    assert (await comments.known(sub.id, ["c1"]))["c1"].content_hash == "h2"
    assert await subs.validators(sub.id, "c") == outcome.validators
    stored = await subs.get(sub.id)
    assert stored is not None and stored.comments_seen_until == seen
    # A failing statement (no such article row) leaves nothing of the body behind.
    later_seen = seen + timedelta(hours=1)
    later = FeedOutcome("c", HttpValidators('"d"', None, "i", b"later"), NOW, later_seen)
    orphan = [(a1.id + 1000, comment("c3"), CommentState.PENDING)]
    with pytest.raises(Exception, match=r"(?i)foreign key"):
        await comments.record(sub.id, orphan, [], now_text="t", outcome=later)
    assert await subs.validators(sub.id, "c") == outcome.validators
    stored = await subs.get(sub.id)
    assert stored is not None and stored.comments_seen_until == seen
    assert not await comments.known(sub.id, ["c3"])


async def test_known_comments_and_articles_in_one_query(db: Database) -> None:
    """A page's comments and the articles they name are looked up together, kept apart."""
    sub = await add_subscription(SubscriptionRepo(db))
    articles, comments = ArticleRepo(db), CommentRepo(db)
    await articles.insert_many(sub.id, [(article("a1"), ArticleState.SKIPPED)], now_text="t")
    a1 = await articles.get_by_entry(sub.id, "a1")
    assert a1 is not None
    removed = replace(comment("c1"), removed=True)
    await comments.insert_many(sub.id, [(a1.id, removed, CommentState.PENDING)], now_text="t")
    found_comments, found_articles = await comments.known_with_articles(
        sub.id, ["c1", "a1", "zz"], ["a1", "c1", "zz"]
    )
    assert found_comments == await comments.known(sub.id, ["c1", "a1", "zz"])
    assert set(found_comments) == {"c1"} and found_comments["c1"].removed
    assert found_articles == await articles.known(sub.id, ["a1", "c1", "zz"])
    assert set(found_articles) == {"a1"} and found_articles["a1"].state == "skipped"


async def test_many_comments_are_inserted_in_chunks_and_counted(db: Database) -> None:
    """More comments than one statement takes: all stored, only the new ones counted."""
    sub = await add_subscription(SubscriptionRepo(db))
    articles, comments = ArticleRepo(db), CommentRepo(db)
    await articles.insert_many(sub.id, [(article("a1"), ArticleState.PENDING)], now_text="t")
    a1 = await articles.get_by_entry(sub.id, "a1")
    assert a1 is not None
    rows = [(a1.id, comment(f"c{n}"), CommentState.PENDING) for n in range(2_100)]
    assert await comments.insert_many(sub.id, rows[:100], now_text="t") == 100
    assert await comments.insert_many(sub.id, rows, now_text="t") == 2_000
    assert len(await comments.known(sub.id, [f"c{n}" for n in range(2_100)])) == 2_100


async def test_changed_article_is_flagged_only_once_posted(db: Database) -> None:
    """Content changes flag an edit for posted articles, not for pending ones."""
    sub = await add_subscription(SubscriptionRepo(db))
    articles = ArticleRepo(db)
    await articles.insert_many(
        sub.id,
        [(article("a1"), ArticleState.PENDING), (article("a2"), ArticleState.PENDING)],
        now_text="t",
    )
    a1 = await articles.get_by_entry(sub.id, "a1")
    assert a1 is not None
    await record_thread(Outbox(db), sub.id, a1.id, 900)
    await articles.update_content(sub.id, article("a1", title="New title"))
    await articles.update_content(sub.id, article("a2", title="New title"))
    assert [a.entry_id for a in await articles.needing_edit(sub.id)] == ["a1"]
    detached = await articles.detach_thread(900)
    assert detached is not None and detached.state == ArticleState.DETACHED
    assert await articles.oldest_mirrored_published(sub.id) == NOW


async def test_counts_and_unsubscribe_cascade(db: Database) -> None:
    """Counts reflect states; deleting a subscription deletes its articles and comments."""
    subs = SubscriptionRepo(db)
    sub = await add_subscription(subs)
    articles, comments = ArticleRepo(db), CommentRepo(db)
    await articles.insert_many(sub.id, [(article("a1"), ArticleState.PENDING)], now_text="t")
    a1 = await articles.get_by_entry(sub.id, "a1")
    assert a1 is not None
    await comments.insert_many(sub.id, [(a1.id, comment("c1"), CommentState.PENDING)], now_text="t")
    counts = await subs.counts(sub.id)
    assert (counts.pending_articles, counts.pending_comments) == (1, 1)
    await subs.delete(sub.id)
    assert await articles.get(a1.id) is None
    assert await comments.known(sub.id, ["c1"]) == {}

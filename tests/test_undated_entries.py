"""Entries without a date keep the time they were first seen, from poll to poll (SPEC §6).

A generic RSS blog and its Atom comments feed, served locally; the ingestion
clock is set by the test, so "first seen" is a known time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.fetch import Fetcher, create_session
from bot.ingest import Ingestor
from bot.polling import Poller
from bot.render import thread_name
from bot.untrusted import Untrusted, open_pool
from storage import ArticleRepo, CommentRepo, Database, SubscriptionRepo
from storage.records import ArticleRecord, ArticleState, Subscription
from tests.feedserver import RSS, FeedServer, guard_loopback_only

CREATED = datetime(2024, 1, 1, tzinfo=UTC)
FIRST_POLL = datetime(2024, 2, 1, 12, tzinfo=UTC)
SECOND_POLL = datetime(2024, 2, 6, 8, tzinfo=UTC)
DATED = "https://undated.example/dated"
UNDATED = "https://undated.example/undated"
LATER = "https://undated.example/later"


def posts(built: str, *items: str) -> bytes:
    """An RSS posts feed whose own date is ``built``; items as given."""
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0" '
        'xmlns:wfw="http://wellformedweb.org/CommentAPI/"><channel>'
        f"<title>Undated</title><link>https://undated.example/</link>"
        f"<lastBuildDate>{built}</lastBuildDate>{''.join(items)}</channel></rss>"
    ).encode()


def item(guid: str, title: str = "", date: str | None = None) -> str:
    pub = f"<pubDate>{date}</pubDate>" if date else ""
    return f"<item><guid>{guid}</guid><link>{guid}</link><title>{title}</title>{pub}</item>"


def comments(updated: str, *entries: str) -> bytes:
    """An Atom comments feed (newest first), threaded by RFC 4685, its entries undated."""
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom" '
        'xmlns:thr="http://purl.org/syndication/thread/1.0"><id>urn:undated:comments</id>'
        f"<title>Comments</title><updated>{updated}</updated>{''.join(entries)}</feed>"
    ).encode()


def comment(number: int) -> str:
    return (
        f"<entry><id>urn:undated:c{number}</id><title>c{number}</title>"
        f"<thr:in-reply-to ref='{UNDATED}'/><content type='html'>Comment {number}</content></entry>"
    )


@dataclass
class Env:
    server: FeedServer
    subs: SubscriptionRepo
    articles: ArticleRepo
    comments: CommentRepo
    poller: Poller
    now: list[datetime]

    async def poll(self, sub: Subscription, at: datetime) -> Subscription:
        self.now[0] = at
        await self.poller.poll(sub)
        fresh = await self.subs.get(sub.id)
        assert fresh is not None
        return fresh


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    guard_loopback_only(monkeypatch)
    db = await Database.open(tmp_path / "blogmirror.db")
    now = [FIRST_POLL]
    async with (
        FeedServer() as server,
        create_session(allow_private=True) as session,
        open_pool() as pool,
    ):
        fetcher = Fetcher(session, timeout=10, max_bytes=1_000_000, allow_private=True)
        subs, articles, comment_repo = SubscriptionRepo(db), ArticleRepo(db), CommentRepo(db)
        ingestor = Ingestor(
            fetcher, subs, articles, comment_repo, Untrusted(pool), clock=lambda: now[0]
        )
        yield Env(server, subs, articles, comment_repo, Poller(ingestor, subs), now)
    await db.close()


def by_id(records: list[ArticleRecord]) -> dict[str, ArticleRecord]:
    return {record.entry_id: record for record in records}


async def subscribe(env: Env) -> Subscription:
    return await env.subs.add(
        guild_id=1,
        channel_id=2,
        feed_url=env.server.url("/feed"),
        blog_url=None,
        blog_title="",
        dialect="generic",
        comments_feed_url=env.server.url("/comments"),
        mirror_comments=True,
        backfill=25,
        interval_seconds=300,
        now=CREATED,
        next_poll_at=CREATED,
    )


async def test_undated_entries_keep_their_first_seen_time_across_polls(env: Env) -> None:
    """Thread names and the order of articles and comments stay put when the feed's date moves."""
    dated = item(DATED, "Dated", "Wed, 10 Jan 2024 09:00:00 +0000")
    env.server.route(
        "/feed", posts("Thu, 11 Jan 2024 09:00:00 +0000", item(UNDATED), dated), content_type=RSS
    )
    env.server.route("/comments", comments("2024-01-11T09:00:00Z", comment(1)))
    sub = await env.poll(await subscribe(env), FIRST_POLL)

    first = by_id(await env.articles.list_by_state(sub.id, ArticleState.PENDING))
    assert first[UNDATED].published == FIRST_POLL
    assert first[DATED].published == datetime(2024, 1, 10, 9, tzinfo=UTC)
    name = thread_name(first[UNDATED].title, first[UNDATED].published)
    assert name == "Untitled post (2024-02-01)"

    # The feed moves on: a new date of its own, one more undated article and comment.
    env.server.route(
        "/feed",
        posts("Mon, 05 Feb 2024 09:00:00 +0000", item(LATER), item(UNDATED), dated),
        content_type=RSS,
    )
    env.server.route("/comments", comments("2024-02-05T09:00:00Z", comment(2), comment(1)))
    sub = await env.poll(sub, SECOND_POLL)

    records = await env.articles.list_by_state(sub.id, ArticleState.PENDING)
    assert [r.entry_id for r in records] == [DATED, UNDATED, LATER]  # oldest first
    second = by_id(records)
    assert second[UNDATED].published == FIRST_POLL
    assert thread_name(second[UNDATED].title, second[UNDATED].published) == name
    assert second[LATER].published == SECOND_POLL

    stored = await env.comments.for_article(second[UNDATED].id)
    assert [(c.entry_id, c.published) for c in stored] == [
        ("urn:undated:c1", FIRST_POLL),
        ("urn:undated:c2", SECOND_POLL),
    ]

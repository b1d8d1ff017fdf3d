"""Hostile and sloppy input: no guild's feed can slow another.

Every feed, page and comment is parsed, scanned or rendered in the bot's worker
pool (``bot/workers.py``) under a time limit (``bot/untrusted.py``). These tests
go through the real ingestion (``Ingestor``/``Poller``), the local feed server
and SQLite, or the whole bot against the Discord double.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.fetch import Fetcher, create_session
from bot.ingest import Ingestor
from bot.polling import Poller
from bot.untrusted import UNSHOWN_COMMENT, TimeLimits, Untrusted, open_pool
from bot.workers import WorkerPool
from storage import ArticleRepo, CommentRepo, Database, SubscriptionRepo
from storage.records import Subscription
from tests.conftest import running_bot
from tests.feedgen import GenComment, at, blogger_comments, blogger_post, blogger_posts
from tests.feedserver import FeedServer, guard_loopback_only

CREATED = datetime(2019, 4, 1, tzinfo=UTC)
# A feed of thousands of tiny posts: a few MB, seconds of feedparser. Any guild's
# moderator can subscribe one (it is under MAX_FEED_BYTES).
HUGE_ENTRIES = 6_000


def huge_feed(entries: int = HUGE_ENTRIES) -> bytes:
    return blogger_posts([blogger_post(str(n), f"Post {n}", at(n)) for n in range(entries)])


@dataclass
class Env:
    server: FeedServer
    pool: WorkerPool
    subs: SubscriptionRepo
    poller: Poller

    async def subscribe(
        self, guild_id: int, path: str, comments: str | None = None
    ) -> Subscription:
        return await self.subs.add(
            guild_id=guild_id,
            channel_id=guild_id * 10,
            feed_url=self.server.url(path),
            blog_url=None,
            blog_title="",
            dialect="blogger",
            comments_feed_url=self.server.url(comments) if comments else None,
            mirror_comments=comments is not None,
            backfill=1,
            interval_seconds=300,
            now=CREATED,
            next_poll_at=CREATED,
        )


async def make_env(tmp_path: Path, limits: TimeLimits | None = None) -> AsyncIterator[Env]:
    db = await Database.open(tmp_path / "blogmirror.db")
    try:
        async with (
            FeedServer() as server,
            create_session(allow_private=True) as session,
            open_pool() as pool,
        ):
            fetcher = Fetcher(session, timeout=30, max_bytes=10_000_000, allow_private=True)
            subs = SubscriptionRepo(db)
            untrusted = Untrusted(pool, limits)
            ingestor = Ingestor(fetcher, subs, ArticleRepo(db), CommentRepo(db), untrusted)
            server.fixture("/feeds/posts/default", "seed/posts.atom.xml")
            server.fixture("/feeds/comments/default", "seed/comments.atom.xml")
            yield Env(server, pool, subs, Poller(ingestor, subs))
    finally:
        await db.close()


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    guard_loopback_only(monkeypatch)
    async for made in make_env(tmp_path):
        yield made


@pytest.fixture
async def strict_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    """Half a second per feed, so a feed of a few thousand posts runs over."""
    guard_loopback_only(monkeypatch)
    async for made in make_env(tmp_path, TimeLimits(feed=0.5)):
        yield made


async def until(condition: object, what: str, timeout: float = 60.0) -> None:
    assert callable(condition)
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_six_slow_feeds_do_not_slow_another_guilds_poll(env: Env) -> None:
    """While six guilds' huge feeds are being parsed, a seventh guild's poll takes < 2 s."""
    body = huge_feed()
    hostile = []
    for guild in range(1, 7):
        env.server.route(f"/huge{guild}/feeds/posts/default", body)
        hostile.append(await env.subscribe(guild, f"/huge{guild}/feeds/posts/default"))
    normal = await env.subscribe(7, "/feeds/posts/default", "/feeds/comments/default")
    slow_polls = [asyncio.create_task(env.poller.poll(sub)) for sub in hostile]
    try:
        await until(lambda: env.pool.calls == 6, "the six huge feeds to be in the pool")

        started = time.monotonic()
        outcome = await env.poller.poll(normal)
        elapsed = time.monotonic() - started

        assert outcome.error is None, outcome.error
        assert outcome.summary is not None
        assert (outcome.summary.new_articles, outcome.summary.new_comments) == (1, 7)
        assert elapsed < 2.0, f"the normal poll took {elapsed:.2f} s"
        assert not any(poll.done() for poll in slow_polls)  # they really were still going
    finally:
        for poll in slow_polls:
            poll.cancel()
        await asyncio.gather(*slow_polls, return_exceptions=True)
    assert env.pool.calls == 0
    assert len(env.pool.pids) <= env.pool.size  # cancelled calls left no busy worker


async def test_a_feed_over_its_time_limit_is_a_failed_poll(strict_env: Env) -> None:
    """The feed is refused as taking too long, recorded in /blog status; the next feed works."""
    env = strict_env
    env.server.route("/huge/feeds/posts/default", huge_feed(4_000))
    first = await env.subscribe(1, "/feeds/posts/default")
    assert (await env.poller.poll(first)).error is None
    before = set(env.pool.pids)
    slow = await env.subscribe(2, "/huge/feeds/posts/default")

    outcome = await env.poller.poll(slow)

    assert outcome.error is not None and "took too long to read" in outcome.error
    fresh = await env.subs.get(slow.id)
    assert fresh is not None
    assert (fresh.last_error, fresh.consecutive_failures) == (outcome.error, 1)
    [killed] = before - set(env.pool.pids)  # with the document it was reading
    await until(lambda: len(env.pool.pids) == env.pool.size, "a worker to replace it")
    assert killed not in env.pool.pids
    after = await env.subscribe(3, "/feeds/posts/default")
    later = await env.poller.poll(after)
    assert later.error is None and later.summary is not None
    assert later.summary.new_articles == 1


async def test_a_comment_too_slow_to_render_is_posted_as_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over its render limit, a comment is posted with its header, its permalink and a note.

    The comment is ``<![`` repeated, which feedparser lets through and html.parser
    takes seconds over; the other comments are posted as usual, in order.
    """
    guard_loopback_only(monkeypatch)
    async with running_bot(tmp_path, limits=TimeLimits(render=0.5)) as harness:
        url = harness.feeds.url("/feeds/comments/default")
        posts = [blogger_post("7128854030391125582", "Odd markup", at(0), comments_url=url)]
        harness.feeds.route("/feeds/posts/default", blogger_posts(posts))
        comments = [
            GenComment(1, at(10), "First, plain."),
            GenComment(2, at(20), "<![" * 10_000),
            GenComment(3, at(30), "Third, plain.", parent=2),
        ]
        harness.feeds.route("/feeds/comments/default", blogger_comments(comments))

        await harness.subscribe(harness.feeds.url("/feeds/posts/default"), harness.forum_id)
        await harness.wait_for_thread_messages(harness.forum_id, 4)
        await harness.wait_idle()

        [[starter, first, odd, third]] = harness.thread_messages(harness.forum_id)
        assert "Odd markup" in starter["content"]
        assert "First, plain." in first["content"]
        assert UNSHOWN_COMMENT in odd["content"]
        assert "#c2>)" in odd["content"].split("\n")[0]  # the header links to the comment
        assert "<!" not in odd["content"]
        assert "Third, plain." in third["content"]
        assert third["message_reference"]["message_id"] == odd["id"]

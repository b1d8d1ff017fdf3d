"""Soak: polling many blogs round after round leaks no memory, tasks or connections.

A bot runs for months, polling every blog every few minutes, so whatever a
poll leaves behind adds up. Here every blog is polled ``ROUNDS`` times through
the real ``Poller`` (fetcher, parser, repositories, a real SQLite file) at
``POLL_CONCURRENCY``, against a feed server in another process (so that only
the bot's memory, tasks and sockets are counted). The first round is every
blog's first poll; from the second on, each round gives every blog one of a
rotating mix: nothing new (304), new comments, a new article, the same bytes
under a new ``ETag``, or a failure (404, 500, a timeout, a connection cut
mid-body, truncated XML, or a new article whose comments feed then fails,
which leaves validators waiting for a poll that never finishes).

Checked after every round: each poll did what its blog served (failures
exactly where scheduled, new comments and articles counted, 304s where
nothing changed), no task outlives its round, and the process holds no more
connections to the server than polls run at once (the keep-alive pool).
Checked at the end: Python allocations alive after round 5 are within a
small allowance of those after round 2 (tracemalloc, started after round 1,
when caches and pools are warm), and closing the session closes every socket.
No assertion depends on how long anything takes.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.common import RouteSpec, ServerProcess, all_due
from bot.fetch import Fetcher, create_session
from bot.ingest import Ingestor
from bot.polling import Poller, PollOutcome
from bot.untrusted import Untrusted, open_pool
from storage import ArticleRepo, CommentRepo, Database, SubscriptionRepo
from storage.records import Subscription
from tests.feedgen import GenComment, at, blogger_comments, blogger_post, blogger_posts
from tests.feedserver import guard_loopback_only

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="counts sockets through /proc"
)

ROUNDS = 5
CONCURRENCY = 20
FETCH_TIMEOUT = 2.0  # far above any loopback answer, far below HANG
HANG = 3600.0
FIRST_POSTS = 3  # every blog starts with 3 posts, all mirrored (backfill 3)
FIRST_COMMENTS = 12
PAGE = 10  # comments per comments-feed page (Blogger serves 25; fewer parse faster)
NEW_COMMENTS = 2
# Python allocations may grow this much from round 2 to round 5. Seen without
# any leak: 5-80 KB (free lists, a set's table resizing, bounded caches). A
# leak of 500 bytes per poll adds 300 KB here, 1.5 MB in the 1,000-blog run.
GROWTH_ALLOWANCE = 256 * 1024
LAST_MODIFIED = "Sat, 01 Jun 2024 09:30:00 GMT"

# One entry per blog and round, rotating: blog i gets KINDS[(7 * i + 3 * round) % 20].
KINDS = (
    *["unchanged"] * 9,
    "new_comments",
    "new_comments",
    "new_article",
    "same_bytes",
    "not_found",
    "server_error",
    "timeout",
    "cut",
    "bad_xml",
    "article_then_error",
    "unchanged",
)
ERRORS = frozenset({"not_found", "server_error", "timeout", "cut", "bad_xml"})


def kind_of(index: int, number: int) -> tuple[str, str]:
    """What blog ``index`` does in round ``number`` (from 2), and to which feed."""
    kind = KINDS[(7 * index + 3 * number) % len(KINDS)]
    target = "posts" if (index + number) % 2 == 0 else "comments"
    return kind, target


@dataclass
class Feed:
    """One feed of a blog: what it serves, and what the bot has stored of it."""

    kind: str  # "posts" or "comments"
    path: str
    count: int  # posts or comments it holds; its body is a function of this
    version: int = 0  # its ETag
    error: str | None = None  # an error kind it answers with this round
    sent: tuple[int, int, str | None] | None = None  # what the server was last given
    stored_version: int | None = None  # the bot's validators: ETag ...
    stored_count: int | None = None  # ... and body hash
    recorded: int = 0  # entries the bot has recorded

    def body(self) -> bytes:
        if self.kind == "posts":
            return posts_feed(self.count)
        return comments_page(range(max(0, self.count - PAGE), self.count))

    def route(self) -> RouteSpec | None:
        """The server's route for this feed if it changed since last sent, else None."""
        state = (self.count, self.version, self.error)
        if state == self.sent:
            return None
        self.sent = state
        body = self.body()
        if self.error is None:
            return RouteSpec(self.path, body, f'"{self.kind}-{self.version}"', LAST_MODIFIED)
        # Without validators, so that no If-None-Match can turn the error into a 304.
        return RouteSpec(
            self.path,
            body[: len(body) // 2] if self.error == "bad_xml" else body,
            None,
            None,
            status={"not_found": 404, "server_error": 500}.get(self.error, 200),
            delay=HANG if self.error == "timeout" else 0.0,
            drop_after=len(body) // 2 if self.error == "cut" else None,
        )

    def fetch(self) -> Fetch:
        """What the bot's request for this feed will get, and what it will store."""
        if self.error is not None:
            return Fetch(failed=True, not_modified=False, parsed=False)
        if self.version == self.stored_version:
            return Fetch(failed=False, not_modified=True, parsed=False)
        return Fetch(failed=False, not_modified=False, parsed=self.count != self.stored_count)

    def store(self) -> None:
        self.stored_version, self.stored_count = self.version, self.count


def posts_feed(count: int) -> bytes:
    """A Blogger posts feed of ``count`` short posts, newest first, all from 2019."""
    return blogger_posts(
        [blogger_post(f"{1000 + n}", f"Post {n}", at(-1000 * (n + 1))) for n in range(count)]
    )


def comments_page(numbers: range) -> bytes:
    """Blogger's blog-wide comments feed holding comments ``numbers`` of the first posts.

    Comment n is on post ``n % FIRST_POSTS``; every third one answers the one
    three before it (the same post's previous comment).
    """
    return blogger_comments(
        [
            GenComment(
                100_000 + n,
                at(n),
                f"Comment {n}: " + "a thoughtful remark about probation work, " * (1 + n % 4),
                parent=100_000 + n - FIRST_POSTS if n % 3 == 2 and n >= FIRST_POSTS else None,
                post=f"{1000 + n % FIRST_POSTS}",
            )
            for n in numbers
        ]
    )


@dataclass(frozen=True, slots=True)
class Fetch:
    """What one request of a poll gets: an error, a 304, or a body parsed or not."""

    failed: bool
    not_modified: bool
    parsed: bool


@dataclass
class Blog:
    """One blog as the feed server plays it, round after round."""

    posts: Feed
    comments: Feed

    def schedule(self, kind: str, target: str) -> None:
        """Change what the blog serves this round."""
        self.posts.error = self.comments.error = None
        feed = self.posts if target == "posts" else self.comments
        if kind == "new_comments":
            self.comments.count += NEW_COMMENTS
            self.comments.version += 1
        elif kind in ("new_article", "article_then_error"):
            self.posts.count += 1
            self.posts.version += 1
            if kind == "article_then_error":
                self.comments.error = "server_error"
        elif kind == "same_bytes":
            feed.version += 1
        elif kind in ERRORS:
            feed.error = kind

    def expect(self, first_poll: bool) -> Expected:
        """Run the poll's rules (bot/ingest.py) on paper; update what the bot stores."""
        posts, comments = self.posts.fetch(), self.comments.fetch()
        requests, not_modified = 1, int(posts.not_modified)
        new_articles = skipped = new_comments = 0
        if not posts.failed and not posts.parsed and not posts.not_modified:
            self.posts.store()  # the same bytes again: stored at once, never parsed
        if posts.parsed:
            added = self.posts.count - self.posts.recorded
            if first_poll:
                new_articles = added
            else:
                skipped = added  # older than the subscription: seen, never posted
            self.posts.recorded = self.posts.count
        if not posts.failed:
            requests += 1
            not_modified += comments.not_modified
            if comments.parsed:
                new_comments = min(PAGE, self.comments.count - self.comments.recorded)
                self.comments.recorded = self.comments.count
            if not comments.failed:
                self.comments.store()
        failed = posts.failed or comments.failed
        if not failed:
            self.posts.store()
        return Expected(failed, requests, not_modified, (new_articles, skipped, new_comments))


@dataclass(frozen=True, slots=True)
class Expected:
    """What one poll should come to."""

    failed: bool
    requests: int
    not_modified: int
    found: tuple[int, int, int]  # new articles, skipped articles, new comments


@pytest.fixture(autouse=True)
async def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    guard_loopback_only(monkeypatch)


async def test_soak_200_blogs(tmp_path: Path) -> None:
    """200 blogs x 5 rounds of mixed answers: memory, tasks and connections stay flat."""
    await soak(tmp_path, 200)


@pytest.mark.slow
async def test_soak_1000_blogs(tmp_path: Path) -> None:
    """1,000 blogs x 5 rounds of mixed answers: memory, tasks and connections stay flat."""
    await soak(tmp_path, 1000)


async def soak(tmp_path: Path, count: int) -> None:
    blogs = [
        Blog(
            Feed("posts", f"/blog{i}/feeds/posts/default", FIRST_POSTS),
            Feed("comments", f"/blog{i}/feeds/comments/default", FIRST_COMMENTS),
        )
        for i in range(count)
    ]
    with ServerProcess(routes_for(blogs)) as server:
        db = await Database.open(tmp_path / "soak.sqlite3")
        session = create_session(allow_private=True)
        pool = open_pool()
        try:
            repo = SubscriptionRepo(db)
            for i in range(count):
                await subscribe(repo, server, i)
            fetcher = Fetcher(
                session, timeout=FETCH_TIMEOUT, max_bytes=10_000_000, allow_private=True
            )
            poller = Poller(
                Ingestor(fetcher, repo, ArticleRepo(db), CommentRepo(db), Untrusted(pool)), repo
            )
            tasks_before = len(asyncio.all_tasks())
            sockets_before = open_sockets()
            seen = server.update([])
            for number in range(1, ROUNDS + 1):
                if number > 1:
                    for i, blog in enumerate(blogs):
                        blog.schedule(*kind_of(i, number))
                    server.update(routes_for(blogs))
                outcomes = await poll_all(poller, await all_due(repo, count))
                expected = [blog.expect(first_poll=number == 1) for blog in blogs]
                stats = server.update([])
                check_round(number, outcomes, expected)
                assert (stats.requests - seen.requests, stats.not_modified - seen.not_modified) == (
                    sum(e.requests for e in expected),
                    sum(e.not_modified for e in expected),
                ), f"round {number}: the server did not see the requests the mix implies"
                seen = stats
                await asyncio.sleep(0)  # let finished tasks' callbacks run
                assert len(asyncio.all_tasks()) == tasks_before, f"tasks left after round {number}"
                connections = connections_to(server.port)
                assert connections <= CONCURRENCY, f"{connections} connections after {number}"
                if number == 1:
                    tracemalloc.start()
                elif number == 2:
                    # Taken before measuring: the snapshot's own memory is then on both sides.
                    snapshot = tracemalloc.take_snapshot()
                    before = traced()
            growth = traced() - before
            if growth > GROWTH_ALLOWANCE:
                pytest.fail(
                    f"{growth} bytes more alive after round {ROUNDS} than after round 2; "
                    f"where it grew:\n{biggest_growth(snapshot)}"
                )
        finally:
            tracemalloc.stop()
            await session.close()
            await pool.close()
            await db.close()
        await wait_for_closed(server.port)
        assert connections_to(server.port) == 0
        assert open_sockets() == sockets_before, "sockets still open after closing the session"


def routes_for(blogs: Sequence[Blog]) -> list[RouteSpec]:
    """Routes of every feed whose answer changed since the server last got it."""
    routes = [
        route
        for blog in blogs
        for route in (blog.posts.route(), blog.comments.route())
        if route is not None
    ]
    return routes


async def subscribe(repo: SubscriptionRepo, server: ServerProcess, index: int) -> None:
    """Store a subscription as ``/blog subscribe`` does, before its first poll."""
    now = datetime.now(UTC)
    await repo.add(
        guild_id=1 + index // 100,
        channel_id=1000 + index,
        feed_url=server.url(f"/blog{index}/feeds/posts/default"),
        blog_url=None,
        blog_title=f"Blog {index}",
        dialect="blogger",
        comments_feed_url=server.url(f"/blog{index}/feeds/comments/default"),
        mirror_comments=True,
        backfill=FIRST_POSTS,
        interval_seconds=300,
        now=now,
        next_poll_at=now,
    )


async def poll_all(poller: Poller, subs: Sequence[Subscription]) -> list[PollOutcome]:
    """Every subscription once, at most CONCURRENCY at a time (as the polling cog gates)."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(sub: Subscription) -> PollOutcome:
        async with gate:
            return await poller.poll(sub)

    return await asyncio.gather(*(one(sub) for sub in subs))


def check_round(number: int, outcomes: Sequence[PollOutcome], expected: Sequence[Expected]) -> None:
    for index, (outcome, wanted) in enumerate(zip(outcomes, expected, strict=True)):
        where = f"round {number}, blog {index} ({kind_of(index, number)})"
        assert (outcome.error is not None) == wanted.failed, f"{where}: {outcome}"
        if outcome.error is not None:
            assert not outcome.error.startswith("Internal error"), f"{where}: {outcome.error}"
            continue
        summary = outcome.summary
        assert summary is not None
        found = (summary.new_articles, summary.skipped_articles, summary.new_comments)
        assert found == wanted.found, f"{where}: {summary}"
        assert summary.changed_articles == summary.changed_comments == 0, f"{where}: {summary}"


def biggest_growth(since: tracemalloc.Snapshot, count: int = 15) -> str:
    """The allocation sites that grew most since the ``since`` snapshot."""
    stats = tracemalloc.take_snapshot().compare_to(since, "lineno")
    grown = sorted((s for s in stats if s.size_diff > 0), key=lambda s: -s.size_diff)
    return "\n".join(str(stat) for stat in grown[:count])


def traced() -> int:
    """Bytes of Python allocations alive (traced since round 1), garbage collected first."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


# --- sockets, from /proc -------------------------------------------------------------------


def _socket_inodes() -> set[str]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (or the listing's own fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def open_sockets() -> int:
    """Sockets this process has open (any kind: TCP, the loop's self-pipe, ...)."""
    return len(_socket_inodes())


def connections_to(port: int) -> int:
    """This process's TCP sockets connected to ``port``, in any state (CLOSE_WAIT counts)."""
    ours = _socket_inodes()
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                    if remote_port == port and fields[9] in ours:
                        count += 1
        except FileNotFoundError:
            continue
    return count


async def wait_for_closed(port: int) -> None:
    """Give closed transports the loop turns they need to release their sockets."""
    for _ in range(500):
        if connections_to(port) == 0:
            return
        await asyncio.sleep(0.01)

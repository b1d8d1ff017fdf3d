"""The ingestion service end to end: local feed server -> fetch -> parse -> SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from bot.errors import FeedParseError, NotAFeedError
from bot.fetch import Fetcher, create_session
from bot.ingest import Ingestor, PollSummary
from bot.models import PushLinks
from bot.polling import DISABLE_AFTER, FAILING_AFTER, HealthChange, Poller
from bot.untrusted import Untrusted, open_pool
from storage import ArticleRepo, CommentRepo, Database, Outbox, SubscriptionRepo
from storage.records import ArticleState, CommentState, Subscription, SubscriptionState
from tests.feedgen import (
    GenComment,
    at,
    blogger_comments,
    blogger_post,
    blogger_posts,
    comment_id,
)
from tests.feedserver import FIXTURES, FeedServer, guard_loopback_only
from tests.recording import record_comment, record_thread

SEED = FIXTURES / "seed"
REAL = FIXTURES / "real"
SEED_POST = comment_id("7128854030391125582")
# The seed subscription is made "before" the seed article: its first poll backfills it.
CREATED = datetime(2019, 4, 1, tzinfo=UTC)


@dataclass
class Env:
    server: FeedServer
    db: Database
    subs: SubscriptionRepo
    articles: ArticleRepo
    comments: CommentRepo
    ingestor: Ingestor
    poller: Poller

    async def subscribe(
        self,
        path: str = "/feeds/posts/default",
        *,
        dialect: str = "blogger",
        comments_path: str | None = "/feeds/comments/default",
        backfill: int = 1,
        created: datetime = CREATED,
        mirror_comments: bool = True,
    ) -> Subscription:
        return await self.subs.add(
            guild_id=1,
            channel_id=2,
            feed_url=self.server.url(path),
            blog_url=None,
            blog_title="",
            dialect=dialect,
            comments_feed_url=self.server.url(comments_path) if comments_path else None,
            mirror_comments=mirror_comments,
            backfill=backfill,
            interval_seconds=300,
            now=created,
            next_poll_at=created,
        )

    async def poll(self, sub: Subscription) -> Subscription:
        """Poll through the Poller (recording health) and return the fresh record."""
        await self.poller.poll(sub)
        fresh = await self.subs.get(sub.id)
        assert fresh is not None
        return fresh

    async def comment_entries(self, sub: Subscription) -> dict[str, CommentState]:
        result: dict[str, CommentState] = {}
        for state in ArticleState:
            for article in await self.articles.list_by_state(sub.id, state):
                for comment in await self.comments.for_article(article.id):
                    result[comment.entry_id] = comment.state
        return result


@pytest.fixture
async def env(database: Database, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    guard_loopback_only(monkeypatch)
    db = database
    async with (
        FeedServer() as server,
        create_session(allow_private=True) as session,
        open_pool() as pool,
    ):
        fetcher = Fetcher(session, timeout=10, max_bytes=1_000_000, allow_private=True)
        subs, articles, comments = SubscriptionRepo(db), ArticleRepo(db), CommentRepo(db)
        ingestor = Ingestor(fetcher, subs, articles, comments, Untrusted(pool))
        yield Env(server, db, subs, articles, comments, ingestor, Poller(ingestor, subs))


def serve_seed(server: FeedServer) -> None:
    server.fixture("/feeds/posts/default", "seed/posts.atom.xml", etag='"posts-1"')
    server.fixture("/feeds/comments/default", "seed/comments.atom.xml", etag='"comments-1"')


async def test_seed_blog_is_recorded_with_its_reply_tree(env: Env) -> None:
    """The seed post becomes one pending article with its 7 comments, replies naming parents."""
    serve_seed(env.server)
    sub = await env.subscribe()
    summary = await env.ingestor.poll(sub)
    assert (summary.new_articles, summary.new_comments) == (1, 7)
    [article] = await env.articles.list_by_state(sub.id, ArticleState.PENDING)
    assert article.entry_id == SEED_POST
    assert article.title == "Great Leadership, But Poor Output?"
    comments = await env.comments.for_article(article.id)
    assert [c.published.astimezone(UTC).strftime("%d %H:%M") for c in comments] == [
        "03 08:51",
        "03 10:20",
        "03 12:40",
        "03 17:08",
        "03 19:15",
        "03 20:02",
        "04 06:45",
    ]
    first, third = comments[0].entry_id, comments[4].entry_id
    parents = [c.parent_entry_id for c in comments]
    assert parents == [None, first, first, None, None, third, None]
    assert all(c.state == CommentState.PENDING for c in comments)


def found_anything(summary: PollSummary) -> bool:
    return any(
        (
            summary.new_articles,
            summary.changed_articles,
            summary.new_comments,
            summary.changed_comments,
        )
    )


async def test_unchanged_feeds_cost_no_parse_and_store_nothing(env: Env) -> None:
    """A second poll gets 304s; a server without validators sending the same bytes is skipped."""
    serve_seed(env.server)
    sub = await env.poll(await env.subscribe())
    summary = await env.ingestor.poll(sub)
    assert summary.posts_not_modified and not found_anything(summary)
    posts_requests = env.server.requests_to("/feeds/posts/default")
    assert posts_requests[-1].headers["If-None-Match"] == '"posts-1"'
    # Without ETag/Last-Modified the body hash still spares the parse.
    env.server.route("/feeds/posts/default", (SEED / "posts.atom.xml").read_bytes())
    env.server.route("/feeds/comments/default", (SEED / "comments.atom.xml").read_bytes())
    assert not found_anything(await env.ingestor.poll(sub))
    again = await env.ingestor.poll(sub)
    assert again.posts_not_modified and not found_anything(again)


async def test_a_poll_reports_the_feeds_websub_links(env: Env) -> None:
    """Blogger's posts and comments feeds name their hub and topic; a 304 reports nothing."""
    serve_seed(env.server)
    sub = await env.subscribe()
    summary = await env.ingestor.poll(sub)
    blog = "https://www.blogger.com/feeds/4790201928346512375"
    assert summary.push_links == [
        PushLinks(sub.feed_url, "http://pubsubhubbub.appspot.com/", f"{blog}/posts/default"),
        PushLinks(
            env.server.url("/feeds/comments/default"),
            "http://pubsubhubbub.appspot.com/",
            f"{blog}/comments/default",
        ),
    ]
    assert (await env.ingestor.poll(sub)).push_links == []


async def test_backfill_posts_only_the_newest_articles(env: Env) -> None:
    """Of 19 articles, backfill=3 makes 3 pending and records 16 as seen, never to post."""
    env.server.fixture("/feeds/posts/default", "real/blogger_posts_thumbnails.atom.xml")
    sub = await env.subscribe(mirror_comments=False, backfill=3, created=datetime.now(UTC))
    summary = await env.ingestor.poll(sub)
    assert (summary.new_articles, summary.skipped_articles) == (3, 16)
    pending = await env.articles.list_by_state(sub.id, ArticleState.PENDING)
    skipped = await env.articles.list_by_state(sub.id, ArticleState.SKIPPED)
    assert min(a.published for a in pending) > max(a.published for a in skipped)


async def test_backfill_zero_posts_nothing_old_but_later_articles(env: Env) -> None:
    """backfill=0 records everything as seen; an article published later becomes pending."""
    now = datetime.now(UTC)
    old = blogger_post("111", "Old news", now - timedelta(days=30))
    env.server.route("/feeds/posts/default", blogger_posts([old]))
    sub = await env.poll(await env.subscribe(mirror_comments=False, backfill=0, created=now))
    assert await env.articles.list_by_state(sub.id, ArticleState.PENDING) == []
    fresh = blogger_post("222", "Fresh news", now + timedelta(minutes=5))
    resurfaced = blogger_post("333", "Back-dated", now - timedelta(days=400))
    env.server.route("/feeds/posts/default", blogger_posts([fresh, old, resurfaced]))
    summary = await env.ingestor.poll(sub)
    assert (summary.new_articles, summary.skipped_articles) == (1, 1)
    [pending] = await env.articles.list_by_state(sub.id, ArticleState.PENDING)
    assert pending.title == "Fresh news"


async def test_comments_missed_while_down_are_paged_back(env: Env) -> None:
    """Sixty comments posted while the bot was down, over three pages, are all recorded."""
    serve_seed(env.server)
    sub = await env.poll(await env.subscribe())
    seed_comments = (SEED / "comments.atom.xml").read_bytes()
    new = [GenComment(1000 + n, at(3000 + n), f"catch-up {n}") for n in range(60)]
    newest_first = sorted(new, key=lambda c: c.published, reverse=True)
    env.server.route(
        "/feeds/comments/default",
        blogger_comments(newest_first[:25], next_url=env.server.url("/page2")),
    )
    env.server.route(
        "/page2", blogger_comments(newest_first[25:50], next_url=env.server.url("/page3"))
    )
    env.server.route(
        "/page3", blogger_comments(newest_first[50:], next_url=env.server.url("/page4"))
    )
    env.server.route("/page4", seed_comments)
    summary = await env.ingestor.poll(sub)
    assert summary.new_comments == 60
    assert env.server.hits("/page4") == 1  # stopped on reaching known comments
    states = await env.comment_entries(sub)
    assert len(states) == 67
    # Nothing newer: one request for the comments, no paging.
    env.server.route(
        "/feeds/comments/default",
        blogger_comments(newest_first[:25], next_url=env.server.url("/page2")),
    )
    before = env.server.hits("/page2")
    assert (await env.ingestor.poll(sub)).new_comments == 0
    assert env.server.hits("/page2") == before


async def test_first_poll_stops_paging_at_the_oldest_mirrored_article(env: Env) -> None:
    """A new subscription does not page through years of comments on older articles."""
    env.server.fixture("/feeds/posts/default", "seed/posts.atom.xml")
    recent = [GenComment(4000 + n, at(10 + n), "on the seed post") for n in range(3)]
    older = [GenComment(5000 + n, at(-10_000 - n), "on an old post", post="999") for n in range(3)]
    env.server.route(
        "/feeds/comments/default", blogger_comments(recent, next_url=env.server.url("/older"))
    )
    env.server.route("/older", blogger_comments(older, next_url=env.server.url("/oldest")))
    sub = await env.subscribe()
    summary = await env.ingestor.poll(sub)
    assert summary.new_comments == 3
    assert (env.server.hits("/older"), env.server.hits("/oldest")) == (1, 0)


async def test_new_comment_and_removal_between_polls(env: Env) -> None:
    """A new reply is recorded pending; a posted comment turning removed is flagged for edit."""
    serve_seed(env.server)
    sub = await env.poll(await env.subscribe())
    [article] = await env.articles.list_by_state(sub.id, ArticleState.PENDING)
    comments = await env.comments.for_article(article.id)
    for comment in comments:
        await record_comment(Outbox(env.db), sub.id, comment.id, 10_000 + comment.id)
    victim = comments[3]  # "I think we need to think about..." (18:08)
    number = victim.entry_id.rsplit("-", 1)[1]
    seed = (SEED / "comments.atom.xml").read_text()
    marker = f"<id>{victim.entry_id}</id>"
    start = seed.index(marker)
    end = seed.index("</entry>", start)
    entry = seed[start:end]
    content_start = entry.index("<content type='html'>") + len("<content type='html'>")
    content_end = entry.index("</content>")
    removed_entry = (
        entry[:content_start]
        + "This comment has been removed by the author."
        + entry[content_end:]
        + "<gd:extendedProperty name='blogger.contentRemoved' value='true'/>"
    )
    changed = seed.replace(entry, removed_entry)
    reply = blogger_comments([GenComment(777, at(2000), "A late reply", parent=int(number))])
    reply_entry = reply.decode().split("<entry>", 1)[1].removesuffix("</feed>")
    changed = changed.replace("<entry>", "<entry>" + reply_entry + "<entry>", 1)
    env.server.route("/feeds/comments/default", changed.encode())
    summary = await env.ingestor.poll(sub)
    assert (summary.new_comments, summary.changed_comments) == (1, 1)
    removed = await env.comments.get(victim.id)
    assert removed is not None and removed.removed and removed.needs_edit and removed.html == ""
    late = await env.comments.for_article(article.id, [CommentState.PENDING])
    assert [c.entry_id for c in late] == [comment_id(777)]
    assert late[0].parent_entry_id == victim.entry_id


async def test_changed_article_is_flagged_for_edit(env: Env) -> None:
    """A posted article whose content changes is flagged; unchanged ones are not."""
    serve_seed(env.server)
    sub = await env.poll(await env.subscribe(mirror_comments=False))
    [article] = await env.articles.list_by_state(sub.id, ArticleState.PENDING)
    await record_thread(Outbox(env.db), sub.id, article.id, 1)
    body = (SEED / "posts.atom.xml").read_bytes().replace(b"Twitter", b"Mastodon")
    env.server.route("/feeds/posts/default", body, etag='"posts-2"')
    summary = await env.ingestor.poll(sub)
    assert summary.changed_articles == 1
    assert [a.id for a in await env.articles.needing_edit(sub.id)] == [article.id]


async def test_truncated_feed_records_an_error_and_loses_nothing(env: Env) -> None:
    """A truncated comments feed fails the poll without touching stored comments."""
    serve_seed(env.server)
    sub = await env.poll(await env.subscribe())
    known = await env.comment_entries(sub)
    body = (SEED / "comments.atom.xml").read_bytes()
    env.server.route("/feeds/comments/default", body[: len(body) // 2], etag='"broken"')
    with pytest.raises(FeedParseError):
        await env.ingestor.poll(sub)
    assert await env.comment_entries(sub) == known
    sub = await env.poll(sub)
    assert sub.consecutive_failures == 1 and sub.last_error
    # Once the feed is whole again the poll succeeds and the failure count resets.
    serve_seed(env.server)
    sub = await env.poll(sub)
    assert sub.consecutive_failures == 0


async def test_hidden_comments_are_a_clear_error(env: Env) -> None:
    """Blogger's 'Comments are hidden' text is reported as such, articles still recorded."""
    env.server.fixture("/feeds/posts/default", "seed/posts.atom.xml")
    env.server.fixture("/feeds/comments/default", "real/blogger_post_comments_hidden.txt")
    sub = await env.subscribe()
    with pytest.raises(NotAFeedError, match="hides its comments"):
        await env.ingestor.poll(sub)
    assert len(await env.articles.list_by_state(sub.id, ArticleState.PENDING)) == 1


async def test_failures_turn_failing_then_disabled_then_recover(env: Env) -> None:
    """Three failures mark failing, ten disable the subscription; a success recovers."""
    env.server.route("/feeds/posts/default", b"", status=503, headers={"Retry-After": "120"})
    sub = await env.subscribe()
    changes = []
    for _ in range(DISABLE_AFTER):
        outcome = await env.poller.poll(sub)
        changes.append(outcome.change)
        fresh = await env.subs.get(sub.id)
        assert fresh is not None
        assert outcome.error and fresh.last_error_status == 503
        assert fresh.next_poll_at - datetime.now(UTC) >= timedelta(seconds=119)
        sub = fresh
    assert changes.count(HealthChange.FAILING) == 1
    assert changes[FAILING_AFTER - 1] == HealthChange.FAILING
    assert changes[-1] == HealthChange.DISABLED
    assert sub.state == SubscriptionState.DISABLED
    serve_seed(env.server)
    await env.subs.set_state(sub.id, SubscriptionState.ACTIVE)
    fresh = await env.subs.get(sub.id)
    assert fresh is not None
    outcome = await env.poller.poll(fresh)
    assert outcome.error is None


async def test_wordpress_site_comments_keep_reply_parents(env: Env) -> None:
    """WordPress posts RSS plus the site-wide Atom comments feed: replies name their parent."""
    env.server.fixture("/feed/", "real/wp_posts.rss2.xml")
    env.server.fixture("/comments/feed/atom/", "real/wp_comments.atom.xml")
    sub = await env.subscribe(
        "/feed/", dialect="wordpress", comments_path="/comments/feed/atom/", backfill=25
    )
    summary = await env.ingestor.poll(sub)
    assert summary.new_articles == 6
    article = await env.articles.get_by_entry(sub.id, "http://www.infokueche.at/?p=14")
    if article is None:
        pytest.skip("the posts feed does not reach back to ?p=14")
    comments = await env.comments.for_article(article.id)
    by_id = {c.entry_id: c for c in comments}
    assert by_id["http://www.infokueche.at/?p=14#comment-4"].parent_entry_id == (
        "http://www.infokueche.at/?p=14#comment-3"
    )


def local_wordpress(server: FeedServer) -> None:
    """Serve the real WordPress feeds with their site address pointed at the local server."""
    site = server.url("/").rstrip("/").encode()

    def localised(name: str) -> bytes:
        return (REAL / name).read_bytes().replace(b"http://www.infokueche.at", site)

    server.route("/feed/", localised("wp_posts.rss2.xml"))
    server.route(
        "/podcast/infokueche-1-recommender-systems/feed/", localised("wp_post_comments.rss2.xml")
    )


async def test_per_article_feeds_serve_blogs_without_site_comments(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a usable site-wide feed, each mirrored article's own comment feed is read."""
    caplog.set_level("INFO", logger="bot.polling")
    local_wordpress(env.server)
    env.server.route("/comments/feed/atom/", b"gone", status=404)
    sub = await env.subscribe(
        "/feed/", dialect="wordpress", comments_path="/comments/feed/atom/", backfill=25
    )
    outcome = await env.poller.poll(sub)
    summary = outcome.summary
    assert summary is not None and outcome.error is None
    assert summary.new_articles == 6
    p14 = await env.articles.get_by_entry(sub.id, env.server.url("/?p=14"))
    assert p14 is not None
    comments = await env.comments.for_article(p14.id)
    assert len(comments) == summary.new_comments == 5
    assert all(c.parent_entry_id is None for c in comments)  # RSS carries no parents
    # The other five articles' comment feeds are missing here: each is logged, not a failure.
    assert caplog.text.count("Comments of") == 5


async def test_content_type_is_not_trusted_either_way(env: Env) -> None:
    """A feed served as text/html is read; a web page served as RSS is a clear error."""
    env.server.fixture("/feeds/posts/default", "seed/posts.atom.xml", content_type="text/html")
    env.server.fixture("/feeds/comments/default", "seed/comments.atom.xml", content_type=None)
    sub = await env.subscribe()
    summary = await env.ingestor.poll(sub)
    assert (summary.new_articles, summary.new_comments) == (1, 7)
    page = b"<!doctype html><html><head><title>Blog</title></head><body>Hi</body></html>"
    env.server.route("/feeds/posts/default", page, content_type="application/rss+xml")
    with pytest.raises(NotAFeedError, match="web page"):
        await env.ingestor.poll(sub)


async def test_a_failed_page_loses_nothing(env: Env) -> None:
    """Page 2 failing once: nothing is recorded, and the next poll reads every page again."""
    serve_seed(env.server)
    sub = await env.poll(await env.subscribe())
    new = [GenComment(1000 + n, at(3000 + n), f"catch-up {n}") for n in range(40)]
    newest_first = sorted(new, key=lambda c: c.published, reverse=True)
    env.server.route(
        "/feeds/comments/default",
        blogger_comments(newest_first[:25], next_url=env.server.url("/page2")),
    )
    env.server.route("/page2", b"", status=503)
    sub = await env.poll(sub)
    assert sub.consecutive_failures == 1
    assert len(await env.comment_entries(sub)) == 7  # nothing from page 1 either
    env.server.route(
        "/page2", blogger_comments(newest_first[25:], next_url=env.server.url("/page3"))
    )
    env.server.fixture("/page3", "seed/comments.atom.xml")
    sub = await env.poll(sub)
    assert sub.consecutive_failures == 0
    assert len(await env.comment_entries(sub)) == 47

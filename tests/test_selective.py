"""Selective parsing (bot/selective.py): a changed page hands feedparser only what changed.

Equivalence is the promise: whatever a body holds, reading it with what the last
recorded body held (its entry digests) leads ingestion to the same decisions as
reading all of it. The entries left unread are exactly those recorded from the
same bytes, and every entry read is the one a whole reading gives.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import BlogMirrorError
from bot.fetch import Fetcher, create_session
from bot.ingest import Ingestor, new_article, new_comment
from bot.models import ParsedFeed
from bot.parse import parse_feed
from bot.polling import Poller
from bot.rawentries import read_raw_entries
from bot.selective import KnownEntries, remember, select_before_reading
from bot.untrusted import Untrusted, open_pool
from storage import ArticleRepo, CommentRepo, Database, SubscriptionRepo
from storage.records import Subscription
from tests.feedgen import GenComment, at, blogger_comments, comment_id
from tests.feedserver import FIXTURES, FeedServer, guard_loopback_only
from tests.test_fuzz_feeds import BODIES, damaged, edited

URL = "http://127.0.0.1:9/feeds/comments/default"
FIXTURE_FILES = sorted(
    [*FIXTURES.glob("real/*.xml"), *FIXTURES.glob("seed/*.xml"), *FIXTURES.glob("sloppy/*")]
)
FIXTURE_BODIES = {
    f"{p.parent.name}/{p.name}": p.read_bytes() for p in FIXTURE_FILES if p.suffix != ".md"
}
POSTS, COMMENTS = "/feeds/posts/default", "/feeds/comments/default"
SEED_POSTS = (FIXTURES / "seed" / "posts.atom.xml").read_bytes()


def kind_of(body: bytes) -> str:
    return parse_feed(body, URL).kind


def read(body: bytes, kind: str, known: bytes | None = None) -> ParsedFeed:
    return parse_feed(body, URL, kind=kind, known=known)  # type: ignore[arg-type]


def recorded_all(feed: ParsedFeed) -> bytes | None:
    """What ingestion stores after recording every entry of ``feed``."""
    return remember(feed, set(feed.digests))


def content(feed: ParsedFeed) -> dict[str, str]:
    """What ingestion compares of a known entry: its content hash, by id."""
    rows = [new_article(a) for a in feed.articles] + [new_comment(c) for c in feed.comments]
    return {row.entry_id: row.content_hash for row in rows}


def entries(feed: ParsedFeed) -> dict[str, Any]:
    return {e.id: e for e in (*feed.articles, *feed.comments)}


def assert_equivalent(whole: ParsedFeed, cut: ParsedFeed, before: ParsedFeed) -> None:
    """Reading ``cut`` (known: ``before``) decides what reading ``whole`` decides."""
    head = (
        *("kind", "dialect", "title", "site_url", "next_url", "comments_feed_url", "warnings"),
        *("hub_url", "self_url"),
    )
    assert [getattr(cut, f) for f in head] == [getattr(whole, f) for f in head]
    read_now, unchanged = entries(cut), set(cut.unchanged)
    assert not unchanged & set(read_now)
    assert unchanged | set(read_now) == set(entries(whole))
    for entry_id, entry in read_now.items():
        assert entry == entries(whole)[entry_id]
    old, new = content(before), content(whole)
    for entry_id in unchanged:
        assert old[entry_id] == new[entry_id]


def repaired(body: bytes) -> bytes:
    """``body`` as the parser hands it to feedparser and the raw pass: decoded and repaired."""
    from bot import rawxml
    from bot.charset import decode_document
    from bot.xmlrepair import repair_document

    text = decode_document(body)
    return repair_document(text, rawxml.check_document(text).end)


def without_entry(body: bytes, index: int) -> bytes:
    """``body`` with its ``index``-th entry cut out, as if it had not been published yet."""
    document = repaired(body)
    span = read_raw_entries(document)[index].span
    assert span is not None
    return document[: span[0]] + document[span[1] :]


# --- (a) only the new entry reaches feedparser -----------------------------------------------


def page(numbers: Sequence[int], changes: dict[int, GenComment] | None = None) -> bytes:
    """A Blogger comments page of comments ``numbers``, some replaced by ``changes``."""
    changes = changes or {}
    return blogger_comments(
        [changes.get(n) or GenComment(n, at(n), f"Comment number {n}.") for n in numbers]
    )


def test_one_new_comment_in_25_is_the_only_entry_feedparser_reads() -> None:
    """A page with 1 new comment among 24 recorded ones: feedparser reads 1 entry, lists 24."""
    before = read(page(range(0, 25)), "comments")
    after = read(page(range(1, 26)), "comments", known=recorded_all(before))
    assert after.normalised == 1
    assert [c.id for c in after.comments] == [comment_id(25)]
    assert sorted(after.unchanged) == sorted(comment_id(n) for n in range(1, 25))
    assert_equivalent(read(page(range(1, 26)), "comments"), after, before)


def test_edited_and_removed_comments_are_read_again() -> None:
    """An edited comment and one marked contentRemoved change their bytes: both are read."""
    before = read(page(range(0, 25)), "comments")
    edited_page = page(
        range(0, 25),
        {
            3: GenComment(3, at(3), "Comment number 3, edited."),
            7: GenComment(7, at(7), "Comment number 7.", removed=True),
        },
    )
    after = read(edited_page, "comments", known=recorded_all(before))
    assert after.normalised == 2
    assert {c.id: c.removed for c in after.comments} == {comment_id(3): False, comment_id(7): True}
    assert_equivalent(read(edited_page, "comments"), after, before)


def test_an_entry_not_recorded_is_read_again() -> None:
    """Only entries ingestion recorded are remembered: the others are read on the next body."""
    before = read(page(range(0, 25)), "comments")
    known = remember(before, {comment_id(n) for n in range(0, 20)})
    after = read(page(range(0, 25)), "comments", known=known)
    assert sorted(c.id for c in after.comments) == sorted(comment_id(n) for n in range(20, 25))


def test_another_url_or_kind_reads_everything() -> None:
    """Digests are salted with the URL, kind and article: the same bytes elsewhere are read."""
    body = page(range(0, 5))
    known = recorded_all(read(body, "comments"))
    elsewhere = parse_feed(body, URL + "?other", kind="comments", known=known)
    assert (elsewhere.normalised, elsewhere.unchanged) == (5, ())
    per_post = parse_feed(body, URL, kind="comments", article_id="urn:post", known=known)
    assert (per_post.normalised, per_post.unchanged) == (5, ())


# --- (a') known entries found by their tags are cut only where the strict pass confirms them --


def entry_bytes(body: bytes, entry_id: str) -> bytes:
    """The bytes of the entry ``entry_id`` of ``body``."""
    document = repaired(body)
    (span,) = [raw.span for raw in read_raw_entries(document) if raw.id == entry_id]
    assert span is not None
    return document[span[0] : span[1]]


def early_cut(body: bytes, known: bytes | None) -> Any:
    """``select_before_reading`` as ``parse_feed`` calls it for ``body`` at ``URL``."""
    remembered = KnownEntries.decode(known)
    assert remembered is not None
    salt = "\0".join((URL, "comments", "")).encode()
    return select_before_reading(repaired(body), remembered, URL, salt)


def test_a_new_comment_among_24_is_cut_before_the_strict_pass() -> None:
    """The common page: the 24 known entries are cut by their tags, the new one is kept."""
    known = recorded_all(read(page(range(0, 25)), "comments"))
    early = early_cut(page(range(1, 26)), known)
    assert early is not None
    selection, total = early
    assert total == 25
    assert [raw.id for raw in selection.kept] == [comment_id(25)]
    assert sorted(raw.id for raw in selection.left_out) == sorted(
        comment_id(n) for n in range(1, 25)
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [("<!-- ", " -->"), ("<subtitle type='html'><![CDATA[", "]]></subtitle>")],
    ids=["comment", "cdata"],
)
def test_a_known_entry_in_a_comment_or_cdata_is_not_taken_for_one(before: str, after: str) -> None:
    """A known entry's bytes where they are not an entry: not listed as unchanged."""
    first = page(range(0, 25))
    recorded = read(first, "comments")
    hidden = before.encode() + entry_bytes(first, comment_id(0)) + after.encode()
    body = page(range(1, 26)).replace(b"</feed>", hidden + b"</feed>")
    assert early_cut(body, recorded_all(recorded)) is None
    cut = read(body, "comments", known=recorded_all(recorded))
    assert comment_id(0) not in cut.unchanged
    assert_equivalent(read(body, "comments"), cut, recorded)


def test_a_known_entry_in_another_context_is_not_cut() -> None:
    """The same bytes inside another element read otherwise: the tag-found cut is refused."""
    first = page(range(0, 25))
    known = recorded_all(read(first, "comments"))
    wrapped = b"<wrapper xmlns='urn:other'>" + entry_bytes(first, comment_id(0)) + b"</wrapper>"
    body = page(range(1, 26)).replace(b"</feed>", wrapped + b"</feed>")
    assert early_cut(body, known) is None


def test_known_entries_encode_and_decode() -> None:
    """What is stored reads back the same; a damaged value reads as nothing."""
    known = KnownEntries.decode(recorded_all(read(page(range(0, 3)), "comments")))
    assert known is not None
    assert sorted(known.ids.values()) == sorted(comment_id(n) for n in range(0, 3))
    assert known.context is not None
    encoded = known.encode()
    assert KnownEntries.decode(encoded) == known
    assert KnownEntries.decode(encoded[:-1]) is None
    assert KnownEntries.decode(b"\x01" + encoded[1:]) is None  # the format of digests alone


# --- (b) equivalence: fixtures, damaged and edited fixtures, generated feeds ----------------


@pytest.mark.parametrize("name", sorted(FIXTURE_BODIES))
def test_each_fixture_entry_arriving_last_is_read_alone(name: str) -> None:
    """For each entry of each fixture: known the rest, a body with it reads it (or all) alone."""
    body = FIXTURE_BODIES[name]
    kind = kind_of(body)
    whole = read(body, kind)
    count = whole.normalised
    for index in range(min(count, 6)) if body.lstrip()[:1] == b"<" else ():
        before = read(without_entry(body, index), kind)
        cut = read(body, kind, known=recorded_all(before))
        assert_equivalent(whole, cut, before)
        assert cut.normalised in (1, count)  # read alone, or all when the cut is not trusted
    same = read(body, kind, known=recorded_all(whole))
    assert_equivalent(whole, same, whole)


XML_FIXTURES = sorted(name for name in BODIES if not name.endswith(".txt"))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_damaged_or_edited_fixtures_read_selectively_decide_the_same(data: st.DataObject) -> None:
    """A fixture recorded, then damaged or edited: the cut reading agrees with the whole one."""
    name = data.draw(st.sampled_from(XML_FIXTURES), label="fixture")
    body = data.draw(st.one_of(damaged(name), edited(name)), label="body")
    kind = kind_of(BODIES[name])
    before = read(BODIES[name], kind)
    try:
        whole = read(body, kind)
    except BlogMirrorError as exc:
        with pytest.raises(type(exc)):
            read(body, kind, known=recorded_all(before))
        return
    assert_equivalent(whole, read(body, kind, known=recorded_all(before)), before)


@st.composite
def comment_pages(draw: st.DrawFn) -> tuple[list[GenComment], list[GenComment]]:
    """Two pages of a Blogger comments feed: the second adds, edits, removes and drops."""
    count = draw(st.integers(0, 12))
    first = [
        GenComment(
            n,
            at(n * 10),
            f"Comment {n} " * draw(st.integers(1, 3)),
            parent=draw(st.none() | st.sampled_from(range(n))) if n else None,
        )
        for n in range(count)
    ]
    second: list[GenComment] = []
    for comment in first:
        change = draw(st.sampled_from(("keep", "keep", "edit", "remove", "drop", "reparent")))
        if change == "keep":
            second.append(comment)
        elif change == "edit":
            second.append(GenComment(comment.number, comment.published, comment.text + " (edited)"))
        elif change == "remove":
            second.append(GenComment(comment.number, comment.published, comment.text, removed=True))
        elif change == "reparent":
            second.append(GenComment(comment.number, comment.published, comment.text, parent=999))
    for n in range(count, count + draw(st.integers(0, 3))):
        second.append(GenComment(n, at(n * 10), f"New comment {n}"))
    return first, second


@settings(max_examples=100, deadline=None)
@given(pages=comment_pages())
def test_generated_pages_read_selectively_decide_the_same(
    pages: tuple[list[GenComment], list[GenComment]],
) -> None:
    """Generated Blogger pages: the second, read knowing the first, agrees with a whole read."""
    first, second = pages
    before = read(blogger_comments(first), "comments")
    whole = read(blogger_comments(second), "comments")
    cut = read(blogger_comments(second), "comments", known=recorded_all(before))
    assert_equivalent(whole, cut, before)


# --- ingestion, end to end: selective and whole readings store the same ---------------------


@dataclass
class Twins:
    """Two subscriptions to one blog: ``cut`` reads selectively, ``whole`` forgets its digests."""

    server: FeedServer
    db: Database
    subs: SubscriptionRepo
    poller: Poller
    cut: Subscription
    whole: Subscription
    served: int = 0

    async def serve_and_poll(self, comments: list[GenComment]) -> tuple[Any, Any]:
        self.served += 1
        self.server.route(COMMENTS, blogger_comments(comments), etag=f'"c{self.served}"')
        await self.db.write_one(
            "UPDATE http_cache SET entry_digests = NULL WHERE subscription_id = ?",
            (self.whole.id,),
        )
        outcomes = []
        for sub in (self.cut, self.whole):
            fresh = await self.subs.get(sub.id)
            assert fresh is not None
            outcomes.append((await self.poller.poll(fresh)).summary)
        return outcomes[0], outcomes[1]

    async def stored(self, sub: Subscription) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT entry_id, parent_entry_id, author, published, html, permalink, removed, "
            "content_hash, state, needs_edit FROM comments WHERE subscription_id = ? "
            "ORDER BY entry_id",
            (sub.id,),
        )
        return [dict(row) for row in rows]


@asynccontextmanager
async def twins() -> AsyncIterator[Twins]:
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        guard_loopback_only(patch)
        db = await Database.open(Path(folder) / "blogmirror.db")
        try:
            async with (
                FeedServer() as server,
                create_session(allow_private=True) as session,
                open_pool() as pool,
            ):
                fetcher = Fetcher(session, timeout=10, max_bytes=1_000_000, allow_private=True)
                subs = SubscriptionRepo(db)
                ingestor = Ingestor(
                    fetcher, subs, ArticleRepo(db), CommentRepo(db), Untrusted(pool)
                )
                server.route(POSTS, SEED_POSTS, etag='"posts"')
                made = datetime(2019, 4, 1, tzinfo=UTC)
                pair = [
                    await subs.add(
                        guild_id=1,
                        channel_id=channel,
                        feed_url=server.url(POSTS),
                        blog_url=None,
                        blog_title="",
                        dialect="blogger",
                        comments_feed_url=server.url(COMMENTS),
                        mirror_comments=True,
                        backfill=1,
                        interval_seconds=300,
                        now=made,
                        next_poll_at=made,
                    )
                    for channel in (2, 3)
                ]
                yield Twins(server, db, subs, Poller(ingestor, subs), *pair)
        finally:
            await db.close()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pages=st.lists(comment_pages(), min_size=1, max_size=2))
def test_selective_and_whole_ingestion_store_the_same(
    pages: list[tuple[list[GenComment], list[GenComment]]],
) -> None:
    """Poll after poll, a subscription reading selectively stores what one reading all does."""

    async def scenario() -> None:
        async with twins() as blog:
            for first, second in pages:
                for comments in (first, second):
                    cut, whole = await blog.serve_and_poll(comments)
                    assert (cut.new_comments, cut.changed_comments) == (
                        whole.new_comments,
                        whole.changed_comments,
                    )
                    assert await blog.stored(blog.cut) == await blog.stored(blog.whole)

    asyncio.run(scenario())

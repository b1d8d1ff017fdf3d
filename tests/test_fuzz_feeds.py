"""Feed faults and fuzzing: damaged real feeds through the parser and the ingestion service.

Hypothesis damages the real fixtures (truncation, flipped bits, inserted junk, edited
entries, odd dates); hostile documents (entity bombs, external entities, huge or deeply
nested entries) are built by hand. The promises checked (SPEC §5): a body either parses
or raises a FeedError with a one-line message; a bad body changes nothing stored; a known
comment is never lost, moved or re-stated unless its own entry changed.

Each ingestion example runs in its own event loop (``asyncio.run``) against a fresh SQLite
file and local server, with the seed blog recorded and mirrored first.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bot.errors import FeedError, FeedParseError, NotAFeedError
from bot.fetch import Fetcher, create_session
from bot.ingest import Ingestor
from bot.models import ParsedFeed
from bot.parse import parse_feed
from bot.polling import Poller
from bot.untrusted import Untrusted, open_pool
from storage import ArticleRepo, CommentRepo, Database, Outbox, SubscriptionRepo
from storage.records import ArticleState, Subscription
from tests.feedgen import GenComment, at, blogger_comments
from tests.feedserver import FIXTURES, FeedServer, guard_loopback_only
from tests.recording import record_comment, record_thread

FEED_FILES = sorted([*FIXTURES.glob("real/*.xml"), *FIXTURES.glob("seed/*.xml")])
BODIES = {f"{path.parent.name}/{path.name}": path.read_bytes() for path in FEED_FILES}
SEED_POSTS_NAME, SEED_COMMENTS_NAME = "seed/posts.atom.xml", "seed/comments.atom.xml"
SEED_POSTS, SEED_COMMENTS = BODIES[SEED_POSTS_NAME], BODIES[SEED_COMMENTS_NAME]
POSTS, COMMENTS = "/feeds/posts/default", "/feeds/comments/default"
URL = "http://127.0.0.1:9/feeds/comments/default"
MAX_BYTES = 8 * 1024 * 1024

PARSE = settings(max_examples=150, deadline=None)
INGEST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- hostile bytes ------------------------------------------------------------------------------

JUNK = (
    *(b"<", b">", b"&", b"&amp;", b"&undeclared;", b"'", b'"', b"\r\n", b"\xef\xbb\xbf"),
    *(b"&#0;", b"&#1;", b"&#x1B;", b"&#xFFFE;", b"&#x110000;", b"\x00", b"\x01", b"\x1b"),
    *(b"&#xD800;", b"&#56832;", b"&#55357;&#56832;", b"\xed\xa0\x80", b"\xff", b"\xc3"),
    *(b"<!--", b"-->", b"<![CDATA[", b"]]>", b"<entry>", b"</entry>", b"<item>", b"</feed>"),
    *(b"<?xml version='1.0'?>", b"<!DOCTYPE feed>", b"<!ENTITY x 'y'>", b"\xe2\x80\xae"),
)
HOSTILE_TEXT = (
    *("&#55357;&#56832;", "&#xD83D;", "&#56832;", "&#xDE00;&#xD83D;", "&#0055357;"),
    *("&#1;", "&#x7;", "\x00", "\x08", "\x1b[31m", "\x7f", "\u0085", "\u202e", "&#xFFFF;"),
    *("@everyone", "&lt;@123&gt;", "]]>", "&amp;#xD800;", "\ufeff", "&lt;b&gt;**x**"),
)
ODD_DATES = (
    *("9999-12-31T23:59:59.999-05:00", "0001-01-01T00:00:00.000+05:00", "0000-01-01T00:00:00Z"),
    *("2019-02-30T10:00:00Z", "2019-04-04T25:61:00Z", "2019-04-04T07:45:00+23:59"),
    *("2019-04-04T07:45:00-23:59", "2019-04-04T07:45:00+14:00", "1970-01-01T00:00:00Z"),
    *("Fri, 31 Dec 9999 23:59:59 -0500", "Mon, 01 Jan 0001 00:00:00 +0500", "yesterday", ""),
    *("Mon, 01 Jan 99999999999999999999 00:00:00 +0000", "Thu, 04 Apr 2019 07:45:00 XYZ"),
    *("Mon, 01 Jan 2019 00:00:00 +99999999999999999999", "99999-01-01T00:00:00Z", " "),
)
junk = st.one_of(st.sampled_from(JUNK), st.binary(min_size=1, max_size=8))


def _iso(moment: datetime, minutes: int) -> str:
    hours, rest = divmod(abs(minutes), 60)
    return f"{moment.isoformat()}{'-' if minutes < 0 else '+'}{hours:02}:{rest:02}"


def _rfc822(moment: datetime, zone: int) -> str:
    return f"{moment:%a, %d %b} {moment.year} {moment:%H:%M:%S} {zone:+05d}"


dates = st.one_of(
    st.sampled_from(ODD_DATES),
    st.builds(_iso, st.datetimes(), st.integers(-1439, 1439)),
    st.builds(_rfc822, st.datetimes(), st.integers(-9999, 9999)),
    st.text(max_size=20).map(escape),
)


@st.composite
def damaged(draw: st.DrawFn, name: str) -> bytes:
    """Fixture ``name`` with one to three byte faults: a flip, junk, a span cut or repeated."""
    body = BODIES[name]
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(body)))
        fault = draw(st.sampled_from(("flip", "insert", "cut", "repeat")))
        if fault == "flip" and at < len(body):
            body = body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1 :]
        elif fault == "insert":
            body = body[:at] + draw(junk) + body[at:]
        elif fault == "cut":
            body = body[:at] + body[at + draw(st.integers(1, 64)) :]
        else:
            body = body[:at] + body[at : at + draw(st.integers(1, 64))] + body[at:]
    return body


ENTRY = re.compile(rb"<(entry|item)>.*?</\1>", re.S)
ENTRY_ID = re.compile(rb"(<(id|guid)\b[^>]*>)[^<]*(</\2>)")
DATE = re.compile(rb"(<(published|updated|pubDate)>)[^<]*(</\2>)")
TITLE = re.compile(rb"(<(title)\b[^>]*>)[^<]*(</\2>)")
TEXT_START = re.compile(rb"<(content|description|summary|title)\b[^>]*>")


@st.composite
def edited(draw: st.DrawFn, name: str) -> bytes:
    """Fixture ``name`` with one to three entries edited: ids, dates, titles, text, nesting."""
    body = BODIES[name]
    for _ in range(draw(st.integers(1, 3))):
        spans = [m.span() for m in ENTRY.finditer(body)]
        if not spans:
            return body
        start, end = draw(st.sampled_from(spans))
        entry = body[start:end]
        edit = draw(st.sampled_from(("no id", "blank id", "date", "title", "text", "nest", "copy")))
        if edit == "no id":
            entry = ENTRY_ID.sub(b"", entry, count=1)
        elif edit == "blank id":
            entry = _set_text(ENTRY_ID, entry, b" ")
        elif edit == "date":
            entry = _set_text(DATE, entry, draw(dates).encode())
        elif edit == "title":
            entry = _set_text(TITLE, entry, b"")
        elif edit == "text" and (match := TEXT_START.search(entry)):
            text = "".join(draw(st.lists(st.sampled_from(HOSTILE_TEXT), min_size=1, max_size=4)))
            entry = entry[: match.end()] + text.encode() + entry[match.end() :]
        elif edit == "nest":
            depth = draw(st.integers(1, 500))
            nest = b"<x:n xmlns:x='urn:fuzz'>" + b"<x:n>" * depth + b"</x:n>" * (depth + 1)
            entry = entry.replace(b">", b">" + nest, 1)
        elif edit == "copy":
            where = draw(st.sampled_from([s for span in spans for s in span]))
            body = body[:where] + entry + body[where:]
            continue
        body = body[:start] + entry + body[end:]
    return body


def _set_text(element: re.Pattern[bytes], entry: bytes, text: bytes) -> bytes:
    """``entry`` with the text of the first element ``element`` matches replaced."""
    match = element.search(entry)
    if match is None:
        return entry
    return entry[: match.end(1)] + text + entry[match.start(3) :]


def intact_entry_ids(original: bytes, mutated: bytes) -> set[bytes]:
    """Ids of the entries a mutation left alone: their bytes, every use of their id, the header."""
    first = ENTRY.search(original)
    if first is None or not mutated.startswith(original[: first.start()]):
        return set()
    intact: set[bytes] = set()
    for match in ENTRY.finditer(original):
        entry = match[0]
        id_match = ENTRY_ID.search(entry)
        if id_match is None or not mutated.count(entry):
            continue
        if mutated.count(id_match[0]) == mutated.count(entry):
            intact.add(entry[id_match.end(1) : id_match.start(3)].strip())
    return intact


# --- the parser's contract ----------------------------------------------------------------------


def assert_clear_message(exc: FeedError) -> None:
    """A moderator sees ``str(exc)`` in ``/blog status``: one short line of words."""
    message = str(exc)
    assert message.strip(), f"{type(exc).__name__} without a message"
    assert len(message.splitlines()) == 1, f"message spans lines: {message!r}"
    assert len(message) <= 500, f"message of {len(message)} characters"


def assert_storable(feed: ParsedFeed) -> None:
    """What storage needs: ids, UTC-convertible aware dates, text without lone surrogates."""
    texts: list[str | None] = [feed.title, feed.site_url, feed.next_url]
    for article in feed.articles:
        assert article.id
        for moment in (article.published, article.updated):
            assert moment.tzinfo is not None
            moment.astimezone(UTC)  # raises OverflowError when there is no UTC equivalent
        texts += [article.id, article.title, article.url, article.author, article.html]
    for comment in feed.comments:
        assert comment.id and comment.published.tzinfo is not None
        comment.published.astimezone(UTC)
        texts += [comment.id, comment.article_id, comment.parent_id, comment.author]
        texts += [comment.html, comment.permalink, comment.author_url]
    for text in filter(None, texts):
        text.encode("utf-8")  # raises on a lone surrogate, as SQLite would
    ids = [article.id for article in feed.articles] + [comment.id for comment in feed.comments]
    assert len(set(ids)) == len(ids), "an id appears twice"


def parse_or_clear_error(body: bytes, url: str = URL) -> ParsedFeed | FeedError:
    """``parse_feed``'s whole contract: a storable ParsedFeed, or a FeedError said in one line."""
    try:
        feed = parse_feed(body, url)
    except FeedError as exc:
        assert_clear_message(exc)
        return exc
    assert_storable(feed)
    return feed


@PARSE
@given(data=st.data(), name=st.sampled_from(sorted(BODIES)))
def test_truncated_real_feeds_always_fail_cleanly(data: st.DataObject, name: str) -> None:
    """A real feed cut at any byte is never partly parsed: it is a one-line FeedError."""
    body = BODIES[name].rstrip()
    cut = data.draw(st.integers(0, len(body) - 1), label="cut")
    result = parse_or_clear_error(body[:cut])
    assert isinstance(result, FeedParseError | NotAFeedError), result
    event(type(result).__name__)


@PARSE
@given(data=st.data(), name=st.sampled_from(sorted(BODIES)))
def test_damaged_real_feeds_parse_or_fail_cleanly(data: st.DataObject, name: str) -> None:
    """Flipped bits, junk and cut or repeated spans give a storable feed or a FeedError."""
    event(type(parse_or_clear_error(data.draw(damaged(name), label="body"))).__name__)


@PARSE
@given(data=st.data(), name=st.sampled_from(sorted(BODIES)))
def test_edited_entries_parse_or_fail_cleanly(data: st.DataObject, name: str) -> None:
    """Missing or repeated ids, odd dates, empty titles, hostile text, nesting: no crash."""
    event(type(parse_or_clear_error(data.draw(edited(name), label="body"))).__name__)


def _dated(body: bytes, published: bytes, updated: bytes) -> bytes:
    """``body`` with every entry's published and updated dates replaced."""

    def replace(match: re.Match[bytes]) -> bytes:
        return match[1] + (published if match[2] == b"published" else updated) + match[3]

    first = ENTRY.search(body)
    assert first is not None
    return body[: first.start()] + DATE.sub(replace, body[first.start() :])


@pytest.mark.parametrize("value", ODD_DATES)
def test_odd_dates_become_storable_dates(value: str) -> None:
    """Year 0, 9999 west of UTC, 30-digit years, nonsense: every date parsed converts to UTC."""
    for name in ("seed/comments.atom.xml", "real/wp_comments.rss2.xml", "seed/posts.atom.xml"):
        result = parse_or_clear_error(_dated(BODIES[name], value.encode(), value.encode()))
        assert isinstance(result, ParsedFeed), result


non_xml = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="<\ufeff")).map(str.encode),
    st.binary().filter(
        lambda b: not b.lstrip(b" \t\r\n\x00").startswith((b"<", b"\xef", b"\xff", b"\xfe"))
    ),
    st.sampled_from(sorted(BODIES)).map(lambda name: BODIES[name].replace(b"<", b"[")),
    st.builds(lambda text: b"<!DOCTYPE html><html><body><p>" + text.encode() + b"</p>", st.text()),
    st.binary().map(lambda raw: b"<" + raw.replace(b">", b"")),  # never a whole element
)


@PARSE
@given(body=non_xml)
def test_bodies_with_nothing_usable_get_a_clear_error(body: bytes) -> None:
    """Text, binary, web pages and broken markup say in words that the URL gave no feed."""
    with pytest.raises((NotAFeedError, FeedParseError)) as caught:
        parse_feed(body, URL)
    assert_clear_message(caught.value)
    message = str(caught.value)
    assert message[0].isupper() and message.endswith("."), message
    assert "feed" in message.lower(), message


FOUND_BY_FUZZING = {
    # expat raised LookupError for an encoding name it does not know
    "unknown encoding": (b"encoding='UTF-8'", b"encoding='TTF-8'"),
    # feedparser raised UnicodeDecodeError on a non-UTF-8 encoding name
    "binary encoding name": (b"encoding='UTF-8'", b"encoding='\x9f\x86\x95jUTF-8'"),
    # feedparser's SAX handler raised ValueError on a namespace URI holding whitespace
    "no-break space in a namespace": (b"opensearchrss/1.0/", b"opensearchrss/&#160;1.0/"),
    "tab in a namespace": (b"opensearchrss/1.0/", b"opensearchrss/&#9;1.0/"),
    # urlsplit raised ValueError on the related link of a reply
    "bracket in a link": (b"href='https://www.blogger.com/feeds/", b"href='https://8[www/"),
}


@pytest.mark.parametrize("case", sorted(FOUND_BY_FUZZING))
def test_inputs_found_by_fuzzing_parse_or_fail_cleanly(case: str) -> None:
    """Each byte change that once crashed parse_feed now parses or gives a FeedError."""
    old, new = FOUND_BY_FUZZING[case]
    assert old in SEED_COMMENTS
    body = SEED_COMMENTS.replace(old, new)
    result = parse_or_clear_error(body)
    if case in ("unknown encoding", "bracket in a link"):
        assert isinstance(result, ParsedFeed) and len(result.comments) == 7


def _with_dtd(subset: bytes, reference: bytes, *, where: bytes = b"<content type='html'>") -> bytes:
    """The seed comments feed with a DOCTYPE and an entity reference placed in one entry."""
    declaration, rest = SEED_COMMENTS.split(b"?>", 1)
    return declaration + b"?>" + subset + rest.replace(where, where + reference, 1)


LAUGHS = b"".join(b'<!ENTITY l%d "%s">' % (n, b"&l%d;" % (n - 1) * 10) for n in range(1, 12))
ENTITY_PAYLOADS = {
    "billion laughs": (b'<!DOCTYPE feed [<!ENTITY l0 "lol">' + LAUGHS + b"]>", b"&l11;"),
    "quadratic": (b'<!DOCTYPE feed [<!ENTITY a "' + b"A" * 200_000 + b'">]>', b"&a;" * 2000),
    "file": (b'<!DOCTYPE feed [<!ENTITY x SYSTEM "file:///etc/passwd">]>', b"&x;"),
    "http": (b'<!DOCTYPE feed [<!ENTITY x SYSTEM "http://127.0.0.1:1/x">]>', b"&x;"),
    "parameter": (b'<!DOCTYPE feed [<!ENTITY % p SYSTEM "http://127.0.0.1:1/x"> %p;]>', b""),
    "behind a comment": (b'<!DOCTYPE feed [<!-- ] --><!ENTITY x "y">]>', b"&x;"),
    "behind a bracket": (b'<!DOCTYPE feed [<!ENTITY b "]"><!ENTITY x "y">]>', b"&x;"),
}


@pytest.mark.parametrize("where", [b"<content type='html'>", b"<title type='text'>"])
@pytest.mark.parametrize("payload", sorted(ENTITY_PAYLOADS))
def test_entity_declarations_are_refused_unexpanded(payload: str, where: bytes) -> None:
    """Entity bombs and external entities are refused before anything expands or reads them."""
    subset, reference = ENTITY_PAYLOADS[payload]
    body = _with_dtd(subset, reference, where=where)
    tracemalloc.start()
    try:
        with pytest.raises(FeedParseError, match="refused for safety") as caught:
            parse_feed(body, URL)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_clear_message(caught.value)
    assert peak < 10 * len(body) + 4_000_000, f"{peak} bytes allocated: something expanded"


async def test_external_dtd_and_entities_are_never_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DOCTYPE or entity naming a (local) URL is not fetched.

    An entity only an external DTD could define is shown as the text it is, as a
    browser shows it; an entity the document declares itself is refused.
    """
    guard_loopback_only(monkeypatch)
    async with FeedServer() as server:
        server.route("/evil.dtd", b'<!ENTITY x "PWNED">', content_type="application/xml-dtd")
        dtd = server.url("/evil.dtd").encode()
        plain = _with_dtd(b'<!DOCTYPE feed SYSTEM "%s">' % dtd, b"")
        feed = await asyncio.to_thread(parse_feed, plain, URL)
        assert len(feed.comments) == 7 and not any("PWNED" in c.html for c in feed.comments)
        for subset in (
            b'<!DOCTYPE feed SYSTEM "%s">' % dtd,
            b'<!DOCTYPE feed PUBLIC "-//Fuzz//X" "%s">' % dtd,
        ):
            feed = await asyncio.to_thread(parse_feed, _with_dtd(subset, b"&x;"), URL)
            assert feed.comments[0].html.startswith("&x;")
        with pytest.raises(FeedParseError) as caught:
            subset = b'<!DOCTYPE feed [<!ENTITY x SYSTEM "%s">]>' % dtd
            await asyncio.to_thread(parse_feed, _with_dtd(subset, b"&x;"), URL)
        assert_clear_message(caught.value)
        assert server.hits("/evil.dtd") == 0


def test_deeply_nested_elements_do_not_exhaust_the_stack() -> None:
    """Twenty thousand nested elements, in the XML or in escaped HTML, parse without recursion."""
    depth = 20_000
    xml = b"<x:n xmlns:x='urn:fuzz'>" * depth + b"</x:n>" * depth
    html = b"&lt;div&gt;" * depth + b"deep" + b"&lt;/div&gt;" * depth
    for extra, where in ((xml, b"<entry>"), (html, b"<content type='html'>")):
        body = SEED_COMMENTS.replace(where, where + extra, 1)
        result = parse_or_clear_error(body)
        assert isinstance(result, ParsedFeed) and len(result.comments) == 7


@pytest.mark.parametrize("control", [b"\x00", b"\x01", b"\x1b", b"&#1;", b"&#x1B;", b"&#0;"])
def test_control_characters_are_dropped(control: bytes) -> None:
    """XML forbids C0 controls, raw or referenced: they are dropped, as a browser drops them."""
    where = b"<content type='html'>"
    body = SEED_COMMENTS.replace(where, where + b"Bell" + control + b"!", 1)
    feed = parse_feed(body, URL)
    assert len(feed.comments) == 7
    assert sum(c.html.startswith("Bell!") for c in feed.comments) == 1


# --- the ingestion service ----------------------------------------------------------------------


Rows = dict[str, list[dict[str, Any]]]


@dataclass
class Blog:
    """The seed blog behind a local server, its post and seven comments recorded and posted."""

    server: FeedServer
    db: Database
    ingestor: Ingestor
    subs: SubscriptionRepo
    sub: Subscription
    served: int = 0

    async def snapshot(self) -> Rows:
        """Every row of every table, in rowid order."""
        conn = self.db.conn
        tables = await conn.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
        return {
            name: [
                dict(row)
                for row in await conn.execute_fetchall(f"SELECT * FROM {name} ORDER BY rowid")
            ]
            for (name,) in tables
        }

    async def poll_with(
        self, path: str, body: bytes, **route: Any
    ) -> tuple[Rows, Rows, FeedError | None]:
        """Serve ``body`` on ``path`` and poll once: (rows before, rows after, the error if any)."""
        before = await self.snapshot()
        self.served += 1  # a new ETag each time, so no poll gets a 304
        self.server.route(path, body, etag=f'"mutated-{self.served}"', **route)
        error: FeedError | None = None
        try:
            await self.ingestor.poll(self.sub)
        except FeedError as exc:
            assert_clear_message(exc)
            error = exc
        return before, await self.snapshot(), error


@asynccontextmanager
async def seed_blog(
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> AsyncIterator[Blog]:
    """A fresh database and server with the seed blog polled once and fully mirrored."""
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        guard_loopback_only(patch)
        db = await Database.open(Path(folder) / "blogmirror.db")
        try:
            async with (
                FeedServer() as server,
                create_session(allow_private=True) as session,
                open_pool() as pool,
            ):
                fetcher = Fetcher(session, timeout=10, max_bytes=MAX_BYTES, allow_private=True)
                subs, articles, comments = SubscriptionRepo(db), ArticleRepo(db), CommentRepo(db)
                ingestor = Ingestor(fetcher, subs, articles, comments, Untrusted(pool), clock=clock)
                server.route(POSTS, SEED_POSTS, etag='"posts-1"')
                server.route(COMMENTS, SEED_COMMENTS, etag='"comments-1"')
                created = datetime(2019, 4, 1, tzinfo=UTC)
                sub = await subs.add(
                    guild_id=1,
                    channel_id=2,
                    feed_url=server.url(POSTS),
                    blog_url=None,
                    blog_title="",
                    dialect="blogger",
                    comments_feed_url=server.url(COMMENTS),
                    mirror_comments=True,
                    backfill=1,
                    interval_seconds=300,
                    now=created,
                    next_poll_at=created,
                )
                outcome = await Poller(ingestor, subs, clock=clock).poll(sub)
                assert outcome.error is None, outcome.error
                [article] = await articles.list_by_state(sub.id, ArticleState.PENDING)
                await record_thread(Outbox(db), sub.id, article.id, 100)
                recorded = await comments.for_article(article.id)
                assert len(recorded) == 7
                for comment in recorded:
                    await record_comment(Outbox(db), sub.id, comment.id, 1000 + comment.id)
                fresh = await subs.get(sub.id)
                assert fresh is not None
                yield Blog(server, db, ingestor, subs, fresh)
        finally:
            await db.close()


T = TypeVar("T")


def run(scenario: Callable[[Blog], Awaitable[T]]) -> T:
    """Run one example in its own event loop against a freshly seeded blog."""

    async def main() -> T:
        async with seed_blog() as blog:
            return await scenario(blog)

    return asyncio.run(main())


def outcome(before: Rows, after: Rows, error: FeedError | None) -> str:
    """How a poll of a damaged feed went, for Hypothesis' statistics."""
    if error is not None:
        return f"failed: {type(error).__name__}"
    changed = {
        table: sum(row not in before[table] for row in rows) for table, rows in after.items()
    }
    return f"parsed, changed or new: {changed['articles']} articles, {changed['comments']} comments"


def by_id(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in rows}


# Columns a re-read entry may legitimately change; identity, thread and state never do.
COMMENT_TEXT = frozenset({"html", "removed", "content_hash", "needs_edit"})
ARTICLE_TEXT = frozenset(
    {"url", "title", "author", "updated", "html", "image_url", "labels", "comments_feed_url"}
    | {"content_hash", "needs_edit"}
)


def assert_known_rows_kept(
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    text: frozenset[str],
    intact: set[bytes],
) -> None:
    """Every row is still there with its identity; a row whose entry is intact is unchanged."""
    old, new = by_id(before), by_id(after)
    for row_id, was in old.items():
        now = new.get(row_id)
        assert now is not None, f"{was['entry_id']} vanished"
        assert {k: v for k, v in now.items() if k not in text} == {
            k: v for k, v in was.items() if k not in text
        }, f"{was['entry_id']} was moved or re-stated"
        if was["entry_id"].encode() in intact:
            assert now == was, f"{was['entry_id']} changed though its entry did not"


@INGEST
@given(
    target=st.sampled_from((POSTS, COMMENTS)),
    delivery=st.sampled_from(
        ("short body", "short body", "dropped connection", "chunked, dropped")
    ),
    data=st.data(),
)
def test_truncated_feed_changes_nothing_stored(
    target: str, delivery: str, data: st.DataObject
) -> None:
    """A body cut short, by the server or on the wire, fails the poll and changes no row."""
    body = SEED_POSTS if target == POSTS else SEED_COMMENTS
    cut = data.draw(st.integers(0, len(body) - 1), label="cut")

    async def scenario(blog: Blog) -> str:
        if delivery == "short body":
            before, after, error = await blog.poll_with(target, body[:cut])
        else:
            chunked = delivery.startswith("chunked")
            before, after, error = await blog.poll_with(
                target, body, drop_after=cut, chunked=chunked
            )
        assert error is not None, "a truncated body was accepted"
        assert after == before
        return outcome(before, after, error)

    event(run(scenario))


@INGEST
@given(data=st.data())
def test_damaged_comments_feed_never_loses_or_rewrites_known_comments(data: st.DataObject) -> None:
    """Known comments survive any damaged comments feed; only a change to their entry edits them."""
    body = data.draw(
        st.one_of(damaged(SEED_COMMENTS_NAME), edited(SEED_COMMENTS_NAME)), label="body"
    )

    async def scenario(blog: Blog) -> str:
        before, after, error = await blog.poll_with(COMMENTS, body)
        if error is not None:
            assert after == before, "a failed poll changed stored rows"
            return outcome(before, after, error)
        assert after["articles"] == before["articles"]
        intact = intact_entry_ids(SEED_COMMENTS, body)
        assert_known_rows_kept(before["comments"], after["comments"], COMMENT_TEXT, intact)
        newly_removed = {row["entry_id"] for row in after["comments"] if row["removed"]} - {
            row["entry_id"] for row in before["comments"] if row["removed"]
        }
        assert not newly_removed or b"blogger.contentRemoved" in body, newly_removed
        return outcome(before, after, error)

    event(run(scenario))


@INGEST
@given(data=st.data())
def test_damaged_posts_feed_never_loses_or_rewrites_known_articles(data: st.DataObject) -> None:
    """A damaged posts feed keeps the mirrored article's identity and state, and every comment."""
    body = data.draw(st.one_of(damaged(SEED_POSTS_NAME), edited(SEED_POSTS_NAME)), label="body")

    async def scenario(blog: Blog) -> str:
        before, after, error = await blog.poll_with(POSTS, body)
        if error is not None:
            assert after == before, "a failed poll changed stored rows"
            return outcome(before, after, error)
        assert after["comments"] == before["comments"]
        intact = intact_entry_ids(SEED_POSTS, body)
        assert_known_rows_kept(before["articles"], after["articles"], ARTICLE_TEXT, intact)
        return outcome(before, after, error)

    event(run(scenario))


@settings(INGEST, max_examples=8)
@given(body=non_xml)
def test_comments_feed_with_nothing_usable_fails_and_changes_nothing(body: bytes) -> None:
    """Text, a web page or binary where the comments feed should be: a clear error, no change."""

    async def scenario(blog: Blog) -> None:
        before, after, error = await blog.poll_with(COMMENTS, body, content_type="text/html")
        assert isinstance(error, NotAFeedError | FeedParseError), error
        assert after == before

    run(scenario)


@settings(INGEST, max_examples=15)
@given(published=dates, updated=dates)
def test_new_comment_with_odd_dates_is_stored_in_utc(published: str, updated: str) -> None:
    """A new comment with odd or impossible dates is stored with a UTC date, or refused cleanly."""
    fresh = _with_new_comments(GenComment(901, at(3000), "odd dates"))
    first = ENTRY.search(fresh)
    assert first is not None
    new_entry = _dated(first[0], published.encode(), updated.encode())
    body = fresh[: first.start()] + new_entry + fresh[first.end() :]

    async def scenario(blog: Blog) -> str:
        before, after, error = await blog.poll_with(COMMENTS, body)
        if error is not None:
            assert after == before, "a failed poll changed stored rows"
            return outcome(before, after, error)
        intact = intact_entry_ids(SEED_COMMENTS, body)
        assert_known_rows_kept(before["comments"], after["comments"], COMMENT_TEXT, intact)
        [new] = [row for row in after["comments"] if row["id"] not in by_id(before["comments"])]
        assert datetime.fromisoformat(new["published"]).utcoffset() == timedelta(0)
        return outcome(before, after, error)

    event(run(scenario))


def _with_new_comments(*comments: GenComment) -> bytes:
    """The seed comments feed with generated Blogger comments added at the top."""
    generated = blogger_comments(list(comments)).decode()
    entries = generated[generated.index("<entry>") : generated.rindex("</feed>")]
    return SEED_COMMENTS.replace(b"<entry>", entries.encode() + b"<entry>", 1)


def test_five_megabyte_comment_is_recorded_and_known_comments_kept() -> None:
    """A 5 MB comment is stored whole; the seven known comments are untouched."""
    text = "All work and no play makes Jack a dull boy. " * 120_000

    async def scenario(blog: Blog) -> None:
        body = _with_new_comments(GenComment(900, at(3000), text))
        assert len(body) > 5_000_000
        before, after, error = await blog.poll_with(COMMENTS, body)
        assert error is None
        intact = intact_entry_ids(SEED_COMMENTS, body)
        assert len(intact) == 7
        assert_known_rows_kept(before["comments"], after["comments"], COMMENT_TEXT, intact)
        [new] = [row for row in after["comments"] if row["id"] not in by_id(before["comments"])]
        assert new["html"] == text.strip() and new["state"] == "pending"

    run(scenario)


def test_far_future_comment_does_not_stop_later_catch_up() -> None:
    """One comment dated 2200 must not make later polls skip comments missed while down."""
    now = [at(2000)]

    async def main() -> None:
        async with seed_blog(clock=lambda: now[0]) as blog:
            future = GenComment(800, datetime(2200, 1, 1, tzinfo=UTC), "from the future")
            _before, _after, error = await blog.poll_with(COMMENTS, _with_new_comments(future))
            assert error is None
            fresh = await blog.subs.get(blog.sub.id)
            assert fresh is not None
            blog.sub = fresh
            # The future comment is gone again; sixty comments arrive while the bot is down.
            now[0] = at(3000) + timedelta(days=3)
            missed = [GenComment(1000 + n, at(3000 + n), f"missed {n}") for n in range(60)]
            newest_first = sorted(missed, key=lambda c: c.published, reverse=True)
            pages = [newest_first[:25], newest_first[25:50], newest_first[50:]]
            server = blog.server
            server.route("/page2", blogger_comments(pages[1], next_url=server.url("/page3")))
            server.route("/page3", blogger_comments(pages[2], next_url=server.url("/page4")))
            server.route("/page4", SEED_COMMENTS)
            first = blogger_comments(pages[0], next_url=server.url("/page2"))
            before, after, error = await blog.poll_with(COMMENTS, first)
            assert error is None
            assert len(after["comments"]) - len(before["comments"]) == 60

    asyncio.run(main())

"""Sloppy feeds are read as a browser would read them; hostile ones are still refused.

SPEC §6. The feeds are small files written for these tests (``fixtures/sloppy/``,
described in its README) or built here; each case once made ``parse_feed``
refuse the feed, garble its text or lose its threading.
"""

from __future__ import annotations

import codecs
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.discovery import discover_feed
from bot.errors import FeedParseError, NotAFeedError
from bot.fetch import Fetcher, create_session
from bot.models import Dialect
from bot.parse import parse_feed
from bot.rawxml import looks_like_feed
from bot.untrusted import Untrusted, open_pool
from tests.feedserver import FIXTURES, HTML, FeedServer, guard_loopback_only

SLOPPY = FIXTURES / "sloppy"
ATOM_HEAD = (
    '<feed xmlns="http://www.w3.org/2005/Atom"><id>urn:wide</id><title>Wide Ünïcode</title>'
    "<entry><id>urn:wide:1</id><title>Naïve café — 😀</title>"
    "<updated>2024-02-02T10:00:00Z</updated><content type='html'>Tschüß</content></entry></feed>"
)


def _read(name: str) -> bytes:
    return (SLOPPY / name).read_bytes()


# --- 1. HTML named entities ----------------------------------------------------------------------


def test_undeclared_html_entities_are_read_as_their_characters() -> None:
    """``&eacute;``, ``&nbsp;``, ``&hellip;`` and every HTML5 name read as the characters."""
    feed = parse_feed(_read("html_entities.atom.xml"), "https://cafe.example/feed.xml")
    assert feed.title == "Café Notes"
    first, second = feed.articles
    assert first.title == "Crème brûlée & more…"
    assert first.author == "Renée"
    assert first.html == (
        "<p>Sugar\u00a0— then fire. 2\u00a0×\u00a03 ≠ 5, \u2242\u0338 &bogus; &nbsp;</p>"
    )
    assert second.title == "Bold «move»"
    # CDATA is text as written: its entities are the HTML's business.
    assert second.html == "<p>Kept as written: &nbsp;&eacute;</p>"


def test_a_feed_declaring_entities_is_still_refused_whole() -> None:
    """Undeclared HTML entities are read, but a DTD that declares its own is refused."""
    body = _read("html_entities.atom.xml").replace(
        b"<feed ", b'<!DOCTYPE feed [<!ENTITY nbsp "&#160;">]>\n<feed ', 1
    )
    with pytest.raises(FeedParseError, match="refused for safety"):
        parse_feed(body, "https://cafe.example/feed.xml")


# --- 2. XML-invalid characters and references --------------------------------------------


def test_invalid_characters_and_references_are_dropped() -> None:
    """Raw controls and references to characters XML forbids vanish; the rest is kept."""
    feed = parse_feed(_read("control_characters.rss.xml"), "https://ctrl.example/rss")
    assert feed.title == "Control Room"
    (article,) = feed.articles
    assert article.title == "Bell and null gone"
    # A lone surrogate half is U+FFFD; a pair is its emoji; ``&#X41;`` is "A".
    assert article.html == "Half \ufffd a smile 😀 and A[31m red[0m"


# --- 3. UTF-16 and UTF-32, with and without a byte-order mark ---------------------------------


# Python's plain utf-16/utf-32 codecs always write a BOM: they are tried with one only.
WIDE = [
    (codec, bom)
    for codec in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-16", "utf-32")
    for bom in (True, False)
    if bom or codec not in ("utf-16", "utf-32")
]


@pytest.mark.parametrize(("codec", "bom"), WIDE)
@pytest.mark.parametrize("declaration", [True, False])
def test_utf16_and_utf32_are_read(codec: str, declaration: bool, bom: bool) -> None:
    """Each wide encoding reads, found by its BOM or by the zero bytes around ``<``."""
    text = ATOM_HEAD
    if declaration:
        text = f'<?xml version="1.0" encoding="{codec.upper()}"?>\n{text}'
    body = text.encode(codec)
    if bom and codec not in ("utf-16", "utf-32"):
        body = codecs.lookup(codec).encode("\ufeff")[0] + body
    feed = parse_feed(body, "https://wide.example/feed")
    assert feed.title == "Wide Ünïcode"
    (article,) = feed.articles
    assert (article.title, article.html) == ("Naïve café — 😀", "Tschüß")
    assert looks_like_feed(body)


# --- 4. A DOCTYPE on an <rss> root ----------------------------------------------------------------


def test_xhtml_doctype_on_an_rss_root_is_a_feed() -> None:
    """The root decides: an XHTML DOCTYPE in front of ``<rss>`` is sloppy, not a web page."""
    body = _read("xhtml_doctype.rss.xml")
    assert looks_like_feed(body)
    feed = parse_feed(body, "https://doctype.example/rss")
    assert feed.title == "Doctype Diary"
    (article,) = feed.articles
    assert article.title == "Still a feed"
    assert article.html == "<p>Read me\u00a0anyway.</p>"
    assert article.published == datetime(2024, 3, 5, 9, 30, tzinfo=UTC)


def test_an_html_page_is_still_a_web_page() -> None:
    """A real page (html root) keeps its clear message, DOCTYPE or not."""
    for body in (b"<!DOCTYPE html><html><body>x</body></html>", b"<!DOCTYPE html>\n<p>x"):
        with pytest.raises(NotAFeedError, match="web page"):
            parse_feed(body, "https://doctype.example/")


# --- 5. Legacy encodings that are not declared, or declared wrongly -------------------------------

HEBREW_TITLE = "שלום עולם, זה הפוסט הראשון בבלוג שלי"


@pytest.mark.parametrize("name", ["hebrew_undeclared.rss.xml", "hebrew_declared_utf8.rss.xml"])
def test_undeclared_or_misdeclared_legacy_charset_is_detected(name: str) -> None:
    """Windows-1255 Hebrew with no declaration, or one claiming UTF-8, reads as Hebrew."""
    feed = parse_feed(_read(name), "https://dana.example/rss")
    assert feed.title == "הבלוג של דנה"
    (article,) = feed.articles
    assert article.title == HEBREW_TITLE
    assert article.html.startswith("היום התחלתי לכתוב בלוג.")


def test_utf8_declared_as_latin1_is_read_as_utf8() -> None:
    """A template's ``iso-8859-1`` over UTF-8 text is the declaration lying, not mojibake."""
    body = (
        '<?xml version="1.0" encoding="ISO-8859-1"?><rss version="2.0"><channel>'
        "<title>Größe</title><item><guid>urn:1</guid><title>Crème “brûlée”</title></item>"
        "</channel></rss>"
    ).encode()
    feed = parse_feed(body, "https://latin.example/rss")
    assert (feed.title, feed.articles[0].title) == ("Größe", "Crème “brûlée”")


@pytest.mark.parametrize("label", ["idna", "x-nonsense", "rot13", "base64", "utf-7", "utf-16"])
def test_odd_declared_charset_names_fall_back_safely(label: str) -> None:
    """A name that is no usable text encoding is ignored: the UTF-8 body reads as UTF-8."""
    body = (
        f'<?xml version="1.0" encoding="{label}"?><rss version="2.0"><channel>'
        "<title>Café</title><item><guid>urn:1</guid><title>Ünïcode</title></item>"
        "</channel></rss>"
    ).encode()
    feed = parse_feed(body, "https://odd.example/rss")
    assert (feed.title, feed.articles[0].title) == ("Café", "Ünïcode")


PAGE = (
    '<html><head><title>Caf\xe9</title><link rel="alternate" type="application/rss+xml" '
    'href="/feed.rss"></head><body>Caf\xe9 \xab blog \xbb</body></html>'
).encode("latin-1")


@pytest.mark.parametrize("charset", ["idna", "x-nonsense", "utf-7", "punycode"])
async def test_odd_page_charset_in_content_type_falls_back_safely(
    monkeypatch: pytest.MonkeyPatch, charset: str
) -> None:
    """``Content-Type: text/html; charset=idna`` once raised UnicodeError in discovery."""
    guard_loopback_only(monkeypatch)
    async with (
        FeedServer() as server,
        create_session(allow_private=True) as session,
        open_pool() as pool,
    ):
        server.route("/", PAGE, content_type=f"text/html; charset={charset}")
        server.route("/feed.rss", _read("hebrew_undeclared.rss.xml"))
        fetcher = Fetcher(session, timeout=10, max_bytes=1_000_000, allow_private=True)
        found = await discover_feed(fetcher, Untrusted(pool), server.url("/"))
    assert found.feed_url == server.url("/feed.rss")


async def test_preview_of_a_page_with_an_odd_charset() -> None:
    """``python -m bot preview URL`` of such a page finds the feed, with no traceback."""
    from tests.test_cli import _run_async

    async with FeedServer() as server:
        server.route("/", PAGE, content_type="text/html; charset=idna")
        server.route("/feed.rss", _read("hebrew_undeclared.rss.xml"))
        code, out, err = await _run_async("preview", server.url("/"))
    assert (code, "Traceback" in err) == (0, False), err
    assert f"=== Thread: {HEBREW_TITLE}" in out


def test_preview_of_a_legacy_charset_file() -> None:
    """``python -m bot preview FILE`` shows the Hebrew of an undeclared Windows-1255 feed."""
    from tests.test_cli import run

    result = run("preview", str(SLOPPY / "hebrew_undeclared.rss.xml"))
    assert result.returncode == 0, result.stderr
    assert f"=== Thread: {HEBREW_TITLE}" in result.stdout


# --- 6. JSON Feed -----------------------------------------------------------------------------


def test_json_feed_1_1_reads_like_any_posts_feed() -> None:
    """Ids, URLs, titles, HTML or text, authors, images, tags, dates and paging."""
    feed = parse_feed(_read("jsonfeed_1_1.json"), "https://jay.example/feed.json")
    assert (feed.kind, feed.dialect, feed.title) == ("posts", Dialect.GENERIC, "Jay's Notes")
    assert feed.site_url == "https://jay.example/"
    assert feed.next_url == "https://jay.example/feed.json?page=2"
    assert (feed.comments, feed.comments_feed_url) == ((), None)
    assert feed.warnings == ("Item 3 of the JSON feed is not an object; skipped.",)
    first, second = feed.articles
    assert first.id == first.url == "https://jay.example/2024/04/json.html"
    assert first.title == "Feeds in JSON"
    assert first.html == '<p>Hello from <b>JSON</b> <img src="/img/inline.png"></p>'
    assert first.author == "Jay Item"
    assert first.image_url == "https://jay.example/img/main.png"
    assert first.labels == ("json", "feeds")
    assert first.published == datetime(2024, 4, 1, 10, 15, tzinfo=timezone(timedelta(hours=2)))
    assert first.updated == datetime(2024, 4, 2, 8, tzinfo=timezone(timedelta(hours=2)))
    assert not first.undated
    assert second.id == "42"  # a number, coerced to text as the spec says
    assert second.url == "https://jay.example/2024/03/plain.html"
    assert second.title == ""
    assert second.html == "Plain text &lt;not html&gt;<br />\nsecond line"
    assert second.author == "Jay Feed"  # the feed's authors stand in
    assert second.image_url == "https://cdn.jay.example/banner.jpg"
    assert second.published == second.updated == datetime(2024, 3, 1, tzinfo=UTC)


def test_json_feed_1_0_with_its_single_author() -> None:
    """Version 1's ``author`` object names the author."""
    feed = parse_feed(_read("jsonfeed_1_0.json"), "https://old.example/feed.json")
    (article,) = feed.articles
    assert (feed.title, article.id, article.title, article.author) == (
        "Old JSON",
        "1",
        "Version one",
        "Olga",
    )
    assert article.html == "Written in 2017."
    assert article.published == datetime(2017, 5, 17, 15, 2, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"version": "https://jsonfeed.org/version/1.1", "items": [', FeedParseError),
        (b'{"version": "https://jsonfeed.org/version/1.1", "items": {}}', FeedParseError),
        (b'{"title": "no version"}', NotAFeedError),
        (b'{"version": "1.1"}', NotAFeedError),
        (b'{"deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", FeedParseError),
    ],
)
def test_broken_json_feeds_get_a_clear_error(body: bytes, error: type[Exception]) -> None:
    """Broken JSON, or JSON that is no JSON Feed, is refused in words."""
    with pytest.raises(error) as caught:
        parse_feed(body, "https://jay.example/feed.json")
    assert "\n" not in str(caught.value) and "feed" in str(caught.value).lower()


def test_json_feed_strings_lose_nul_controls_and_lone_surrogates() -> None:
    """``\\u0000``, other C0 controls and lone surrogates (valid JSON escapes, but nothing a
    database or Discord takes) become U+FFFD in every field; tabs and newlines stay."""
    item = {
        "id": "a\u0000b",
        "url": "https://jay.example/x",
        "title": "T\u0007itle \ud800 end",
        "content_text": "line\u0000one\nline\ttwo",
        "authors": [{"name": "N\u0000ame"}],
        "tags": ["t\u0000ag"],
    }
    document = json.dumps({"version": "https://jsonfeed.org/version/1.1", "items": [item]})
    assert "\\u0000" in document
    (article,) = parse_feed(document.encode(), "https://jay.example/feed.json").articles
    assert article.id == "a\ufffdb"
    assert article.title == "T\ufffditle \ufffd end"
    assert article.author == "N\ufffdame"
    assert article.labels == ("t\ufffdag",)
    assert "line\ufffdone" in article.html and "line\ttwo" in article.html
    for text in (article.id, article.title, article.html, article.author, *article.labels):
        text.encode("utf-8")  # no lone surrogate left
        assert "\x00" not in text


def test_json_feed_is_recognised_by_the_sniff() -> None:
    """``looks_like_feed`` accepts a JSON Feed, and no other JSON."""
    assert looks_like_feed(_read("jsonfeed_1_1.json"))
    assert looks_like_feed(b'\xef\xbb\xbf {"version":"https://jsonfeed.org/version/1","items":[]}')
    assert not looks_like_feed(json.dumps({"version": "1", "items": []}).encode())


async def test_discovery_follows_a_json_feed_link(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page announcing only ``application/feed+json`` is subscribed through it."""
    guard_loopback_only(monkeypatch)
    page = (
        b'<html><head><link rel="alternate" type="application/feed+json" title="JSON" '
        b'href="/feed.json"></head><body></body></html>'
    )
    async with (
        FeedServer() as server,
        create_session(allow_private=True) as session,
        open_pool() as pool,
    ):
        server.route("/", page, content_type=HTML)
        server.route("/feed.json", _read("jsonfeed_1_1.json"), content_type="application/feed+json")
        fetcher = Fetcher(session, timeout=10, max_bytes=1_000_000, allow_private=True)
        found = await discover_feed(fetcher, Untrusted(pool), server.url("/"))
    assert (found.feed_url, found.blog_url) == (server.url("/feed.json"), server.url("/"))


def test_preview_of_a_json_feed_file() -> None:
    """``python -m bot preview FILE`` shows a JSON Feed's threads."""
    from tests.test_cli import run

    result = run("preview", str(SLOPPY / "jsonfeed_1_1.json"))
    assert result.returncode == 0, result.stderr
    assert "=== Thread: Feeds in JSON" in result.stdout


# --- 8. Relative Atom ids -------------------------------------------------------------------------

_POST = "https://blog.example/posts/1"


def test_relative_comment_ids_keep_their_threading() -> None:
    """Ids and in-reply-to refs resolve against xml:base and the feed URL, as feedparser's do."""
    url = "https://blog.example/feeds/comments.xml"
    feed = parse_feed(_read("relative_ids_comments.atom.xml"), url)
    assert feed.kind == "comments"
    assert [(c.id, c.article_id, c.parent_id) for c in feed.comments] == [
        ("https://blog.example/feeds/c1", "https://blog.example/posts/1", None),
        ("https://blog.example/feeds/c2", "https://blog.example/feeds/c1", None),
        ("https://mirror.example/thread/c3", "https://blog.example/posts/1", None),
    ]
    hinted = parse_feed(_read("relative_ids_comments.atom.xml"), url, article_id=_POST)
    assert [(c.article_id, c.parent_id) for c in hinted.comments] == [
        (_POST, None),
        (_POST, "https://blog.example/feeds/c1"),
        (_POST, None),
    ]
    assert [c.permalink for c in hinted.comments] == [
        "https://blog.example/posts/1#c1",
        "https://blog.example/posts/1#c2",
        "https://mirror.example/thread/c3.html",
    ]


def test_relative_ids_from_a_file_stay_as_written(tmp_path: Path) -> None:
    """With no http(s) URL to resolve against (a local file), ids are kept as written."""
    path = tmp_path / "comments.xml"
    path.write_bytes(_read("relative_ids_comments.atom.xml"))
    feed = parse_feed(path.read_bytes(), path.as_uri())
    assert [c.id for c in feed.comments][:2] == ["c1", "c2"]
    assert feed.kind == "comments"

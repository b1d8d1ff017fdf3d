"""Turn one fetched feed body into a dialect-neutral ParsedFeed.

This is the only module that knows feedparser. It is synchronous and pure
(callers run it off the event loop) and it never fetches anything: feedparser
only ever sees bytes. A body either parses completely or raises a domain
error; a partial parse would look like deleted comments downstream.

The body is decoded (``bot.charset``), checked (``bot.rawxml``) and repaired
(``bot.xmlrepair``) first, so feedparser and the strict raw reader parse the
same clean UTF-8 document. JSON Feeds go to ``bot.jsonfeed`` instead.

feedparser's HTML sanitizer and relative-URI resolver are switched off: both
run sgmllib regexes over every entry's HTML, at about a microsecond a byte and
quadratic on unclosed comments (700 KB of ``&lt;!--`` took 24 s), and
``bot.markdown`` already treats the HTML as hostile and resolves its links.

Blogger, WordPress and generic RFC 4685 feeds name an entry's article and
parent in different ways; ``_thread_position`` is where those rules live.
"""

from __future__ import annotations

import hashlib
import html
import io
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import feedparser

from bot import rawxml, selective
from bot.charset import decode_document
from bot.errors import FeedParseError, NotAFeedError
from bot.feedvalues import (
    absolute,
    feed_datetime,
    split_url,
    text_as_html,
)
from bot.images import choose_image
from bot.jsonfeed import parse_json_feed
from bot.models import Article, Comment, Dialect, ParsedFeed
from bot.rawentries import RawEntry, read_raw_entries
from bot.xmlrepair import repair_document

__all__ = ["parse_feed"]

log = logging.getLogger(__name__)


Kind = Literal["posts", "comments"]
Entry = Mapping[str, Any]  # a feedparser entry or feed dict

# feedparser flags these, but the document itself is fine.
_BENIGN_BOZO = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "html", "xhtml"})
_ITUNES_SCHEME = "http://www.itunes.com/"
_COMMENT_MARK = "#comment-"
_BLOGGER_POST_MARK = ".post-"
_BLOGGER_POSTS_PATH = re.compile(r"/feeds/(?:(\d+)/)?posts/(?:default|summary)/?$")
_BLOGGER_COMMENTS_PATH = re.compile(r"/feeds/(?:\d+/)?comments/default/?$")
_RSS_AUTHOR = re.compile(r"^\S+@\S+\s+\((.+)\)$")
_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True, slots=True)
class _Context:
    """What every entry builder needs to know about the feed it came from."""

    dialect: Dialect
    base_url: str | None  # absolute http(s) URL the body came from, for relative links
    article_hint: str | None
    fallback_date: datetime


def parse_feed(
    body: bytes,
    url: str,
    *,
    kind: Kind | None = None,
    article_id: str | None = None,
    known: bytes | None = None,
) -> ParsedFeed:
    """Parse a whole feed document, or raise NotAFeedError / FeedParseError.

    ``url`` is where the body came from (or a file path): it resolves relative
    links and locates the blog-wide comments feed. ``kind`` None autodetects.
    ``article_id`` names the article of a per-post comments feed whose entries
    do not say which article they belong to. ``known`` is what
    ``bot.selective.remember`` made of the last body of this URL: entries it
    recorded that come again byte for byte are not read again, but listed as
    ``unchanged``.
    """
    base_url = url if urlsplit(url).scheme in ("http", "https") else None
    text = decode_document(body)
    if text.lstrip(" \t\r\n").startswith("{"):
        return parse_json_feed(text, base_url, kind=kind)
    prolog = rawxml.check_document(text)
    document = repair_document(text, prolog.end)
    salt = selective.entry_salt(url, kind, article_id)
    remembered = selective.KnownEntries.decode(known) if kind is not None else None
    if remembered is not None:
        early = selective.select_before_reading(document, remembered, base_url, salt)
        if early is not None:
            feed = _read_selection(early[0], remembered, url, kind, article_id, early[1])
            if feed is not None:
                return feed
    raw_entries = read_raw_entries(document, base_url, salt=salt)
    selection = selective.select(document, raw_entries, remembered) if remembered else None
    if remembered is not None and selection is not None:
        feed = _read_selection(selection, remembered, url, kind, article_id, len(raw_entries))
        if feed is not None:
            return feed
    return _read(document, raw_entries, url, kind, article_id)


def _read_selection(
    selection: selective.Selection,
    remembered: selective.KnownEntries,
    url: str,
    kind: Kind | None,
    article_id: str | None,
    total: int,
) -> ParsedFeed | None:
    """feedparser over the cut document; None when the whole document must decide."""
    try:
        feed = _read(selection.document, selection.kept, url, kind, article_id, selection.left_out)
    except (FeedParseError, NotAFeedError):
        return None
    if not selective.agrees(feed, selection, remembered):
        log.debug("Read all of %s: the cut document did not agree with the whole", url)
        return None
    log.debug(
        "Read %d of %d entries of %s; %d unchanged",
        feed.normalised,
        total,
        url,
        len(feed.unchanged),
    )
    return feed


def _read(
    document: bytes,
    raw_entries: Sequence[RawEntry],
    url: str,
    kind: Kind | None,
    article_id: str | None,
    left_out: Sequence[RawEntry] = (),
) -> ParsedFeed:
    """feedparser over ``document`` (repaired), each entry built with its raw facts."""
    base_url = url if urlsplit(url).scheme in ("http", "https") else None
    parsed = _run_feedparser(document, base_url)
    feed: Entry = parsed.feed
    dialect = _dialect(feed)
    entries, warnings = _unique_entries(parsed.entries, raw_entries)
    kind = kind or _detect_kind(feed, dialect, entries)
    context = _Context(dialect, base_url, article_id, _feed_date(feed))
    site_url = _link(feed, "alternate") or _str(feed, "link")
    digested = [e.raw for e in entries if e.raw.digest and e.raw.id == e.id]
    digested += [raw for raw in left_out if raw.id is not None and raw.digest is not None]
    digests = {raw.id: raw.digest for raw in digested if raw.id and raw.digest}
    contexts = {raw.context for raw in digested}
    return ParsedFeed(
        kind=kind,
        dialect=dialect,
        title=_plain_text(feed.get("title_detail"), _str(feed, "title")),
        site_url=site_url,
        articles=tuple(_article(e, context) for e in entries) if kind == "posts" else (),
        comments=tuple(_comment(e, context) for e in entries) if kind == "comments" else (),
        next_url=absolute(base_url, _link(feed, "next")),
        comments_feed_url=_blog_comments_feed(dialect, kind, url, site_url, _link(feed, "self")),
        warnings=tuple(warnings),
        hub_url=absolute(base_url, _link(feed, "hub")),
        self_url=absolute(base_url, _link(feed, "self")),
        unchanged=tuple(raw.id for raw in left_out if raw.id is not None),
        digests=digests,
        digest_context=contexts.pop() if len(contexts) == 1 else None,
        normalised=len(parsed.entries),
    )


# --- feedparser ----------------------------------------------------------------------------------


def _run_feedparser(body: bytes, base_url: str | None) -> Any:
    """Run feedparser on the repaired bytes; any XML error means the body is unusable.

    The headers are not sent anywhere: ``content-location`` lets feedparser
    resolve relative links, and the content type stops a NonXMLContentType flag.
    """
    headers = {"content-location": base_url, "content-type": "application/xml"}
    try:
        # A file object, because feedparser.parse() opens bytes that name a file.
        parsed = feedparser.parse(
            io.BytesIO(body),
            response_headers=headers if base_url else None,
            sanitize_html=False,
            resolve_relative_uris=False,
        )
    except (ValueError, LookupError) as exc:
        # feedparser itself trips on some hostile bytes that expat accepts: a
        # namespace URI holding a tab or no-break space, a non-UTF-8 encoding name.
        raise FeedParseError(f"The feed could not be read ({exc}); nothing was used.") from exc
    error = parsed.get("bozo_exception")
    if parsed.get("bozo") and not isinstance(error, _BENIGN_BOZO):
        raise FeedParseError(f"The feed is not well-formed XML ({error}); nothing was used.")
    if not parsed.get("version") and not parsed.entries:
        raise NotAFeedError("The URL did not return an RSS or Atom feed.")
    return parsed


# --- feed-level facts --------------------------------------------------------------------------


def _dialect(feed: Entry) -> Dialect:
    """Blogger or WordPress by generator (or Blogger's tag: ids); anything else is generic."""
    generator = (_str(feed, "generator") or "").lower()
    detail = feed.get("generator_detail") or {}
    generator_href = str(detail.get("href") or "").lower()
    if generator == "blogger" or (_str(feed, "id") or "").startswith("tag:blogger.com"):
        return Dialect.BLOGGER
    if "wordpress.org" in generator or "wordpress.org" in generator_href:
        return Dialect.WORDPRESS
    return Dialect.GENERIC


def _detect_kind(feed: Entry, dialect: Dialect, entries: Sequence[_Item]) -> Kind:
    """Guess whether a feed lists comments or posts, from the signs each dialect leaves."""
    if any(item.raw.in_reply_to_ref or item.raw.in_reply_to_href for item in entries):
        return "comments"
    if (_str(feed, "id") or "").endswith("comments"):  # Blogger: "...blog-N.comments"
        return "comments"
    if any(_COMMENT_MARK in item.id for item in entries):  # WordPress guids
        return "comments"
    title = (_str(feed, "title") or "").lower()
    self_href = _link(feed, "self") or ""
    if dialect is Dialect.WORDPRESS and (
        title.startswith(("comments on", "comments for")) or "/comments/feed" in self_href
    ):
        return "comments"
    return "posts"


def _feed_date(feed: Entry) -> datetime:
    """The date to show for entries that carry none: the feed's own, else now.

    Such entries are marked ``undated``: ingestion replaces this date with the
    time it first saw them, which unlike this one never changes.
    """
    return (
        feed_datetime(_str(feed, "updated"), _own(feed, "updated_parsed"))
        or feed_datetime(_str(feed, "published"), _own(feed, "published_parsed"))
        or datetime.now(UTC)
    )


def _blog_comments_feed(
    dialect: Dialect, kind: Kind, url: str, site_url: str | None, self_href: str | None
) -> str | None:
    """The feed holding every comment of the blog, where the dialect has one."""
    if dialect is Dialect.BLOGGER:
        return _blogger_comments_feed(url, site_url)
    if dialect is Dialect.WORDPRESS:
        return _wordpress_comments_feed(kind, url, site_url, self_href)
    return None


def _blogger_comments_feed(url: str, site_url: str | None) -> str | None:
    """``/feeds/posts/default`` becomes ``/feeds/comments/default`` on the same host."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        match = _BLOGGER_POSTS_PATH.search(parts.path)
        if match:
            blog = f"{match.group(1)}/" if match.group(1) else ""
            path = f"{parts.path[: match.start()]}/feeds/{blog}comments/default"
            return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        if _BLOGGER_COMMENTS_PATH.search(parts.path) and "/feeds/comments/" in parts.path:
            return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    site = split_url(site_url or "")
    if site is not None and site.scheme in ("http", "https") and site.netloc:
        return f"{site.scheme}://{site.netloc}/feeds/comments/default"
    return None


def _wordpress_comments_feed(
    kind: Kind, url: str, site_url: str | None, self_href: str | None
) -> str | None:
    """``<home>/comments/feed/atom/``; a per-post comments feed does not reveal the home."""
    if kind == "posts" and site_url:
        return f"{site_url.rstrip('/')}/comments/feed/atom/"
    for candidate in (url, self_href or ""):
        home, found, _rest = candidate.partition("/comments/feed")
        parts = split_url(home)
        if found and parts is not None and parts.scheme in ("http", "https"):
            return f"{home}/comments/feed/atom/"
    return None


# --- entries -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Item:
    """A feedparser entry with its stable id and the raw-XML facts for it."""

    id: str
    entry: Entry
    raw: RawEntry


def _unique_entries(
    entries: Sequence[Entry], raw_entries: Sequence[RawEntry]
) -> tuple[list[_Item], list[str]]:
    """Give each entry its identity and raw facts; drop repeated ids, with a warning."""
    raw_by_id: dict[str, RawEntry] = {}
    for raw in raw_entries:
        if raw.id is not None:
            raw_by_id.setdefault(raw.id, raw)
    items: list[_Item] = []
    seen: set[str] = set()
    warnings: list[str] = []
    for index, entry in enumerate(entries):
        entry_id = _entry_id(entry)
        if entry_id in seen:
            warnings.append(f"Entry id {entry_id!r} appears more than once; kept the first.")
            continue
        seen.add(entry_id)
        raw = raw_by_id.get(entry_id) or _raw_at(raw_entries, index)
        items.append(_Item(entry_id, entry, raw))
    return items, warnings


def _raw_at(raw_entries: Sequence[RawEntry], index: int) -> RawEntry:
    """The raw facts for an entry without an id: same position in the document."""
    if index < len(raw_entries) and raw_entries[index].id is None:
        return raw_entries[index]
    return RawEntry()


def _entry_id(entry: Entry) -> str:
    """The entry's id; else its link; else a hash of title and content, stable across polls."""
    entry_id = (_str(entry, "id") or "").strip() or _link(entry, "alternate") or _str(entry, "link")
    if entry_id:
        return entry_id
    text = f"{_str(entry, 'title')}\0{_entry_html(entry, Dialect.GENERIC)}"
    return f"urn:sha256:{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _article(item: _Item, context: _Context) -> Article:
    """Build an Article from a posts-feed entry."""
    entry = item.entry
    published, updated, undated = _entry_dates(entry, context.fallback_date)
    url = absolute(context.base_url, _link(entry, "alternate") or _str(entry, "link")) or ""
    body = _entry_html(entry, context.dialect)
    return Article(
        id=item.id,
        title=_plain_text(entry.get("title_detail"), _str(entry, "title")),
        url=url,
        published=published,
        updated=updated,
        author=_author_name(entry),
        html=body,
        image_url=_image_url(entry, body, _content_base(entry) or url or context.base_url),
        labels=_labels(entry),
        comments_feed_url=absolute(context.base_url, _comments_feed(entry)),
        undated=undated,
    )


def _comment(item: _Item, context: _Context) -> Comment:
    """Build a Comment from a comments-feed entry."""
    entry = item.entry
    published, _updated, undated = _entry_dates(entry, context.fallback_date)
    article_id, parent_id = _thread_position(item, context)
    detail = entry.get("author_detail") or {}
    permalink = _link(entry, "alternate") or _str(entry, "link")
    return Comment(
        id=item.id,
        article_id=article_id,
        parent_id=parent_id,
        author=_author_name(entry),
        published=published,
        html=_entry_html(entry, context.dialect),
        permalink=absolute(context.base_url, permalink) or "",
        author_url=absolute(context.base_url, str(detail.get("href") or "") or None),
        removed=item.raw.removed,
        undated=undated,
    )


def _thread_position(item: _Item, context: _Context) -> tuple[str, str | None]:
    """Return (article_id, parent_id) for a comment, by the rules of its dialect."""
    ref, hint = item.raw.in_reply_to_ref, context.article_hint
    if context.dialect is Dialect.BLOGGER:
        # The article is always in-reply-to/@ref; the parent is the related link.
        return ref or hint or "", _blogger_parent(item.id, item.raw.related_href)
    if context.dialect is Dialect.WORDPRESS:
        if ref and _COMMENT_MARK in ref:  # ".../?p=14#comment-3": a reply
            return ref.partition(_COMMENT_MARK)[0], ref
        if ref:
            return ref, None
        if _COMMENT_MARK in item.id:  # RSS: flat, the article is the guid's prefix
            return item.id.partition(_COMMENT_MARK)[0], None
        return hint or "", None
    if ref is None:
        return hint or "", None
    if hint is None or ref == hint:
        return hint or ref, None
    return hint, ref  # RFC 4685: a reply names the entry it answers


def _blogger_parent(comment_id: str, related_href: str | None) -> str | None:
    """Turn ``.../comments/default/5226945339900040673`` into a full Blogger comment id."""
    if not related_href:
        return None
    parts = split_url(related_href)
    if parts is None:
        return None
    segment = parts.path.rstrip("/").rpartition("/")[2]
    if not segment:
        return None
    prefix, found, _rest = comment_id.rpartition(_BLOGGER_POST_MARK)
    return f"{prefix}{_BLOGGER_POST_MARK}{segment}" if found else segment


# --- entry fields --------------------------------------------------------------------------------


def _entry_dates(entry: Entry, fallback: datetime) -> tuple[datetime, datetime, bool]:
    """(published, updated, undated): each date falls back on the other, then on the feed's."""
    published = feed_datetime(_str(entry, "published"), _own(entry, "published_parsed"))
    updated = feed_datetime(_str(entry, "updated"), _own(entry, "updated_parsed"))
    if published is None and updated is None:
        return fallback, fallback, True
    published = published or updated or fallback
    return published, updated or published, False


def _entry_html(entry: Entry, dialect: Dialect) -> str:
    """The entry's HTML: HTML content, else the summary, else plain content escaped.

    WordPress podcast items put itunes:summary (plain text) in ``content`` while
    the real HTML is the description, hence HTML content is preferred by type.
    """
    contents: list[Mapping[str, Any]] = list(entry.get("content") or [])
    for content in contents:
        if content.get("type") in _HTML_TYPES and content.get("value"):
            return str(content["value"])
    summary = entry.get("summary_detail") or {}
    if summary.get("value"):
        return _as_html(str(summary["value"]), summary.get("type"), dialect)
    for content in contents:
        if content.get("value"):
            return _as_html(str(content["value"]), content.get("type"), dialect)
    return ""


def _content_base(entry: Entry) -> str | None:
    """The base URI in scope where the entry's HTML sits (``xml:base``, else the feed's URL).

    feedparser no longer makes the HTML's URLs absolute (its resolver is switched
    off), so they are resolved against the base it recorded for the content.
    """
    details: list[Mapping[str, Any]] = [
        *(entry.get("content") or []),
        entry.get("summary_detail") or {},
    ]
    for detail in details:
        if detail.get("value") and detail.get("base"):
            return str(detail["base"])
    return None


def _as_html(value: str, content_type: Any, dialect: Dialect) -> str:
    """Escape plain text so it renders as written, its line breaks kept.

    Blogger's "short" feeds put a literal ``<br />`` in ``type='text'`` summaries,
    so Blogger text is taken as HTML.
    """
    if content_type in _HTML_TYPES or dialect is Dialect.BLOGGER:
        return value
    return text_as_html(value)


def _author_name(entry: Entry) -> str:
    """The author's name as plain text; "" when the entry names nobody.

    WordPress RSS double-escapes names in CDATA (``&#8230;``), hence the unescape.
    """
    detail = entry.get("author_detail") or {}
    name = str(detail.get("name") or "")
    if not name:
        author = _str(entry, "author") or ""
        match = _RSS_AUTHOR.match(author)  # Blogger RSS: "noreply@blogger.com (Name)"
        name = match.group(1) if match else author
    return html.unescape(name).strip()


def _labels(entry: Entry) -> tuple[str, ...]:
    """Category terms, de-duplicated in order; iTunes keywords are not labels."""
    labels: dict[str, None] = {}
    for tag in entry.get("tags") or []:
        term = str(tag.get("term") or "").strip()
        if term and not str(tag.get("scheme") or "").startswith(_ITUNES_SCHEME):
            labels.setdefault(term, None)
    return tuple(labels)


def _comments_feed(entry: Entry) -> str | None:
    """The entry's own comments feed: Atom ``rel=replies``, else ``wfw:commentRss``."""
    for link in entry.get("links") or []:
        if link.get("rel") == "replies" and link.get("type") == "application/atom+xml":
            return str(link.get("href") or "") or None
    return _str(entry, "wfw_commentrss")


def _image_url(entry: Entry, body: str, base_url: str | None) -> str | None:
    """The feed's image for the post, else its first real ``<img>`` (see bot/images.py)."""
    return choose_image(entry, body, lambda url: absolute(base_url, url))


# --- small helpers -------------------------------------------------------------------------------


def _plain_text(detail: Any, value: str | None) -> str:
    """A title as plain text: HTML-typed titles lose their tags and entities."""
    text = value or ""
    if isinstance(detail, Mapping) and detail.get("type") in _HTML_TYPES:
        text = html.unescape(_TAG.sub("", text))
    return " ".join(text.split())


def _link(entry: Entry, rel: str) -> str | None:
    """The href of the first link with this rel."""
    for link in entry.get("links") or []:
        if link.get("rel") == rel and link.get("href"):
            return str(link["href"])
    return None


def _str(entry: Entry, key: str) -> str | None:
    """A string value from a feedparser dict, or None."""
    value = _own(entry, key)
    return value if isinstance(value, str) else None


def _own(entry: Entry, key: str) -> Any:
    """``entry[key]`` if the feed set it, else None.

    feedparser answers ``get("updated")`` with ``published`` (and a warning)
    when an entry has no updated date; ``in`` reports only what is really there.
    """
    if key not in entry:
        return None
    return entry[key]

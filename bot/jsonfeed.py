"""JSON Feed 1.0 and 1.1 (https://www.jsonfeed.org/version/1.1/) read into a ParsedFeed.

A JSON Feed lists articles only: it has no comments and no threading, so it
reads like any other posts feed of the generic dialect. Every field is
optional in practice whatever the spec says, and any value may have the wrong
type, so each is checked before use; only a body that is not JSON at all, or
JSON that is not a JSON Feed, is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from bot.errors import FeedParseError, NotAFeedError
from bot.feedvalues import absolute, feed_datetime, first_image, text_as_html
from bot.models import Article, Dialect, ParsedFeed

__all__ = ["VERSION_PREFIX", "parse_json_feed"]

VERSION_PREFIX = "https://jsonfeed.org/version/"


def parse_json_feed(
    text: str, base_url: str | None, *, kind: Literal["posts", "comments"] | None = None
) -> ParsedFeed:
    """Parse a JSON Feed document, or raise NotAFeedError / FeedParseError.

    ``base_url`` (the feed's own http(s) URL, or None) resolves relative URLs.
    Asked for comments, it answers with none: JSON Feed has no comments.
    """
    try:
        document = json.loads(text, object_hook=_clean_object)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise FeedParseError(f"The JSON feed is not valid JSON ({exc}); nothing was used.") from exc
    if not isinstance(document, dict) or not _str(document, "version").startswith(VERSION_PREFIX):
        raise NotAFeedError("The URL returned JSON, not a JSON Feed, RSS or Atom feed.")
    items = document.get("items", [])
    if not isinstance(items, list):
        raise FeedParseError("The JSON feed's items are not a list; nothing was used.")
    feed_authors = _author_names(document)
    now = datetime.now(UTC)
    articles: list[Article] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            warnings.append(f"Item {index + 1} of the JSON feed is not an object; skipped.")
            continue
        article = _article(item, base_url, feed_authors, now)
        if article.id in seen:
            warnings.append(f"Entry id {article.id!r} appears more than once; kept the first.")
            continue
        seen.add(article.id)
        articles.append(article)
    return ParsedFeed(
        kind=kind or "posts",
        dialect=Dialect.GENERIC,
        title=_one_line(_str(document, "title")),
        site_url=absolute(base_url, _str(document, "home_page_url") or None),
        articles=tuple(articles) if kind != "comments" else (),
        next_url=absolute(base_url, _str(document, "next_url") or None),
        warnings=tuple(warnings),
        hub_url=absolute(base_url, _websub_hub(document)),
        self_url=absolute(base_url, _str(document, "feed_url") or None),
    )


# What XML could never carry but a JSON string escape can: C0 controls other than tab,
# newline and carriage return (``\u0000`` above all: PostgreSQL refuses it in text) and
# lone surrogates (no UTF-8 form: storing or sending one fails).
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSAFE.sub("\ufffd", value) if _UNSAFE.search(value) else value
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def _clean_object(pairs: dict[str, Any]) -> dict[str, Any]:
    """``json.loads`` hook: every string of every object made safe to store and send, as
    the XML path's repair does for character references (a key too: ids come from them)."""
    return {_clean(key): _clean(value) for key, value in pairs.items()}


def _websub_hub(document: Mapping[str, Any]) -> str | None:
    """The first ``hubs`` entry of type WebSub (JSON Feed's ``rel="hub"``)."""
    hubs = document.get("hubs")
    for hub in hubs if isinstance(hubs, list) else []:
        if isinstance(hub, dict) and _str(hub, "type").lower() == "websub" and _str(hub, "url"):
            return _str(hub, "url")
    return None


def _article(
    item: Mapping[str, Any], base_url: str | None, feed_authors: list[str], now: datetime
) -> Article:
    """One item as an Article; the feed's authors stand in for an item that names none."""
    url = absolute(base_url, _str(item, "url") or _str(item, "external_url") or None) or ""
    body = _html(item)
    title = _one_line(_str(item, "title"))
    published = feed_datetime(_str(item, "date_published") or None)
    updated = feed_datetime(_str(item, "date_modified") or None)
    undated = published is None and updated is None
    published = published or updated or now
    image = _str(item, "image") or _str(item, "banner_image")
    return Article(
        id=_item_id(item, url, title, body),
        title=title,
        url=url,
        published=published,
        updated=updated or published,
        author=(_author_names(item) or feed_authors or [""])[0],
        html=body,
        image_url=absolute(base_url, image or None) or first_image(body, url or base_url),
        labels=_tags(item),
        undated=undated,
    )


def _item_id(item: Mapping[str, Any], url: str, title: str, body: str) -> str:
    """The item's id (numbers coerced to text, as the spec says); else its URL; else a hash."""
    raw = item.get("id")
    if isinstance(raw, str | int | float) and not isinstance(raw, bool) and str(raw).strip():
        return str(raw).strip()
    if url:
        return url
    text = f"{title}\0{body}"
    return f"urn:sha256:{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _html(item: Mapping[str, Any]) -> str:
    """``content_html``, else ``content_text`` or ``summary`` escaped as HTML."""
    if _str(item, "content_html").strip():
        return _str(item, "content_html")
    for key in ("content_text", "summary"):
        if _str(item, key).strip():
            return text_as_html(_str(item, key))
    return ""


def _author_names(holder: Mapping[str, Any]) -> list[str]:
    """Names from ``authors`` (1.1), else the single ``author`` object (1.0)."""
    authors = holder.get("authors")
    if not isinstance(authors, list):
        authors = [holder.get("author")]
    return [
        _one_line(_str(author, "name"))
        for author in authors
        if isinstance(author, dict) and _str(author, "name").strip()
    ]


def _tags(item: Mapping[str, Any]) -> tuple[str, ...]:
    """The item's tags, de-duplicated in order."""
    tags = item.get("tags")
    if not isinstance(tags, list):
        return ()
    return tuple(dict.fromkeys(tag.strip() for tag in tags if isinstance(tag, str) and tag.strip()))


def _str(holder: Mapping[str, Any], key: str) -> str:
    """A string value, or "" for a missing or mistyped one."""
    value = holder.get(key)
    return value if isinstance(value, str) else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())

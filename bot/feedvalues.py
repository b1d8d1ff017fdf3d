"""Field values every feed format needs read the same way: dates, URLs, images, text.

Shared by the XML parser (``bot.parse``) and the JSON Feed reader
(``bot.jsonfeed``), so an article reads alike whatever format carried it.
"""

from __future__ import annotations

import calendar
import email.utils
import html
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

__all__ = [
    "absolute",
    "feed_datetime",
    "first_image",
    "https_if_relative_scheme",
    "split_url",
    "text_as_html",
]

_IMG_SRC = re.compile(
    r"""<img\b[^>]*?\ssrc\s*=\s*(?:"([^"]+)"|'([^']+)'|([^\s>]+))""", re.IGNORECASE
)


def feed_datetime(raw: str | None, parsed: Any = None) -> datetime | None:
    """An aware datetime that keeps the feed's own UTC offset.

    feedparser's ``*_parsed`` values are UTC struct_times that lose the offset,
    so the raw string is parsed first (ISO 8601 for Atom and JSON Feed, RFC 822
    for RSS). A zone RFC 822 cannot name falls back on feedparser's reading
    (``parsed``), as UTC. A date that has no UTC equivalent (year 0,
    ``9999-12-31T23:00-05:00``) is no date.
    """
    if raw:
        value = _iso_datetime(raw.strip()) or _rfc822_datetime(raw.strip())
        if value is not None and value.tzinfo is not None:
            return value if _has_utc_equivalent(value) else None
        if value is not None and parsed is None:
            return value.replace(tzinfo=UTC)
    if parsed is not None:
        try:
            return datetime.fromtimestamp(calendar.timegm(parsed), UTC)
        except (ValueError, OverflowError, OSError):
            return None
    return None


def _has_utc_equivalent(value: datetime) -> bool:
    """False for aware datetimes that overflow when moved to UTC (storage needs UTC)."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        return False
    return True


def _iso_datetime(raw: str) -> datetime | None:
    """ISO 8601 / RFC 3339; a date without a zone is taken as UTC."""
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _rfc822_datetime(raw: str) -> datetime | None:
    """RFC 822 as in RSS; naive when the zone is unknown or ``-0000``."""
    try:
        return email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):  # Overflow: a 30-digit year
        return None


def first_image(body: str, base_url: str | None) -> str | None:
    """The absolute ``src`` of the first ``<img>`` in an HTML body."""
    match = _IMG_SRC.search(body)
    if match is None:
        return None
    src = html.unescape(next(group for group in match.groups() if group is not None))
    return absolute(base_url, https_if_relative_scheme(src.strip()))


def text_as_html(value: str) -> str:
    """Plain text escaped so it renders as written, its line breaks kept."""
    return html.escape(value, quote=False).replace("\n", "<br />\n")


def absolute(base_url: str | None, href: str | None) -> str | None:
    """Resolve ``href`` against the feed's URL when it is an http(s) URL."""
    if not href:
        return None
    try:
        return urljoin(base_url, href) if base_url else href
    except ValueError:  # a malformed URL in the feed, such as ``http://[oops/``
        return None


def split_url(url: str) -> SplitResult | None:
    """``urlsplit``, or None for a malformed URL from a feed (it raises ValueError)."""
    try:
        return urlsplit(url)
    except ValueError:
        return None


def https_if_relative_scheme(url: str) -> str:
    """Blogger writes images as ``//host/path``; Discord needs a scheme."""
    return f"https:{url}" if url.startswith("//") else url

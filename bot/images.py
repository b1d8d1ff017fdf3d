"""Which picture shows an article: the feed's own choice, else the post's first real image.

Part of parsing (it reads feedparser's entry fields and the post's HTML) and knows
nothing of Discord. Preference, best first:

1. an image the feed names for the entry: ``media:content`` (medium ``image`` or an
   ``image/*`` type), an ``image/*`` enclosure, a ``media:thumbnail``;
2. the first ``<img>`` of the post;
3. Blogger's ``media:thumbnail``, a 72 px crop of the post's first image, upsized:
   the post's own ``<img>`` is the same picture at its real size, so it goes first.

Skipped wherever found, because they are decoration or trackers, never the picture:

* a declared width or height under 50 px (``width``/``height`` attributes in pixels;
  ``1x1`` tracking pixels, dividers, badges);
* a host that only serves trackers or avatars: FeedBurner, Gravatar, WordPress stats;
* a URL naming what it is: ``emoji``, ``smilies``, ``icon``, ``favicon``, ``avatar``,
  ``pixel``, ``spacer``, ``1x1``, or a ``blank``/``clear``/``transparent`` GIF;
* anything but an http(s) URL (``data:`` spacers).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["MIN_SIDE", "choose_image"]

MIN_SIDE = 50

_IMG_TAG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_ATTRIBUTE = re.compile(r"""([a-zA-Z_:][-\w:.]*)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))""")
_PIXELS = re.compile(r"\s*(\d{1,6})\s*(?:px)?\s*$", re.IGNORECASE)
_BLOGGER_SMALL_THUMB = re.compile(r"/s72(?:-[\w-]*)?-c/")
_DECORATIVE_HOST = re.compile(
    r"(?:^|\.)(?:feedburner\.com|feedburner\.google\.com|gravatar\.com"
    r"|pixel\.wp\.com|stats\.wordpress\.com)$"
)
_DECORATIVE_NAME = re.compile(
    r"(?<![a-z0-9])(?:emoji|smilies|smiley|icons?|favicon|avatars?|pixel|spacer|1x1"
    r"|(?:blank|clear|transparent)\.gif)(?![a-z0-9])"
)


@dataclass(frozen=True, slots=True)
class _Candidate:
    url: str
    width: str | None = None
    height: str | None = None


def choose_image(
    entry: Mapping[str, Any], body: str, resolve: Callable[[str], str | None]
) -> str | None:
    """The article's picture as an absolute http(s) URL, or None when it has none.

    ``resolve`` makes a URL from the feed absolute (against the page or feed).
    """
    crops: list[_Candidate] = []
    for candidate in _feed_images(entry, crops):
        if (url := _usable(candidate, resolve)) is not None:
            return url
    for candidate in _body_images(body):
        if (url := _usable(candidate, resolve)) is not None:
            return url
    for crop in crops:
        upsized = _BLOGGER_SMALL_THUMB.sub("/s1600/", crop.url)
        if (url := _usable(_Candidate(upsized), resolve)) is not None:
            return url
    return None


def _feed_images(entry: Mapping[str, Any], crops: list[_Candidate]) -> Iterator[_Candidate]:
    """The images the feed names for the entry, in preference order.

    Blogger's thumbnail crops are put in ``crops`` instead: they are a last resort.
    """
    for media in entry.get("media_content") or []:
        medium, kind = str(media.get("medium") or ""), str(media.get("type") or "")
        if medium == "image" or kind.startswith("image/"):
            yield _Candidate(str(media.get("url") or ""), media.get("width"), media.get("height"))
    for enclosure in entry.get("enclosures") or []:
        if str(enclosure.get("type") or "").startswith("image/"):
            yield _Candidate(str(enclosure.get("href") or ""))
    for thumbnail in entry.get("media_thumbnail") or []:
        candidate = _Candidate(
            str(thumbnail.get("url") or ""), thumbnail.get("width"), thumbnail.get("height")
        )
        if _BLOGGER_SMALL_THUMB.search(candidate.url):
            crops.append(_Candidate(candidate.url))  # its size is the crop's, not the image's
        else:
            yield candidate


def _body_images(body: str) -> Iterator[_Candidate]:
    """The post's ``<img>`` tags in document order, with their declared sizes."""
    for tag in _IMG_TAG.finditer(body):
        attributes: dict[str, str] = {}
        for match in _ATTRIBUTE.finditer(tag.group(), 4):
            name = match.group(1).lower()
            value = next((g for g in match.groups()[1:] if g is not None), "")
            attributes.setdefault(name, html.unescape(value))
        if "src" in attributes:
            yield _Candidate(attributes["src"], attributes.get("width"), attributes.get("height"))


def _usable(candidate: _Candidate, resolve: Callable[[str], str | None]) -> str | None:
    """The candidate's absolute URL, or None when it is missing, tiny or decorative."""
    src = candidate.url.strip()
    if not src or _declared_small(candidate.width) or _declared_small(candidate.height):
        return None
    # Blogger writes images as //host/path; Discord needs a scheme.
    url = resolve(f"https:{src}" if src.startswith("//") else src)
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    if _DECORATIVE_HOST.search(host) or _DECORATIVE_NAME.search(f"{host}{parts.path}".lower()):
        return None
    return url


def _declared_small(size: object) -> bool:
    match = _PIXELS.match(str(size)) if size is not None else None
    return match is not None and int(match.group(1)) < MIN_SIDE

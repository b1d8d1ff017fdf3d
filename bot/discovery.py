"""Find a blog's posts feed from whatever URL a moderator pasted.

People paste homepages far more often than feed URLs. A feed URL is used as is;
a Blogger blog (recognised by its generator tag, its blogspot.com host or its
links to ``/feeds/posts/default``) gets its posts feed at that fixed path; any
other page is searched for ``<link rel="alternate">`` feeds, preferring Atom,
then RSS, then JSON Feed, and skipping comment feeds. Whatever is found is
fetched and checked to really be a feed before it is returned, along with its
body so the caller does not fetch it twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Final

from yarl import URL

from bot.charset import decode_page
from bot.errors import FeedError, NotAFeedError
from bot.fetch import Fetcher, FetchResult
from bot.rawxml import looks_like_feed

log = logging.getLogger(__name__)

BLOGGER_POSTS_PATH: Final = "/feeds/posts/default"
# A homepage may list several feeds; trying a few is enough and bounds the requests.
MAX_CANDIDATES: Final = 3
_FEED_TYPES: Final = {
    "application/atom+xml": 0,
    "application/rss+xml": 1,
    "application/feed+json": 2,
}
# Comment feeds are announced with localised titles: "Comments Feed", "Kommentar-Feed",
# "Flux des commentaires", "Feed de comentarios".
_COMMENT_WORDS: Final = ("comment", "kommentar", "coment")


@dataclass(frozen=True, slots=True)
class DiscoveredFeed:
    """The posts feed behind a pasted URL."""

    feed_url: str
    blog_url: str | None
    """The blog's homepage when the feed was found through it; None for a pasted feed URL."""
    body: FetchResult
    """The feed as fetched, so the caller can parse it without a second request."""


async def discover_feed(fetcher: Fetcher, url: str) -> DiscoveredFeed:
    """Return the posts feed for ``url`` (a feed URL or a blog page).

    Raises ``NotAFeedError`` when the page names no feed, or when what it names
    is not a feed; fetch failures propagate as the ``FeedError`` they are.
    """
    page = await fetcher.fetch(url)
    body = page.body or b""
    if looks_like_feed(body):
        return DiscoveredFeed(feed_url=page.url, blog_url=None, body=page)
    if not body.strip():
        raise NotAFeedError(f"{page.url} answered with an empty page: paste the feed URL instead.")

    # A homepage can be megabytes of markup: parse it off the event loop.
    # An odd charset ("charset=idna") never raises: decode_page falls back safely.
    info = await asyncio.to_thread(_PageInfo.parse, body, page.content_type, page.url)
    candidates = _feed_links(info)
    if _is_blogger(info, page.url):
        origin = URL(page.url).origin()
        feed_url = str(origin.with_path(BLOGGER_POSTS_PATH))
        log.debug("%s is a Blogger blog; using %s", page.url, feed_url)
        # The page's own links stay as a fallback should the fixed path not be a feed.
        fallbacks = [c for c in candidates if c != feed_url][: MAX_CANDIDATES - 1]
        return await _fetch_feed(
            fetcher, [feed_url, *fallbacks], blog_url=str(origin.with_path("/"))
        )

    if not candidates:
        raise NotAFeedError(
            f'No feed found at {page.url}: the page has no <link rel="alternate"> feed. '
            "Paste the feed URL instead."
        )
    log.debug("%s links to feeds %s", page.url, candidates)
    return await _fetch_feed(fetcher, candidates[:MAX_CANDIDATES], blog_url=page.url)


async def _fetch_feed(fetcher: Fetcher, candidates: list[str], *, blog_url: str) -> DiscoveredFeed:
    """Fetch candidates in order of preference; the first that is a feed wins.

    When none is, the error about the preferred candidate is the one reported.
    """
    failures: list[FeedError] = []
    for candidate in candidates:
        try:
            result = await fetcher.fetch(candidate)
        except FeedError as exc:
            log.debug("Feed candidate %s failed: %s", candidate, exc)
            failures.append(exc)
            continue
        if looks_like_feed(result.body or b""):
            return DiscoveredFeed(feed_url=result.url, blog_url=blog_url, body=result)
        failures.append(
            NotAFeedError(
                f"No feed found at {blog_url}: {candidate} is not an Atom or RSS feed. "
                "Paste the feed URL instead."
            )
        )
    raise failures[0]


def _is_blogger(info: _PageInfo, page_url: str) -> bool:
    host = (URL(page_url).host or "").rstrip(".").lower()
    return (
        "blogger" in info.generator.lower()
        or host.endswith(".blogspot.com")
        or info.links_blogger_feed
    )


def _feed_links(info: _PageInfo) -> list[str]:
    """The page's posts-feed links, Atom, RSS then JSON Feed, in document order within each."""
    posts = [link for link in info.alternates if not link.is_comments]
    posts.sort(key=lambda link: _FEED_TYPES[link.type])  # stable: keeps document order
    urls: list[str] = []
    for link in posts:
        if link.href not in urls:
            urls.append(link.href)
    return urls


@dataclass(frozen=True, slots=True)
class _AlternateLink:
    type: str
    href: str
    title: str

    @property
    def is_comments(self) -> bool:
        title = self.title.lower()
        return any(word in title for word in _COMMENT_WORDS) or "/comments/" in self.href.lower()


@dataclass
class _PageInfo:
    """What discovery needs from an HTML page."""

    generator: str = ""
    links_blogger_feed: bool = False
    alternates: list[_AlternateLink] = field(default_factory=list)

    @classmethod
    def parse(cls, body: bytes, content_type: str | None, page_url: str) -> _PageInfo:
        parser = _PageParser(URL(page_url))
        # The page's own charset when it is usable; a bogus one (idna) is detected past.
        parser.feed(decode_page(body, content_type))
        parser.close()
        return parser.info


class _PageParser(HTMLParser):
    """Collects feed links and the generator from a page, tolerating broken HTML."""

    def __init__(self, page_url: URL) -> None:
        super().__init__(convert_charrefs=True)
        self.base = page_url
        self.host = page_url.host
        self.info = _PageInfo()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {name: value or "" for name, value in attrs}
        href = attr.get("href", "").strip()
        if tag == "base" and href:
            self.base = self._resolve(href) or self.base
        elif tag == "meta" and attr.get("name", "").lower() == "generator":
            self.info.generator = attr.get("content", "")
        elif tag in ("link", "a") and href:
            resolved = self._resolve(href)
            if resolved is None:
                return
            # Only the site's own feed counts: a blogroll may link to other Blogger blogs.
            if resolved.host == self.host and resolved.path.rstrip("/") == BLOGGER_POSTS_PATH:
                self.info.links_blogger_feed = True
            rels = attr.get("rel", "").lower().split()
            kind = attr.get("type", "").split(";")[0].strip().lower()
            if tag == "link" and "alternate" in rels and kind in _FEED_TYPES:
                self.info.alternates.append(
                    _AlternateLink(type=kind, href=str(resolved), title=attr.get("title", ""))
                )

    def _resolve(self, href: str) -> URL | None:
        try:
            resolved = self.base.join(URL(href))
        except (ValueError, TypeError):
            return None
        return resolved if resolved.scheme in ("http", "https") else None

"""Find a blog's posts feed from whatever URL a moderator pasted.

People paste homepages far more often than feed URLs. A feed URL is used as is;
a Blogger blog (recognised by its generator tag, its blogspot.com host or its
links to ``/feeds/posts/default``) gets its posts feed at that fixed path; any
other page is searched for ``<link rel="alternate">`` feeds, preferring Atom
and skipping comment feeds. Whatever is found is fetched and checked to really
be a feed before it is returned, along with its body so the caller does not
fetch it twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from yarl import URL

from bot.errors import FeedError, NotAFeedError
from bot.fetch import Fetcher, FetchResult
from bot.pagescan import BLOGGER_POSTS_PATH, FEED_TYPES, PageInfo
from bot.rawxml import looks_like_feed
from bot.untrusted import Untrusted

log = logging.getLogger(__name__)

# A homepage may list several feeds; trying a few is enough and bounds the requests.
MAX_CANDIDATES: Final = 3


@dataclass(frozen=True, slots=True)
class DiscoveredFeed:
    """The posts feed behind a pasted URL."""

    feed_url: str
    blog_url: str | None
    """The blog's homepage when the feed was found through it; None for a pasted feed URL."""
    body: FetchResult
    """The feed as fetched, so the caller can parse it without a second request."""


async def discover_feed(fetcher: Fetcher, untrusted: Untrusted, url: str) -> DiscoveredFeed:
    """Return the posts feed for ``url`` (a feed URL or a blog page).

    Raises ``NotAFeedError`` when the page names no feed, or when what it names
    is not a feed; fetch failures propagate as the ``FeedError`` they are. The
    page is read by ``bot/pagescan.py`` in the worker pool: only its start, in
    linear time, under a time limit.
    """
    page = await fetcher.fetch(url)
    body = page.body or b""
    if looks_like_feed(body):
        return DiscoveredFeed(feed_url=page.url, blog_url=None, body=page)
    if not body.strip():
        raise NotAFeedError(f"{page.url} answered with an empty page: paste the feed URL instead.")

    info = await untrusted.scan_page(body, page.content_type, page.url)
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


def _is_blogger(info: PageInfo, page_url: str) -> bool:
    host = (URL(page_url).host or "").rstrip(".").lower()
    return (
        "blogger" in info.generator.lower()
        or host.endswith(".blogspot.com")
        or info.links_blogger_feed
    )


def _feed_links(info: PageInfo) -> list[str]:
    """The page's posts-feed links, Atom first, in document order within each type."""
    posts = [link for link in info.alternates if not link.is_comments]
    posts.sort(key=lambda link: FEED_TYPES[link.type])  # stable: keeps document order
    urls: list[str] = []
    for link in posts:
        if link.href not in urls:
            urls.append(link.href)
    return urls

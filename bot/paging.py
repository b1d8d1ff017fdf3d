"""Following a feed's ``rel="next"`` pages, shared by resync, catch-up and preview."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Literal

from bot.fetch import Fetcher
from bot.models import ParsedFeed
from bot.untrusted import Untrusted


async def feed_pages(
    fetcher: Fetcher,
    untrusted: Untrusted,
    url: str | None,
    *,
    kind: Literal["posts", "comments"],
    article_id: str | None = None,
    max_pages: int,
) -> AsyncGenerator[ParsedFeed, None]:
    """Each page of a feed, parsed in the worker pool, fetched only when asked for.

    Stops at the last page, at a page seen before (a ``next`` loop) or after
    ``max_pages``; a failing page raises ``FeedError`` like any fetch.
    """
    seen: set[str] = set()
    while url and url not in seen and len(seen) < max_pages:
        seen.add(url)
        result = await fetcher.fetch(url)
        if result.body is None:
            return
        page = await untrusted.parse_feed(result.body, result.url, kind=kind, article_id=article_id)
        yield page
        url = page.next_url

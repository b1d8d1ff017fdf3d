"""Work on untrusted bytes: parse feeds, scan pages, render HTML, in the worker pool.

Every feed, page and comment comes from a URL some guild's moderator chose, so
none of it is read on the event loop, and none of it without a time limit
(``TimeLimits``; the worker pool, ``bot/workers.py``, kills a worker that runs
over). What happens then:

- a feed or page over its limit (or one that crashes its worker) is a
  :class:`DocumentTooSlowError`, a ``FeedError``: the poll records it like any
  bad feed (``/blog status`` shows it), backs off, and other feeds carry on;
- a comment or article whose HTML takes too long to render is still posted, with
  its header (name, time, permalink) or title and link as usual and, instead of
  its text, a note to read it on the blog (``UNSHOWN_COMMENT``). Rendered
  again (an edit, settling after a crash), it takes as long again and gets the
  same placeholder: its message does not change.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from typing import Final

from bot.errors import PermanentFeedError
from bot.models import Article, Comment, ParsedFeed
from bot.pagescan import PageInfo, scan_page
from bot.parse import Kind, parse_feed
from bot.render import MAX_PERMALINK_CHARS, RenderedArticle, render_article, render_comment
from bot.workers import DEFAULT_SIZE, WorkerCrashed, WorkerPool, WorkTimeout

log = logging.getLogger(__name__)

# What the workers run: imported once by the fork server, so each worker starts ready.
JOB_MODULES: Final = ("bot.parse", "bot.render", "bot.pagescan")

UNSHOWN_COMMENT: Final = "This comment could not be shown here; read it on the blog."
UNSHOWN_ARTICLE: Final = "The article's text could not be shown here; read it on the blog."
# A placeholder keeps the header; these bounds only keep its own rendering cheap, on the
# event loop, and change nothing a real feed shows (names are cut to 80 characters, and
# permalinks over 1,000 or URLs over 512 are dropped anyway).
_NAME_BOUND: Final = 2_000
_URL_BOUND: Final = 4_096


@dataclass(frozen=True, slots=True)
class TimeLimits:
    """Seconds one document may take in a worker."""

    feed: float = 10.0
    page: float = 10.0
    render: float = 5.0


class DocumentTooSlowError(PermanentFeedError):
    """A feed or page took longer than its time limit to read, or crashed its reader.

    Permanent: the same bytes would take as long again.
    """


def open_pool(size: int = DEFAULT_SIZE) -> WorkerPool:
    """The bot's worker pool, its fork server preloading what the jobs need."""
    return WorkerPool(size, preload=JOB_MODULES)


class Untrusted:
    """The bot's one way to parse, scan and render what a blog sent."""

    def __init__(self, pool: WorkerPool, limits: TimeLimits | None = None) -> None:
        self.pool = pool
        self.limits = limits or TimeLimits()

    async def parse_feed(
        self,
        body: bytes,
        url: str,
        *,
        kind: Kind | None = None,
        article_id: str | None = None,
        known: bytes | None = None,
    ) -> ParsedFeed:
        """``bot.parse.parse_feed`` in a worker; ``DocumentTooSlowError`` over the limit."""
        job = functools.partial(parse_feed, kind=kind, article_id=article_id, known=known)
        try:
            return await self.pool.run(job, body, url, limit=self.limits.feed)
        except WorkTimeout as exc:
            raise DocumentTooSlowError(
                f"The feed took too long to read (more than {exc.limit:g} s): it is too big "
                "or too malformed to mirror."
            ) from None
        except WorkerCrashed:
            raise DocumentTooSlowError(
                "The feed could not be read: reading it stopped the reader process."
            ) from None

    async def scan_page(self, body: bytes, content_type: str | None, url: str) -> PageInfo:
        """``bot.pagescan.scan_page`` in a worker; ``DocumentTooSlowError`` over the limit."""
        try:
            return await self.pool.run(scan_page, body, content_type, url, limit=self.limits.page)
        except WorkTimeout as exc:
            raise DocumentTooSlowError(
                f"The page at {url} took too long to read (more than {exc.limit:g} s): "
                "paste the feed URL instead."
            ) from None
        except WorkerCrashed:
            raise DocumentTooSlowError(
                f"The page at {url} could not be read: paste the feed URL instead."
            ) from None

    async def render_comment(
        self, comment: Comment, *, key: str | None = None, parent_missing: bool = False
    ) -> list[str]:
        """``bot.render.render_comment`` in a worker; a placeholder over the limit."""
        job = functools.partial(render_comment, key=key, parent_missing=parent_missing)
        try:
            return await self.pool.run(job, comment, limit=self.limits.render)
        except (WorkTimeout, WorkerCrashed) as exc:
            log.warning("Comment %.200s not rendered (%s): posted as a link", comment.id, exc)
            return render_comment(unshown_comment(comment), key=key, parent_missing=parent_missing)

    async def render_article(
        self, article: Article, *, blog_title: str, reserve: int = 0
    ) -> RenderedArticle:
        """``bot.render.render_article`` in a worker; a placeholder over the limit."""
        job = functools.partial(render_article, blog_title=blog_title, reserve=reserve)
        try:
            return await self.pool.run(job, article, limit=self.limits.render)
        except (WorkTimeout, WorkerCrashed) as exc:
            log.warning("Article %.200s not rendered (%s): posted as a link", article.url, exc)
            return render_article(
                unshown_article(article), blog_title=blog_title[:_NAME_BOUND], reserve=reserve
            )


def unshown_comment(comment: Comment) -> Comment:
    """The comment with a note in place of its text: cheap to render on the event loop."""
    permalink = comment.permalink if len(comment.permalink) <= MAX_PERMALINK_CHARS else ""
    return replace(
        comment,
        html=f"<p><em>{UNSHOWN_COMMENT}</em></p>",
        author=comment.author[:_NAME_BOUND],
        permalink=permalink,
    )


def unshown_article(article: Article) -> Article:
    """The article with a note in place of its text: cheap to render on the event loop."""
    image = article.image_url
    return replace(
        article,
        html=f"<p><em>{UNSHOWN_ARTICLE}</em></p>",
        title=article.title[:_NAME_BOUND],
        author=article.author[:_NAME_BOUND],
        url=article.url if len(article.url) <= _URL_BOUND else "",
        image_url=image if image is None or len(image) <= _URL_BOUND else None,
    )

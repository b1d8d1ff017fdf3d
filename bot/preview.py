"""``python -m bot preview URL``: show in the terminal what the bot would post.

It uses the bot's own parsing, ordering and rendering (in the bot's worker
pool, under the same time limits), and touches neither Discord nor the
database. Sources:

* an http(s) URL: a blog homepage or feed, discovered and fetched as
  ``/blog subscribe`` would; each shown article's comments come from its own
  comments feed (paged);
* a local feed file: that one feed (a posts feed shows articles, a comments
  feed shows its comments grouped by article);
* a local folder: every feed file in it together, e.g. a saved posts feed and
  its comments feeds (``tests/fixtures/seed``); a folder without one is an error.

A thread whose comments were not read (no comments feed, or it failed) says
"comments not loaded" and why, never "no comments".

Discord timestamps (``<t:…:f>``), which Discord shows in each reader's own
time zone, are shown here in the blog's own UTC offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bot.discovery import discover_feed
from bot.errors import BlogMirrorError, FeedError
from bot.fetch import Fetcher, create_session
from bot.models import Article, Comment, ParsedFeed
from bot.order import delivery_order, depth_of
from bot.paging import feed_pages
from bot.render import thread_name
from bot.settings import Settings
from bot.untrusted import Untrusted, open_pool

DEFAULT_ARTICLES = 5
MAX_COMMENT_PAGES = 10
_TIMESTAMP = re.compile(r"<t:(-?\d+):[tTdDfFR]>")
_FEED_SUFFIXES = {".xml", ".atom", ".rss", ".json", ".txt", ""}
# The parser's messages speak of a fetched URL; for a file they are said of the file.
_FILE_WORDING = (
    (re.compile(r"\bThe (?:feed )?URL returned an empty body\b"), "The file is empty"),
    (re.compile(r"\bThe (?:feed )?URL returned\b"), "The file holds"),
    (re.compile(r"\bThe (?:feed )?URL did not return\b"), "The file is not"),
    (re.compile(r"; use the blog's feed URL or its homepage\b"), ""),
)


@dataclass(slots=True)
class Blog:
    """What the preview found: a title and deduplicated articles and comments."""

    title: str = ""
    dialect: str = ""
    articles: dict[str, Article] = field(default_factory=dict)
    comments: dict[str, Comment] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unread: dict[str, str] = field(default_factory=dict)
    """Article id → why its comments were not (all) read."""
    unread_reason: str | None = None
    """Why no article's comments were read, when none were (a lone posts file)."""
    feed_url: str = ""
    blog_url: str | None = None
    kind: str = ""
    """Of the feed at the address read (a URL): ``posts`` or ``comments``."""

    def add(self, parsed: ParsedFeed) -> None:
        if parsed.kind == "posts" or not self.title:
            self.title = parsed.title or self.title
            self.dialect = parsed.dialect.value
        for article in parsed.articles:
            self.articles.setdefault(article.id, article)
        for comment in parsed.comments:
            self.comments.setdefault(comment.id, comment)


async def run_preview(
    source: str, settings: Settings, out: TextIO, *, articles: int = DEFAULT_ARTICLES
) -> None:
    """Load ``source`` and print its threads; raise ``BlogMirrorError`` on failure."""
    async with open_pool() as pool:
        untrusted = Untrusted(pool)
        if "://" in source:
            blog = await load_remote(source, settings, articles, untrusted)
        else:
            blog = await load_local(Path(source), untrusted)
        out.write(await format_blog(blog, untrusted, articles=articles))


async def load_local(path: Path, untrusted: Untrusted) -> Blog:
    """Read a feed file, or every feed file of a folder; raise ``BlogMirrorError`` when
    there is nothing to show (errors name the file, never a URL)."""
    try:
        folder, files = await asyncio.to_thread(_feed_files, path)
    except OSError as exc:
        raise BlogMirrorError(f"Cannot read {path}: {_os_reason(exc)}") from None
    return await _load_files(files, untrusted, folder=folder)


def _feed_files(path: Path) -> tuple[Path | None, list[Path]]:
    """The folder (None for one file), and the feed files to read."""
    path = path.expanduser()
    if not path.exists():
        raise BlogMirrorError(f"No such file or folder: {path}")
    if not path.is_dir():
        return None, [path]
    return path, sorted(
        p
        for p in path.iterdir()
        if p.is_file() and p.suffix.lower() in _FEED_SUFFIXES and not p.name.startswith(".")
    )


async def _load_files(files: list[Path], untrusted: Untrusted, *, folder: Path | None) -> Blog:
    """Parse each file; in a folder, one that fails is skipped with a note."""
    blog = Blog()
    kinds = set()
    for file in files:
        try:
            body = await asyncio.to_thread(file.read_bytes)
            parsed = await untrusted.parse_feed(body, file.resolve().as_uri())
        except OSError as exc:
            problem = f"cannot read the file: {_os_reason(exc)}"
        except FeedError as exc:
            problem = _about_file(exc)
        else:
            blog.add(parsed)
            kinds.add(parsed.kind)
            continue
        if folder is None:
            raise BlogMirrorError(f"{file}: {problem}")
        blog.notes.append(f"skipped {file.name}: {problem}")
    if folder is not None and not kinds:
        skipped = f" ({'; '.join(blog.notes)})" if blog.notes else ""
        raise BlogMirrorError(f"No feed file in the folder {folder}{skipped}")
    if "comments" not in kinds:
        blog.unread_reason = (
            "only this posts feed file was read"
            if folder is None
            else "the folder holds no comments feed"
        )
    return blog


def _about_file(exc: FeedError) -> str:
    text = str(exc)
    for pattern, replacement in _FILE_WORDING:
        text = pattern.sub(replacement, text)
    return text if "URL" not in text else "The file is not an RSS or Atom feed."


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


async def load_remote(url: str, settings: Settings, articles: int, untrusted: Untrusted) -> Blog:
    async with create_session(allow_private=settings.allow_private_addresses) as session:
        return await load_url(Fetcher.from_settings(session, settings), untrusted, url, articles)


async def load_url(fetcher: Fetcher, untrusted: Untrusted, url: str, articles: int) -> Blog:
    """Discover and read the blog at ``url`` as ``/blog subscribe`` would, with the
    comments of its ``articles`` newest articles; shared by the CLI and ``/blog preview``."""
    blog = Blog()
    found = await discover_feed(fetcher, untrusted, url)
    assert found.body.body is not None
    posts = await untrusted.parse_feed(found.body.body, found.feed_url)
    blog.feed_url = found.feed_url
    blog.blog_url = found.blog_url or posts.site_url
    blog.kind = posts.kind
    blog.add(posts)
    chosen = newest(posts.articles, articles)
    if posts.comments_feed_url and chosen:
        # The blog-wide comments feed, as the bot reads it (Blogger's, WordPress's): one
        # request for every article, where per-article feeds would be one each.
        await _load_blog_comments(fetcher, untrusted, blog, posts.comments_feed_url, chosen)
        return blog
    for article in chosen:
        if article.comments_feed_url:
            await _load_comments(fetcher, untrusted, blog, article)
        else:
            blog.unread[article.id] = "the feed names no comments feed for this article"
    return blog


async def _load_blog_comments(
    fetcher: Fetcher, untrusted: Untrusted, blog: Blog, url: str, chosen: Sequence[Article]
) -> None:
    """The comments of the ``chosen`` articles from the blog-wide comments feed, newest
    first: paged back until a page reaches comments older than the oldest chosen article."""
    wanted = {article.id for article in chosen}
    oldest = min(article.published for article in chosen)
    pages = feed_pages(fetcher, untrusted, url, kind="comments", max_pages=MAX_COMMENT_PAGES)
    try:
        async with contextlib.aclosing(pages):
            async for page in pages:
                ours = tuple(c for c in page.comments if c.article_id in wanted)
                blog.add(replace(page, articles=(), comments=ours))
                if any(comment.published < oldest for comment in page.comments):
                    break
    except FeedError as exc:
        for article in chosen:
            blog.unread[article.id] = f"the blog's comments feed failed: {exc}"


async def _load_comments(
    fetcher: Fetcher, untrusted: Untrusted, blog: Blog, article: Article
) -> None:
    pages = feed_pages(
        fetcher,
        untrusted,
        article.comments_feed_url,
        kind="comments",
        article_id=article.id,
        max_pages=MAX_COMMENT_PAGES,
    )
    try:
        async for page in pages:
            blog.add(page)
    except FeedError as exc:
        blog.unread[article.id] = f"its comments feed failed: {exc}"


def newest(articles: Iterable[Article], count: int) -> list[Article]:
    return sorted(articles, key=lambda a: a.published, reverse=True)[:count]


# --- formatting -------------------------------------------------------------------------


async def format_blog(blog: Blog, untrusted: Untrusted, *, articles: int = DEFAULT_ARTICLES) -> str:
    lines = [
        f"Blog: {blog.title or '(untitled)'} [{blog.dialect or 'unknown'} feed] — "
        f"{len(blog.articles)} article(s), {len(blog.comments)} comment(s)",
    ]
    lines += [f"note: {note}" for note in blog.notes]
    by_article: dict[str, list[Comment]] = {}
    for comment in blog.comments.values():
        by_article.setdefault(comment.article_id, []).append(comment)
    shown = newest(blog.articles.values(), articles)
    for article in shown:
        unread = blog.unread.get(article.id, blog.unread_reason)
        lines += await format_thread(
            article,
            by_article.get(article.id, []),
            untrusted,
            blog_title=blog.title,
            unread=unread,
        )
    if len(blog.articles) > len(shown):
        lines.append("")
        lines.append(
            f"… and {len(blog.articles) - len(shown)} older article(s) not shown "
            "(a new subscription posts only the newest `backfill`)."
        )
    for article_id, orphans in by_article.items():
        if article_id in blog.articles:
            continue  # an older article's, counted in the line above
        lines.append("")
        lines.append(
            "=== Comments on an article not in this feed: "
            + (_article_link(orphans) or article_id or "(unknown)")
        )
        lines += await format_comments(orphans, untrusted)
    return "\n".join(lines) + "\n"


def _article_link(comments: Sequence[Comment]) -> str | None:
    """The article's address, as the comments' permalinks all name it, if they do.

    A permalink is the article's URL with a fragment (``#comment-3``, ``#c123``)
    and, on Blogger, a ``showComment`` query parameter.
    """
    links = set()
    for comment in comments:
        parts = urlsplit(comment.permalink)
        if parts.scheme not in ("http", "https"):
            return None
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "showComment"]
        links.add(urlunsplit(parts._replace(query=urlencode(query), fragment="")))
    return links.pop() if len(links) == 1 else None


async def format_thread(
    article: Article,
    comments: Sequence[Comment],
    untrusted: Untrusted,
    *,
    blog_title: str = "",
    unread: str | None = None,
) -> list[str]:
    """The thread's lines; ``unread`` says why its comments were not (all) read."""
    rendered = await untrusted.render_article(article, blog_title=blog_title)
    zone = article.published.tzinfo
    lines = ["", f"=== Thread: {thread_name(article.title, article.published)}", ""]
    lines.append("--- article message")
    lines += _readable(rendered.content, zone).splitlines()
    if rendered.image_url:
        lines.append(f"[embed image: {rendered.image_url}]")
    lines.append("")
    if comments and unread:
        lines.append(
            f"--- {len(comments)} comment message(s), in posting order; "
            f"the rest were not loaded: {unread}"
        )
    elif comments:
        lines.append(f"--- {len(comments)} comment message(s), in posting order")
    elif unread:
        lines.append(f"--- comments not loaded: {unread}")
    else:
        lines.append("--- no comments")
    lines += await format_comments(comments, untrusted)
    return lines


async def format_comments(comments: Sequence[Comment], untrusted: Untrusted) -> list[str]:
    ordered = delivery_order(
        comments, key=lambda c: c.id, parent=lambda c: c.parent_id, published=lambda c: c.published
    )
    present = {c.id for c in ordered}
    depths = depth_of(ordered, key=lambda c: c.id, parent=lambda c: c.parent_id)
    numbers = {c.id: n for n, c in enumerate(ordered, start=1)}
    lines: list[str] = []
    for comment in ordered:
        depth = depths[comment.id]
        indent = "    " * depth
        missing = comment.parent_id is not None and comment.parent_id not in present
        if comment.parent_id in numbers:
            label = f"↳ [{numbers[comment.id]}] Discord reply to [{numbers[comment.parent_id]}]"
        else:
            label = f"[{numbers[comment.id]}]"
        lines.append("")
        lines.append(f"{indent}{label}")
        parts = await untrusted.render_comment(comment, parent_missing=missing)
        for index, part in enumerate(parts):
            if index:
                lines.append(f"{indent}  (continued, message {index + 1} of {len(parts)})")
            text = _readable(part, comment.published.tzinfo)
            lines += [f"{indent}  {line}" if line else "" for line in text.splitlines()]
    return lines


def _readable(content: str, zone: tzinfo | None) -> str:
    """Show Discord timestamps as the blog's own local time."""

    def replace(match: re.Match[str]) -> str:
        moment = datetime.fromtimestamp(int(match.group(1)), zone or UTC)
        return moment.strftime("%Y-%m-%d %H:%M %z").replace(" +0000", " UTC")

    return textwrap.dedent(_TIMESTAMP.sub(replace, content))

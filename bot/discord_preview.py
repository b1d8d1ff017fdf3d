"""``/blog preview``: what subscribing would post, shown to the moderator alone.

The blog is read exactly as the CLI preview reads it (``bot/preview.py``:
discovery, the worker pool, the same renderers); here the newest article's
thread is laid out as Discord embeds, each within Discord's limits, packed
into as few messages as those limits allow. Nothing is stored, nothing is
posted to a channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import discord

from bot.errors import BlogMirrorError
from bot.fetch import Fetcher, check_url
from bot.markdown import escape_text
from bot.models import Article, Comment
from bot.order import delivery_order
from bot.preview import load_url, newest
from bot.render import RenderedArticle, thread_name
from bot.untrusted import Untrusted

PREVIEW_COMMENTS = 3
MESSAGE_LIMIT = 2000
EMBED_DESCRIPTION_LIMIT = 4096
EMBED_TITLE_LIMIT = 256
EMBED_FOOTER_LIMIT = 2048
EMBEDS_PER_MESSAGE = 10
EMBED_TOTAL_LIMIT = 6000
TITLE_CHARS = 200


@dataclass(frozen=True, slots=True)
class PreviewComment:
    """One comment as it would be posted: its number in posting order and its messages."""

    number: int
    replies_to: int | None
    """The number of the previewed comment its first message is a Discord reply to."""
    parts: list[str]


@dataclass(frozen=True, slots=True)
class ThreadPreview:
    blog_title: str
    blog_url: str | None
    feed_url: str
    dialect: str
    articles: int
    thread_name: str | None
    """None when the feed has no article yet."""
    article: RenderedArticle | None
    comments: list[PreviewComment]
    total_comments: int
    unread: str | None
    """Why the article's comments were not (all) read."""


async def preview_thread(fetcher: Fetcher, untrusted: Untrusted, url: str) -> ThreadPreview:
    """Read the blog at ``url`` and render its newest thread; raise ``BlogMirrorError``."""
    blog = await load_url(fetcher, untrusted, check_url(url), articles=1)
    if blog.kind != "posts":
        raise BlogMirrorError(
            "That is a comments feed: preview the blog itself (its homepage or posts feed)."
        )
    shown = newest(blog.articles.values(), 1)
    article: Article | None = shown[0] if shown else None
    rendered = None
    previewed: list[PreviewComment] = []
    comments: list[Comment] = []
    if article is not None:
        rendered = await untrusted.render_article(article, blog_title=blog.title)
        comments = [c for c in blog.comments.values() if c.article_id == article.id]
        previewed = await _first_comments(comments, untrusted)
    return ThreadPreview(
        blog_title=blog.title,
        blog_url=blog.blog_url,
        feed_url=blog.feed_url,
        dialect=blog.dialect,
        articles=len(blog.articles),
        thread_name=thread_name(article.title, article.published) if article else None,
        article=rendered,
        comments=previewed,
        total_comments=len(comments),
        unread=blog.unread.get(article.id) if article else None,
    )


async def _first_comments(
    comments: Sequence[Comment], untrusted: Untrusted
) -> list[PreviewComment]:
    """The first comments in posting order, rendered as the mirror renders them."""
    ordered = delivery_order(
        comments, key=lambda c: c.id, parent=lambda c: c.parent_id, published=lambda c: c.published
    )
    present = {c.id for c in ordered}
    numbers = {c.id: n for n, c in enumerate(ordered, start=1)}
    previewed = []
    for comment in ordered[:PREVIEW_COMMENTS]:
        missing = comment.parent_id is not None and comment.parent_id not in present
        parts = await untrusted.render_comment(comment, parent_missing=missing)
        replies_to = numbers.get(comment.parent_id) if comment.parent_id else None
        previewed.append(PreviewComment(numbers[comment.id], replies_to, parts))
    return previewed


def preview_messages(preview: ThreadPreview) -> list[tuple[str, list[discord.Embed]]]:
    """The answer: ``(content, embeds)`` per message, every one within Discord's limits."""
    title = escape_text(_clip(preview.blog_title, TITLE_CHARS)) or "(untitled blog)"
    lines = [
        f"🔎 Preview of **{title}**" + (f" (<{preview.blog_url}>)" if preview.blog_url else ""),
        f"Feed: <{preview.feed_url}> ({preview.dialect or 'unknown'} feed, "
        f"{preview.articles} article(s))",
    ]
    embeds: list[discord.Embed] = []
    if preview.thread_name is None or preview.article is None:
        lines.append("The feed has no article yet: subscribing would post nothing for now.")
        lines.append("Nothing was posted or stored.")
    else:
        lines.append(f"Newest article's thread: **{escape_text(preview.thread_name)}**")
        lines.append("Nothing was posted or stored; subscribing would post this thread:")
        lines.append(_comments_line(preview))
        article = discord.Embed(
            title="Article message", description=preview.article.content[:EMBED_DESCRIPTION_LIMIT]
        )
        if preview.article.image_url:
            article.set_image(url=preview.article.image_url)
        embeds.append(article)
        embeds += [_comment_embed(comment) for comment in preview.comments]
    content = _clip("\n".join(lines), MESSAGE_LIMIT)
    return _pack(content, embeds)


def _comments_line(preview: ThreadPreview) -> str:
    shown = len(preview.comments)
    if preview.total_comments == 0:
        return (
            f"No comments loaded: {preview.unread}." if preview.unread else "No comments on it yet."
        )
    line = (
        f"the article message, then the first {shown} of its {preview.total_comments} "
        "comment(s), in posting order:"
        if shown < preview.total_comments
        else f"the article message, then its {shown} comment(s), in posting order:"
    )
    return line + (f" (not all were loaded: {preview.unread})" if preview.unread else "")


def _comment_embed(comment: PreviewComment) -> discord.Embed:
    title = f"Comment {comment.number}"
    if comment.replies_to is not None:
        title += f" · ↳ Discord reply to comment {comment.replies_to}"
    embed = discord.Embed(title=title, description=comment.parts[0][:EMBED_DESCRIPTION_LIMIT])
    if len(comment.parts) > 1:
        embed.set_footer(text=f"…continued in {len(comment.parts) - 1} more message(s)")
    return embed


def _pack(content: str, embeds: list[discord.Embed]) -> list[tuple[str, list[discord.Embed]]]:
    """Embeds in messages of at most 10 and 6,000 characters of embed text each."""
    messages: list[tuple[str, list[discord.Embed]]] = [(content, [])]
    size = 0
    for embed in embeds:
        length = len(embed)
        current = messages[-1][1]
        if current and (len(current) == EMBEDS_PER_MESSAGE or size + length > EMBED_TOTAL_LIMIT):
            messages.append(("", []))
            current, size = messages[-1][1], 0
        current.append(embed)
        size += length
    return messages


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

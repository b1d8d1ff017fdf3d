"""Reading Discord back: what the bot already made in a channel or thread.

After an uncertain answer or a crash the outbox (``bot/outbox.py``) settles an
intent by looking: a forum post is found by the bot's authorship, its name and
its first message's last line (the article's own link line); a text channel's
article message the same way in the channel's history; a thread made from a
message has the message's id. Comment messages are found by their key line
(``bot/render.py``). Every read is paced under the global limit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

import discord

from bot.convert import article_of
from bot.pacing import Pacer
from bot.render import permalink_in, thread_name
from bot.untrusted import Untrusted
from storage.records import ArticleRecord

log = logging.getLogger(__name__)

HISTORY_WINDOW = 100
# How far before an intent's time settling starts reading (clock skew, slow sends).
SETTLE_MARGIN = timedelta(minutes=2)
MAX_SETTLE_MESSAGES = 5000
# The bot's own content messages; a thread made from a message also opens with a
# "thread starter" system message authored by the bot, which never counts.
CONTENT_TYPES = (discord.MessageType.default, discord.MessageType.reply)

Channel = discord.TextChannel | discord.ForumChannel


class DiscordReader:
    """Paced lookups of the bot's own threads and messages."""

    def __init__(self, client: discord.Client, pacer: Pacer, untrusted: Untrusted) -> None:
        self.client = client
        self.pacer = pacer
        self.untrusted = untrusted

    @property
    def me(self) -> int:
        assert self.client.user is not None
        return self.client.user.id

    async def messages_since(
        self, channel: discord.abc.Messageable, since: datetime
    ) -> list[discord.Message]:
        """Every message posted after ``since``, oldest first, one paced request a page.

        Settling reads from the intent's time on, not just the latest page: in a
        busy channel members may have posted more than a page since the send.
        """
        after: discord.abc.Snowflake = discord.Object(
            id=discord.utils.time_snowflake(since - SETTLE_MARGIN)
        )
        found: list[discord.Message] = []
        while len(found) < MAX_SETTLE_MESSAGES:
            async with self.pacer:
                page = [
                    m
                    async for m in channel.history(
                        limit=HISTORY_WINDOW, after=after, oldest_first=True
                    )
                ]
            found += page
            if len(page) < HISTORY_WINDOW:
                break
            after = page[-1]
        return found

    async def my_messages_since(
        self, channel: discord.abc.Messageable, since: datetime
    ) -> list[discord.Message]:
        """The bot's own content messages since ``since``, oldest first."""
        return [
            m
            for m in await self.messages_since(channel, since)
            if m.author.id == self.me and m.type in CONTENT_TYPES
        ]

    async def find_article_message(
        self, channel: discord.TextChannel, record: ArticleRecord, blog_title: str, since: datetime
    ) -> discord.Message | None:
        """The article's message in a text channel, posted after ``since``."""
        footer = await article_footer(self.untrusted, record, blog_title)
        for message in await self.my_messages_since(channel, since):
            if is_article_message(message.content, footer):
                return message
        return None

    async def thread_of(self, message_id: int) -> int | None:
        """The thread started from ``message_id`` (it has the message's id), if any."""
        try:
            async with self.pacer:
                thread = await self.client.fetch_channel(message_id)
        except discord.NotFound:
            return None
        return thread.id

    async def find_forum_post(
        self, forum: discord.ForumChannel, record: ArticleRecord, blog_title: str
    ) -> tuple[int, int] | None:
        """The article's forum post: ``(thread id, first message id)``."""
        name = thread_name(record.title, record.published)
        async with self.pacer:
            active = await forum.guild.active_threads()
        candidates = [
            t
            for t in active
            if t.parent_id == forum.id and t.owner_id == self.me and t.name == name
        ]
        async with self.pacer:  # HISTORY_WINDOW is at most one page: one request
            async for archived in forum.archived_threads(limit=HISTORY_WINDOW):
                if archived.owner_id == self.me and archived.name == name:
                    candidates.append(archived)
        footer = await article_footer(self.untrusted, record, blog_title)
        for thread in sorted(candidates, key=lambda t: t.id):
            try:
                async with self.pacer:
                    starter = await thread.fetch_message(thread.id)
            except discord.NotFound:
                continue
            if starter.author.id == self.me and is_article_message(starter.content, footer):
                return thread.id, starter.id
        return None


def forum_tags(forum: discord.ForumChannel, labels: Sequence[str]) -> list[discord.ForumTag]:
    """Tags named like the article's labels; a forum requiring a tag gets its first one."""
    wanted = {label.casefold() for label in labels}
    matched = [tag for tag in forum.available_tags if tag.name.casefold() in wanted][:5]
    if not matched and forum.flags.require_tag and forum.available_tags:
        matched = [forum.available_tags[0]]
    return matched


def image_embed(image_url: str | None) -> discord.Embed | None:
    if not image_url:
        return None
    return discord.Embed().set_image(url=image_url)


async def article_footer(untrusted: Untrusted, record: ArticleRecord, blog_title: str) -> str:
    """The last line of the article's message: its own link line."""
    rendered = await untrusted.render_article(article_of(record), blog_title=blog_title)
    return rendered.content.rstrip().splitlines()[-1]


def is_article_message(content: str, footer: str) -> bool:
    """Exactly this article's message: its last line is ``footer``.

    Matching the URL anywhere would also take another article whose excerpt links
    to this one (or ``?p=12`` for ``?p=1``).
    """
    lines = content.rstrip().splitlines()
    return bool(lines) and lines[-1] == footer and permalink_in(content) is None


def forbidden_text(
    channel: discord.abc.GuildChannel | discord.Thread,
    exc: discord.Forbidden | None,
    detail: str | None = None,
) -> str:
    where = f"#{channel.name}" if hasattr(channel, "name") else "the channel"
    reason = detail or (exc.text if exc is not None else "") or "Missing Permissions"
    return (
        f"The bot lacks a permission in {where} ({reason}): it needs View Channel, Send "
        "Messages, Send Messages in Threads, Create Public Threads, Embed Links and Read "
        "Message History."
    )

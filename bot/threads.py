"""Making an article's thread, exactly once, and finding it again after a lost answer.

A text channel's thread starts from the article message, which is sent with a
nonce (Discord de-duplicates it) and then threaded; Discord answers 160004 when
a message already has a thread, so both steps are safe to retry.

A forum post carries no nonce, and discord.py silently retries a forum post
that got a 500/502/504, which can make the post twice. So forum posts are made
with one request of our own that never retries by itself: on an uncertain
answer (5xx, reset, timeout) the forum is searched for the post (by the bot,
with the article's name, whose first message links the article) before trying
again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import discord

from bot.convert import article_of
from bot.pacing import Pacer
from bot.render import permalink_in, render_article, thread_name
from storage.records import ArticleRecord

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
ATTEMPTS = 4
HISTORY_WINDOW = 100
REQUEST_TIMEOUT = 30.0
# How far before an intent's time settling starts reading (clock skew, slow sends).
SETTLE_MARGIN = timedelta(minutes=2)
MAX_SETTLE_MESSAGES = 5000
UNCERTAIN = (discord.DiscordServerError, aiohttp.ClientError, TimeoutError, OSError)

Channel = discord.TextChannel | discord.ForumChannel


class ThreadError(Exception):
    """The thread cannot be made; the message says why, for the subscription's status."""


class UncertainAnswer(Exception):
    """Discord may or may not have done it: look before trying again."""


class ThreadMaker:
    """Creates and finds article threads for a client, paced under the global limit."""

    def __init__(
        self,
        client: discord.Client,
        pacer: Pacer,
        session: aiohttp.ClientSession | None = None,
        *,
        retry_delay: float = 1.0,
    ) -> None:
        self.client = client
        self.pacer = pacer
        self.session = session
        self.retry_delay = retry_delay
        self.request_timeout = REQUEST_TIMEOUT
        self._forum_not_before = 0.0

    @property
    def me(self) -> int:
        assert self.client.user is not None
        return self.client.user.id

    async def create(self, channel: Channel, record: ArticleRecord, nonce: str) -> tuple[int, int]:
        """Make the thread; returns ``(thread id, article message id)``."""
        rendered = render_article(article_of(record), blog_title="")
        name = thread_name(record.title, record.published)
        embed = image_embed(rendered.image_url)
        started = datetime.now(UTC)
        for attempt in range(ATTEMPTS):
            try:
                if isinstance(channel, discord.ForumChannel):
                    return await self._forum_post(channel, record, name, rendered.content, embed)
                async with self.pacer:
                    message = await channel.send(
                        rendered.content,
                        embed=embed or discord.utils.MISSING,
                        nonce=nonce,
                        allowed_mentions=NO_MENTIONS,
                    )
                return await self.thread_from(message, name), message.id
            except discord.Forbidden as exc:
                raise ThreadError(forbidden_text(channel, exc)) from exc
            except (UncertainAnswer, *UNCERTAIN) as exc:
                log.warning("Creating the thread for %s failed (%s); looking", record.url, exc)
                found = await self.find(channel, record, since=started)
                if found is not None:
                    return found
                await asyncio.sleep(self.retry_delay * (attempt + 1))
        raise ThreadError(f"Discord kept failing while creating the thread for {record.url}.")

    async def thread_from(self, message: discord.Message, name: str) -> int:
        """The thread started from ``message``, creating it if it does not exist yet."""
        for attempt in range(ATTEMPTS):
            try:
                async with self.pacer:
                    thread = await message.create_thread(name=name)
                return thread.id
            except discord.HTTPException as exc:
                # 160004: a thread has already been created for this message.
                if exc.code == 160004:
                    return message.id
                if not isinstance(exc, discord.DiscordServerError):
                    raise
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
            try:
                async with self.pacer:
                    existing = await self.client.fetch_channel(message.id)
                return existing.id
            except discord.NotFound:
                await asyncio.sleep(self.retry_delay * (attempt + 1))
        raise ThreadError("Discord kept failing while creating a thread.")

    async def messages_since(
        self, channel: discord.abc.Messageable, since: datetime
    ) -> list[discord.Message]:
        """Every message posted after ``since``, oldest first, one paced request a page.

        Settling reads from the intent's time on, not just the latest page: in a
        busy channel members may have posted more than a page since the send.
        """
        after: discord.abc.Snowflake = discord.Object(id=discord.utils.time_snowflake(since))
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

    async def find(
        self, channel: Channel, record: ArticleRecord, *, since: datetime | None = None
    ) -> tuple[int, int] | None:
        """The thread a lost answer may have created for ``record`` after ``since``."""
        if isinstance(channel, discord.ForumChannel):
            return await self._find_forum_post(channel, record)
        start = (since or datetime.now(UTC)) - SETTLE_MARGIN
        footer = article_footer(record)
        for message in await self.messages_since(channel, start):
            if message.author.id == self.me and is_article_message(message.content, footer):
                name = thread_name(record.title, record.published)
                return await self.thread_from(message, name), message.id
        return None

    async def _find_forum_post(
        self, forum: discord.ForumChannel, record: ArticleRecord
    ) -> tuple[int, int] | None:
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
        footer = article_footer(record)
        for thread in sorted(candidates, key=lambda t: t.id):
            try:
                async with self.pacer:
                    starter = await thread.fetch_message(thread.id)
            except discord.NotFound:
                continue
            if starter.author.id == self.me and is_article_message(starter.content, footer):
                return thread.id, starter.id
        return None

    async def _forum_post(
        self,
        forum: discord.ForumChannel,
        record: ArticleRecord,
        name: str,
        content: str,
        embed: discord.Embed | None,
    ) -> tuple[int, int]:
        """POST the forum post once; 429s wait and repeat (nothing was made)."""
        payload: dict[str, Any] = {
            "name": name,
            "applied_tags": [str(tag.id) for tag in forum_tags(forum, record.labels)],
            "message": {
                "content": content,
                "allowed_mentions": {"parse": []},
                "embeds": [embed.to_dict()] if embed else [],
            },
        }
        url = f"{discord.http.Route.BASE}/channels/{forum.id}/threads"
        headers = {
            "Authorization": f"Bot {self.client.http.token}",
            "User-Agent": self.client.http.user_agent,
            "Content-Type": "application/json",
        }
        session = await self._session()
        for _ in range(ATTEMPTS):
            wait = self._forum_not_before - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            async with (
                self.pacer,
                asyncio.timeout(self.request_timeout),
                session.post(url, data=json.dumps(payload), headers=headers) as resp,
            ):
                body = await resp.text()
                self._note_bucket(resp.headers)
                status = resp.status
            data = _json(body)
            if status in (200, 201) and isinstance(data, dict):
                thread_id = int(data["id"])
                message = data.get("message") or {}
                return thread_id, int(message.get("id") or thread_id)
            if status == 429:
                await asyncio.sleep(float(data.get("retry_after", 1)) if data else 1.0)
                continue
            if status >= 500:
                raise UncertainAnswer(f"HTTP {status}")
            text = data.get("message", body[:200]) if isinstance(data, dict) else body[:200]
            if status == 403:
                raise ThreadError(forbidden_text(forum, None, str(text)))
            raise ThreadError(f"Discord refused the forum post for {record.url}: {text}")
        raise UncertainAnswer("rate limited")

    def _note_bucket(self, headers: Any) -> None:
        if headers.get("X-RateLimit-Remaining") == "0":
            after = float(headers.get("X-RateLimit-Reset-After", "1"))
            self._forum_not_before = time.monotonic() + after

    async def _session(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession()
        return self.session

    async def close(self) -> None:
        if self.session is not None and not self.session.closed:
            await self.session.close()


def _json(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
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


def article_footer(record: ArticleRecord) -> str:
    """The last line of the article's message: its own link line."""
    rendered = render_article(article_of(record), blog_title="")
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

"""One way to write to Discord: ``send_once`` (nonce, timeout, retry, look).

Every Discord write of the mirror is an outbox intent (``storage/outbox.py``)
carried out by :func:`send_once`, whose answer is one of:

- the result (the message, the thread): the caller completes the intent with
  its effect, in one transaction;
- a :class:`Refusal`: Discord refused this one item for good (a 4xx other than
  401/403/404/429, e.g. 50035 on an embed it rejects). The item is set aside
  with Discord's reason; nothing else waits for it and it never counts as a
  failed poll;
- an exception for problems of the whole channel: :class:`PermissionProblem`
  (403), :class:`Gone` (404: the thread or channel was deleted), or
  :class:`DeliveryError` when Discord kept failing. The intent stays open and
  the next poll settles it.

An uncertain failure (5xx, reset, timeout) may have made the message. A send
with a nonce is simply repeated (Discord answers with the first message); a
write without one (a forum post) is first looked for. discord.py has no
timeout of its own, so one is set here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import aiohttp
import discord

from bot.convert import comment_of
from bot.pacing import Pacer
from bot.render import comment_key, key_in, permalink_in
from bot.threads import Channel, DiscordReader
from bot.untrusted import Untrusted
from storage import CommentRepo, Outbox
from storage.outbox import (
    Abandoned,
    ArticleMessagePosted,
    Effect,
    NewIntent,
    OutboxError,
    PartPosted,
    ThreadMade,
)
from storage.records import (
    ArticleRecord,
    ArticleState,
    CommentRecord,
    CommentState,
    Intent,
    IntentKind,
    Subscription,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

SEND_ATTEMPTS = 4
SEND_TIMEOUT = 30.0
UNCERTAIN = (discord.DiscordServerError, aiohttp.ClientError, TimeoutError, OSError)


class DeliveryError(Exception):
    """Delivery to a subscription's channel cannot go on; the message says why."""


class PermissionProblem(DeliveryError):
    """Discord answered 403: the bot lacks a permission where it writes."""

    def __init__(self, exc: discord.Forbidden) -> None:
        super().__init__(exc.text or "Missing Permissions")
        self.exc = exc


class Gone(DeliveryError):
    """Discord answered 404: the thread, channel or message is no longer there."""

    def __init__(self, exc: discord.NotFound) -> None:
        super().__init__(exc.text or "Not Found")
        self.code = exc.code


@dataclass(frozen=True, slots=True)
class Refusal:
    """Discord refused the item for good; ``reason`` is its code and message."""

    reason: str

    @classmethod
    def of(cls, exc: discord.HTTPException) -> Refusal:
        text = " ".join((exc.text or "").split())[:300] or "no reason given"
        return cls(f"{exc.code}: {text}" if exc.code else f"HTTP {exc.status}: {text}")


@dataclass(slots=True)
class SendPolicy:
    """How hard ``send_once`` tries; one policy for every kind of write."""

    pacer: Pacer
    timeout: float = SEND_TIMEOUT
    retry_delay: float = 1.0
    attempts: int = SEND_ATTEMPTS


async def send_once(
    policy: SendPolicy,
    attempt: Callable[[], Awaitable[T]],
    *,
    what: str,
    look: Callable[[], Awaitable[T | None]] | None = None,
) -> T | Refusal:
    """Make one Discord write happen once: ``attempt`` it, judge the answer, retry.

    ``attempt`` must be safe to repeat (a nonce) unless ``look`` is given, which
    is asked after each uncertain failure whether the write happened after all.
    """
    for number in range(policy.attempts):
        try:
            async with policy.pacer, asyncio.timeout(policy.timeout):
                return await attempt()
        except UNCERTAIN as exc:
            log.warning("%s failed (%r); %s", what, exc, "looking" if look else "retrying")
            if look is not None:
                found = await look()
                if found is not None:
                    return found
            await asyncio.sleep(policy.retry_delay * (number + 1))
        except discord.Forbidden as exc:
            raise PermissionProblem(exc) from exc
        except discord.NotFound as exc:
            raise Gone(exc) from exc
        except discord.HTTPException as exc:
            if exc.status in (401, 429):
                raise DeliveryError(f"Discord answered {exc.status} while {what}.") from exc
            log.warning("Discord refused %s: %s %s", what, exc.code, exc.text)
            return Refusal.of(exc)
    raise DeliveryError(f"Discord kept failing while {what}; will retry next poll.")


class Courier:
    """Completes outbox intents with their effects, and settles the ones a crash left open.

    Settling looks at what the channel shows, after the intent's time: the bot's
    own messages whose key line names the comment and part (never a member's
    message, and never one message for two intents), a forum post or article
    message by its name and link line. What is found completes the intent with
    its effect; what is not found was never made, and the intent is abandoned
    (the item is still pending and gets a new intent when it is sent).
    """

    def __init__(
        self,
        outbox: Outbox,
        comments: CommentRepo,
        reader: DiscordReader,
        policy: SendPolicy,
        untrusted: Untrusted,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.outbox = outbox
        self.comments = comments
        self.reader = reader
        self.untrusted = untrusted
        self.policy = policy
        self.clock = clock

    async def open(self, intents: Sequence[NewIntent]) -> list[Intent]:
        return await self.outbox.open(intents, now=self.clock())

    async def complete(
        self, intent: Intent, effect: Effect, *, then_open: Sequence[NewIntent] = ()
    ) -> list[Intent]:
        """Complete with ``effect``; if its target moved on meanwhile, complete as abandoned."""
        try:
            return await self.outbox.complete(intent, effect, now=self.clock(), then_open=then_open)
        except OutboxError as exc:
            log.warning("Outbox: %s; recorded as abandoned", exc)
        try:
            return await self.outbox.complete(
                intent, Abandoned(), now=self.clock(), then_open=then_open
            )
        except OutboxError:
            # Closed already (settled by a process that took over): only open the next.
            return await self.open(then_open)

    async def settle_article(
        self, sub: Subscription, channel: Channel, record: ArticleRecord
    ) -> None:
        """An interrupted thread creation: adopt the post, message or thread if it was made."""
        found = False  # one finding settles the article; its other intents close
        for intent in await self.outbox.open_for_article(record.id):
            effect: Effect = Abandoned()
            if (
                not found
                and intent.kind is not IntentKind.ARTICLE_EDIT
                and record.state == ArticleState.PENDING
            ):
                effect = await self._look_for_article(sub, channel, record, intent)
                found = not isinstance(effect, Abandoned)
            if isinstance(effect, ThreadMade):
                log.info("Settled: the thread of %s was made before", record.url)
            await self.complete(intent, effect)

    async def _look_for_article(
        self, sub: Subscription, channel: Channel, record: ArticleRecord, intent: Intent
    ) -> Effect:
        if isinstance(channel, discord.ForumChannel):
            found = await self.reader.find_forum_post(channel, record, sub.blog_title)
            return ThreadMade(*found) if found else Abandoned()
        message_id = record.starter_message_id
        if message_id is None:
            message = await self.reader.find_article_message(
                channel, record, sub.blog_title, intent.created_at
            )
            if message is None:
                return Abandoned()
            message_id = message.id
        thread_id = await self.reader.thread_of(message_id)
        if thread_id is not None:
            return ThreadMade(thread_id, message_id)
        if record.starter_message_id is None:
            return ArticleMessagePosted(message_id)
        return Abandoned()

    async def settle_thread(
        self, sub: Subscription, article_entry_id: str, thread: discord.Thread
    ) -> None:
        """Open intents in an article's thread: find each part that was sent."""
        intents = await self.outbox.open_in_channel(thread.id)
        if not intents:
            return
        mine = await self.reader.my_messages_since(
            thread, min(intent.created_at for intent in intents)
        )
        by_key: dict[tuple[str, int], discord.Message] = {}
        keyless: list[discord.Message] = []
        for sent in mine:
            found = key_in(sent.content)
            if found is None:
                keyless.append(sent)
            else:
                by_key.setdefault(found, sent)
        used: set[int] = set()
        for intent in intents:
            comment = await self.comments.get(intent.target_id)
            effect: Effect = Abandoned()
            if (
                intent.kind is IntentKind.COMMENT_PART
                and comment is not None
                and comment.state == CommentState.PENDING
                and comment.parts_sent == intent.part
            ):
                message: discord.Message | None
                if comment.keyed:
                    message = by_key.get((comment_key(sub.id, comment.entry_id), intent.part))
                else:
                    message = _keyless_match(keyless, comment, intent.part)
                if message is not None and message.id not in used:
                    used.add(message.id)
                    total = intent.total or len(
                        await self.untrusted.render_comment(comment_of(comment, article_entry_id))
                    )
                    effect = PartPosted(message.id, total=total)
                    log.info(
                        "Settled: comment %s part %d was sent before",
                        comment.entry_id,
                        intent.part,
                    )
            await self.complete(intent, effect)


def _keyless_match(
    mine: Sequence[discord.Message], comment: CommentRecord, part: int
) -> discord.Message | None:
    """A message sent before comment keys existed (schema v1): by permalink, then position.

    Part 0 carries the permalink in its header; a later part is the bot's next
    message after the previous part, one thread being delivered strictly in order.
    """
    if part == 0:
        if not comment.permalink:
            return None
        return next((m for m in mine if permalink_in(m.content) == comment.permalink), None)
    ids = [comment.message_id, *comment.extra_message_ids]
    previous = ids[part - 1] if len(ids) >= part else None
    if previous is None:
        return None
    later = [m for m in mine if m.id > previous]
    if later and permalink_in(later[0].content) is None:
        return later[0]
    return None

"""Delivery: pending articles and comments become Discord threads and messages, once.

The mirror decides what is sent and in what order; every write goes through
``send_once`` and is recorded in the outbox (``bot/outbox.py``,
``storage/outbox.py``): ordering here → ``send_once`` → outbox records.

- Articles get their threads oldest first. One that Discord refuses for good is
  set aside; the others go on.
- One thread's messages go strictly one after another (a lock per article),
  comments in publication order with a parent before its replies; different
  threads are delivered concurrently, each being its own rate-limit bucket.
- Before anything new goes into a thread, intents a crash left open there are
  settled from what the thread shows.
- Each message costs one write transaction: completing a message's intent opens
  the next one's (the next part, or the next comment's first part).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import discord

from bot.convert import article_of, comment_of
from bot.discord_rest import DiscordRest
from bot.order import delivery_order
from bot.outbox import (
    Courier,
    DeliveryError,
    Gone,
    PermissionProblem,
    Refusal,
    SendPolicy,
    send_once,
)
from bot.render import comment_key, render_article, render_comment, thread_name
from bot.threads import DiscordReader, forbidden_text, forum_tags, image_embed
from storage import ArticleRepo, CommentRepo, Outbox, SubscriptionRepo
from storage.outbox import (
    Abandoned,
    ArticleEdited,
    ArticleMessagePosted,
    CommentEdited,
    Effect,
    MessageGone,
    NewIntent,
    PartPosted,
    Refused,
    ThreadMade,
)
from storage.records import (
    ArticleRecord,
    ArticleState,
    CommentRecord,
    CommentState,
    IntentKind,
    Subscription,
)

__all__ = ["DeliveryError", "DeliverySummary", "Mirror", "Progress"]

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
THREAD_CONCURRENCY = 10
# Completed intents are kept this long (an audit trail), then pruned.
OUTBOX_RETENTION = timedelta(days=1)

Progress = Callable[[int, int], Awaitable[None]]
Channel = discord.TextChannel | discord.ForumChannel


@dataclass(slots=True)
class DeliverySummary:
    threads_created: int = 0
    comments_posted: int = 0
    edits: int = 0
    set_aside: int = 0
    skipped_locked: int = 0


@dataclass(frozen=True, slots=True)
class _Planned:
    """A comment about to be sent: its messages and what its first one replies to."""

    comment: CommentRecord
    parts: list[str]
    reference: int | None

    def intent(self, sub: Subscription, thread_id: int, part: int) -> NewIntent:
        return NewIntent(
            subscription_id=sub.id,
            kind=IntentKind.COMMENT_PART,
            target_id=self.comment.id,
            channel_id=thread_id,
            part=part,
            total=len(self.parts),
        )


class Mirror:
    """Sends a subscription's pending work to Discord."""

    def __init__(
        self,
        client: discord.Client,
        rest: DiscordRest,
        subscriptions: SubscriptionRepo,
        articles: ArticleRepo,
        comments: CommentRepo,
        outbox: Outbox,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.rest = rest
        self.subscriptions = subscriptions
        self.articles = articles
        self.comments = comments
        self.outbox = outbox
        self.clock = clock
        # Every REST request is made inside ``async with pacer`` (the global limit).
        self.policy = SendPolicy(rest.pacer)
        self.reader = DiscordReader(client, rest.pacer)
        self.courier = Courier(outbox, comments, self.reader, self.policy, clock=clock)
        self._locks: dict[int, asyncio.Lock] = {}

    def _lock(self, key: int) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def prune(self) -> int:
        """Forget completed intents older than ``OUTBOX_RETENTION``."""
        return await self.outbox.prune(self.clock() - OUTBOX_RETENTION)

    # --- the whole subscription -----------------------------------------------------

    async def deliver(
        self, sub: Subscription, *, progress: Progress | None = None
    ) -> DeliverySummary:
        """Create threads for pending articles, post pending comments, apply edits.

        A problem of the channel (deleted, a permission removed, Discord down) is
        raised as ``DeliveryError`` once everything else was tried; an item
        Discord refused is set aside and counted in the summary.
        """
        summary = DeliverySummary()
        channel = await self._channel(sub)
        failures: list[DeliveryError] = []
        for record in await self.articles.list_by_state(sub.id, ArticleState.PENDING):
            try:
                await self._ensure_thread(sub, channel, record, summary)
            except DeliveryError as exc:
                log.warning("No thread for %s: %s", record.url, exc)
                failures.append(exc)
        article_ids = set(await self.comments.articles_with_pending(sub.id))
        article_ids |= set(await self.comments.articles_needing_edit(sub.id))
        counts = await self.subscriptions.counts(sub.id)
        counter = _Counter(counts.pending_comments, progress)
        gate = asyncio.Semaphore(THREAD_CONCURRENCY)

        async def one(article_id: int) -> None:
            async with gate:
                await self.deliver_article(sub, article_id, summary, counter)

        results = await asyncio.gather(
            *(one(article_id) for article_id in sorted(article_ids)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, DeliveryError):
                failures.append(result)
            elif isinstance(result, BaseException):
                raise result
        for record in await self.articles.needing_edit(sub.id):
            await self._edit_article(sub, channel, record, summary)
        if failures:
            raise failures[0]
        return summary

    async def deliver_one(
        self, sub: Subscription, article_id: int, *, progress: Progress | None = None
    ) -> DeliverySummary:
        """Deliver one article: its thread if it has none, then its comments and edits."""
        summary = DeliverySummary()
        record = await self.articles.get(article_id)
        if record is None:
            return summary
        if record.state == ArticleState.PENDING:
            await self._ensure_thread(sub, await self._channel(sub), record, summary)
        pending = await self.comments.for_article(article_id, [CommentState.PENDING])
        await self.deliver_article(sub, article_id, summary, _Counter(len(pending), progress))
        return summary

    async def _channel(self, sub: Subscription) -> Channel:
        channel = self.client.get_channel(sub.channel_id)
        if channel is None:
            try:
                async with self.policy.pacer:
                    channel = await self.client.fetch_channel(sub.channel_id)
            except discord.NotFound:
                raise DeliveryError(
                    "The subscription's channel no longer exists: subscribe the blog again "
                    "in another channel."
                ) from None
            except discord.Forbidden:
                raise DeliveryError(
                    "The bot cannot see the subscription's channel: give it View Channel there."
                ) from None
        if not isinstance(channel, discord.TextChannel | discord.ForumChannel):
            raise DeliveryError("The subscription's channel is no longer a text or forum channel.")
        return channel

    # --- threads ----------------------------------------------------------------------

    async def _ensure_thread(
        self, sub: Subscription, channel: Channel, record: ArticleRecord, summary: DeliverySummary
    ) -> None:
        async with self._lock(record.id):
            fresh = await self.articles.get(record.id)
            if fresh is None or fresh.state != ArticleState.PENDING:
                return
            await self.courier.settle_article(sub, channel, fresh)
            fresh = await self.articles.get(record.id)
            if fresh is None or fresh.state != ArticleState.PENDING:
                return
            try:
                if isinstance(channel, discord.ForumChannel):
                    effect = await self._forum_post(sub, channel, fresh)
                else:
                    effect = await self._text_thread(sub, channel, fresh)
            except PermissionProblem as exc:
                raise DeliveryError(forbidden_text(channel, exc.exc)) from exc
            except Gone as exc:
                raise DeliveryError(f"#{channel.name} is gone: {exc}") from exc
            if isinstance(effect, ThreadMade):
                summary.threads_created += 1
                log.info("Created thread %s for %s", effect.thread_id, fresh.url)
            elif isinstance(effect, Refused):
                summary.set_aside += 1
                log.warning("Discord refused the thread of %s: %s", fresh.url, effect.reason)

    async def _forum_post(
        self, sub: Subscription, forum: discord.ForumChannel, record: ArticleRecord
    ) -> Effect:
        rendered = render_article(article_of(record), blog_title=sub.blog_title)
        embed = image_embed(rendered.image_url)
        payload: dict[str, Any] = {
            "name": thread_name(record.title, record.published),
            "applied_tags": [str(tag.id) for tag in forum_tags(forum, record.labels)],
            "message": {
                "content": rendered.content,
                "allowed_mentions": {"parse": []},
                "embeds": [embed.to_dict()] if embed else [],
            },
        }
        [intent] = await self.courier.open([_article_intent(sub, record, IntentKind.FORUM_POST)])
        made = await send_once(
            self.policy,
            lambda: self.rest.create_forum_post(forum.id, payload),
            what=f"creating the forum post for {record.url}",
            look=lambda: self.reader.find_forum_post(forum, record, sub.blog_title),
        )
        effect: Effect = Refused(made.reason) if isinstance(made, Refusal) else ThreadMade(*made)
        await self.courier.complete(intent, effect)
        return effect

    async def _text_thread(
        self, sub: Subscription, channel: discord.TextChannel, record: ArticleRecord
    ) -> Effect:
        """The article message (with a nonce), then the thread made from it."""
        starter = record.starter_message_id
        if starter is None:
            rendered = render_article(article_of(record), blog_title=sub.blog_title)
            embed = image_embed(rendered.image_url) or discord.utils.MISSING
            [intent] = await self.courier.open(
                [_article_intent(sub, record, IntentKind.ARTICLE_MESSAGE)]
            )
            sent = await send_once(
                self.policy,
                lambda: channel.send(
                    rendered.content, embed=embed, nonce=intent.nonce, allowed_mentions=NO_MENTIONS
                ),
                what=f"posting the article message of {record.url}",
            )
            if isinstance(sent, Refusal):
                await self.courier.complete(intent, Refused(sent.reason))
                return Refused(sent.reason)
            await self.courier.complete(intent, ArticleMessagePosted(sent.id))
            starter = sent.id
        message_id = starter
        [intent] = await self.courier.open(
            [_article_intent(sub, record, IntentKind.THREAD_FROM_MESSAGE)]
        )
        name = thread_name(record.title, record.published)
        made = await send_once(
            self.policy,
            lambda: self._thread_from(channel, message_id, name),
            what=f"creating the thread of {record.url}",
            look=lambda: self.reader.thread_of(message_id),
        )
        effect: Effect = (
            Refused(made.reason) if isinstance(made, Refusal) else ThreadMade(made, message_id)
        )
        await self.courier.complete(intent, effect)
        return effect

    async def _thread_from(self, channel: discord.TextChannel, message_id: int, name: str) -> int:
        try:
            thread = await channel.get_partial_message(message_id).create_thread(name=name)
        except discord.HTTPException as exc:
            if exc.code != 160004:  # "a thread has already been created for this message"
                raise
            found = await self.reader.thread_of(message_id)
            if found is None:
                raise
            return found
        return thread.id

    # --- comments ---------------------------------------------------------------------

    async def deliver_article(
        self,
        sub: Subscription,
        article_id: int,
        summary: DeliverySummary,
        counter: _Counter | None = None,
    ) -> None:
        """Apply an article's comment edits, then post its pending comments in order."""
        async with self._lock(article_id):
            record = await self.articles.get(article_id)
            if record is None or record.state != ArticleState.POSTED or record.thread_id is None:
                return
            thread = await self._thread(record)
            if thread is None:
                return
            if thread.locked:
                summary.skipped_locked += 1
                log.info("Thread %s (%s) is locked: comments wait", thread.id, record.url)
                return
            try:
                await self.courier.settle_thread(sub, record.entry_id, thread)
                await self._apply_comment_edits(sub, record, thread, summary)
                await self._post_pending(sub, record, thread, summary, counter)
            except PermissionProblem as exc:
                raise DeliveryError(forbidden_text(thread, exc.exc)) from exc
            except Gone as exc:
                if exc.code == 10003:  # the thread was deleted under us
                    await self.articles.detach_thread(thread.id)
                raise DeliveryError(f"Thread {thread.id} disappeared while posting.") from exc

    async def _thread(self, record: ArticleRecord) -> discord.Thread | None:
        assert record.thread_id is not None
        cached = self.client.get_channel(record.thread_id)
        if isinstance(cached, discord.Thread):
            return cached
        try:
            async with self.policy.pacer:
                fetched = await self.client.fetch_channel(record.thread_id)
        except discord.NotFound:
            await self.articles.detach_thread(record.thread_id)
            log.info("Thread of %s is gone: detached (only /blog resync recreates it)", record.url)
            return None
        return fetched if isinstance(fetched, discord.Thread) else None

    async def _post_pending(
        self,
        sub: Subscription,
        record: ArticleRecord,
        thread: discord.Thread,
        summary: DeliverySummary,
        counter: _Counter | None,
    ) -> None:
        """Post the pending comments, each message's completion opening the next intent."""
        pending = await self.comments.for_article(record.id, [CommentState.PENDING])
        if not pending:
            return
        ordered = delivery_order(
            pending,
            key=lambda c: c.entry_id,
            parent=lambda c: c.parent_entry_id,
            published=lambda c: c.published,
        )
        wanted = {c.parent_entry_id for c in ordered if c.parent_entry_id}
        parents = await self.comments.message_ids(sub.id, wanted)
        unavailable = await self.comments.entries_in_state(sub.id, wanted, CommentState.DELETED)
        queue = iter(ordered)

        async def plan_next() -> _Planned | None:
            for comment in queue:
                planned = self._plan(sub, record, comment, parents, unavailable)
                if comment.parts_sent < len(planned.parts):
                    return planned
                # The text got shorter than the parts already sent: nothing more to send.
                await self.comments.mark_complete(comment.id)
            return None

        current = await plan_next()
        if current is None:
            return
        part = current.comment.parts_sent
        [intent] = await self.courier.open([current.intent(sub, thread.id, part)])
        while current is not None:
            comment = current.comment
            sent = await send_once(
                self.policy,
                functools.partial(self._send_part, thread, current, part, intent.nonce),
                what=f"posting comment {comment.entry_id} in thread {thread.id}",
            )
            following: NewIntent | None = None
            if isinstance(sent, Refusal):
                effect: Effect = Refused(sent.reason)
                summary.set_aside += 1
                unavailable.add(comment.entry_id)
                done = True
            else:
                effect = PartPosted(sent.id)
                if part == 0:
                    parents[comment.entry_id] = sent.id
                done = part + 1 >= len(current.parts)
            if done:
                if not isinstance(sent, Refusal):
                    summary.comments_posted += 1
                    if counter is not None:
                        await counter.tick()
                current = await plan_next()
                if current is not None:
                    part = current.comment.parts_sent
                    following = current.intent(sub, thread.id, part)
            else:
                part += 1
                following = current.intent(sub, thread.id, part)
            opened = await self.courier.complete(
                intent, effect, then_open=[following] if following else []
            )
            if opened:
                intent = opened[0]

    def _plan(
        self,
        sub: Subscription,
        record: ArticleRecord,
        comment: CommentRecord,
        parents: dict[str, int],
        unavailable: set[str],
    ) -> _Planned:
        parent_id = comment.parent_entry_id
        reference = parents.get(parent_id) if parent_id else None
        missing = parent_id is not None and (reference is None or parent_id in unavailable)
        if comment.parts_sent > 0:
            # Resumed or grown by an edit: the next part answers the comment's first one.
            reference = comment.message_id
        parts = render_comment(
            comment_of(comment, record.entry_id),
            key=comment_key(sub.id, comment.entry_id) if comment.keyed else None,
            parent_missing=missing,
        )
        return _Planned(comment, parts, None if missing and not comment.parts_sent else reference)

    async def _send_part(
        self, thread: discord.Thread, planned: _Planned, part: int, nonce: str
    ) -> discord.Message:
        first_sent = part == planned.comment.parts_sent
        reference = planned.reference if first_sent else None
        if reference is None:
            return await thread.send(
                planned.parts[part],
                nonce=nonce,
                allowed_mentions=NO_MENTIONS,
                suppress_embeds=True,
            )
        return await thread.send(
            planned.parts[part],
            nonce=nonce,
            reference=discord.MessageReference(
                message_id=reference, channel_id=thread.id, fail_if_not_exists=False
            ),
            allowed_mentions=NO_MENTIONS,
            suppress_embeds=True,
            mention_author=False,
        )

    # --- edits ------------------------------------------------------------------------

    async def _apply_comment_edits(
        self,
        sub: Subscription,
        record: ArticleRecord,
        thread: discord.Thread,
        summary: DeliverySummary,
    ) -> None:
        """Edit changed comments' messages; surplus parts are deleted, missing ones queued."""
        for comment in await self.comments.needing_edit(record.id):
            if comment.message_id is None:
                continue
            if thread.archived:
                # Discord refuses edits in an archived thread (50083): reopen it first.
                await send_once(
                    self.policy,
                    lambda: thread.edit(archived=False),
                    what=f"reopening thread {thread.id}",
                )
            [intent] = await self.courier.open(
                [
                    NewIntent(
                        subscription_id=sub.id,
                        kind=IntentKind.COMMENT_EDIT,
                        target_id=comment.id,
                        channel_id=thread.id,
                    )
                ]
            )
            effect = await self._edit_comment(sub, record, thread, comment)
            await self.courier.complete(intent, effect)
            if isinstance(effect, CommentEdited):
                summary.edits += 1

    async def _edit_comment(
        self,
        sub: Subscription,
        record: ArticleRecord,
        thread: discord.Thread,
        comment: CommentRecord,
    ) -> Effect:
        assert comment.message_id is not None
        parts = render_comment(
            comment_of(comment, record.entry_id),
            key=comment_key(sub.id, comment.entry_id) if comment.keyed else None,
        )
        ids = [comment.message_id, *comment.extra_message_ids]
        for index, message_id in enumerate(ids[: len(parts)]):
            try:
                edited = await send_once(
                    self.policy,
                    functools.partial(
                        thread.get_partial_message(message_id).edit,
                        content=parts[index],
                        allowed_mentions=NO_MENTIONS,
                    ),
                    what=f"editing comment {comment.entry_id}",
                )
            except Gone:
                if index == 0:
                    return MessageGone()  # a moderator deleted it: never mirrored again
                continue
            if isinstance(edited, Refusal):
                return Refused(edited.reason)
        for message_id in ids[len(parts) :]:
            with contextlib.suppress(Gone):  # already deleted
                await send_once(
                    self.policy,
                    thread.get_partial_message(message_id).delete,
                    what=f"removing a surplus part of comment {comment.entry_id}",
                )
        kept = min(len(ids), len(parts))
        return CommentEdited(
            content_hash=comment.content_hash,
            parts_sent=kept,
            extra_message_ids=tuple(ids[1:kept]),
            more_to_send=len(parts) > len(ids),
        )

    async def _edit_article(
        self, sub: Subscription, channel: Channel, record: ArticleRecord, summary: DeliverySummary
    ) -> None:
        if record.starter_message_id is None or record.thread_id is None:
            return
        rendered = render_article(article_of(record), blog_title=sub.blog_title)
        forum = isinstance(channel, discord.ForumChannel)
        host_id = record.thread_id if forum else channel.id
        message = self.client.get_partial_messageable(host_id).get_partial_message(
            record.starter_message_id
        )
        [intent] = await self.courier.open(
            [_article_intent(sub, record, IntentKind.ARTICLE_EDIT, channel_id=host_id)]
        )
        effect: Effect = ArticleEdited(record.content_hash)
        try:
            if forum:
                # Discord refuses edits in an archived post (50083): reopen it first.
                thread = await self._thread(record)
                if thread is not None and thread.archived and not thread.locked:
                    await send_once(
                        self.policy,
                        lambda: thread.edit(archived=False),
                        what=f"reopening the post of {record.url}",
                    )
            edited = await send_once(
                self.policy,
                lambda: message.edit(
                    content=rendered.content,
                    embed=image_embed(rendered.image_url),
                    allowed_mentions=NO_MENTIONS,
                ),
                what=f"editing the article message of {record.url}",
            )
            if isinstance(edited, Refusal):
                effect = Refused(edited.reason)
        except Gone:
            log.info("Article message of %s is gone; not edited", record.url)
        except DeliveryError as exc:
            # One article that cannot be edited (a locked post) must not stop the rest.
            log.warning("Could not edit the article message of %s: %s", record.url, exc)
            await self.courier.complete(intent, Abandoned())  # still flagged: next poll
            return
        await self.courier.complete(intent, effect)
        summary.edits += isinstance(effect, ArticleEdited)


def _article_intent(
    sub: Subscription, record: ArticleRecord, kind: IntentKind, *, channel_id: int | None = None
) -> NewIntent:
    return NewIntent(
        subscription_id=sub.id,
        kind=kind,
        target_id=record.id,
        channel_id=sub.channel_id if channel_id is None else channel_id,
    )


class _Counter:
    """Counts posted comments and reports progress now and then."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total = total
        self.done = 0
        self.progress = progress

    async def tick(self) -> None:
        self.done += 1
        if self.progress is not None and (self.done % 20 == 0 or self.done == self.total):
            await self.progress(self.done, self.total)

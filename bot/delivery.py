"""Delivery: pending articles and comments become Discord threads and messages, once.

The mirror decides what is sent, in what order and how much at once; how one
item is sent is ``bot/writes.py``, every write going through ``send_once`` and
recorded in the outbox (``bot/outbox.py``, ``storage/outbox.py``): ordering
here → ``send_once`` → outbox records.

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
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import discord

from bot.convert import comment_of
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
from bot.render import comment_key
from bot.threads import Channel, DiscordReader, forbidden_text
from bot.untrusted import Untrusted
from bot.writes import Planned, Writer
from storage import ArticleRepo, CommentRepo, Outbox, SubscriptionRepo
from storage.outbox import (
    ArticleEdited,
    CommentEdited,
    Effect,
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
    PendingWork,
    Subscription,
)

__all__ = ["DeliveryError", "DeliverySummary", "Mirror", "Progress"]

log = logging.getLogger(__name__)

THREAD_CONCURRENCY = 10
# Completed intents are kept this long (an audit trail), then pruned.
OUTBOX_RETENTION = timedelta(days=1)

Progress = Callable[[int, int], Awaitable[None]]


@dataclass(slots=True)
class DeliverySummary:
    threads_created: int = 0
    comments_posted: int = 0
    edits: int = 0
    set_aside: int = 0
    skipped_locked: int = 0


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
        untrusted: Untrusted,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.rest = rest
        self.untrusted = untrusted
        self.subscriptions = subscriptions
        self.articles = articles
        self.comments = comments
        self.outbox = outbox
        self.clock = clock
        # Every REST request is made inside ``async with pacer`` (the global limit).
        self.policy = SendPolicy(rest.pacer)
        self.reader = DiscordReader(client, rest.pacer, untrusted)
        self.courier = Courier(outbox, comments, self.reader, self.policy, untrusted, clock=clock)
        self.writer = Writer(client, rest, self.reader, self.courier, self.policy, untrusted)
        self._locks: dict[int, asyncio.Lock] = {}

    def _lock(self, key: int) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def prune(self) -> int:
        """Forget completed intents older than ``OUTBOX_RETENTION``."""
        return await self.outbox.prune(self.clock() - OUTBOX_RETENTION)

    # --- the whole subscription -----------------------------------------------------

    async def deliver(
        self,
        sub: Subscription,
        *,
        progress: Progress | None = None,
        work: PendingWork | None = None,
    ) -> DeliverySummary:
        """Create threads for pending articles, post pending comments, apply edits.

        A problem of the channel (deleted, a permission removed, Discord down) is
        raised as ``DeliveryError`` once everything else was tried; an item
        Discord refused is set aside and counted in the summary. ``work``: what
        there is to do, if the caller read it already (``get_with_work``).
        """
        summary = DeliverySummary()
        channel = await self._channel(sub)  # a channel gone is an error even with nothing to send
        if work is None:
            work = await self.subscriptions.pending_work(sub.id)
        if not work:
            return summary  # most polls: one query, not one per kind of work
        failures: list[DeliveryError] = []
        waiting = (
            await self.articles.list_by_state(sub.id, ArticleState.PENDING) if work.threads else []
        )
        for record in waiting:
            try:
                await self._ensure_thread(sub, channel, record, summary)
            except DeliveryError as exc:
                log.warning("No thread for %s: %s", record.url, exc)
                failures.append(exc)
        article_ids: set[int] = set()
        if work.comments:
            article_ids |= set(await self.comments.articles_with_pending(sub.id))
            article_ids |= set(await self.comments.articles_needing_edit(sub.id))
        # The total only serves progress reports: no counting query on an ordinary poll.
        total = 0
        if progress is not None and article_ids:
            total = (await self.subscriptions.counts(sub.id)).pending_comments
        counter = _Counter(total, progress)
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
        edits = await self.articles.needing_edit(sub.id) if work.article_edits else []
        for record in edits:
            if record.starter_message_id is None or record.thread_id is None:
                continue
            forum_post = (
                await self._thread(record) if isinstance(channel, discord.ForumChannel) else None
            )
            effect = await self.writer.edit_article(sub, channel, record, forum_post)
            summary.edits += isinstance(effect, ArticleEdited)
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
                    effect = await self.writer.forum_post(sub, channel, fresh)
                else:
                    effect = await self.writer.text_thread(sub, channel, fresh)
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

        async def plan_next() -> Planned | None:
            for comment in queue:
                planned = await self._plan(sub, record, comment, parents, unavailable)
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
                functools.partial(self.writer.send_part, thread, current, part, intent.nonce),
                what=f"posting comment {comment.entry_id} in thread {thread.id}",
            )
            following: NewIntent | None = None
            if isinstance(sent, Refusal):
                effect: Effect = Refused(sent.reason)
                summary.set_aside += 1
                if part == 0:  # with its first message out, replies still point at it
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

    async def _plan(
        self,
        sub: Subscription,
        record: ArticleRecord,
        comment: CommentRecord,
        parents: dict[str, int],
        unavailable: set[str],
    ) -> Planned:
        parent_id = comment.parent_entry_id
        reference = parents.get(parent_id) if parent_id else None
        missing = parent_id is not None and (reference is None or parent_id in unavailable)
        if comment.parts_sent > 0:
            # Resumed or grown by an edit: the next part answers the comment's first one.
            reference = comment.message_id
        parts = await self.untrusted.render_comment(
            comment_of(comment, record.entry_id),
            key=comment_key(sub.id, comment.entry_id) if comment.keyed else None,
            parent_missing=missing,
        )
        return Planned(comment, parts, None if missing and not comment.parts_sent else reference)

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
            effect = await self.writer.edit_comment(sub, record, thread, comment)
            await self.courier.complete(intent, effect)
            if isinstance(effect, CommentEdited):
                summary.edits += 1


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

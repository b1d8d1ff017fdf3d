"""Delivery: pending articles and comments become Discord threads and messages, once.

Exactly-once (SPEC §5) rests on three habits:

1. Before each send an intent is recorded in SQLite; after it the message id.
2. Messages are sent with the intent's nonce (discord.py sets ``enforce_nonce``),
   so retrying a send whose answer was lost (5xx after the message was made, a
   reset connection, a timeout) gets the first message back instead of a copy.
3. A thread's open intents are settled before anything new is sent to it: the
   bot's own recent messages there are read, and the permalink each comment
   message carries says which comment it is. Members' messages never count.

One thread's messages go strictly one after another (a lock per article);
different threads are delivered concurrently, each being its own rate-limit
bucket in Discord. Those buckets discord.py honours by itself; the global limit
it only learns from a 429, so every REST request here first passes the shared
``Pacer`` (``bot/pacing.py``), which keeps the bot under it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import discord

from bot.convert import article_of, comment_of
from bot.order import delivery_order
from bot.pacing import Pacer
from bot.render import permalink_in, render_article, render_comment
from bot.threads import (
    SETTLE_MARGIN,
    UNCERTAIN,
    ThreadError,
    ThreadMaker,
    forbidden_text,
    image_embed,
)
from storage import ArticleRepo, CommentRepo, IntentRepo, SubscriptionRepo
from storage.records import (
    ArticleRecord,
    ArticleState,
    CommentRecord,
    CommentState,
    DeliveryIntent,
    Subscription,
)

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
# The bot's own content messages; a thread made from a message also opens with a
# "thread starter" system message authored by the bot, which never counts.
_CONTENT_TYPES = (discord.MessageType.default, discord.MessageType.reply)
SEND_ATTEMPTS = 4
THREAD_CONCURRENCY = 10

Progress = Callable[[int, int], Awaitable[None]]


class DeliveryError(Exception):
    """Delivery to a subscription's channel cannot go on; the message says why."""


@dataclass(slots=True)
class DeliverySummary:
    threads_created: int = 0
    comments_posted: int = 0
    edits: int = 0
    skipped_locked: int = 0
    errors: list[str] = field(default_factory=list)


class Mirror:
    """Sends a subscription's pending work to Discord."""

    def __init__(
        self,
        client: discord.Client,
        subscriptions: SubscriptionRepo,
        articles: ArticleRepo,
        comments: CommentRepo,
        intents: IntentRepo,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry_delay: float = 1.0,
        pacer: Pacer | None = None,
        send_timeout: float = 30.0,
    ) -> None:
        self.client = client
        self.subscriptions = subscriptions
        self.articles = articles
        self.comments = comments
        self.intents = intents
        self.clock = clock
        self.retry_delay = retry_delay
        # Every REST request below is made inside ``async with self.pacer`` (the
        # global rate limit); one pacer for all threads and subscriptions.
        self.pacer = pacer or Pacer()
        self.threads = ThreadMaker(client, self.pacer, retry_delay=retry_delay)
        # discord.py has no request timeout of its own: a send whose answer never
        # comes is given up after this long and resent with the same nonce.
        self.send_timeout = send_timeout
        self._locks: dict[int, asyncio.Lock] = {}

    def _lock(self, key: int) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    @property
    def _me(self) -> int:
        assert self.client.user is not None
        return self.client.user.id

    # --- the whole subscription -----------------------------------------------------

    async def deliver(
        self, sub: Subscription, *, progress: Progress | None = None
    ) -> DeliverySummary:
        """Create threads for pending articles, post pending comments, apply edits."""
        summary = DeliverySummary()
        channel = await self._channel(sub)
        failures: list[DeliveryError] = []
        for record in await self.articles.list_by_state(sub.id, ArticleState.PENDING):
            try:
                await self._ensure_thread(sub, channel, record, summary)
            except DeliveryError as exc:
                # One article Discord refuses must not hold back the others.
                log.warning("No thread for %s: %s", record.url, exc)
                failures.append(exc)
        article_ids = set(await self.comments.articles_with_pending(sub.id))
        article_ids |= set(await self.comments.articles_needing_edit(sub.id))
        total = await self._pending_comment_count(sub)
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
        for record in await self.articles.needing_edit(sub.id):
            await self._edit_article(channel, record, summary)
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
            channel = await self._channel(sub)
            await self._ensure_thread(sub, channel, record, summary)
        pending = await self.comments.for_article(article_id, [CommentState.PENDING])
        await self.deliver_article(sub, article_id, summary, _Counter(len(pending), progress))
        return summary

    async def close(self) -> None:
        await self.threads.close()

    async def _pending_comment_count(self, sub: Subscription) -> int:
        counts = await self.subscriptions.counts(sub.id)
        return counts.pending_comments

    async def _channel(self, sub: Subscription) -> discord.TextChannel | discord.ForumChannel:
        channel = self.client.get_channel(sub.channel_id)
        if channel is None:
            try:
                async with self.pacer:
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
        self,
        sub: Subscription,
        channel: discord.TextChannel | discord.ForumChannel,
        record: ArticleRecord,
        summary: DeliverySummary,
    ) -> None:
        async with self._lock(record.id):
            fresh = await self.articles.get(record.id)
            if fresh is None or fresh.state != ArticleState.PENDING:
                return
            await self._settle_thread_intents(channel, fresh)
            fresh = await self.articles.get(record.id)
            if fresh is None or fresh.state != ArticleState.PENDING:
                return
            intent = await self.intents.open(
                subscription_id=sub.id,
                kind="thread",
                target_id=fresh.id,
                channel_id=channel.id,
                now=self.clock(),
            )
            try:
                thread_id, starter_id = await self.threads.create(channel, fresh, intent.nonce)
            except ThreadError as exc:
                raise DeliveryError(str(exc)) from exc
            await self.articles.mark_posted(
                fresh.id, thread_id=thread_id, starter_message_id=starter_id
            )
            await self.intents.complete(intent.id, message_id=starter_id, now=self.clock())
            summary.threads_created += 1
            log.info("Created thread %s for %s", thread_id, fresh.url)

    async def _settle_thread_intents(
        self, channel: discord.TextChannel | discord.ForumChannel, record: ArticleRecord
    ) -> None:
        """An interrupted thread creation: adopt the thread if it was made."""
        for intent in await self.intents.unfinished_for_channel(channel.id):
            if intent.kind != "thread" or intent.target_id != record.id:
                continue
            found = await self.threads.find(channel, record, since=intent.created_at)
            if found is not None:
                thread_id, starter_id = found
                await self.articles.mark_posted(
                    record.id, thread_id=thread_id, starter_message_id=starter_id
                )
                log.info("Settled: thread %s for %s was created before", thread_id, record.url)
            await self.intents.complete(
                intent.id, message_id=found[1] if found else None, now=self.clock()
            )

    # --- comments ---------------------------------------------------------------------

    async def deliver_article(
        self,
        sub: Subscription,
        article_id: int,
        summary: DeliverySummary,
        counter: _Counter | None = None,
    ) -> None:
        """Post an article's pending comments in order and apply its comment edits."""
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
            await self._settle_comment_intents(thread)
            await self._post_pending(sub, record, thread, summary, counter)
            await self._apply_comment_edits(record, thread, summary)

    async def _thread(self, record: ArticleRecord) -> discord.Thread | None:
        assert record.thread_id is not None
        cached = self.client.get_channel(record.thread_id)
        if isinstance(cached, discord.Thread):
            return cached
        try:
            async with self.pacer:
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
        pending = await self.comments.for_article(record.id, [CommentState.PENDING])
        if not pending:
            return
        ordered = delivery_order(
            pending,
            key=lambda c: c.entry_id,
            parent=lambda c: c.parent_entry_id,
            published=lambda c: c.published,
        )
        parents = await self.comments.message_ids(
            sub.id, {c.parent_entry_id for c in ordered if c.parent_entry_id}
        )
        deleted_parents = await self.comments.entries_in_state(
            sub.id, {c.parent_entry_id for c in ordered if c.parent_entry_id}, CommentState.DELETED
        )
        for comment in ordered:
            parent_message = parents.get(comment.parent_entry_id or "")
            missing = comment.parent_entry_id is not None and (
                parent_message is None or comment.parent_entry_id in deleted_parents
            )
            if missing:
                parent_message = None
            message_id = await self._post_comment(
                sub, record, thread, comment, parent_message, missing
            )
            parents[comment.entry_id] = message_id
            summary.comments_posted += 1
            if counter is not None:
                await counter.tick()

    async def _post_comment(
        self,
        sub: Subscription,
        record: ArticleRecord,
        thread: discord.Thread,
        comment: CommentRecord,
        parent_message: int | None,
        parent_missing: bool,
    ) -> int:
        parts = render_comment(comment_of(comment, record.entry_id), parent_missing=parent_missing)
        first_id = comment.message_id
        for part in range(comment.parts_sent, len(parts)):
            reference = None
            if part == 0 and parent_message is not None:
                reference = discord.MessageReference(
                    message_id=parent_message, channel_id=thread.id, fail_if_not_exists=False
                )
            intent = await self.intents.open(
                subscription_id=sub.id,
                kind="comment",
                target_id=comment.id,
                part=part,
                channel_id=thread.id,
                now=self.clock(),
            )
            message_id = await self._send(thread, parts[part], intent, reference)
            await self.comments.record_part(
                comment.id, part=part, message_id=message_id, total_parts=len(parts)
            )
            await self.intents.complete(intent.id, message_id=message_id, now=self.clock())
            if part == 0:
                first_id = message_id
        if comment.parts_sent >= len(parts):
            await self.comments.finish_parts(comment.id)
        assert first_id is not None
        return first_id

    async def _send(
        self,
        thread: discord.Thread,
        content: str,
        intent: DeliveryIntent,
        reference: discord.MessageReference | None,
    ) -> int:
        """Send with the intent's nonce; on an uncertain failure resend the same nonce."""
        for attempt in range(SEND_ATTEMPTS):
            try:
                async with self.pacer, asyncio.timeout(self.send_timeout):
                    if reference is None:
                        message = await thread.send(
                            content,
                            nonce=intent.nonce,
                            allowed_mentions=NO_MENTIONS,
                            suppress_embeds=True,
                        )
                    else:
                        message = await thread.send(
                            content,
                            nonce=intent.nonce,
                            reference=reference,
                            allowed_mentions=NO_MENTIONS,
                            suppress_embeds=True,
                            mention_author=False,
                        )
                return message.id
            except discord.Forbidden as exc:
                raise DeliveryError(forbidden_text(thread, exc)) from exc
            except discord.NotFound as exc:
                if exc.code == 10003:  # the thread was deleted under us
                    await self.articles.detach_thread(thread.id)
                raise DeliveryError(f"Thread {thread.id} disappeared while posting.") from exc
            except UNCERTAIN as exc:
                log.warning(
                    "Send to thread %s failed (%s); retrying with the same nonce", thread.id, exc
                )
                await asyncio.sleep(self.retry_delay * (attempt + 1))
        raise DeliveryError(
            f"Discord kept failing while posting in thread {thread.id}; will retry next poll."
        )

    async def _settle_comment_intents(self, thread: discord.Thread) -> None:
        """Match open intents in this thread to the bot's own recent messages."""
        intents = await self.intents.unfinished_for_channel(thread.id)
        if not intents:
            return
        since = min(intent.created_at for intent in intents) - SETTLE_MARGIN
        mine = [
            m
            for m in await self.threads.messages_since(thread, since)
            if m.author.id == self._me and m.type in _CONTENT_TYPES
        ]
        mine.sort(key=lambda m: m.id)
        by_permalink: dict[str, discord.Message] = {}
        for message in mine:
            link = permalink_in(message.content)
            if link is not None:
                by_permalink.setdefault(link, message)
        for intent in intents:
            comment = await self.comments.get(intent.target_id)
            found: discord.Message | None = None
            if comment is not None and intent.kind == "comment":
                if intent.part == 0:
                    found = by_permalink.get(comment.permalink)
                else:
                    found = _continuation(mine, comment, intent.part)
                if found is not None and comment.parts_sent <= intent.part:
                    total = intent.part + 2  # more parts may follow; the send loop decides
                    await self.comments.record_part(
                        comment.id, part=intent.part, message_id=found.id, total_parts=total
                    )
                    log.info(
                        "Settled: comment %s part %d was sent before", comment.entry_id, intent.part
                    )
            await self.intents.complete(
                intent.id, message_id=found.id if found else None, now=self.clock()
            )

    async def _apply_comment_edits(
        self, record: ArticleRecord, thread: discord.Thread, summary: DeliverySummary
    ) -> None:
        for comment in await self.comments.needing_edit(record.id):
            if comment.message_id is None:
                continue
            parts = render_comment(comment_of(comment, record.entry_id))
            ids = [comment.message_id, *comment.extra_message_ids]
            if thread.archived:
                # Discord refuses edits in an archived thread (50083): reopen it first.
                async with self.pacer:
                    await thread.edit(archived=False)
            try:
                for index, message_id in enumerate(ids):
                    text = parts[index] if index < len(parts) else "*(removed on the blog)*"
                    async with self.pacer:
                        await thread.get_partial_message(message_id).edit(
                            content=text, allowed_mentions=NO_MENTIONS
                        )
            except discord.NotFound:
                await self.comments.mark_message_deleted(comment.message_id)
                continue
            await self.comments.clear_edit(comment.id, comment.content_hash)
            summary.edits += 1

    async def _edit_article(
        self,
        channel: discord.TextChannel | discord.ForumChannel,
        record: ArticleRecord,
        summary: DeliverySummary,
    ) -> None:
        if record.starter_message_id is None or record.thread_id is None:
            return
        rendered = render_article(article_of(record), blog_title="")
        host_id = record.thread_id if isinstance(channel, discord.ForumChannel) else channel.id
        message = self.client.get_partial_messageable(host_id).get_partial_message(
            record.starter_message_id
        )
        try:
            if isinstance(channel, discord.ForumChannel):
                # Discord refuses edits in an archived post (50083): reopen it first.
                thread = await self._thread(record)
                if thread is None:
                    return
                if thread.archived and not thread.locked:
                    async with self.pacer:
                        await thread.edit(archived=False)
            async with self.pacer:
                await message.edit(
                    content=rendered.content,
                    embed=image_embed(rendered.image_url),
                    allowed_mentions=NO_MENTIONS,
                )
        except discord.NotFound:
            log.info("Article message of %s is gone; not edited", record.url)
        except discord.HTTPException as exc:
            # One article that cannot be edited (a locked post) must not stop the rest.
            log.warning("Could not edit the article message of %s: %s", record.url, exc)
            return
        await self.articles.clear_edit(record.id, record.content_hash)
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


def _continuation(
    mine: Sequence[discord.Message], comment: CommentRecord, part: int
) -> discord.Message | None:
    """Part ``part`` of a long comment: the bot's next message after the previous part.

    One thread is delivered strictly in order, so what directly follows the
    previous part, if it is not another comment's first message, is this part.
    """
    previous = (
        comment.message_id
        if part == 1
        else (
            comment.extra_message_ids[part - 2]
            if len(comment.extra_message_ids) >= part - 1
            else None
        )
    )
    if previous is None:
        return None
    later = [m for m in mine if m.id > previous]
    if later and permalink_in(later[0].content) is None:
        return later[0]
    return None

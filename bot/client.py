"""The discord.py Bot subclass: holds the injected services, loads the cogs, syncs commands."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import discord
from discord.ext import commands

from bot.delivery import DeliveryError, DeliverySummary, Mirror, Progress
from bot.discord_rest import DiscordRest
from bot.fetch import Fetcher
from bot.ingest import Ingestor
from bot.leasekeeper import LeaseKeeper
from bot.metrics import Metrics
from bot.polling import HealthChange, Poller, PollOutcome
from bot.render import escape_text
from bot.resync import Resyncer
from bot.service import BlogService
from bot.settings import Settings
from bot.untrusted import Untrusted
from bot.websub import WebSub
from storage import ArticleRepo, CommentRepo, Database, Outbox, SubscriptionRepo
from storage.leases import leases_for
from storage.push import PushRepo
from storage.records import PendingWork, Subscription, SubscriptionState
from storage.subscriptions import PollStart, Shards

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.mirror", "cogs.polling", "cogs.commands")
BUSY_ELSEWHERE = (
    "Another bot process is working on this blog right now (a restart overlapping); "
    "try again in a minute."
)


def bot_intents() -> discord.Intents:
    """Only what the bot needs: guilds (channels, threads) and guild message events.

    No privileged intent: the bot never reads message content from events; it
    only needs MESSAGE_DELETE (a moderator removing a mirrored message) and
    thread events, and reads its own messages back through the REST API.
    """
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    return intents


class BlogMirrorBot(commands.AutoShardedBot):
    """The bot. Everything long-lived is created in ``main()`` and passed in.

    Always discord.py's sharded bot: with ``SHARD_COUNT``/``SHARD_IDS`` unset it
    runs every shard Discord recommends (one for a small bot) in this process;
    with ``SHARD_IDS`` naming some of them, it polls and delivers only the
    subscriptions of guilds on those shards (SPEC §8).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        fetcher: Fetcher,
        rest: DiscordRest,
        untrusted: Untrusted,
        metrics: Metrics,
        **options: Any,
    ) -> None:
        # Every answer discord.py's HTTP client gets is seen by the metrics (429s, sends).
        options.setdefault("http_trace", metrics.discord_trace)
        if settings.shard_count is not None:
            options.setdefault("shard_count", settings.shard_count)
        if settings.shard_ids is not None:
            options.setdefault("shard_ids", list(settings.shard_ids))
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=bot_intents(),
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            **options,
        )
        self.settings = settings
        self.db = db
        self.metrics = metrics
        # Who this process is, in the leases it holds (several may share PostgreSQL).
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.leases = leases_for(db, self.holder)
        self.lease_keeper = LeaseKeeper(self.leases)
        self.subscriptions = SubscriptionRepo(db)
        self.articles = ArticleRepo(db)
        self.comments = CommentRepo(db)
        self.outbox = Outbox(db)
        self.untrusted = untrusted
        self.ingestor = Ingestor(
            fetcher, self.subscriptions, self.articles, self.comments, untrusted
        )
        # WebSub push (SPEC §6) needs a public URL reaching our own web server.
        self.websub: WebSub | None = None
        if settings.public_url is not None and settings.web_port is not None:
            self.websub = WebSub(
                PushRepo(db),
                fetcher.session,
                public_url=settings.public_url,
                allow_private=settings.allow_private_addresses,
                on_notify=self.on_push,
                max_body_bytes=settings.max_feed_bytes,
            )
        self.poller = Poller(self.ingestor, self.subscriptions, metrics=metrics, push=self.websub)
        self.mirror = Mirror(
            self, rest, self.subscriptions, self.articles, self.comments, self.outbox, untrusted
        )
        self.service = BlogService(
            fetcher,
            self.subscriptions,
            self.articles,
            self.ingestor,
            self.poller,
            untrusted,
            default_interval=settings.poll_interval_seconds,
            push=self.websub,
        )
        self.resyncer = Resyncer(
            self.subscriptions, self.articles, self.comments, self.ingestor, self.mirror
        )
        self._cycle_locks: dict[int, asyncio.Lock] = {}
        self._read_ahead: dict[int, PollStart | None] = {}
        """What the scheduler read for the cycles of a batch it claimed (``read_ahead``);
        None while the read is under way."""
        self._active_cycles: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.stopping = asyncio.Event()
        """Set as soon as ``close()`` begins: ends a start-up wait at once (``bot.startup``)."""

    async def setup_hook(self) -> None:
        await self.service.follow_default_interval()
        if self.websub is not None:
            self.websub.start()
        # A log-in retried at start (bot.startup) runs this again: load only what is not loaded.
        for extension in EXTENSIONS:
            if extension not in self.extensions:
                await self.load_extension(extension)
        if self.settings.dev_guild_id is not None:
            guild = discord.Object(id=self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("Synced %d command(s) to guild %s", len(synced), guild.id)
        else:
            synced = await self.tree.sync()
            log.info("Synced %d command(s) globally (may take a while to appear)", len(synced))

    async def close(self) -> None:
        """Stop polling and delivering before the HTTP session goes away.

        A cycle cancelled mid-send leaves its intent open; the next start
        settles it from the thread, so nothing is lost or sent twice.
        """
        self._closing = True  # no new cycle starts from here on
        self.stopping.set()
        current = asyncio.current_task()
        pending = [t for t in self._active_cycles if t is not current and not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)
        await self.lease_keeper.close()
        if self.websub is not None:
            await self.websub.stop()
        await super().close()

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info("Connected as %s (%s) to %d guild(s)", self.user, self.user.id, len(self.guilds))

    # --- one poll-and-deliver cycle, shared by the scheduler and the commands -------

    async def on_push(self, subscription_id: int) -> None:
        """A hub's signed notification: poll and deliver now, through the normal cycle.

        A subscription of a guild on another process's shards is only made due
        now; that process's scheduler takes it on its next one-second tick.
        """
        sub = await self.subscriptions.get(subscription_id)
        if sub is None or sub.state != SubscriptionState.ACTIVE:
            return
        shards = self.local_shards()
        if shards is not None and not shards.owns(sub.guild_id):
            await self.subscriptions.poll_soon(sub.id, datetime.now(UTC))
            return
        result = await self.cycle(sub.id)
        if result.outcome is None and result.error == BUSY_ELSEWHERE:
            # Another process is on it; its poll may have fetched before the news.
            await self.subscriptions.poll_soon(sub.id, datetime.now(UTC))

    def subscription_lock(self, subscription_id: int) -> asyncio.Lock:
        """The lock a cycle, or a command changing the subscription, holds while it works.

        Whoever takes it may change what the scheduler read ahead for the
        subscription, so that read is dropped here: the cycle reads afresh.
        """
        self.changed(subscription_id)
        return self._cycle_locks.setdefault(subscription_id, asyncio.Lock())

    def changed(self, subscription_id: int) -> None:
        """A command changed the subscription (``/blog pause``, ``/blog edit``): what the
        scheduler read ahead for its next cycle is stale, so that cycle reads afresh."""
        self._read_ahead.pop(subscription_id, None)

    def subscription_busy(self, subscription_id: int) -> bool:
        """True while a cycle or a command holds the subscription's lock."""
        lock = self._cycle_locks.get(subscription_id)
        return lock is not None and lock.locked()

    async def read_ahead(self, subscription_ids: Sequence[int]) -> None:
        """Read what the cycles of a claimed batch start from, in one query for all.

        An idle poll otherwise costs a query of its own before its two
        conditional GETs. A subscription whose lock is held is left out, and a
        read that someone takes the lock of meanwhile is not kept: each cycle
        starts from what was stored after the last work on its subscription.
        A command answered by another process (``/blog pause``) is seen by the
        next poll, as it is when it lands while a poll is in flight.
        """
        ids = [id_ for id_ in subscription_ids if not self.subscription_busy(id_)]
        for id_ in ids:
            self._read_ahead[id_] = None
        starts: dict[int, PollStart] = {}
        try:
            starts = await self.subscriptions.get_for_poll_many(ids)
        finally:  # on failure too: the cycles then read their own
            for id_ in ids:
                if id_ in self._read_ahead and self._read_ahead[id_] is None:
                    start = starts.get(id_)
                    if start is None:
                        del self._read_ahead[id_]
                    else:
                        self._read_ahead[id_] = start

    def forget(self, subscription_id: int) -> None:
        """Drop in-memory state of a removed subscription (its ids are never reused)."""
        self._cycle_locks.pop(subscription_id, None)
        self._read_ahead.pop(subscription_id, None)
        self.ingestor.forget(subscription_id)

    def local_shards(self) -> Shards | None:
        """The shards this process runs, or None when it runs them all."""
        count, ids = self.shard_count, self.shard_ids
        if count is None or ids is None or len(set(ids)) >= count:
            return None
        return Shards(count, tuple(sorted(ids)))

    async def cycle(
        self,
        subscription_id: int,
        *,
        progress: Progress | None = None,
        poll: bool = True,
        claimed_at: datetime | None = None,
    ) -> CycleResult:
        """Poll the subscription (unless ``poll`` is false) and deliver what is pending.

        It is read afresh here, so callers name it by id. Never raises for feed
        or delivery problems: they are recorded on the subscription (``/blog
        status``) and, on a state change, told to the guild's log channel.
        ``claimed_at``: when the caller claimed its lease.
        """
        if self._closing:
            return CycleResult(None, None, "The bot is stopping.")
        task = asyncio.current_task()
        if task is not None:
            self._active_cycles.add(task)
        try:
            async with self.lease_keeper.hold(subscription_id, claimed_at=claimed_at) as ours:
                if not ours:
                    self._read_ahead.pop(subscription_id, None)
                    return CycleResult(None, None, BUSY_ELSEWHERE)
                return await self._cycle(subscription_id, progress, poll)
        finally:
            if task is not None:
                self._active_cycles.discard(task)

    async def _cycle(
        self, subscription_id: int, progress: Progress | None, poll: bool
    ) -> CycleResult:
        start = self._read_ahead.pop(subscription_id, None)
        lock = self.subscription_lock(subscription_id)
        if lock.locked() or not poll:
            start = None  # other work on it comes first: what was read may be stale
        async with lock:
            if start is None:
                start = await self.subscriptions.get_for_poll(subscription_id)
            if start is None:
                return CycleResult(None, None, "The subscription was removed.")
            fresh = start.subscription
            outcome = await self.poller.poll(fresh, start.validators) if poll else None
            delivery: DeliverySummary | None = None
            error = outcome.error if outcome else None
            current: Subscription | None
            work: PendingWork | None
            if outcome is not None and _found_nothing(outcome) and not start.work:
                # Most polls: nothing new, nothing left over, so no second query.
                # Delivery still runs, to notice a channel that is gone.
                current, work = fresh, start.work
            else:
                after = await self.subscriptions.get_with_work(subscription_id)
                current, work = after if after is not None else (None, None)
            if current is not None and current.state == SubscriptionState.ACTIVE:
                delivery_error: str | None = None
                try:
                    delivery = await self.mirror.deliver(current, progress=progress, work=work)
                except DeliveryError as exc:
                    delivery_error = str(exc)
                except Exception:
                    log.exception("Delivery for %s failed unexpectedly", current.feed_url)
                    delivery_error = "Internal error while posting to Discord (see the bot's log)."
                if delivery_error is not None and error is None:
                    # Counted from before the poll, whose success reset the count.
                    error = delivery_error
                    outcome = await self.poller.record_failure(fresh, error)
                elif delivery_error is not None:
                    log.warning("Delivery for %s failed too: %s", current.feed_url, delivery_error)
            if outcome is not None and outcome.change is not None and current is not None:
                await self.report_health(current, outcome)
            return CycleResult(outcome, delivery, error)

    async def report_health(self, sub: Subscription, outcome: PollOutcome) -> None:
        """One message per state change in the guild's log channel, if it has one."""
        channel_id = await self.subscriptions.log_channel(sub.guild_id)
        if channel_id is None:
            return
        name = sub.display_name
        if outcome.change is HealthChange.FAILING:
            text = (
                f"⚠️ **{escape_text(name)}** is failing: {outcome.failures} polls in a row "
                f"went wrong. Last error: {escape_text(outcome.error or 'unknown')}"
            )
        elif outcome.change is HealthChange.DISABLED:
            text = (
                f"⛔ **{escape_text(name)}** was disabled after {outcome.failures} failed polls. "
                f"Last error: {escape_text((outcome.error or 'unknown').rstrip('.'))}. "
                "Fix the feed, then run `/blog resume`."
            )
        else:
            text = f"✅ **{escape_text(name)}** recovered: polling works again."
        try:
            await self.get_partial_messageable(channel_id).send(
                text, allowed_mentions=discord.AllowedMentions.none()
            )
        except discord.HTTPException as exc:
            log.warning("Could not post to log channel %s: %s", channel_id, exc)


def _found_nothing(outcome: PollOutcome) -> bool:
    """A successful poll that stored nothing for delivery (304s, or nothing new)."""
    summary = outcome.summary
    return summary is not None and not (
        summary.new_articles
        or summary.changed_articles
        or summary.new_comments
        or summary.changed_comments
    )


@dataclass(frozen=True, slots=True)
class CycleResult:
    outcome: PollOutcome | None
    delivery: DeliverySummary | None
    error: str | None

"""The discord.py Bot subclass: holds the injected services, loads the cogs, syncs commands."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import discord
from discord.ext import commands

from bot.delivery import DeliveryError, DeliverySummary, Mirror, Progress
from bot.discord_rest import DiscordRest
from bot.fetch import Fetcher
from bot.ingest import Ingestor
from bot.polling import HealthChange, Poller, PollOutcome
from bot.render import escape_text
from bot.resync import Resyncer
from bot.service import BlogService
from bot.settings import Settings
from bot.untrusted import Untrusted
from storage import ArticleRepo, CommentRepo, Database, Outbox, SubscriptionRepo
from storage.records import Subscription, SubscriptionState

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.mirror", "cogs.polling", "cogs.commands")


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


class BlogMirrorBot(commands.Bot):
    """The bot. Everything long-lived is created in ``main()`` and passed in."""

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        fetcher: Fetcher,
        rest: DiscordRest,
        untrusted: Untrusted,
        **options: Any,
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=bot_intents(),
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            **options,
        )
        self.settings = settings
        self.db = db
        self.subscriptions = SubscriptionRepo(db)
        self.articles = ArticleRepo(db)
        self.comments = CommentRepo(db)
        self.outbox = Outbox(db)
        self.untrusted = untrusted
        self.ingestor = Ingestor(
            fetcher, self.subscriptions, self.articles, self.comments, untrusted
        )
        self.poller = Poller(self.ingestor, self.subscriptions)
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
        )
        self.resyncer = Resyncer(
            self.subscriptions, self.articles, self.comments, self.ingestor, self.mirror
        )
        self._cycle_locks: dict[int, asyncio.Lock] = {}
        self._active_cycles: set[asyncio.Task[Any]] = set()
        self._closing = False

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:
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
        current = asyncio.current_task()
        pending = [t for t in self._active_cycles if t is not current and not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)
        await super().close()

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info("Connected as %s (%s) to %d guild(s)", self.user, self.user.id, len(self.guilds))

    # --- one poll-and-deliver cycle, shared by the scheduler and the commands -------

    def subscription_lock(self, subscription_id: int) -> asyncio.Lock:
        return self._cycle_locks.setdefault(subscription_id, asyncio.Lock())

    def forget(self, subscription_id: int) -> None:
        """Drop in-memory state of a removed subscription (its ids are never reused)."""
        self._cycle_locks.pop(subscription_id, None)
        self.ingestor.forget(subscription_id)

    async def cycle(
        self, sub: Subscription, *, progress: Progress | None = None, poll: bool = True
    ) -> CycleResult:
        """Poll ``sub`` (unless ``poll`` is false) and deliver what is pending.

        Never raises for feed or delivery problems: they are recorded on the
        subscription (``/blog status``) and, on a state change, told to the
        guild's log channel.
        """
        if self._closing:
            return CycleResult(None, None, "The bot is stopping.")
        task = asyncio.current_task()
        if task is not None:
            self._active_cycles.add(task)
        try:
            return await self._cycle(sub, progress, poll)
        finally:
            if task is not None:
                self._active_cycles.discard(task)

    async def _cycle(self, sub: Subscription, progress: Progress | None, poll: bool) -> CycleResult:
        async with self.subscription_lock(sub.id):
            fresh = await self.subscriptions.get(sub.id)
            if fresh is None:
                return CycleResult(None, None, "The subscription was removed.")
            outcome = await self.poller.poll(fresh) if poll else None
            delivery: DeliverySummary | None = None
            error = outcome.error if outcome else None
            current = await self.subscriptions.get(sub.id)
            if current is not None and current.state == SubscriptionState.ACTIVE:
                delivery_error: str | None = None
                try:
                    delivery = await self.mirror.deliver(current, progress=progress)
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


@dataclass(frozen=True, slots=True)
class CycleResult:
    outcome: PollOutcome | None
    delivery: DeliverySummary | None
    error: str | None

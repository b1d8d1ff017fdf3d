"""What the moderator commands do, without the Discord plumbing.

The cogs parse interactions and format replies; everything that decides
something (is this URL a feed, is it already subscribed, which subscription
does this ``feed`` option name in this guild) lives here. Every lookup is
scoped to the invoking guild.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.discord_preview import ThreadPreview, preview_thread
from bot.discovery import discover_feed
from bot.errors import BlogMirrorError, FeedError
from bot.fetch import Fetcher, check_url, redact_userinfo
from bot.ingest import Ingestor
from bot.polling import FAILING_AFTER, Poller, PollOutcome
from bot.untrusted import Untrusted
from bot.websub import WebSub
from storage import (
    ArticleRepo,
    DuplicateSubscriptionError,
    SubscriptionGoneError,
    SubscriptionRepo,
)
from storage.records import Subscription, SubscriptionState

log = logging.getLogger(__name__)

MAX_BACKFILL = 25
MAX_INTERVAL_MINUTES = 1440


class NotFoundError(BlogMirrorError):
    """No subscription or article matches what the moderator typed."""


@dataclass(frozen=True, slots=True)
class Subscribed:
    subscription: Subscription
    outcome: PollOutcome
    """Of the first poll, which recorded the newest articles as pending and the rest as seen."""


@dataclass(frozen=True, slots=True)
class Edited:
    subscription: Subscription
    changes: list[str]
    """What changed, in words; empty when nothing did."""


class BlogService:
    """Subscription management for one bot, every call scoped to a guild."""

    def __init__(
        self,
        fetcher: Fetcher,
        subscriptions: SubscriptionRepo,
        articles: ArticleRepo,
        ingestor: Ingestor,
        poller: Poller,
        untrusted: Untrusted,
        *,
        default_interval: int,
        push: WebSub | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.fetcher = fetcher
        self.subscriptions = subscriptions
        self.articles = articles
        self.ingestor = ingestor
        self.poller = poller
        self.untrusted = untrusted
        self.default_interval = default_interval
        self.push = push
        self.clock = clock

    async def subscribe(
        self,
        *,
        guild_id: int,
        channel_id: int,
        url: str,
        comments: bool,
        backfill: int,
    ) -> Subscribed:
        """Validate the feed, store the subscription and run its first poll.

        The first poll records the ``backfill`` newest articles as pending and
        the rest as seen; the caller then delivers them.
        """
        if not 0 <= backfill <= MAX_BACKFILL:
            raise BlogMirrorError(f"backfill must be between 0 and {MAX_BACKFILL}.")
        url = check_url(url)
        existing = await self.subscriptions.find_in_guild(guild_id, url)
        if any(s.channel_id == channel_id for s in existing):
            raise BlogMirrorError("That blog is already mirrored in that channel.")
        found = await discover_feed(self.fetcher, self.untrusted, url)
        assert found.body.body is not None
        feed = await self.untrusted.parse_feed(found.body.body, found.feed_url, kind="posts")
        if feed.kind != "posts":
            raise BlogMirrorError(
                "That is a comments feed: subscribe the blog itself (its homepage or posts feed)."
            )
        now = self.clock()
        try:
            sub = await self.subscriptions.add(
                guild_id=guild_id,
                channel_id=channel_id,
                feed_url=found.feed_url,
                blog_url=found.blog_url or feed.site_url,
                blog_title=feed.title,
                dialect=feed.dialect.value,
                comments_feed_url=feed.comments_feed_url,
                mirror_comments=comments,
                backfill=backfill,
                interval_seconds=self.default_interval,
                now=now,
                next_poll_at=now + timedelta(seconds=self.default_interval),
            )
        except DuplicateSubscriptionError:
            raise BlogMirrorError("That blog is already mirrored in that channel.") from None
        log.info("Guild %s subscribed %s in channel %s", guild_id, sub.feed_url, channel_id)
        outcome = await self.poller.poll(sub)
        fresh = await self.subscriptions.get(sub.id)
        assert fresh is not None
        return Subscribed(fresh, outcome)

    async def preview(self, url: str) -> ThreadPreview:
        """What subscribing ``url`` would post: read as subscribe reads it, nothing stored."""
        return await preview_thread(self.fetcher, self.untrusted, url)

    async def resolve(self, guild_id: int, feed: str) -> Subscription:
        """The guild's subscription named by a feed URL or blog URL (or its id)."""
        feed = feed.strip()
        matches = await self.subscriptions.find_in_guild(guild_id, feed)
        if not matches:
            for sub in await self.subscriptions.list_for_guild(guild_id):
                if feed in (str(sub.id), sub.blog_title):
                    matches.append(sub)
        if not matches:
            raise NotFoundError(
                f"No subscription in this server matches {redact_userinfo(feed)!r}: pick one "
                "from the list (`/blog list`)."
            )
        if len(matches) > 1:
            channels = ", ".join(f"<#{sub.channel_id}>" for sub in matches)
            raise BlogMirrorError(
                f"That blog is mirrored in several channels ({channels}): pick the one you "
                "mean from the suggestions."
            )
        return matches[0]

    async def set_paused(self, sub: Subscription, paused: bool) -> Subscription:
        if paused:
            await self.subscriptions.set_state(sub.id, SubscriptionState.PAUSED)
        else:
            await self.subscriptions.set_state(
                sub.id,
                SubscriptionState.ACTIVE,
                next_poll_at=self.clock(),
                failures_cap=FAILING_AFTER,
            )
        fresh = await self.subscriptions.get(sub.id)
        assert fresh is not None
        return fresh

    async def edit(
        self,
        sub: Subscription,
        *,
        comments: bool | None = None,
        mention_role_id: int | None = None,
        no_mention: bool = False,
        interval_minutes: int | None = None,
    ) -> Edited:
        """Change a subscription in place; say what changed, refuse what cannot be.

        ``interval_minutes`` 0 goes back to the bot's default. The next poll moves
        to one interval after the last one when that is sooner than planned, so a
        shorter interval takes effect at once.
        """
        if mention_role_id is not None and no_mention:
            raise BlogMirrorError(
                "Choose either `mention` (a role to ping) or `no_mention` (stop pinging), not both."
            )
        if mention_role_id == sub.guild_id:
            raise BlogMirrorError(
                "@everyone cannot be pinged by the bot: pick a role made for blog news."
            )
        if interval_minutes is not None and not 0 <= interval_minutes <= MAX_INTERVAL_MINUTES:
            raise BlogMirrorError(
                f"interval must be between 1 and {MAX_INTERVAL_MINUTES} minutes "
                "(0 goes back to the bot's default)."
            )
        changes: list[str] = []
        mirror_comments = sub.mirror_comments
        if comments is not None and comments != sub.mirror_comments:
            mirror_comments = comments
            changes.append(
                "comments are mirrored" if comments else "comments are no longer mirrored"
            )
        role = sub.mention_role_id
        if mention_role_id is not None and mention_role_id != role:
            role = mention_role_id
            changes.append(f"new articles ping <@&{role}>")
        elif no_mention and role is not None:
            role = None
            changes.append("new articles ping nobody")
        interval, custom = sub.interval_seconds, sub.interval_custom
        if interval_minutes is not None:
            wanted = (
                (interval_minutes * 60, True)
                if interval_minutes
                else (self.default_interval, False)
            )
            if wanted != (interval, custom):
                interval, custom = wanted
                changes.append(
                    f"polled every {describe_interval(interval)}"
                    + ("" if custom else " (the bot's default)")
                )
        if not changes:
            return Edited(sub, [])
        next_poll_at = sub.next_poll_at
        if interval != sub.interval_seconds:
            since = sub.last_poll_at or self.clock()
            next_poll_at = min(next_poll_at, since + timedelta(seconds=interval))
        try:
            await self.subscriptions.edit(
                sub.id,
                mirror_comments=mirror_comments,
                mention_role_id=role,
                interval_seconds=interval,
                interval_custom=custom,
                next_poll_at=next_poll_at,
            )
        except SubscriptionGoneError:
            raise NotFoundError(
                "That subscription was removed meanwhile: see `/blog list`."
            ) from None
        log.info("Guild %s edited %s: %s", sub.guild_id, sub.feed_url, "; ".join(changes))
        fresh = await self.subscriptions.get(sub.id)
        assert fresh is not None
        return Edited(fresh, changes)

    async def follow_default_interval(self) -> None:
        """At start: subscriptions without an interval of their own follow
        ``POLL_INTERVAL_SECONDS`` as it is now (``/blog edit … interval:0`` means that)."""
        changed = await self.subscriptions.follow_default_interval(self.default_interval)
        if changed:
            log.info(
                "%d subscription(s) now polled every %s (POLL_INTERVAL_SECONDS)",
                changed,
                describe_interval(self.default_interval),
            )

    async def unsubscribe(self, sub: Subscription) -> None:
        if self.push is not None:
            # Before the row goes: the push rows stay to answer the hubs' verifications.
            await self.push.remove(sub.id)
        await self.subscriptions.delete(sub.id)
        log.info("Guild %s unsubscribed %s", sub.guild_id, sub.feed_url)


def describe_error(exc: BaseException) -> str:
    """One human line for an expected failure."""
    if isinstance(exc, FeedError | BlogMirrorError):
        return str(exc)
    return "Something went wrong on our side; the details are in the bot's log."


def describe_interval(seconds: int) -> str:
    """``5 minutes``, ``1 hour``, ``90 seconds``: an interval as a moderator reads it."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} second{'' if seconds == 1 else 's'}"

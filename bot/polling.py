"""Poll scheduling and feed health: one poll, its outcome, and when to poll next.

Successes are rescheduled at the subscription's interval with ±10 % jitter, so
a thousand feeds added together do not stay in lock-step. Failures back off
exponentially from the interval (capped at six hours), with jitter, and never
sooner than a server's ``Retry-After``. After ``FAILING_AFTER`` consecutive
failures a subscription counts as failing; after ``DISABLE_AFTER`` it is
disabled until a moderator resumes it. A subscription whose feeds are all
pushed (``bot.websub``) is polled as a safety net only, at 4× its interval.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from bot.errors import FeedError
from bot.ingest import Ingestor, PollSummary
from bot.metrics import Metrics, PollOutcomeLabel
from bot.models import PushLinks
from bot.websub import safety_interval
from storage import SubscriptionRepo
from storage.records import HttpValidators, Subscription, SubscriptionState

log = logging.getLogger(__name__)

FAILING_AFTER = 3
DISABLE_AFTER = 10
MAX_BACKOFF = timedelta(hours=6)


class HealthChange(StrEnum):
    """A change worth one message in the guild's log channel."""

    FAILING = "failing"
    DISABLED = "disabled"
    RECOVERED = "recovered"


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """One poll's result; the subscription's stored state says the rest (next poll, status)."""

    summary: PollSummary | None
    error: str | None
    failures: int
    change: HealthChange | None


def next_after_success(now: datetime, interval: int, rng: random.Random) -> datetime:
    return now + timedelta(seconds=interval * rng.uniform(0.9, 1.1))


def next_after_failure(
    now: datetime, interval: int, failures: int, retry_after: float | None, rng: random.Random
) -> datetime:
    """Exponential backoff from the interval, jittered, honouring ``Retry-After``."""
    exponent: int = min(max(failures - 1, 0), 16)
    ceiling = max(MAX_BACKOFF, timedelta(seconds=interval))
    delay: timedelta = min(timedelta(seconds=interval * 2**exponent), ceiling)
    delay *= rng.uniform(0.8, 1.2)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=min(retry_after, 86_400)))
    return now + delay


class Push(Protocol):
    """What polling needs of WebSub push (``bot.websub.WebSub``), when ``PUBLIC_URL`` is set."""

    async def observe(self, subscription_id: int, links: Iterable[PushLinks]) -> None: ...

    async def pushed(self, subscription_ids: Iterable[int]) -> set[int]: ...


class Poller:
    """Runs one subscription's poll and records its health."""

    def __init__(
        self,
        ingestor: Ingestor,
        subscriptions: SubscriptionRepo,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        push: Push | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.subscriptions = subscriptions
        self.clock = clock
        self.rng = rng or random.Random()
        self.metrics = metrics
        self.push = push

    async def poll(
        self, sub: Subscription, validators: Mapping[str, HttpValidators] | None = None
    ) -> PollOutcome:
        """Poll once; never raises for feed problems (they become the outcome).

        ``validators``: the stored ones of its feeds, if read with ``sub``."""
        started = time.perf_counter()
        try:
            summary = await self.ingestor.poll(sub, validators)
        except FeedError as exc:
            self._count(PollOutcomeLabel.of_error(exc), started)
            return await self.record_failure(sub, str(exc), exc.status, exc.retry_after)
        except Exception as exc:
            self._count(PollOutcomeLabel.of_error(exc), started)
            log.exception("Unexpected error while polling %s", sub.feed_url)
            return await self.record_failure(
                sub,
                "Internal error while reading the feed (details are in the bot's log).",
                None,
                None,
            )
        found = summary.new_articles + summary.changed_articles
        found += summary.new_comments + summary.changed_comments
        self._count(PollOutcomeLabel.CHANGED if found else PollOutcomeLabel.UNCHANGED, started)
        interval = sub.interval_seconds
        if self.push is not None:
            if summary.push_links:
                await self.push.observe(sub.id, summary.push_links)
            interval = safety_interval(interval, sub.id in await self.push.pushed([sub.id]))
        now = self.clock()
        next_poll_at = next_after_success(now, interval, self.rng)
        await self.subscriptions.record_success(sub.id, now=now, next_poll_at=next_poll_at)
        if summary.blog_title and summary.blog_title != sub.blog_title:
            await self.subscriptions.update_feed_info(
                sub.id, blog_title=summary.blog_title, comments_feed_url=sub.comments_feed_url
            )
        change = HealthChange.RECOVERED if sub.consecutive_failures >= FAILING_AFTER else None
        if change:
            log.info("Feed %s recovered after %d failures", sub.feed_url, sub.consecutive_failures)
        log.debug(
            "Polled %s: posts feed %s, %d new articles, %d new comments, %d changed, "
            "%d requests, %d entries not read again",
            sub.feed_url,
            "unchanged" if summary.posts_not_modified else "read",
            summary.new_articles,
            summary.new_comments,
            summary.changed_articles + summary.changed_comments,
            summary.requests,
            summary.unchanged_entries,
        )
        for warning in summary.warnings:  # the poll succeeded, but not all of it
            log.info("Poll of %s: %s", sub.feed_url, warning)
        return PollOutcome(summary, None, 0, change)

    def _count(self, outcome: PollOutcomeLabel, started: float) -> None:
        if self.metrics is not None:
            self.metrics.polled(outcome, time.perf_counter() - started)

    async def record_failure(
        self,
        sub: Subscription,
        error: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> PollOutcome:
        """Count a failure (of the poll or of delivering its results) and back off.

        The count is ``sub``'s plus one: for a delivery failure after a
        successful poll, pass the snapshot taken before that poll, so a channel
        that stays broken still counts up to failing and disabled.
        """
        now = self.clock()
        failures = sub.consecutive_failures + 1
        next_poll_at = next_after_failure(
            now, sub.interval_seconds, failures, retry_after, self.rng
        )
        failures = await self.subscriptions.record_failure(
            sub.id,
            now=now,
            error=error,
            status=status,
            next_poll_at=next_poll_at,
            failures=failures,
        )
        change: HealthChange | None = None
        if failures >= DISABLE_AFTER:
            await self.subscriptions.set_state(sub.id, SubscriptionState.DISABLED)
            change = HealthChange.DISABLED
            log.warning(
                "Disabled %s after %d consecutive failures: %s", sub.feed_url, failures, error
            )
        elif failures == FAILING_AFTER:
            change = HealthChange.FAILING
            log.warning("Feed %s is failing (%d in a row): %s", sub.feed_url, failures, error)
        else:
            log.info("Poll of %s failed (%d in a row): %s", sub.feed_url, failures, error)
        return PollOutcome(None, error, failures, change)

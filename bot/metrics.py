"""The bot's Prometheus metrics and the polling loop's heartbeat.

Each bot has its own ``CollectorRegistry`` (never prometheus-client's global
one), so several bots in one test process count separately. ``/metrics``
(``bot/web.py``) renders it.

Discord's answers are counted where they arrive: ``discord_trace`` is an
aiohttp trace hook given to discord.py's HTTP client (``http_trace``) and to the
session of ``bot/discord_rest.py``. discord.py waits out a 429 by itself and
only logs it, so this is the one place that sees every one, whichever client
made the request.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from enum import StrEnum
from types import SimpleNamespace

import aiohttp
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from bot.errors import FeedError
from storage.records import Backlog

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Requests that create one message: a message in a channel or thread, or a forum post
# (a thread made with its first message). Threads made from a message create none.
_MESSAGE_CREATE = re.compile(r"(?:/api/v\d+)?/channels/\d+/(?:messages|threads)")
_SCOPES = frozenset({"user", "global", "shared"})

# A 304 or an identical body is over in milliseconds; a slow blog is seconds.
POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class PollOutcomeLabel(StrEnum):
    """The ``outcome`` label of ``blogmirror_polls_total``: a small, fixed set."""

    CHANGED = "changed"
    """Read and recorded: something was new or changed."""
    UNCHANGED = "unchanged"
    """Nothing new (a 304, an identical body, or only known entries)."""
    TRANSIENT_ERROR = "transient_error"
    """Worth retrying soon: timeouts, connection failures, 5xx, 429, malformed XML."""
    PERMANENT_ERROR = "permanent_error"
    """Retrying soon will not help: 404/410, not a feed, too large, blocked address."""
    INTERNAL_ERROR = "internal_error"
    """A bug of the bot's (logged with its traceback)."""

    @classmethod
    def of_error(cls, exc: BaseException) -> PollOutcomeLabel:
        if not isinstance(exc, FeedError):
            return cls.INTERNAL_ERROR
        return cls.TRANSIENT_ERROR if exc.transient else cls.PERMANENT_ERROR


class Metrics:
    """Counters the bot updates as it works, gauges read when scraped."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.last_round: float | None = None
        """When the polling loop last finished a round (``clock`` time), None before the first."""
        self.registry = CollectorRegistry()
        registry = self.registry
        # process_resident_memory_bytes, process_cpu_seconds_total, ...: read at scrape.
        ProcessCollector(registry=registry)
        self.polls = Counter(
            "blogmirror_polls",
            "Feed polls finished, by outcome: changed, unchanged, transient_error, "
            "permanent_error or internal_error.",
            ["outcome"],
            registry=registry,
        )
        # Every series exists from the start, at 0; kept, as ``labels()`` is a lookup per poll.
        self._polls_by_outcome = {
            outcome: self.polls.labels(outcome=outcome.value) for outcome in PollOutcomeLabel
        }
        self.poll_duration = Histogram(
            "blogmirror_poll_duration_seconds",
            "Time one feed poll took: fetching, parsing and recording (not posting to Discord).",
            buckets=POLL_BUCKETS,
            registry=registry,
        )
        self.messages_sent = Counter(
            "blogmirror_messages_sent",
            "Messages Discord confirmed creating for the bot: comment parts, article "
            "messages, forum posts and log-channel notices.",
            registry=registry,
        )
        self.rate_limited = Counter(
            "blogmirror_discord_rate_limited",
            "Discord answers with status 429 (Too Many Requests), by rate-limit scope.",
            ["scope"],
            registry=registry,
        )
        self.pending = Gauge(
            "blogmirror_pending_items",
            "Articles and comments waiting to be posted to Discord.",
            ["kind"],
            registry=registry,
        )
        self.set_aside = Gauge(
            "blogmirror_set_aside_items",
            "Articles and comments Discord refused for good, set aside with its reason.",
            ["kind"],
            registry=registry,
        )
        self.last_cycle_age = Gauge(
            "blogmirror_last_cycle_age_seconds",
            "Seconds since the polling loop last finished a round (since start before the first).",
            registry=registry,
        )
        self.last_cycle_age.set_function(self.loop_age)
        self.discord_trace = aiohttp.TraceConfig()
        self.discord_trace.on_request_end.append(self._on_discord_response)

    # --- updated by the bot --------------------------------------------------------

    def polled(self, outcome: PollOutcomeLabel, seconds: float) -> None:
        self._polls_by_outcome[outcome].inc()
        self.poll_duration.observe(seconds)

    def loop_ran(self) -> None:
        """The polling loop finished a round (``/healthz`` and ``last_cycle_age``)."""
        self.last_round = self.clock()

    def loop_age(self) -> float:
        return self.clock() - (self.last_round if self.last_round is not None else self.started)

    async def _on_discord_response(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        status = params.response.status
        if status == 429:
            scope = params.response.headers.get("X-RateLimit-Scope", "")
            self.rate_limited.labels(scope=scope if scope in _SCOPES else "unknown").inc()
        elif (
            200 <= status < 300
            and params.method == "POST"
            and _MESSAGE_CREATE.fullmatch(params.url.path) is not None
        ):
            self.messages_sent.inc()

    # --- read at scrape time -------------------------------------------------------

    def render(self, backlog: Backlog) -> bytes:
        """The text format, with the backlog gauges set from ``backlog`` (read just before)."""
        self.pending.labels(kind="article").set(backlog.pending_articles)
        self.pending.labels(kind="comment").set(backlog.pending_comments)
        self.set_aside.labels(kind="article").set(backlog.set_aside_articles)
        self.set_aside.labels(kind="comment").set(backlog.set_aside_comments)
        return generate_latest(self.registry)

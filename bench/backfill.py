"""SPEC §7 backfill: how close a backfill comes to what Discord's rate limits allow.

Two scenarios, each through the real bot (``BlogMirrorBot`` under the tests'
``running_bot`` harness: the real discord.py client against the loopback
Discord double, a local feed server, a real SQLite file):

* one article with 200 comments, all into its thread;
* 10 articles with 40 comments each, into 10 threads at once.

The double limits message creation to 5 per 1 s per channel and all requests
to 50 per s (the global limit). Each scenario subscribes (its first poll
records the articles and comments as pending), lets every rate-limit window
expire, then times ``bot.cycle(sub.id)`` (a second poll, answered 304, and the
delivery) from its start to the moment the double answered the last comment
message. discord.py returns from the send that empties a bucket only after the
bucket resets, so the end is taken from the double's request log, not from
``cycle`` returning.

The floor is the least time the limits allow between the first and the last
of the requests the scenario cannot do without: one per article (a forum post
is created with its article message in one request) and one per comment
message, all counted by the global limit, the comment messages also by their
thread's channel limit. ``n`` requests under "``limit`` per ``per`` seconds" need
at least ``(ceil(n / limit) - 1) * per`` seconds from first to last, whether
the window is fixed (as in the double: it starts with its first request) or
sliding: the first ``limit`` go at once, each further batch a window later.
The floor is the largest of these over the global limit and every channel:
39 s for 200 messages in one thread, 8 s for the 410 requests of 10 x 40.
Requests the bot makes beyond these (fetching channels, reading history) are
not in the floor, so they cost the bot time rather than excuse it; the report
shows how many requests it made in ``requests``. A scenario so small that no
limit binds (floor 0) reports ``ratio`` null and is judged on the other checks.

Budget: wall time at most 1.10 x the floor, no 429 response at all (the
bot's pacing, not discord.py's retries, must keep it under the limits), and
every comment exactly once (``duplicates`` and ``missing`` both 0).

The report also counts the database's write transactions during the delivery
per Discord message made (forum posts and comment messages):
``transactions_per_message``. The outbox's target is one per single-part
comment (each completion opens the next intent in the same transaction); a
thread costs two (its intent, then its completion), and the poll one. Budget:
at most 1.10 at full size.

Run ``python -m bench.backfill [--comments 200] [--articles 10 --per-article 40]``;
prints one JSON object, exits 0 within budget and 1 over it (2 if the set-up
went wrong).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``bench``, ``bot`` and ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytest

from bench.common import InvalidRunError, run
from bot.render import key_in
from tests.conftest import Harness, running_bot
from tests.discord_double import ROUTE_MESSAGES, RateLimits
from tests.feedgen import GenComment, at, blogger_comments, blogger_post, blogger_posts
from tests.feedserver import guard_loopback_only

BUDGET_RATIO = 1.10
BUDGET_TRANSACTIONS = 1.10
CHANNEL_LIMIT = (5, 1.0)
"""Message creations per channel: (requests, per seconds)."""
GLOBAL_LIMIT = (50, 1.0)
"""All requests of the bot: (requests, per seconds)."""
POSTS_PATH = "/feeds/posts/default"
COMMENTS_PATH = "/feeds/comments/default"
FIRST_POST = 7_200_000_000_000_000_000
FIRST_COMMENT = 3_100_000_000_000_000_000
_TEXT = (
    "<p>I read this twice and I still think the <b>numbers</b> don't add up: "
    "if the caseload per officer has gone up by a third since {year}, where is the "
    "&quot;efficiency&quot; coming from?</p><p>Comment {number} &amp; counting. "
    'See <a href="https://example.org/report-{number}">the report</a>.</p>'
)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    articles: int
    per_article: int

    @property
    def comments(self) -> int:
        return self.articles * self.per_article


def window_floor(requests: int, limit: int, per: float) -> float:
    """Least seconds from the first to the last of ``requests`` at ``limit`` per ``per``."""
    return (math.ceil(requests / limit) - 1) * per if requests > 0 else 0.0


def floor_seconds(scenario: Scenario) -> float:
    """The rate-limit floor of a scenario (see the module docstring)."""
    per_channel = window_floor(scenario.per_article, *CHANNEL_LIMIT)
    required = scenario.articles + scenario.comments  # one forum post each + one per comment
    return max(per_channel, window_floor(required, *GLOBAL_LIMIT))


def feeds_for(scenario: Scenario) -> tuple[bytes, bytes]:
    """A Blogger posts feed and its blog-wide comments feed; every 4th comment is a reply."""
    posts: list[str] = []
    comments: list[GenComment] = []
    for article in range(scenario.articles):
        post = str(FIRST_POST + article)
        posts.append(blogger_post(post, f"Backfill article {article + 1}", at(article)))
        for index in range(scenario.per_article):
            number = FIRST_COMMENT + article * 10_000 + index
            comments.append(
                GenComment(
                    number,
                    at(60 + article * 1_000 + index),
                    _TEXT.format(year=2000 + index % 20, number=number),
                    parent=number - 1 if index % 4 == 3 else None,
                    post=post,
                    author=f"Reader {index % 7}",
                )
            )
    return blogger_posts(posts), blogger_comments(comments)


async def measure_scenario(scenario: Scenario) -> dict[str, Any]:
    """Subscribe, let the limits' windows pass, then time the delivery."""
    posts, comments = feeds_for(scenario)
    limits = RateLimits(
        routes={ROUTE_MESSAGES: CHANNEL_LIMIT}, default=GLOBAL_LIMIT, global_limit=GLOBAL_LIMIT
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp,
        pytest.MonkeyPatch.context() as patch,
    ):
        guard_loopback_only(patch)  # nothing but 127.0.0.1, ever
        async with running_bot(Path(tmp), rate_limits=limits) as harness:
            harness.feeds.route(POSTS_PATH, posts, etag='"posts-1"')
            harness.feeds.route(COMMENTS_PATH, comments, etag='"comments-1"')
            subscribed = await harness.bot.service.subscribe(
                guild_id=harness.guild_id,
                channel_id=harness.forum_id,
                url=harness.feeds.url(POSTS_PATH),
                comments=True,
                backfill=scenario.articles,
            )
            sub = subscribed.subscription
            counts = await harness.bot.subscriptions.counts(sub.id)
            if (counts.pending_articles, counts.pending_comments) != (
                scenario.articles,
                scenario.comments,
            ):
                raise InvalidRunError(
                    f"{scenario.name}: the first poll left {counts.pending_articles} articles "
                    f"and {counts.pending_comments} comments pending"
                )
            # Start with every window (the channels' and the global one) empty.
            await asyncio.sleep(max(CHANNEL_LIMIT[1], GLOBAL_LIMIT[1]) + 0.1)
            double = harness.double
            first_request = len(double.requests)
            first_429 = double.count_429
            first_transaction = harness.bot.db.transactions
            started = time.monotonic()
            result = await harness.bot.cycle(sub.id)
            transactions = harness.bot.db.transactions - first_transaction
            if result.error is not None:
                raise InvalidRunError(f"{scenario.name}: the cycle failed: {result.error}")
            made = double.requests[first_request:]
            sent = [r for r in made if r.route == ROUTE_MESSAGES and r.status == 200]
            if not sent:
                raise InvalidRunError(f"{scenario.name}: no message was posted")
            wall = max(r.at for r in sent) - started
            duplicates, missing, messages = _tally(harness, scenario)
    floor = floor_seconds(scenario)
    return {
        "name": scenario.name,
        "messages": messages,
        "requests": len(made),
        "wall_s": round(wall, 3),
        "floor_s": floor,
        # No limit binds a scenario this small: no ratio (JSON null), only the other checks.
        "ratio": round(wall / floor, 3) if floor > 0 else None,
        "count_429": double.count_429 - first_429,
        "duplicates": duplicates,
        "missing": missing,
        "write_transactions": transactions,
        "transactions_per_message": round(transactions / (messages + scenario.articles), 3),
    }


def _tally(harness: Harness, scenario: Scenario) -> tuple[int, int, int]:
    """Duplicated and missing comments, and the comment messages in the threads."""
    seen: Counter[str] = Counter()
    for thread in harness.double.threads(harness.forum_id):
        for message in harness.double.messages(int(thread["id"])):
            key = key_in(message["content"])
            if key is not None:
                seen[key[0]] += 1
    duplicates = sum(count - 1 for count in seen.values())
    return duplicates, scenario.comments - len(seen), sum(seen.values())


def scenarios(comments: int, articles: int, per_article: int) -> list[Scenario]:
    return [
        Scenario(f"{comments} comments into 1 thread", 1, comments),
        Scenario(
            f"{articles} articles x {per_article} comments into {articles} threads",
            articles,
            per_article,
        ),
    ]


async def measure(plan: Sequence[Scenario]) -> dict[str, Any]:
    reports = [await measure_scenario(scenario) for scenario in plan]
    ok = all(
        (r["ratio"] is None or r["ratio"] <= BUDGET_RATIO)
        and r["transactions_per_message"] <= BUDGET_TRANSACTIONS
        and r["count_429"] == 0
        and r["duplicates"] == 0
        and r["missing"] == 0
        for r in reports
    )
    return {
        "benchmark": "backfill",
        "scenarios": reports,
        "budget_ratio": BUDGET_RATIO,
        "budget_transactions_per_message": BUDGET_TRANSACTIONS,
        "ok": ok,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--comments", type=int, default=200, help="comments of the 1-thread run")
    parser.add_argument("--articles", type=int, default=10, help="threads of the second run")
    parser.add_argument("--per-article", type=int, default=40, help="comments per thread there")
    args = parser.parse_args(argv)
    if min(args.comments, args.articles, args.per_article) < 1:
        parser.error("every size must be at least 1")
    if args.articles > 25:
        parser.error("a subscription backfills at most 25 articles")
    plan = scenarios(args.comments, args.articles, args.per_article)
    return run(lambda: measure(plan))


if __name__ == "__main__":
    sys.exit(main())

"""SPEC §7 changed: what a changed comments page costs the bot when 1 comment of its 25 is new.

The commonest changed body: a Blogger blog-wide comments page (25 comments,
newest first) on which one comment is new and the oldest has dropped off. The
bot polls it through the real ``Poller.poll`` (the posts feed answers 304, the
comments feed a new body: fetch, parse in the worker pool, decide, record in
SQLite), one new comment per round. Its CPU is the bot's process (every thread)
plus its worker processes (where the feed is parsed), per poll. The baseline is
a plain ``feedparser.parse`` of the same body, in this process, in the same
run: what reading the page costs at the least without the bot's selective
parsing (``bot/selective.py``). The budget: the bot's poll at most 0.35 times that.

A round is valid only if the poll found exactly one new comment and left the
24 others unread (``PollSummary.unchanged_entries``), so the figure is the one
the budget is about. The server runs in another process, its CPU not counted.

Run ``python -m bench.changed [--rounds 40]``; prints one JSON object, exits 0
within budget and 1 over it (2 if the set-up went wrong).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``bench``, ``bot`` and ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import feedparser

from bench.common import (
    InvalidRunError,
    RouteSpec,
    ServerProcess,
    blogger_comments_feed,
    blogger_posts_feed,
    pin_apart,
    run,
)
from bot.fetch import Fetcher, create_session
from bot.ingest import Ingestor
from bot.polling import Poller
from bot.settings import DEFAULTS
from bot.untrusted import Untrusted, open_pool
from bot.workers import WorkerPool
from storage import ArticleRepo, CommentRepo, Database, SubscriptionRepo
from storage.records import Subscription

BUDGET_RATIO = 0.35
PAGE = 25  # comments per page of Blogger's comments feed
POSTS = 10  # articles, all mirrored
POSTS_PATH = "/feeds/posts/default"
COMMENTS_PATH = "/feeds/comments/default"
POSTS_ETAG = '"posts"'


def comments_page(round_number: int) -> bytes:
    """Round ``n``'s page: comments n .. n+24, newest first; comment n+24 is new in round n."""
    return blogger_comments_feed(range(round_number, round_number + PAGE), posts=POSTS)


def comments_route(round_number: int) -> RouteSpec:
    return RouteSpec(COMMENTS_PATH, comments_page(round_number), f'"c{round_number}"', None)


async def measure(rounds: int, server_cpus: set[int] | None = None) -> dict[str, Any]:
    """A first poll records page 0; then each round serves the next page and polls it."""
    routes = [RouteSpec(POSTS_PATH, blogger_posts_feed(POSTS), POSTS_ETAG, None), comments_route(0)]
    with ServerProcess(routes, cpus=server_cpus) as server, tempfile.TemporaryDirectory() as tmp:
        db = await Database.open(Path(tmp) / "bench.sqlite3")
        session = create_session(allow_private=True)
        pool = open_pool()
        try:
            await pool.start()
            repo = SubscriptionRepo(db)
            fetcher = Fetcher(
                session,
                timeout=float(DEFAULTS["FEED_TIMEOUT_SECONDS"]),
                max_bytes=int(DEFAULTS["MAX_FEED_BYTES"]),
                allow_private=True,
            )
            ingestor = Ingestor(fetcher, repo, ArticleRepo(db), CommentRepo(db), Untrusted(pool))
            poller = Poller(ingestor, repo)
            sub = await _subscribe(repo, server)
            first = await poller.poll(sub)
            if first.summary is None or first.summary.new_comments != PAGE:
                raise InvalidRunError(f"the first poll did not record {PAGE} comments: {first}")
            bot_ms: list[float] = []
            worker_ms: list[float] = []
            plain_ms: list[float] = []
            for number in range(1, rounds + 2):  # round 1 warms up, unmeasured
                server.update([comments_route(number)])
                bot, workers = await _poll_cpu_ms(poller, repo, pool, sub.id)
                plain = _plain_parse_cpu_ms(comments_page(number))
                if number > 1:
                    bot_ms.append(bot)
                    worker_ms.append(workers)
                    plain_ms.append(plain)
        finally:
            await session.close()
            await pool.close()
            await db.close()
    bot = statistics.median(bot_ms)
    workers = statistics.median(worker_ms)
    total = statistics.median(b + w for b, w in zip(bot_ms, worker_ms, strict=True))
    plain = statistics.median(plain_ms)
    ratio = total / plain
    return {
        "benchmark": "changed",
        "comments_per_page": PAGE,
        "new_per_poll": 1,
        "rounds": rounds,
        "bot_cpu_ms_per_poll": round(total, 3),
        "bot_process_cpu_ms": round(bot, 3),
        "workers_cpu_ms": round(workers, 3),
        "baseline_feedparser_cpu_ms": round(plain, 3),
        "ratio": round(ratio, 3),
        "budget_ratio": BUDGET_RATIO,
        "ok": ratio <= BUDGET_RATIO,
    }


async def _subscribe(repo: SubscriptionRepo, server: ServerProcess) -> Subscription:
    """A Blogger subscription made before every post, so that all of them are mirrored."""
    made = datetime(2024, 1, 1, tzinfo=UTC)
    return await repo.add(
        guild_id=1,
        channel_id=1000,
        feed_url=server.url(POSTS_PATH),
        blog_url=None,
        blog_title="Bench Blog",
        dialect="blogger",
        comments_feed_url=server.url(COMMENTS_PATH),
        mirror_comments=True,
        backfill=POSTS,
        interval_seconds=int(DEFAULTS["POLL_INTERVAL_SECONDS"]),
        now=made,
        next_poll_at=made,
    )


async def _poll_cpu_ms(
    poller: Poller, repo: SubscriptionRepo, pool: WorkerPool, subscription_id: int
) -> tuple[float, float]:
    """One poll's CPU in milliseconds: this process (all threads), and the worker processes."""
    sub = await repo.get(subscription_id)  # as the scheduler hands it over: fresh
    assert sub is not None
    pids = sorted(pool.pids)
    gc.collect()
    workers_before = _cpu_ns(pids)
    started = time.process_time()
    outcome = await poller.poll(sub)
    bot = (time.process_time() - started) * 1000
    workers = (_cpu_ns(pids) - workers_before) / 1e6
    summary = outcome.summary
    if summary is None or (summary.new_comments, summary.unchanged_entries) != (1, PAGE - 1):
        raise InvalidRunError(f"a poll did not find 1 new comment among {PAGE}: {outcome}")
    if sorted(pool.pids) != pids:
        raise InvalidRunError("a worker process was replaced during a poll: its CPU is unknown")
    return bot, workers


def _cpu_ns(pids: Sequence[int]) -> int:
    """CPU time of these (single-threaded) processes so far, in ns (``/proc/PID/schedstat``)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat", encoding="ascii") as stats:
                total += int(stats.read().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise InvalidRunError(f"cannot read the CPU time of worker {pid}: {exc}") from exc
    return total


def _plain_parse_cpu_ms(body: bytes) -> float:
    """The baseline: feedparser, as anyone would call it, over the same body."""
    gc.collect()
    started = time.process_time()
    feedparser.parse(body)
    return (time.process_time() - started) * 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=40, help="measured polls (median is kept)")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the feed server share CPUs with the benchmark (noisier, see pin_apart)",
    )
    args = parser.parse_args(argv)
    server_cpus = None if args.no_pin else pin_apart()
    return run(lambda: measure(args.rounds, server_cpus))


if __name__ == "__main__":
    sys.exit(main())

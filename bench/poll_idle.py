"""SPEC §7 poll_idle: what an idle poll (both feeds answer 304) costs the bot in CPU.

Most polls of most blogs find nothing new, so this is the bot's steady-state
cost. The budget compares the bot's CPU per subscription poll, through the
real ``Poller.poll`` (fetches, validator look-ups, health recording in SQLite),
with the CPU of the bare HTTP work the poll cannot avoid: the same number of
conditional GETs with plain aiohttp, same session settings, same concurrency,
against the same server in the same run. The server runs in another process,
so only the bot's side of each request is counted.

Run ``python -m bench.poll_idle [--subscriptions 1000] [--rounds 3]``; prints one
JSON object, exits 0 within budget and 1 over it (2 if the set-up went wrong).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``bench``, ``bot`` and ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench.common import (
    InvalidRunError,
    RouteSpec,
    ServerProcess,
    all_due,
    blogger_posts_feed,
    pin_apart,
    run,
)
from bot.fetch import Fetcher, create_session
from bot.ingest import Ingestor, PollSummary
from bot.polling import Poller
from bot.settings import DEFAULTS
from bot.untrusted import Untrusted, open_pool
from storage import ArticleRepo, CommentRepo, Database, SubscriptionRepo
from storage.records import HttpValidators, Subscription

BUDGET_RATIO = 3.0
ETAG = '"bench-v1"'
LAST_MODIFIED = "Sat, 01 Jun 2024 09:30:00 GMT"
REQUESTS_PER_POLL = 2  # Blogger with comments: the posts feed and the blog-wide comments feed

Job = Callable[[], Awaitable[None]]


def posts_path(index: int) -> str:
    return f"/blog{index}/feeds/posts/default"


def comments_path(index: int) -> str:
    return f"/blog{index}/feeds/comments/default"


async def measure(
    subscriptions: int, rounds: int, concurrency: int, server_cpus: set[int] | None = None
) -> dict[str, Any]:
    """Set everything up, then time alternating baseline and bot rounds."""
    # Served only if a conditional GET misses, which the stats check below reports.
    body = blogger_posts_feed(3)
    routes = [
        RouteSpec(path(i), body, ETAG, LAST_MODIFIED)
        for i in range(subscriptions)
        for path in (posts_path, comments_path)
    ]
    with ServerProcess(routes, cpus=server_cpus) as server, tempfile.TemporaryDirectory() as tmp:
        db = await Database.open(Path(tmp) / "bench.sqlite3")
        bot_session = create_session(allow_private=True)
        bare_session = create_session(allow_private=True)
        pool = open_pool()  # never used: a 304 costs no parse
        try:
            subs = await _subscribe(db, server, subscriptions)
            fetcher = Fetcher(
                bot_session,
                timeout=float(DEFAULTS["FEED_TIMEOUT_SECONDS"]),
                max_bytes=int(DEFAULTS["MAX_FEED_BYTES"]),
                allow_private=True,
            )
            repo = SubscriptionRepo(db)
            ingestor = Ingestor(fetcher, repo, ArticleRepo(db), CommentRepo(db), Untrusted(pool))
            poller = Poller(ingestor, repo)
            pairs = [(s.feed_url, s.comments_feed_url or "") for s in subs]

            def bot_jobs(current: Sequence[Subscription]) -> list[Job]:
                return [_bot_poll(poller, sub) for sub in current]

            bare_jobs = [_bare_poll(bare_session, urls) for urls in pairs]
            # Warm-up: connection pools filled, lazy imports and caches done.
            await _cpu_ms_per_poll(bot_jobs(subs), concurrency)
            await _cpu_ms_per_poll(bare_jobs, concurrency)
            bot_ms: list[float] = []
            bare_ms: list[float] = []
            for _ in range(rounds):
                bare_ms.append(await _cpu_ms_per_poll(bare_jobs, concurrency))
                current = await all_due(repo, subscriptions)
                bot_ms.append(await _cpu_ms_per_poll(bot_jobs(current), concurrency))
        finally:
            await bot_session.close()
            await bare_session.close()
            await pool.close()
            await db.close()
    expected = subscriptions * REQUESTS_PER_POLL * (rounds + 1) * 2
    if server.stats is None or server.stats.not_modified != expected:
        raise InvalidRunError(f"expected {expected} 304 answers, the server saw {server.stats}")
    bot = statistics.median(bot_ms)
    bare = statistics.median(bare_ms)
    ratio = bot / bare
    return {
        "benchmark": "poll_idle",
        "subscriptions": subscriptions,
        "bot_cpu_ms_per_poll": round(bot, 4),
        "baseline_cpu_ms_per_poll": round(bare, 4),
        "ratio": round(ratio, 3),
        "budget_ratio": BUDGET_RATIO,
        "ok": ratio <= BUDGET_RATIO,
    }


async def _subscribe(db: Database, server: ServerProcess, count: int) -> list[Subscription]:
    """``count`` Blogger subscriptions with comments, validators stored as by a first poll."""
    repo = SubscriptionRepo(db)
    now = datetime.now(UTC)
    validators = HttpValidators(ETAG, LAST_MODIFIED, body_hash=None)
    subs: list[Subscription] = []
    for index in range(count):
        sub = await repo.add(
            guild_id=1,
            channel_id=1000 + index,
            feed_url=server.url(posts_path(index)),
            blog_url=None,
            blog_title=f"Blog {index}",
            dialect="blogger",
            comments_feed_url=server.url(comments_path(index)),
            mirror_comments=True,
            backfill=3,
            interval_seconds=int(DEFAULTS["POLL_INTERVAL_SECONDS"]),
            now=now,
            next_poll_at=now,
        )
        for url in (sub.feed_url, sub.comments_feed_url or ""):
            await repo.store_validators(sub.id, url, validators, now=now)
        subs.append(sub)
    return subs


def _bot_poll(poller: Poller, sub: Subscription) -> Job:
    async def job() -> None:
        outcome = await poller.poll(sub)
        summary = outcome.summary
        if summary is None or not summary.posts_not_modified or _found_anything(summary):
            raise InvalidRunError(f"poll of {sub.feed_url} was not idle: {outcome}")

    return job


def _found_anything(summary: PollSummary) -> bool:
    news = (summary.new_articles, summary.new_comments)
    return any((*news, summary.changed_articles, summary.changed_comments))


def _bare_poll(session: aiohttp.ClientSession, urls: tuple[str, str]) -> Job:
    """The floor: the conditional GETs an idle poll makes, and nothing else."""
    headers = {"If-None-Match": ETAG, "If-Modified-Since": LAST_MODIFIED}

    async def job() -> None:
        for url in urls:
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                await response.read()
                if response.status != 304:
                    raise InvalidRunError(f"bare GET {url} answered {response.status}, not 304")

    return job


async def _cpu_ms_per_poll(jobs: Sequence[Job], concurrency: int) -> float:
    """Process CPU (all threads: aiosqlite's included) per job, run ``concurrency`` at a time."""
    limit = asyncio.Semaphore(concurrency)

    async def limited(job: Job) -> None:
        async with limit:
            await job()

    gc.collect()
    started = time.process_time()
    await asyncio.gather(*(limited(job) for job in jobs))
    return (time.process_time() - started) * 1000 / len(jobs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (median is kept)")
    parser.add_argument(
        "--concurrency", type=int, default=int(DEFAULTS["POLL_CONCURRENCY"]), help="polls at once"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the feed server share CPUs with the benchmark (noisier, see pin_apart)",
    )
    args = parser.parse_args(argv)
    server_cpus = None if args.no_pin else pin_apart()
    return run(lambda: measure(args.subscriptions, args.rounds, args.concurrency, server_cpus))


if __name__ == "__main__":
    sys.exit(main())

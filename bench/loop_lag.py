"""SPEC §7 loop_lag: does parsing a big feed stall the event loop?

The bot parses off the loop (``asyncio.to_thread``), but a thread only helps
while the parser lets go of the GIL. If feedparser, sgmllib or the XML parser
held it for long, heartbeats, slash commands and every other feed would wait.
A ticker task sleeps 1 ms over and over and records how late it wakes up,
first while the bot's real parse path runs on a 500-entry Blogger posts feed
(a few MB, realistic HTML), then with nothing else running, as the baseline.

Run ``python -m bench.loop_lag [--entries 500] [--repeats 3]``; prints one JSON
object, exits 0 within budget and 1 over it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``bench``, ``bot`` and ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import InvalidRunError, blogger_posts_feed, percentile, run
from bot.parse import parse_feed

BUDGET_MS = 50.0
TICK = 0.001
# Never fetched: parse_feed only resolves links and names the comments feed from it.
FEED_URL = "http://127.0.0.1:8080/feeds/posts/default"


async def measure(entries: int, repeats: int) -> dict[str, Any]:
    """Ticker lag while parsing ``repeats`` times, then for as long with nothing running."""
    body = blogger_posts_feed(entries)
    # Warm-up on a small feed: the executor's thread, lazy imports and regex caches.
    await asyncio.to_thread(parse_feed, blogger_posts_feed(3), FEED_URL)

    async def parse_repeatedly() -> None:
        for _ in range(repeats):
            parsed = await asyncio.to_thread(parse_feed, body, FEED_URL)  # as bot/ingest.py does
            if len(parsed.articles) != entries:
                raise InvalidRunError(f"parsed {len(parsed.articles)} of {entries} entries")

    started = time.perf_counter()
    lags = await _lags_during(parse_repeatedly)
    elapsed = time.perf_counter() - started
    baseline = await _lags_during(lambda: asyncio.sleep(elapsed))
    max_lag = max(lags, default=0.0) * 1000
    return {
        "benchmark": "loop_lag",
        "entries": entries,
        "max_lag_ms": round(max_lag, 3),
        "p99_lag_ms": round(percentile(lags, 0.99) * 1000, 3),
        "baseline_max_lag_ms": round(max(baseline, default=0.0) * 1000, 3),
        "budget_ms": BUDGET_MS,
        "ok": max_lag <= BUDGET_MS,
    }


async def _lags_during(work: Callable[[], Awaitable[None]]) -> list[float]:
    """How late (seconds) each 1 ms sleep of a ticker woke up while ``work`` ran."""
    lags: list[float] = []
    ticking, done = asyncio.Event(), asyncio.Event()

    async def tick() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(TICK)
            lags.append(time.perf_counter() - start - TICK)
            ticking.set()

    ticker = asyncio.create_task(tick())
    try:
        # The ticker must be mid-sleep when the work starts: a thread that grabbed the
        # GIL before the first tick would stall the loop unseen.
        await ticking.wait()
        lags.clear()
        await work()
    finally:
        done.set()
        await ticker
    return lags


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="parses of the feed, one by one")
    args = parser.parse_args(argv)
    return run(lambda: measure(args.entries, args.repeats))


if __name__ == "__main__":
    sys.exit(main())

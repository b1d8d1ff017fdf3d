"""SPEC §7 push latency: a comment published on a pushed blog → its Discord message.

The real bot (``BlogMirrorBot`` under the tests' ``running_bot`` harness: the
real discord.py client against the loopback Discord double, a local feed server,
a real SQLite file) with ``POLL_INTERVAL_SECONDS=600``, so without push a new
comment would wait minutes. The blog's feeds advertise a local WebSub hub (the
tests' ``HubDouble``); the bot subscribes at it and the hub verifies through the
bot's callback. Then, ``--comments`` times over, a new comment is published:
the comments feed gains it and the hub notifies at once, as Blogger's does. The
latency is from the notification being sent to the moment the Discord double
answered the comment's message.

The bot is wired as ``run_bot`` wires it: ``PUBLIC_URL`` and ``WEB_PORT`` set,
the callback routes on the bot's own web server, a notification running the
normal poll-and-deliver cycle.

Budget: p95 ≤ 3 s, and every comment exactly once.

Run ``python -m bench.push_latency [--comments 50]``; prints one JSON object,
exits 0 within budget and 1 over it (2 if the set-up went wrong).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``bench``, ``bot`` and ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytest

from bench.common import InvalidRunError, percentile, run
from bot.render import comment_key, key_in
from bot.web import serve
from bot.websub import WebSub
from tests.conftest import Harness, running_bot
from tests.discord_double import ROUTE_MESSAGES
from tests.feedgen import GenComment, at, blogger_comments, blogger_post, blogger_posts
from tests.feedserver import free_port, guard_loopback_only
from tests.websub_hub import HubDouble

BUDGET_P95_S = 3.0
POLL_INTERVAL = 600
POSTS_PATH = "/feeds/posts/default"
COMMENTS_PATH = "/feeds/comments/default"
POST = "7200000000000000001"
FIRST_COMMENT = 3_200_000_000_000_000_000
TOPICS = (
    "https://www.blogger.com/feeds/4790201928346512375/posts/default",
    "https://www.blogger.com/feeds/4790201928346512375/comments/default",
)


def with_push_links(feed: bytes, hub: str, topic: str) -> bytes:
    """The feed with Blogger's ``rel="hub"`` and ``rel="self"`` links."""
    links = f"<link rel='hub' href='{hub}'/><link rel='self' href='{topic}'/><generator"
    return feed.replace(b"<generator", links.encode(), 1)


def comments_feed(count: int, hub: str) -> bytes:
    comments = [
        GenComment(FIRST_COMMENT + n, at(60 + n), f"<p>Comment number {n}.</p>", post=POST)
        for n in range(count)
    ]
    return with_push_links(blogger_comments(comments), hub, TOPICS[1])


def comment_messages(harness: Harness) -> dict[str, int]:
    """Comment messages in the forum's threads, by key: how many times each appears."""
    seen: dict[str, int] = {}
    for thread in harness.double.threads(harness.forum_id):
        for message in harness.double.messages(int(thread["id"])):
            key = key_in(message["content"])
            if key is not None:
                seen[key[0]] = seen.get(key[0], 0) + 1
    return seen


async def measure(count: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-push-") as tmp,
        pytest.MonkeyPatch.context() as patch,
    ):
        guard_loopback_only(patch)  # nothing but 127.0.0.1, ever
        port = free_port()
        async with (
            HubDouble() as hub,
            running_bot(
                Path(tmp),
                poll_interval_seconds=POLL_INTERVAL,
                web_port=port,
                public_url=f"http://127.0.0.1:{port}",
            ) as harness,
        ):
            websub = harness.bot.websub
            if websub is None:
                raise InvalidRunError("the bot did not set up WebSub")
            # The bot's own web server with its callback routes, as run_bot serves it.
            async with serve(harness.bot.settings, harness.bot, websub.routes()):
                return await _run(harness, hub, websub, count)


async def _run(harness: Harness, hub: HubDouble, websub: WebSub, count: int) -> dict[str, Any]:
    bot, feeds = harness.bot, harness.feeds
    posts = blogger_posts([blogger_post(POST, "A pushed article", at(0))])
    feeds.route(POSTS_PATH, with_push_links(posts, hub.url, TOPICS[0]), etag='"posts"')
    feeds.route(COMMENTS_PATH, comments_feed(0, hub.url), etag='"comments-0"')
    subscribed = await bot.service.subscribe(
        guild_id=harness.guild_id,
        channel_id=harness.forum_id,
        url=feeds.url(POSTS_PATH),
        comments=True,
        backfill=1,
    )
    sub = subscribed.subscription
    await bot.cycle(sub.id)  # the article's thread
    async with asyncio.timeout(30):
        while not await websub.pushed([sub.id]):
            await asyncio.sleep(0.02)
    latencies: list[float] = []
    for n in range(count):
        entry_id = f"tag:blogger.com,1999:blog-4790201928346512375.post-{FIRST_COMMENT + n}"
        key = comment_key(sub.id, entry_id)
        feeds.route(COMMENTS_PATH, comments_feed(n + 1, hub.url), etag=f'"comments-{n + 1}"')
        first_request = len(harness.double.requests)
        started = time.monotonic()
        if await hub.publish(TOPICS[1], b"<feed/>") != [202]:
            raise InvalidRunError("the bot's callback did not take the notification")
        try:
            async with asyncio.timeout(30):
                while key not in comment_messages(harness):
                    await asyncio.sleep(0.005)
        except TimeoutError:
            raise InvalidRunError(f"comment {n + 1} never reached Discord") from None
        sent = [
            r
            for r in harness.double.requests[first_request:]
            if r.route == ROUTE_MESSAGES and r.status == 200
        ]
        latencies.append(max(r.at for r in sent) - started)
    seen = comment_messages(harness)
    duplicates = sum(times - 1 for times in seen.values())
    p95 = percentile(latencies, 0.95)
    return {
        "benchmark": "push_latency",
        "comments": count,
        "poll_interval_s": POLL_INTERVAL,
        "p50_s": round(percentile(latencies, 0.50), 3),
        "p95_s": round(p95, 3),
        "max_s": round(max(latencies), 3),
        "duplicates": duplicates,
        "missing": count - len(seen),
        "budget_p95_s": BUDGET_P95_S,
        "ok": p95 <= BUDGET_P95_S and duplicates == 0 and len(seen) == count,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--comments", type=int, default=50, help="comments published, one by one")
    args = parser.parse_args(argv)
    if args.comments < 1:
        parser.error("--comments must be at least 1")
    return run(lambda: measure(args.comments))


if __name__ == "__main__":
    sys.exit(main())

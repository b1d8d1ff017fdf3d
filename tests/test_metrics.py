"""``bot.metrics``: per-bot registries, and what the Discord trace hook counts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bot.metrics import Metrics, PollOutcomeLabel
from storage.records import Backlog

NO_BACKLOG = Backlog(0, 0, 0, 0)


def test_two_bots_in_one_process_count_separately() -> None:
    """Each Metrics has its own registry: a second one neither clashes nor shares counts."""
    first, second = Metrics(), Metrics()
    first.polled(PollOutcomeLabel.CHANGED, 0.2)
    assert b'blogmirror_polls_total{outcome="changed"} 1.0' in first.render(NO_BACKLOG)
    assert b'blogmirror_polls_total{outcome="changed"} 0.0' in second.render(NO_BACKLOG)


def test_loop_age_counts_from_start_then_from_the_last_round() -> None:
    """Before any round the age runs from start; each finished round sets it back to 0."""
    now = [100.0]
    metrics = Metrics(clock=lambda: now[0])
    now[0] = 107.5
    assert metrics.loop_age() == 7.5
    metrics.loop_ran()
    now[0] = 108.0
    assert metrics.loop_age() == 0.5
    assert b"blogmirror_last_cycle_age_seconds 0.5" in metrics.render(NO_BACKLOG)


@pytest.fixture
async def discord_like() -> AsyncIterator[str]:
    """A loopback server answering like Discord: 429 under /limited, 200 elsewhere."""

    async def answer(request: web.Request) -> web.Response:
        if "/limited/" in request.path:
            return web.json_response(
                {"retry_after": 0.1}, status=429, headers={"X-RateLimit-Scope": "global"}
            )
        return web.json_response({"id": "1"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_the_trace_counts_created_messages_and_429s_only(discord_like: str) -> None:
    """Message and forum-post creations count as sent; edits, reads and threads made from
    a message do not; a 429 counts by its scope."""
    metrics = Metrics()
    requests = [
        ("POST", "/api/v10/channels/1/messages"),  # a message: counted
        ("POST", "/api/v10/channels/1/threads"),  # a forum post: counted
        ("POST", "/api/v10/channels/1/messages/2/threads"),  # a thread from a message
        ("PATCH", "/api/v10/channels/1/messages/2"),
        ("GET", "/api/v10/channels/1/messages"),
        ("POST", "/limited/api/v10/channels/1/messages"),
    ]
    async with aiohttp.ClientSession(trace_configs=[metrics.discord_trace]) as session:
        for method, path in requests:
            async with session.request(method, discord_like + path) as response:
                await response.read()
    text = metrics.render(NO_BACKLOG).decode()
    assert "blogmirror_messages_sent_total 2.0" in text
    assert 'blogmirror_discord_rate_limited_total{scope="global"} 1.0' in text

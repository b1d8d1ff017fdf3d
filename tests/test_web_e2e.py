"""/healthz and /metrics over HTTP, from the real bot against the Discord double and feeds.

The server is the one ``run_bot`` starts (``bot.web.serve``), on a free port; the
process-level wiring is in ``test_web_process.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.web import WebServer, serve
from tests.conftest import Harness, database_for, running_bot
from tests.feedgen import SEED_COMMENT_STARTS
from tests.feedserver import guard_loopback_only
from tests.test_mirror_e2e import serve_seed

MESSAGES = r"/channels/\d+/messages"
FORUM_POSTS = r"/channels/\d+/threads"
Scraped = dict[tuple[str, frozenset[tuple[str, str]]], float]


@contextlib.asynccontextmanager
async def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str = "sqlite", **settings: Any
) -> AsyncIterator[tuple[Harness, WebServer]]:
    """A running bot with its web server on a free port (``WEB_PORT=0``)."""
    guard_loopback_only(monkeypatch)
    settings.setdefault("web_port", 0)
    async with (
        database_for(backend, tmp_path) as url,
        running_bot(tmp_path, database_url=url, **settings) as harness,
        serve(harness.bot.settings, harness.bot) as server,
    ):
        assert server is not None
        yield harness, server


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def wait_for_health(server: WebServer, status: int, words: str) -> str:
    """Until /healthz answers ``status`` with ``words`` in its body; returns the body."""
    last: tuple[int, str] | None = None
    try:
        async with asyncio.timeout(20):
            while True:
                last = await get(f"{server.url}/healthz")
                if last == (status, last[1]) and words in last[1]:
                    return last[1]
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(
            f"/healthz did not answer {status} saying {words!r}; last answer: {last}"
        ) from None


async def scrape(server: WebServer) -> Scraped:
    """/metrics parsed by prometheus-client's own parser: {(sample, labels): value}."""
    status, text = await get(f"{server.url}/metrics")
    assert status == 200, text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return metrics[(name, frozenset(labels.items()))]


async def test_healthz_is_ok_while_connected_and_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running bot answers 200 "ok" with the gateway and polling loop in its details."""
    async with served(tmp_path, monkeypatch) as (_, server):
        body = await wait_for_health(server, 200, "polling loop: last round")
        lines = body.splitlines()
        assert lines[0] == "ok"
        assert "gateway: connected, 1 shard(s)" in lines
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{server.url}/healthz") as response,
        ):
            assert response.content_type == "text/plain"


async def test_healthz_is_503_while_the_gateway_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discord gone: 503 "gateway not connected"; back: 200 once discord.py has resumed."""
    async with served(tmp_path, monkeypatch) as (harness, server):
        await wait_for_health(server, 200, "gateway: connected")
        await harness.double.stop()
        body = await wait_for_health(server, 503, "gateway not connected")
        assert body.startswith("unhealthy: gateway not connected")
        assert "shard(s) 0 of 1 disconnected" in body
        await harness.double.start()
        await wait_for_health(server, 200, "gateway: connected")


async def test_healthz_is_503_when_the_polling_loop_stalls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No polling round for 2 intervals (POLL_INTERVAL_SECONDS=1): 503 saying so; restarted: 200."""
    async with served(tmp_path, monkeypatch, poll_interval_seconds=1) as (harness, server):
        await wait_for_health(server, 200, "polling loop: last round")
        scheduler = harness.polling.scheduler
        scheduler.cancel()
        await harness.wait_for(lambda: not scheduler.is_running(), what="the loop to stop")
        body = await wait_for_health(server, 503, "polling loop has not run for")
        assert body.startswith("unhealthy: polling loop has not run for")
        assert "(limit 2 s)" in body.splitlines()[0]
        assert "gateway: connected, 1 shard(s)" in body
        scheduler.start()
        await wait_for_health(server, 200, "polling loop: last round")


async def test_metrics_count_polls_messages_and_429s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """After mirroring the seed post through two 429s, /metrics says what happened."""
    async with served(tmp_path, monkeypatch, backend) as (harness, server):
        before = await scrape(server)
        assert value(before, "blogmirror_messages_sent_total") == 0
        assert value(before, "blogmirror_polls_total", outcome="changed") == 0
        # One 429 for discord.py's client (a comment), one for our own (the forum post).
        harness.double.inject_fault("rate_limit", MESSAGES, method="POST", retry_after=0.05)
        harness.double.inject_fault("rate_limit", FORUM_POSTS, method="POST", retry_after=0.05)
        url = serve_seed(harness)
        await harness.subscribe(url, harness.forum_id)
        await harness.wait_for_thread_messages(harness.forum_id, 8)
        await harness.wait_idle()
        record = await harness.double.invoke_command(
            harness.guild_id, harness.text_id, "blog", "poll", {}
        )
        await record.wait_done()
        await harness.wait_idle()

        metrics = await scrape(server)
        sent = sum(map(len, harness.thread_messages(harness.forum_id)))
        assert sent == 8
        assert value(metrics, "blogmirror_messages_sent_total") == sent
        assert harness.double.count_429 == 2
        assert value(metrics, "blogmirror_discord_rate_limited_total", scope="user") == 2
        polls = {
            outcome: value(metrics, "blogmirror_polls_total", outcome=outcome)
            for outcome in ("changed", "unchanged", "transient_error", "permanent_error")
        }
        # /blog poll found the feeds unchanged (304 on both ETags).
        assert polls["unchanged"] >= 1 and polls["transient_error"] == 0
        assert value(metrics, "blogmirror_poll_duration_seconds_count") == sum(polls.values())
        assert value(metrics, "blogmirror_pending_items", kind="comment") == 0
        assert value(metrics, "blogmirror_set_aside_items", kind="comment") == 0
        assert 0 <= value(metrics, "blogmirror_last_cycle_age_seconds") < 600


async def test_metrics_show_set_aside_items_and_a_failing_feed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """A comment Discord refuses is a set-aside item; a feed answering 500 a transient_error."""
    async with served(tmp_path, monkeypatch, backend) as (harness, server):
        harness.double.inject_fault(
            "error_before",
            MESSAGES,
            method="POST",
            status=400,
            content=SEED_COMMENT_STARTS[3],
            body={"message": "Invalid Form Body", "code": 50035},
        )
        url = serve_seed(harness)
        await harness.subscribe(url, harness.forum_id)
        await harness.wait_for_thread_messages(harness.forum_id, 7)
        await harness.wait_idle()
        metrics = await scrape(server)
        assert value(metrics, "blogmirror_set_aside_items", kind="comment") == 1
        assert value(metrics, "blogmirror_set_aside_items", kind="article") == 0
        assert value(metrics, "blogmirror_polls_total", outcome="transient_error") == 0

        harness.feeds.route("/feeds/posts/default", "down for maintenance", status=500)
        record = await harness.double.invoke_command(
            harness.guild_id, harness.text_id, "blog", "poll", {}
        )
        await record.wait_done()
        await harness.wait_idle()
        metrics = await scrape(server)
        assert value(metrics, "blogmirror_polls_total", outcome="transient_error") == 1


async def test_metrics_count_pending_items_while_discord_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Comments that cannot be posted (Discord answering 403 in the thread) are pending items."""
    async with served(tmp_path, monkeypatch) as (harness, server):
        harness.double.inject_fault(
            "error_before",
            MESSAGES,
            method="POST",
            status=403,
            times=None,
            body={"message": "Missing Permissions", "code": 50013},
        )
        await harness.subscribe(serve_seed(harness), harness.forum_id)
        await harness.wait_for(lambda: len(harness.double.threads(harness.forum_id)) == 1)
        await harness.wait_for(lambda: not harness.busy(), what="the delivery to give up")
        metrics = await scrape(server)
        assert value(metrics, "blogmirror_pending_items", kind="comment") == 7
        assert value(metrics, "blogmirror_pending_items", kind="article") == 0
        assert value(metrics, "blogmirror_messages_sent_total") == 1  # the forum post


async def test_web_host_is_the_address_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With WEB_HOST=127.0.0.2 the server answers there and not on 127.0.0.1."""
    async with served(tmp_path, monkeypatch, web_host="127.0.0.2") as (_, server):
        assert server.url == f"http://127.0.0.2:{server.port}"
        await wait_for_health(server, 200, "gateway: connected")
        with pytest.raises(aiohttp.ClientConnectorError):
            await get(f"http://127.0.0.1:{server.port}/healthz")


async def test_no_server_without_web_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """WEB_PORT unset: ``serve`` starts nothing."""
    guard_loopback_only(monkeypatch)
    async with (
        running_bot(tmp_path) as harness,
        serve(harness.bot.settings, harness.bot) as server,
    ):
        assert harness.bot.settings.web_port is None
        assert server is None

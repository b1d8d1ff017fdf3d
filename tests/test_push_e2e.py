"""WebSub push wired into the running bot: hub, callback on the bot's web server, Discord.

The bot polls hourly here, so a comment that reaches Discord within the test's
wait came through the notification, not the scheduler.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.web import serve
from tests.conftest import Harness, running_bot
from tests.feedserver import FIXTURES, FeedServer, free_port, guard_loopback_only
from tests.test_commands_e2e import command, text_of
from tests.websub_hub import HubDouble

HUB_IN_FIXTURES = b"http://pubsubhubbub.appspot.com/"
BLOG = "https://www.blogger.com/feeds/4790201928346512375"
TOPICS = (f"{BLOG}/posts/default", f"{BLOG}/comments/default")
POSTS = "/feeds/posts/default"
COMMENTS = "/feeds/comments/default"


def seed_feeds(hub: HubDouble) -> tuple[bytes, bytes, bytes]:
    """The seed blog's posts and comments feeds naming ``hub``; comments without the newest."""
    seed = FIXTURES / "seed"
    posts = (seed / "posts.atom.xml").read_bytes().replace(HUB_IN_FIXTURES, hub.url.encode())
    full = (seed / "comments.atom.xml").read_bytes().replace(HUB_IN_FIXTURES, hub.url.encode())
    first, end = full.index(b"<entry>"), full.index(b"</entry>") + len(b"</entry>")
    return posts, full[:first] + full[end:], full


@contextlib.asynccontextmanager
async def pushed_bot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Harness, HubDouble]]:
    """A bot polling hourly, its web server on PUBLIC_URL, and a hub double."""
    guard_loopback_only(monkeypatch)
    port = free_port()
    async with (
        HubDouble() as hub,
        FeedServer() as feeds,
        running_bot(
            tmp_path,
            feeds=feeds,
            poll_interval_seconds=3600,
            web_port=port,
            public_url=f"http://127.0.0.1:{port}",
        ) as harness,
    ):
        assert harness.bot.websub is not None
        async with serve(harness.bot.settings, harness.bot, harness.bot.websub.routes()):
            yield harness, hub


async def test_a_pushed_comment_reaches_discord_without_waiting_for_a_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Subscribing sets push up at the feeds' hub (status says so); a signed notification
    brings the new comment into the thread at once; unsubscribing unsubscribes at the hub."""
    async with pushed_bot(tmp_path, monkeypatch) as (harness, hub):
        posts, without_newest, full = seed_feeds(hub)
        harness.feeds.route(POSTS, posts)
        harness.feeds.route(COMMENTS, without_newest)
        feed = harness.feeds.url(POSTS)
        await harness.subscribe(feed, harness.forum_id)
        await harness.wait_for_thread_messages(harness.forum_id, 7)
        await hub.wait_for(lambda: all(hub.active(topic) for topic in TOPICS))
        await harness.wait_idle()
        status = text_of(await command(harness, "status", feed=feed))
        assert "active until <t:" in status

        harness.feeds.route(COMMENTS, full)
        assert await hub.publish(TOPICS[1], full) == [202]
        await harness.wait_for_thread_messages(harness.forum_id, 8)
        await harness.wait_idle()
        [messages] = harness.thread_messages(harness.forum_id)
        assert len(messages) == 8, "the comment was posted more than once"

        answer = await command(harness, "unsubscribe", feed=feed)
        assert "Stopped mirroring" in text_of(answer)
        await hub.wait_for(lambda: not any(hub.active(topic) for topic in TOPICS))

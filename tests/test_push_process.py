"""Push as ``python -m bot`` runs it: PUBLIC_URL and WEB_PORT set, a hub on loopback, the
callback on the bot's own web server, the comment in Discord through the API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tests.conftest import TEST_TOKEN
from tests.discord_double import DiscordDouble
from tests.feedserver import FeedServer, free_port
from tests.test_push_e2e import COMMENTS, POSTS, TOPICS, seed_feeds
from tests.test_startup import BotProcess
from tests.websub_hub import HubDouble


async def until(condition: Callable[[], bool], what: str, bot: BotProcess) -> None:
    """Until ``condition`` (on the double's state, which the bot's output does not signal)."""
    try:
        async with asyncio.timeout(30):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}:\n{bot.text}") from None


async def test_a_bot_process_subscribes_at_the_hub_and_posts_a_pushed_comment(
    tmp_path: Path,
) -> None:
    """/blog subscribe through the double; the hub verifies at PUBLIC_URL; a notification
    brings the new comment into the thread though the bot polls only hourly."""
    port = free_port()
    async with DiscordDouble(token=TEST_TOKEN) as double, FeedServer() as feeds, HubDouble() as hub:
        guild = double.add_guild("Readers")
        forum = double.add_forum_channel(guild.id, "blog-comments")
        posts, without_newest, full = seed_feeds(hub)
        feeds.route(POSTS, posts)
        feeds.route(COMMENTS, without_newest)
        bot = await BotProcess.start(
            tmp_path,
            double.url,
            WEB_PORT=str(port),
            PUBLIC_URL=f"http://127.0.0.1:{port}",
            ALLOW_PRIVATE_ADDRESSES="true",
        )
        try:
            await bot.wait_until(lambda: "Connected as" in bot.text, "the bot to connect")
            record = await double.invoke_command(
                guild.id,
                forum.id,
                "blog",
                "subscribe",
                {"url": feeds.url(POSTS), "channel": forum.id},
            )
            await record.wait_for(lambda r: any("Done." in c for c in r.contents))

            def messages() -> int:
                return sum(len(double.messages(int(t["id"]))) for t in double.threads(forum.id))

            await until(lambda: messages() == 7, "the article and its 6 comments", bot)
            await hub.wait_for(lambda: all(hub.active(topic) for topic in TOPICS), timeout=30)
            feeds.route(COMMENTS, full)
            assert await hub.publish(TOPICS[1], full) == [202]
            await until(lambda: messages() >= 8, "the pushed comment", bot)
            assert await bot.terminate() < 10
        finally:
            if bot.process.returncode is None:
                bot.process.kill()
                await bot.process.wait()
    assert messages() == 8, bot.text

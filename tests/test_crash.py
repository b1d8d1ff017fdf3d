"""Exactly once across SIGKILL: the bot process is killed mid-backfill and started again.

The bot runs as a real subprocess (``tests.botprocess``) against the Discord
double and the feed server of this test process, on one SQLite file. The fast
variant kills it once; the full randomised suite (``-m slow``) kills it 20
times at random moments.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import TEST_TOKEN, database_for
from tests.dbview import DatabaseView
from tests.discord_double import DiscordDouble
from tests.feedgen import GenComment, at, blogger_comments, blogger_post, blogger_posts
from tests.feedserver import FeedServer
from tests.processes import bot_environment

COMMENTS = 100
NUMBER = re.compile(r"comment number (\d+)\b")


class World:
    """The double, the feed server and the bot process (restartable)."""

    def __init__(
        self,
        tmp_path: Path,
        double: DiscordDouble,
        feeds: FeedServer,
        database_url: str | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.database_url = database_url
        self.double = double
        self.feeds = feeds
        self.guild = double.add_guild("Readers")
        self.forum = double.add_forum_channel(self.guild.id, "blog-comments")
        self.text = double.add_text_channel(self.guild.id, "general")
        self.process: asyncio.subprocess.Process | None = None
        self.log = tmp_path / "bot.log"
        database = tmp_path / "blogmirror.db"
        self.db = DatabaseView(database) if database_url is None else DatabaseView(url=database_url)
        self.database_path = database

    async def start_bot(self) -> None:
        env = bot_environment(
            self.double.url,
            DATABASE_PATH=str(self.database_path),
            DATABASE_URL=self.database_url or "",
            ALLOW_PRIVATE_ADDRESSES="true",
            DEV_GUILD_ID=str(self.guild.id),
            # On PostgreSQL a killed process's leases block its subscriptions for
            # one lease time: keep it short here.
            BLOGMIRROR_TEST_LEASE_SECONDS="2",
        )
        self.double.gateway.ready.clear()
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.botprocess",
                env=env,
                cwd=self.tmp_path,
                stdout=log,
                stderr=log,
            )
        await self.double.wait_ready()

    async def kill_bot(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        self.process = None

    async def stop_bot(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.process = None

    def comment_numbers(self) -> list[int]:
        numbers: list[int] = []
        for parent in (self.forum.id, self.text.id):
            for thread in self.double.threads(parent):
                for message in self.double.messages(int(thread["id"])):
                    numbers += [int(n) for n in NUMBER.findall(message["content"])[:1]]
        return numbers

    def threads(self) -> list[str]:
        return [t["name"] for t in self.double.threads(self.forum.id)]

    def check_alive(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            raise AssertionError(f"bot exited: {self.log.read_text()[-3000:]}")

    async def wait_for_comments(self, count: int, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while len(self.comment_numbers()) < count:
                self.check_alive()
                await asyncio.sleep(0.02)

    async def wait_delivered(self, timeout: float = 60) -> None:
        """Until the bot's database says all is delivered: nothing pending, no send open.

        Then anything the bot was going to post is in Discord, so counting the
        messages after this proves there are no extra ones.
        """
        async with asyncio.timeout(timeout):
            while self.db.unfinished():
                self.check_alive()
                await asyncio.sleep(0.05)

    async def subscribe(self, backfill: int = 1) -> None:
        async with asyncio.timeout(20):
            while not self.double.commands.commands(self.guild.id):
                await asyncio.sleep(0.05)
        record = await self.double.invoke_command(
            self.guild.id,
            self.text.id,
            "blog",
            "subscribe",
            {
                "url": self.feeds.url("/feeds/posts/default"),
                "channel": self.forum.id,
                "backfill": backfill,
            },
        )
        await record.wait_for(lambda r: bool(r.contents))


@pytest.fixture
async def world(tmp_path: Path, backend: str) -> AsyncIterator[World]:
    """The bot process on SQLite, and on PostgreSQL (a fresh schema)."""
    async with (
        database_for(backend, tmp_path) as url,
        DiscordDouble(token=TEST_TOKEN) as double,
        FeedServer() as feeds,
    ):
        feeds.fixture("/feeds/posts/default", "seed/posts.atom.xml")
        comments = [
            GenComment(
                3000 + n,
                at(5 + n),
                f"comment number {n}",
                parent=3000 + n - 1 if n % 4 == 3 else None,
            )
            for n in range(COMMENTS)
        ]
        feeds.route("/feeds/comments/default", blogger_comments(comments))
        world = World(tmp_path, double, feeds, url)
        try:
            yield world
        finally:
            await world.stop_bot()


async def test_sigkill_mid_backfill_then_restart_gives_each_comment_once(world: World) -> None:
    """Killed a third into a 100-comment backfill and restarted: 100 comments, once each."""
    await world.start_bot()
    await world.subscribe()
    await world.wait_for_comments(30)
    await world.kill_bot()
    await world.start_bot()
    await world.wait_for_comments(COMMENTS)
    await world.wait_delivered()
    assert sorted(world.comment_numbers()) == list(range(COMMENTS))
    assert world.threads() == ["Great Leadership, But Poor Output?"]


@pytest.mark.slow
async def test_randomised_kills(world: World) -> None:
    """20 SIGKILLs at random moments of a 3-thread, 120-comment backfill: each exactly once.

    Each kill is followed by a restart on the same database. The moments are
    spread from the subscription (forum posts being made) to the last comments.
    """
    rng = random.Random(int(os.environ.get("CRASH_SEED", "20261126")))
    articles = [blogger_post(str(800 + a), f"Article {a}", at(a)) for a in range(3)]
    world.feeds.route("/feeds/posts/default", blogger_posts(articles))
    comments = [
        GenComment(
            20_000 + n,
            at(10 + n),
            f"comment number {n}",
            post=str(800 + n % 3),
            parent=20_000 + n - 3 if n % 5 == 4 else None,
        )
        for n in range(120)
    ]
    world.feeds.route("/feeds/comments/default", blogger_comments(comments))
    world.double.set_rate_limit("POST /channels/{channel_id}/messages", 5, 1.0)
    await world.start_bot()
    await world.subscribe(backfill=3)
    kills = 0
    for _ in range(20):
        if len(world.comment_numbers()) >= 120:
            break
        await asyncio.sleep(rng.uniform(0.0, 0.6))
        await world.kill_bot()
        kills += 1
        await world.start_bot()
    assert kills >= 10, f"only {kills} kills landed before the backfill finished"
    await world.wait_for_comments(120, timeout=120)
    await world.wait_delivered()
    counts = Counter(world.comment_numbers())
    assert sorted(counts) == list(range(120))
    assert set(counts.values()) == {1}
    assert sorted(world.threads()) == ["Article 0", "Article 1", "Article 2"]


async def test_sigterm_stops_cleanly_and_restart_finishes(world: World) -> None:
    """SIGTERM mid-backfill exits 0 with the database closed; a restart completes the thread."""
    await world.start_bot()
    await world.subscribe()
    await world.wait_for_comments(20)
    assert world.process is not None
    world.process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(world.process.wait(), 15)
    world.process = None
    assert code == 0
    log = world.log.read_text()
    assert "Received SIGTERM: stopping" in log and "database closed" in log
    assert "Traceback" not in log
    await world.start_bot()
    await world.wait_for_comments(COMMENTS)
    await world.wait_delivered()
    assert sorted(world.comment_numbers()) == list(range(COMMENTS))


@pytest.mark.parametrize(
    ("path", "wait_for", "chatter"),
    [
        # Killed after Discord made the comment message, before the bot recorded it.
        (r"/channels/\d+/messages", "message", 0),
        # The same, and members post 150 messages in the thread before the restart.
        (r"/channels/\d+/messages", "message", 150),
        # Killed after Discord made the forum post, before the bot recorded the thread.
        (r"/channels/\d+/threads", "thread", 0),
    ],
)
async def test_kill_between_discord_answer_and_record(
    world: World, path: str, wait_for: str, chatter: int
) -> None:
    """SIGKILL while Discord's answer is held back: the restart adopts what was made."""
    fault = world.double.inject_fault("delay_after_commit", path, method="POST", delay=30, times=1)
    await world.start_bot()
    await world.subscribe()
    async with asyncio.timeout(20):
        while fault.hits == 0:
            await asyncio.sleep(0.02)
    if wait_for == "thread":
        assert len(world.threads()) == 1
    else:
        assert len(world.comment_numbers()) == 1
    await world.kill_bot()
    world.double.clear_faults()
    [thread] = world.double.threads(world.forum.id)
    for n in range(chatter):
        world.double.post_message(int(thread["id"]), f"member chatter {n}")
    await world.start_bot()
    await world.wait_for_comments(COMMENTS)
    await world.wait_delivered()
    assert sorted(world.comment_numbers()) == list(range(COMMENTS))
    assert world.threads() == ["Great Leadership, But Poor Output?"]

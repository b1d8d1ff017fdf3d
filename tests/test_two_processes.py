"""Two bot processes on one PostgreSQL database (SPEC §8): shards 0 and 1 of 2.

Each process runs one shard and so mirrors the blog of the guild on it. One is
killed (SIGKILL) in the middle of a backfill; its replacement starts with
overlapping shards (0 and 1) while the other still runs shard 0, and bursts of
new comments arrive on both blogs. Leases keep the processes off each other's
subscriptions: every comment appears exactly once, in order, replies linked.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_TOKEN
from tests.dbview import DatabaseView
from tests.discord_double import DiscordDouble
from tests.feedgen import GenComment, at, blogger_comments, comment_id
from tests.feedserver import FeedServer
from tests.pg import fresh_schema, require_postgres
from tests.processes import bot_environment

NUMBER = re.compile(r"comment (\d+) of blog \w\b")
FIRST, BURST = 40, 40
LEASE_SECONDS = 3


@dataclass
class Blog:
    name: str
    guild: Any
    forum: Any
    comments: list[GenComment] = field(default_factory=list)

    def add(self, numbers: range) -> None:
        for n in numbers:
            # Every fourth comment answers the one before it.
            parent = 50_000 + n - 1 if n % 4 == 3 else None
            number = 50_000 + n + (0 if self.name == "a" else 100_000)
            if parent is not None and self.name == "b":
                parent += 100_000
            self.comments.append(
                GenComment(number, at(10 + n), f"comment {n} of blog {self.name}", parent=parent)
            )


class Processes:
    """Bot processes against one double, one feed server and one PostgreSQL schema."""

    def __init__(self, tmp_path: Path, double: DiscordDouble, database_url: str) -> None:
        self.tmp_path = tmp_path
        self.double = double
        self.database_url = database_url
        self.running: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, name: str, shard_ids: str) -> None:
        env = bot_environment(
            self.double.url,
            DATABASE_URL=self.database_url,
            SHARD_COUNT="2",
            SHARD_IDS=shard_ids,
            ALLOW_PRIVATE_ADDRESSES="true",
            POLL_INTERVAL_SECONDS="2",
            BLOGMIRROR_TEST_LEASE_SECONDS=str(LEASE_SECONDS),
        )
        with (self.tmp_path / f"{name}.log").open("ab") as log:
            self.running[name] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.botprocess",
                env=env,
                cwd=self.tmp_path,
                stdout=log,
                stderr=log,
            )

    async def kill(self, name: str) -> None:
        process = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        await process.wait()

    def check_alive(self) -> None:
        for name, process in self.running.items():
            if process.returncode is not None:
                log = (self.tmp_path / f"{name}.log").read_text()[-3000:]
                raise AssertionError(f"bot {name} exited: {log}")

    async def stop_all(self) -> None:
        for process in self.running.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        self.running.clear()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Processes, FeedServer, list[Blog]]]:
    require_postgres()
    async with (
        fresh_schema() as (_schema, url),
        DiscordDouble(token=TEST_TOKEN) as double,
        FeedServer() as feeds,
    ):
        double.set_rate_limit("POST /channels/{channel_id}/messages", 5, 1.0)
        blogs = []
        for name, shard in (("a", 0), ("b", 1)):
            guild = double.add_guild(f"Guild of blog {name}", shard=(shard, 2))
            forum = double.add_forum_channel(guild.id, "blog-comments")
            blogs.append(Blog(name, guild, forum))
            feeds.fixture(f"/{name}/feeds/posts/default", "seed/posts.atom.xml")
        processes = Processes(tmp_path, double, url)
        try:
            yield processes, feeds, blogs
        finally:
            await processes.stop_all()


def serve(feeds: FeedServer, blog: Blog) -> None:
    feeds.route(f"/{blog.name}/feeds/comments/default", blogger_comments(blog.comments))


def shown(double: DiscordDouble, blog: Blog) -> list[dict[str, Any]]:
    """The comment messages in the blog's one thread (after the article message)."""
    threads = double.threads(blog.forum.id)
    if not threads:
        return []
    [thread] = threads
    return double.messages(int(thread["id"]))[1:]


def numbers(double: DiscordDouble, blog: Blog) -> list[int]:
    return [int(m[0]) for m in (NUMBER.findall(x["content"])[:1] for x in shown(double, blog)) if m]


async def wait(processes: Processes, condition: Any, what: str, timeout: float = 90) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                processes.check_alive()
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_two_processes_kill_and_overlapping_restart_post_each_comment_once(
    world: tuple[Processes, FeedServer, list[Blog]],
) -> None:
    """Shards 0 and 1 in two processes; one killed mid-backfill and restarted on 0,1."""
    processes, feeds, (blog_a, blog_b) = world
    double = processes.double
    for blog in (blog_a, blog_b):
        blog.add(range(FIRST))
        serve(feeds, blog)
    await processes.start("zero", "0")
    await processes.start("one", "1")
    await double.wait_shards_ready({0, 1}, count=2)
    await wait(processes, lambda: bool(double.commands.commands(None)), "the commands")
    for blog in (blog_a, blog_b):
        record = await double.invoke_command(
            blog.guild.id,
            blog.forum.id,
            "blog",
            "subscribe",
            {"url": feeds.url(f"/{blog.name}/feeds/posts/default"), "channel": blog.forum.id},
        )
        await record.wait_for(lambda r: bool(r.contents))
    await wait(processes, lambda: len(numbers(double, blog_b)) >= 10, "blog b's backfill to start")
    await processes.kill("one")
    # Slow answers for blog a's burst: each send is in flight for a while, which is
    # when a second process without leases would take the same comment for unsent.
    double.inject_fault(
        "delay",
        r"/channels/\d+/messages",
        method="POST",
        delay=0.3,
        times=None,
        content=r"comment \d+ of blog a",
    )
    for blog in (blog_a, blog_b):
        blog.add(range(FIRST, FIRST + BURST))
        serve(feeds, blog)
    total = FIRST + BURST
    # "zero" is busy with blog a's burst when the replacement, running both shards,
    # starts: at once it finds blog a's and blog b's unfinished work.
    await wait(processes, lambda: len(numbers(double, blog_a)) > FIRST, "blog a's burst to start")
    await processes.start("both", "0,1")
    view = DatabaseView(url=processes.database_url)

    def done() -> bool:
        if any(len(numbers(double, blog)) < total for blog in (blog_a, blog_b)):
            return False
        [row] = view.rows(
            "SELECT (SELECT count(*) FROM comments WHERE state <> 'posted')"
            " + (SELECT count(*) FROM outbox WHERE completed_at IS NULL)"
        )
        return int(row[0]) == 0

    await wait(processes, done, "every comment of both blogs", timeout=150)
    for blog in (blog_a, blog_b):
        assert numbers(double, blog) == list(range(total)), blog.name  # once each, in order
        by_number = {n: m for n, m in zip(numbers(double, blog), shown(double, blog), strict=True)}
        for n, message in by_number.items():
            reference = (message.get("message_reference") or {}).get("message_id")
            if n % 4 == 3:
                assert reference == by_number[n - 1]["id"], (blog.name, n)
            else:
                assert reference is None, (blog.name, n)
    stored = view.rows("SELECT entry_id FROM comments")
    assert len(stored) == 2 * total
    assert comment_id(50_000) in {row["entry_id"] for row in stored}

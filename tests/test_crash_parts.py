"""Exactly once for long comments: the bot process is killed between a comment's parts.

Uses the subprocess world of ``tests/test_crash.py``: the real bot process
against this process's Discord double and feed server, restarted on one file.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.render import key_in
from tests.conftest import TEST_TOKEN, database_for
from tests.discord_double import DiscordDouble
from tests.feedgen import GenComment, at, blogger_comments
from tests.feedserver import FeedServer
from tests.test_crash import World

SENTENCE = re.compile(r"c(\d+) sentence (\d{3})")
COMMENTS = 6
SENTENCES = 120  # about 5,600 characters: three messages each


def text(number: int) -> str:
    return " ".join(
        f"c{number} sentence {n:03d} is long enough to count." for n in range(SENTENCES)
    )


@pytest.fixture
async def world(tmp_path: Path, backend: str) -> AsyncIterator[World]:
    async with (
        database_for(backend, tmp_path) as url,
        DiscordDouble(token=TEST_TOKEN) as double,
        FeedServer() as feeds,
    ):
        feeds.fixture("/feeds/posts/default", "seed/posts.atom.xml")
        comments = [GenComment(5000 + n, at(5 + n), text(n)) for n in range(COMMENTS)]
        feeds.route("/feeds/comments/default", blogger_comments(comments))
        world = World(tmp_path, double, feeds, url)
        try:
            yield world
        finally:
            await world.stop_bot()


def thread_contents(world: World) -> list[str]:
    [thread] = world.double.threads(world.forum.id)
    return [m["content"] for m in world.double.messages(int(thread["id"]))[1:]]


def nothing_pending(world: World) -> bool:
    """The bot's own record: no pending comment, no open intent (read-only)."""
    [pending] = world.db.rows("SELECT count(*) FROM comments WHERE state = 'pending'") or [[1]]
    [open_] = world.db.rows("SELECT count(*) FROM outbox WHERE completed_at IS NULL") or [[1]]
    return pending[0] == 0 and open_[0] == 0


@pytest.mark.parametrize("kill_at_part", [2, 3])
async def test_kill_between_parts_then_restart_completes_each_part_once(
    world: World, kill_at_part: int
) -> None:
    """Killed while Discord holds back part N of a comment's answer: every part once, in order."""
    fault = world.double.inject_fault(
        "delay_after_commit",
        r"/channels/\d+/messages",
        method="POST",
        delay=30,
        times=1,
        content=rf"c2 sentence.*· part {kill_at_part}\b",
    )
    await world.start_bot()
    await world.subscribe()
    async with asyncio.timeout(30):
        while fault.hits == 0:
            await asyncio.sleep(0.02)
    await world.kill_bot()
    world.double.clear_faults()
    await world.start_bot()
    async with asyncio.timeout(60):
        while not nothing_pending(world):
            await asyncio.sleep(0.05)
    contents = thread_contents(world)
    keys = Counter(key_in(c) for c in contents)
    assert None not in keys and set(keys.values()) == {1}, keys
    for number in range(COMMENTS):
        said = [int(n) for c in contents for who, n in SENTENCE.findall(c) if int(who) == number]
        assert said == list(range(SENTENCES)), number

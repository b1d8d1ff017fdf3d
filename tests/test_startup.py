"""Start-up while Discord cannot be reached, and with a token Discord refuses.

Real ``tests.botprocess`` processes against the Discord double: absent (a closed
loopback port), arriving late on a port named beforehand, answering 5xx, and
answering 401; and what a healthy start says. ``TEST_START_RETRY_SECONDS`` makes the
retries fast.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import pytest

from bot.settings import configure_logging
from bot.startup import Backoff
from tests.conftest import TEST_TOKEN
from tests.discord_double import DiscordDouble
from tests.feedserver import free_port
from tests.processes import bot_environment

RETRY_LINE = re.compile(
    r"WARNING +bot\.startup: Discord unreachable \((.+)\); retrying in [\d.]+ s$"
)
# Every line a healthy bot writes is a log record; a traceback's lines are not.
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ +[\w.]+: ")


class BotProcess:
    """A ``tests.botprocess`` process whose stderr is read line by line as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.eof = False
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, tmp_path: Path, double_url: str, **env: str) -> BotProcess:
        environment = bot_environment(
            double_url,
            DATABASE_PATH="data/blogmirror.db",
            TEST_START_RETRY_SECONDS="0.05",
            **env,
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.botprocess",
            env=environment,
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.lines.append(raw.decode().rstrip("\n"))
            self._changed.set()
        self.eof = True
        self._changed.set()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def retries(self) -> list[str]:
        return [m.group(1) for line in self.lines if (m := RETRY_LINE.search(line))]

    async def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(30):
                while not condition():
                    if self.eof:
                        raise AssertionError(f"the bot exited before {what}:\n{self.text}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}:\n{self.text}") from None

    async def terminate(self) -> float:
        """SIGTERM, then wait for the exit; returns how long stopping took."""
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(f"SIGTERM did not stop the bot:\n{self.text}") from None
        await self._reader
        return time.monotonic() - sent

    async def finish(self) -> int:
        try:
            returncode = await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(f"the bot did not exit:\n{self.text}") from None
        await self._reader
        return returncode


def assert_clean(bot: BotProcess) -> None:
    """No traceback, nothing left unclosed: every line of stderr is one log record."""
    assert "Traceback" not in bot.text
    assert "Unclosed" not in bot.text and "was destroyed" not in bot.text
    assert [line for line in bot.lines if not LOG_RECORD.match(line)] == []


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    """Each delay lies in the upper half of a step that doubles from first to cap."""
    low = list(islice(Backoff(first=1, cap=60).delays(lambda: 0.0), 8))
    high = list(islice(Backoff(first=1, cap=60).delays(lambda: 1.0), 8))
    assert low == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert high == [1, 2, 4, 8, 16, 32, 60, 60]


async def test_unreachable_discord_is_retried_a_line_each_until_sigterm(tmp_path: Path) -> None:
    """Nothing listening: one WARNING line per attempt, no traceback; SIGTERM exits 0 at once."""
    port = free_port()
    bot = await BotProcess.start(tmp_path, f"http://127.0.0.1:{port}")
    await bot.wait_until(lambda: len(bot.retries()) >= 3, "three retries")

    took = await bot.terminate()

    assert bot.process.returncode == 0, bot.text
    assert took < 5
    assert set(bot.retries()) == {f"cannot connect to 127.0.0.1:{port}: Connection refused"}
    assert_clean(bot)


async def test_a_bot_started_before_discord_connects_once_it_is_up(tmp_path: Path) -> None:
    """The double starts on the bot's port after a few failed attempts: the bot logs in,
    READY arrives, commands are synced once, and it stops cleanly."""
    double = DiscordDouble(token=TEST_TOKEN, port=free_port())
    guild = double.add_guild("Readers")
    bot = await BotProcess.start(tmp_path, double.url, DEV_GUILD_ID=str(guild.id))
    try:
        await bot.wait_until(lambda: len(bot.retries()) >= 2, "two retries")
        await double.start()
        await bot.wait_until(double.gateway.ready.is_set, "READY")
        await bot.wait_until(lambda: "Connected as" in bot.text, "the bot to say it is connected")
        assert double.gateway.identifies == 1
        assert [c["name"] for c in double.commands.commands(guild.id)] == ["blog"]
        assert await bot.terminate() < 5
    finally:
        if bot.process.returncode is None:
            bot.process.kill()
            await bot.process.wait()
        await double.stop()
    assert bot.process.returncode == 0, bot.text
    assert_clean(bot)


async def test_5xx_answers_at_log_in_are_retried_without_duplicates(tmp_path: Path) -> None:
    """503 from /users/@me, then from the command sync (after the cogs loaded): each is one
    retry line; the next attempt loads nothing twice and the bot gets READY."""
    async with DiscordDouble(token=TEST_TOKEN) as double:
        guild = double.add_guild("Readers")
        double.inject_fault("error_before", r"/users/@me", method="GET", status=503)
        double.inject_fault("error_before", r"/applications/\d+/guilds/\d+/commands", status=503)
        bot = await BotProcess.start(tmp_path, double.url, DEV_GUILD_ID=str(guild.id))
        try:
            await bot.wait_until(double.gateway.ready.is_set, "READY")
            await bot.wait_until(lambda: "Connected as" in bot.text, "the bot to be connected")
            assert double.gateway.identifies == 1
            assert await bot.terminate() < 5
        finally:
            if bot.process.returncode is None:
                bot.process.kill()
                await bot.process.wait()
    assert bot.retries() == ["HTTP 503 from Discord", "HTTP 503 from Discord"]
    assert bot.process.returncode == 0, bot.text
    assert_clean(bot)


async def test_a_refused_token_stops_the_bot_with_one_line_and_exit_2(tmp_path: Path) -> None:
    """Discord answers 401 to the log-in: one line says so, exit status 2, no retry."""
    async with DiscordDouble(token="a-different-token-0123456789") as double:
        bot = await BotProcess.start(tmp_path, double.url)
        returncode = await bot.finish()
        assert double.gateway.identifies == 0
    assert returncode == 2, bot.text
    assert bot.retries() == []
    about_token = [line for line in bot.lines if "token" in line.lower()]
    assert about_token == [
        "blogmirror: Discord refused the token (DISCORD_TOKEN): reset it in the developer "
        "portal and update the setting."
    ]
    assert bot.lines[-1] == about_token[0]
    assert TEST_TOKEN not in bot.text
    assert "Traceback" not in bot.text


async def test_start_up_says_nothing_about_voice(tmp_path: Path) -> None:
    """discord.py's "voice will NOT be supported" warnings are gone; the usual start lines stay."""
    import discord.voice_client

    # Without PyNaCl or davey discord.py warns at start: this test needs one missing.
    assert not (discord.voice_client.has_nacl and discord.voice_client.has_dave)
    async with DiscordDouble(token=TEST_TOKEN) as double:
        guild = double.add_guild("Readers")
        bot = await BotProcess.start(tmp_path, double.url, DEV_GUILD_ID=str(guild.id))
        try:
            await bot.wait_until(lambda: "Connected as" in bot.text, "the bot to be connected")
            assert await bot.terminate() < 5
        finally:
            if bot.process.returncode is None:
                bot.process.kill()
                await bot.process.wait()
    assert bot.process.returncode == 0, bot.text
    assert "voice will NOT be supported" not in bot.text, bot.text
    assert any(re.search(r"INFO +bot\.client: Connected as ", line) for line in bot.lines)
    assert "Stopped; database closed" in bot.text
    assert_clean(bot)


def test_other_discord_client_warnings_still_reach_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only the voice warnings are filtered: discord.client's other warnings are logged."""
    configure_logging("INFO")
    client_log = logging.getLogger("discord.client")
    with caplog.at_level(logging.WARNING, logger="discord.client"):
        client_log.warning("PyNaCl is not installed, voice will NOT be supported")
        client_log.warning("Attempting a reconnect in %.2fs", 1.5)
    assert [r.getMessage() for r in caplog.records if r.name == "discord.client"] == [
        "Attempting a reconnect in 1.50s"
    ]

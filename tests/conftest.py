"""Shared fixtures: the whole bot against the Discord double and a local feed server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.client import BlogMirrorBot
from bot.discord_rest import DiscordRest
from bot.fetch import Fetcher, create_session
from bot.metrics import Metrics
from bot.pacing import Pacer
from bot.settings import Settings
from bot.untrusted import TimeLimits, Untrusted, open_pool
from storage import Database, open_database
from tests.dbview import DatabaseView
from tests.discord_double import DiscordDouble, RateLimits
from tests.feedserver import FeedServer, guard_loopback_only
from tests.pg import fresh_schema, require_postgres
from tests.processes import TEST_TOKEN


class TestBot(BlogMirrorBot):
    """The real bot; only discord.py's 5 s pause before a re-IDENTIFY is skipped."""

    __test__ = False

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        return None


def test_settings(database_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "discord_token": TEST_TOKEN,
        "database_path": database_path,
        "poll_interval_seconds": 300,
        "poll_concurrency": 20,
        "allow_private_addresses": True,
        "dev_guild_id": None,
        "log_level": "DEBUG",
        "feed_timeout_seconds": 10.0,
        "max_feed_bytes": 10_000_000,
    }
    values.update(overrides)
    return Settings(**values)


test_settings.__test__ = False  # type: ignore[attr-defined]


@dataclass
class Harness:
    """A running bot, the double it talks to, and the feed server it reads."""

    double: DiscordDouble
    feeds: FeedServer
    bot: TestBot
    guild_id: int
    forum_id: int
    text_id: int
    database_path: Path
    database_url: str | None = None
    """Set when the bot runs on PostgreSQL (the ``postgres`` half of the suite)."""

    async def subscribe(self, url: str, channel_id: int, **options: Any) -> Any:
        record = await self.double.invoke_command(
            self.guild_id,
            self.text_id,
            "blog",
            "subscribe",
            {"url": url, "channel": channel_id, **options},
        )
        await record.wait_done()
        return record

    async def wait_for(
        self, predicate: Callable[[], bool], *, timeout: float = 15.0, what: str = "condition"
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None

    @property
    def db(self) -> DatabaseView:
        """The bot's database, read-only, for waiting on what the bot recorded."""
        if self.database_url is not None:
            return DatabaseView(url=self.database_url)
        return DatabaseView(self.database_path)

    @property
    def polling(self) -> Any:
        """The polling cog (its scheduler's ``running`` tasks and ``completed_rounds``).

        Extensions are loaded as fresh modules, so its class is not the one tests import.
        """
        cog = self.bot.get_cog("PollingCog")
        assert cog is not None
        return cog

    def busy(self) -> bool:
        """True while a poll-and-deliver cycle runs or waits to run."""
        if self.polling.running:
            return True
        # A cycle ends after its lock: it gives its lease back (batched with others) last.
        if any(not task.done() for task in self.bot._active_cycles):
            return True
        # A cycle holds its subscription's lock from start to end.
        return any(self.bot.subscription_busy(i) for i in self.db.subscription_ids())

    async def wait_idle(self, *, timeout: float = 30.0) -> None:
        """Until the bot has nothing left to do: no cycle running, and nothing pending,
        to edit or half-sent in its database. Then whatever it was going to post is posted."""
        await self.wait_for(
            lambda: not self.busy() and self.db.unfinished() == 0,
            timeout=timeout,
            what="the bot to finish its work",
        )

    async def wait_gateway_applied(self) -> None:
        """Until the bot has received and applied every gateway event sent to it so far.

        discord.py updates its cache (channels, threads, permissions) as each event
        arrives; listeners (cogs) run after, so wait on what they record instead.
        """
        sockets = [self.bot._get_websocket(shard_id=shard) for shard in self.bot.shards]
        sent = {ws: self.double.gateway.sessions[ws.session_id].seq for ws in sockets}
        await self.wait_for(
            lambda: all((ws.sequence or 0) >= seq for ws, seq in sent.items()),
            what=f"gateway events {sorted(sent.values())}",
        )

    def thread_messages(self, parent_id: int) -> list[list[dict[str, Any]]]:
        return [self.double.messages(int(t["id"])) for t in self.double.threads(parent_id)]

    async def wait_for_thread_messages(self, parent_id: int, count: int) -> None:
        """Until the threads under ``parent_id`` hold ``count`` messages in all."""
        await self.wait_for(lambda: sum(map(len, self.thread_messages(parent_id))) >= count)


@contextlib.asynccontextmanager
async def running_bot(
    tmp_path: Path,
    *,
    rate_limits: RateLimits | None = None,
    database_path: Path | None = None,
    database_url: str | None = None,
    double: DiscordDouble | None = None,
    feeds: FeedServer | None = None,
    limits: TimeLimits | None = None,
    **settings: Any,
) -> AsyncIterator[Harness]:
    """Start the double (unless given), the feed server and the bot; stop all after.

    ``database_url`` runs the bot on PostgreSQL (a URL from ``tests.pg.fresh_schema``).
    The bot gets a worker pool of its own, as ``run_bot`` gives it, with ``limits``.
    """
    own_double = double is None
    double = double or DiscordDouble(token=TEST_TOKEN, rate_limits=rate_limits)
    own_feeds = feeds is None
    feeds = feeds or FeedServer()
    if own_double:
        await double.start()
    if own_feeds:
        await feeds.start()
    guild = double.add_guild("Readers")
    forum = double.add_forum_channel(guild.id, "blog-comments", tags=["CRC", "News"])
    text = double.add_text_channel(guild.id, "general")
    path = database_path or tmp_path / "blogmirror.db"
    config = test_settings(path, database_url=database_url, **settings)
    db = await open_database(path=path, url=database_url)
    metrics = Metrics()
    try:
        with double.patched():
            async with (
                open_pool() as pool,
                create_session(allow_private=config.allow_private_addresses) as session,
                aiohttp.ClientSession(trace_configs=[metrics.discord_trace]) as discord_session,
            ):
                fetcher = Fetcher(
                    session,
                    timeout=config.feed_timeout_seconds,
                    max_bytes=config.max_feed_bytes,
                    allow_private=config.allow_private_addresses,
                )
                rest = DiscordRest(discord_session, token=TEST_TOKEN, pacer=Pacer())
                bot = TestBot(
                    settings=config,
                    db=db,
                    fetcher=fetcher,
                    rest=rest,
                    untrusted=Untrusted(pool, limits),
                    metrics=metrics,
                    guild_ready_timeout=0.05,
                )
                bot.mirror.policy.retry_delay = 0.05
                runner = asyncio.create_task(bot.start(TEST_TOKEN))
                try:
                    await double.wait_ready()
                    async with asyncio.timeout(10):
                        await bot.wait_until_ready()
                    yield Harness(
                        double, feeds, bot, guild.id, forum.id, text.id, path, database_url
                    )
                finally:
                    await bot.close()
                    with contextlib.suppress(Exception):
                        await runner
    finally:
        await db.close()
        if own_feeds:
            await feeds.close()
        if own_double:
            await double.stop()


@pytest.fixture
async def untrusted() -> AsyncIterator[Untrusted]:
    """The bot's parsing and rendering, in a worker pool of its own."""
    async with open_pool() as pool:
        yield Untrusted(pool)


@pytest.fixture
async def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything resolves or connects beyond this machine."""
    guard_loopback_only(monkeypatch)


@pytest.fixture
async def server() -> AsyncIterator[FeedServer]:
    """A local feed server on 127.0.0.1."""
    async with FeedServer() as srv:
        yield srv


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each storage and end-to-end test runs on SQLite and on PostgreSQL."""
    if request.param == "postgres":
        require_postgres()
    return str(request.param)


@contextlib.asynccontextmanager
async def database_for(backend: str, tmp_path: Path) -> AsyncIterator[str | None]:
    """``None`` for SQLite (a file in ``tmp_path``), or the URL of a fresh PostgreSQL schema."""
    if backend == "sqlite":
        yield None
        return
    async with fresh_schema() as (_schema, url):
        yield url


@pytest.fixture
async def database(backend: str, tmp_path: Path) -> AsyncIterator[Database]:
    """An open, migrated, empty database of each backend."""
    async with database_for(backend, tmp_path) as url:
        db = await open_database(path=tmp_path / "data" / "blogmirror.db", url=url)
        try:
            yield db
        finally:
            await db.close()


@pytest.fixture
async def harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> AsyncIterator[Harness]:
    guard_loopback_only(monkeypatch)
    async with (
        database_for(backend, tmp_path) as url,
        running_bot(tmp_path, database_url=url) as running,
    ):
        yield running

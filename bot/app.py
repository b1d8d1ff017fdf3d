"""Running the bot: open the database, HTTP sessions and worker pool, start, stop cleanly."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable

import aiohttp
import discord

from bot import web
from bot.client import BlogMirrorBot
from bot.discord_rest import DiscordRest
from bot.errors import AnotherInstanceError, BlogMirrorError, CannotStartError
from bot.fetch import Fetcher, create_session
from bot.metrics import Metrics
from bot.pacing import Pacer
from bot.settings import Settings
from bot.startup import login_when_reachable
from bot.untrusted import Untrusted, open_pool
from storage import (
    DatabaseCorruptError,
    DatabaseInUseError,
    DatabaseLock,
    DatabaseTooNewError,
    open_database,
)

log = logging.getLogger(__name__)


async def run_bot(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM or a fatal error; always close the database.

    The SQLite database's lock is taken first and held to the end, so a second
    process on the same ``DATABASE_PATH`` stops before it opens, migrates or writes
    anything. PostgreSQL (``DATABASE_URL``) is shared by design: several processes
    take turns per subscription instead (SPEC §8).
    """
    if settings.database_url is not None:
        await _run_with_database(settings)
        return
    try:
        lock = DatabaseLock.acquire(settings.database_path)
    except DatabaseInUseError as exc:
        pid = f" (pid {exc.holder_pid})" if exc.holder_pid is not None else ""
        raise AnotherInstanceError(
            f"another blogmirror instance is already running on {settings.database_path}{pid}; "
            "stop it first or set DATABASE_PATH to another file."
        ) from None
    with lock:
        await _run_with_database(settings)


async def _run_with_database(settings: Settings) -> None:
    try:
        db = await open_database(path=settings.database_path, url=settings.database_url)
    except DatabaseTooNewError as exc:
        # Written by a newer blogmirror: only an upgrade (or another database) helps.
        raise CannotStartError(str(exc)) from None
    except DatabaseCorruptError as exc:
        raise CannotStartError(
            f"the database file {settings.database_path} is damaged or not a SQLite database "
            f"({exc.reason}): restore it from a backup, or move it aside (with any "
            f"{settings.database_path.name}-wal file beside it) to start with an empty one."
        ) from None
    metrics = Metrics()
    try:
        async with (
            open_pool() as pool,
            create_session(allow_private=settings.allow_private_addresses) as session,
            aiohttp.ClientSession(trace_configs=[metrics.discord_trace]) as discord_session,
        ):
            fetcher = Fetcher.from_settings(session, settings)
            # Discord's own address, never a feed's: a session of its own, without
            # the feed fetcher's address guard.
            rest = DiscordRest(discord_session, token=settings.discord_token, pacer=Pacer())
            bot = BlogMirrorBot(
                settings=settings,
                db=db,
                fetcher=fetcher,
                rest=rest,
                untrusted=Untrusted(pool),
                metrics=metrics,
            )
            stop = _install_signal_handlers(bot)
            _settle_heap()
            try:
                # The web server answers from before the log-in (503 until READY) to the end.
                routes = bot.websub.routes() if bot.websub is not None else []
                async with bot, web.serve(settings, bot, routes):
                    # Client.start is login + connect; the log-in (and the first gateway
                    # connection) are retried while Discord is unreachable.
                    if await login_when_reachable(bot, settings.discord_token):
                        await bot.connect()
            except discord.PrivilegedIntentsRequired:
                raise BlogMirrorError("Discord refused the gateway intents.") from None
            finally:
                stop()
    finally:
        await db.close()
        log.info("Stopped; database closed")


GC_YOUNG_THRESHOLD = 10_000


def _settle_heap() -> None:
    """Tell the garbage collector what this process's heap looks like, once it is built.

    What exists now (modules, classes, the bot and its services) lives as long
    as the process: frozen, the collector stops walking it on every full
    collection. Work then makes short-lived objects, nearly all freed at once
    by reference counting; the default young-generation threshold (700) still
    started a collection at every burst of concurrent polls, about 7 % of an
    idle poll's CPU (``bench/scale.py``). At 10,000 a collection is rare and
    what a cycle of garbage can hold back meanwhile stays small.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _install_signal_handlers(bot: BlogMirrorBot) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    closing: list[asyncio.Task[None]] = []

    def request_stop(name: str) -> None:
        if closing:
            return
        log.info("Received %s: stopping", name)
        closing.append(loop.create_task(bot.close()))

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, request_stop, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not on this platform / thread
            pass

    def remove() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return remove

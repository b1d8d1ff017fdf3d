"""Real bot processes and the database commands beside them (backup, migrate-to-postgres).

One Discord double, one feed server and one working folder outlive each bot
process, so a test can stop a bot, work on its database with ``python -m bot …``
and start another bot (on SQLite or on PostgreSQL) where the first one stopped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from tests.discord_double import DiscordDouble
from tests.feedgen import GenComment, blogger_comments
from tests.feedserver import FeedServer
from tests.processes import ROOT, bot_environment

DATABASE = "data/blogmirror.db"


class BotRuns:
    """Bot processes, one at a time, for one guild with one forum, in ``folder``."""

    def __init__(self, folder: Path, double: DiscordDouble, feeds: FeedServer) -> None:
        self.folder = folder
        self.double = double
        self.feeds = feeds
        self.guild = double.add_guild("Readers")
        self.forum = double.add_forum_channel(self.guild.id, "blog-comments")
        self.process: asyncio.subprocess.Process | None = None
        self.started = 0
        feeds.fixture("/feeds/posts/default", "seed/posts.atom.xml")

    @property
    def database(self) -> Path:
        return self.folder / DATABASE

    def serve_comments(self, comments: Sequence[GenComment]) -> None:
        self.feeds.route("/feeds/comments/default", blogger_comments(list(comments)))

    async def start(self, **settings: str) -> asyncio.subprocess.Process:
        """Start a bot (SQLite at ``DATABASE`` unless ``DATABASE_URL`` is given) and wait
        until the double's gateway sent it READY."""
        env = bot_environment(
            self.double.url,
            DATABASE_PATH=DATABASE,
            DEV_GUILD_ID=str(self.guild.id),
            ALLOW_PRIVATE_ADDRESSES="true",
            **settings,
        )
        self.double.gateway.ready.clear()
        self.started += 1
        with (self.folder / f"bot{self.started}.log").open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.botprocess",
                env=env,
                cwd=self.folder,
                stdout=log,
                stderr=log,
            )
        self.process = process
        ready = asyncio.create_task(self.double.gateway.ready.wait())
        exited = asyncio.create_task(process.wait())
        async with asyncio.timeout(30):
            await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        exited.cancel()
        self.check_alive()
        return process

    def check_alive(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            log = (self.folder / f"bot{self.started}.log").read_text()[-3000:]
            raise AssertionError(f"the bot exited {self.process.returncode}: {log}")

    async def stop(self) -> None:
        """SIGTERM, as a service manager stops it; the bot closes its database cleanly."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError("the bot did not stop on SIGTERM") from None

    async def command(self, subcommand: str, **options: Any) -> Any:
        record = await self.double.invoke_command(
            self.guild.id, self.forum.id, "blog", subcommand, options
        )
        return await record.wait_done()

    async def wait(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        """Until ``condition()``; fails early if the bot died."""
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    self.check_alive()
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None

    def thread_messages(self) -> list[dict[str, Any]]:
        """Every message of every thread in the forum, article messages included."""
        return [
            message
            for thread in self.double.threads(self.forum.id)
            for message in self.double.messages(int(thread["id"]))
        ]


async def blogmirror(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """``python -m bot ARGS`` in ``cwd`` without any Discord or database settings of ours:
    (exit status, stdout, stderr)."""
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("DISCORD", "DATABASE_"))
    }
    environment["PYTHONPATH"] = str(ROOT)
    environment.update(env or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=cwd,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def sqlite_dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in id order, columns by name: to compare two copies."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {table: _rows(conn, table) for table in tables}
    finally:
        conn.close()


def _rows(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    columns = sorted(row[1] for row in conn.execute(f'PRAGMA table_info("{table}")'))
    quoted = ", ".join(f'"{c}"' for c in columns)
    rows = conn.execute(f'SELECT {quoted} FROM "{table}"').fetchall()
    return sorted((tuple(zip(columns, row, strict=True)) for row in rows), key=repr)


async def postgres_dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """``sqlite_dump`` of the PostgreSQL database at ``url`` (its bookkeeping table aside)."""
    conn = await asyncpg.connect(url)
    try:
        tables = [
            row["table_name"]
            for row in await conn.fetch(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_name <> 'schema_version' "
                "ORDER BY table_name"
            )
        ]
        dump = {}
        for table in tables:
            rows = await conn.fetch(f'SELECT * FROM "{table}"')
            dump[table] = sorted((tuple(sorted(dict(row).items())) for row in rows), key=repr)
        return dump
    finally:
        await conn.close()

"""The PostgreSQL backend (``DATABASE_URL=postgresql://…``), on an asyncpg pool.

The repositories' SQL is written once (``storage/db.py``); this backend makes
it PostgreSQL's: ``?`` placeholders become ``$1, $2, …`` and ``json_each(?)``
becomes ``jsonb_array_elements_text($n::jsonb)``. Both rewrites are mechanical
and cached per statement. Transactions run concurrently (PostgreSQL locks rows),
so unlike SQLite no write lock is held in the process; several processes may
share the database (SPEC §8).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from storage.db import Database, UniqueViolation
from storage.migrations import migrate_postgres

log = logging.getLogger(__name__)

POOL_SIZE = 10
_JSON_EACH = re.compile(r"json_each\(\?\)")
_PLACEHOLDER = re.compile(r"\?")


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """The portable SQL of ``storage/`` in PostgreSQL's spelling."""
    sql = _JSON_EACH.sub("jsonb_array_elements_text(?::jsonb) AS each_(value)", sql)
    numbers = iter(range(1, sql.count("?") + 1))
    return _PLACEHOLDER.sub(lambda _match: f"${next(numbers)}", sql)


def _changed(status: str) -> int:
    """Rows changed, from a command status such as ``UPDATE 3`` or ``INSERT 0 1``."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def redacted(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}" if user else netloc))


async def _session_untouched(conn: asyncpg.Connection) -> None:
    """The pool's reset of a connection given back: nothing to undo.

    asyncpg's default runs a reset query (advisory unlocks, CLOSE ALL, UNLISTEN,
    RESET ALL) on every release, one more round trip per statement, doubling
    what an idle poll costs. The repositories never change session state (no
    SET, LISTEN, advisory locks or held cursors), and asyncpg still rolls back
    a transaction left open before calling this.
    """


class _PostgresTransaction:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        try:
            return _changed(await self.conn.execute(translate(sql), *parameters))
        except asyncpg.UniqueViolationError as exc:
            raise UniqueViolation(str(exc)) from exc

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            await self.conn.executemany(translate(sql), rows)
        except asyncpg.UniqueViolationError as exc:
            raise UniqueViolation(str(exc)) from exc

    async def fetch(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        try:  # an INSERT … RETURNING is a fetch
            return list(await self.conn.fetch(translate(sql), *parameters))
        except asyncpg.UniqueViolationError as exc:
            raise UniqueViolation(str(exc)) from exc

    async def fetchone(self, sql: str, parameters: Sequence[Any] = ()) -> Any | None:
        rows = await self.fetch(sql, parameters)
        return rows[0] if rows else None


class PostgresDatabase(Database):
    """An open blogmirror database in PostgreSQL."""

    backend = "postgres"

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        super().__init__()
        self.pool = pool
        self.url = url

    def __repr__(self) -> str:
        return f"<PostgresDatabase {redacted(self.url)}>"

    @classmethod
    async def connect(cls, url: str, *, schema: str | None = None) -> PostgresDatabase:
        """Connect a pool and migrate. ``schema`` puts every table in that schema (tests)."""
        settings = {"search_path": schema} if schema else {}
        pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=POOL_SIZE,
            server_settings=settings,
            reset=_session_untouched,
        )
        try:
            async with pool.acquire() as conn:
                await migrate_postgres(conn)
        except BaseException:
            await pool.close()
            raise
        log.debug("Opened database %s", redacted(url))
        return cls(pool, url)

    async def close(self) -> None:
        await self.pool.close()

    async def fetch(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        return list(await self.pool.fetch(translate(sql), *parameters))

    async def fetchone(self, sql: str, parameters: Sequence[Any] = ()) -> Any | None:
        return await self.pool.fetchrow(translate(sql), *parameters)

    async def write_one(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        async with self.pool.acquire() as conn:
            changed = await _PostgresTransaction(conn).execute(sql, parameters)
        self.transactions += 1
        return changed

    @asynccontextmanager
    async def write(self) -> AsyncIterator[_PostgresTransaction]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield _PostgresTransaction(conn)
        self.transactions += 1

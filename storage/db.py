"""The SQLite connection: opened once in ``main()`` and handed to the repositories.

One connection in autocommit mode; every write goes through ``Database.write()``,
which serialises writers with a lock and wraps them in ``BEGIN IMMEDIATE`` so
that concurrent tasks never interleave statements inside each other's
transactions.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from storage.migrations import migrate

log = logging.getLogger(__name__)

# Primary SQLite result codes that mean "these bytes are not a sound database".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


class DatabaseCorruptError(Exception):
    """The file is not a readable SQLite database: damaged, truncated or something else.

    Nothing in it can be trusted, so the bot stops instead of guessing; the
    operator restores a backup or moves the file aside.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} is not a readable SQLite database ({reason})")
        self.path = path
        self.reason = reason


class Database:
    """An open blogmirror database."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._write_lock = asyncio.Lock()
        # Write transactions committed (each write_one/write_batch/write counts one);
        # the backfill benchmark reports them per mirrored message.
        self.transactions = 0

    @classmethod
    async def open(cls, path: Path | str) -> Database:
        """Open (creating folder and file if needed), configure and migrate.

        Raises ``DatabaseCorruptError`` when the file is not a readable SQLite
        database (random bytes, a truncated copy).
        """
        path = Path(path)
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA busy_timeout = 5000")
            # Migrations run with foreign keys off: rebuilding a table drops the
            # old one, which would otherwise cascade into the rows that point at it.
            await migrate(conn)
            await conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            await conn.close()
            if exc.sqlite_errorcode & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                raise DatabaseCorruptError(path, str(exc)) from exc
            raise
        except BaseException:
            await conn.close()
            raise
        log.debug("Opened database %s", path)
        return cls(conn, path)

    async def close(self) -> None:
        async with self._write_lock:
            await self.conn.close()

    async def write_one(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        """Run one write statement on its own, atomic by itself in autocommit mode.

        Cheaper than ``write()`` for a lone UPDATE: one round trip to the
        connection's thread instead of three (BEGIN, statement, COMMIT), which is
        most of what an idle poll costs. The write lock is still taken, so the
        statement never lands inside another task's open transaction.
        """
        async with self._write_lock:
            await self.conn.execute(sql, parameters)
            self.transactions += 1

    async def write_batch(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement over many rows in a single round trip (and one transaction)."""
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                await self.conn.executemany(sql, rows)
            except BaseException:
                await self.conn.rollback()
                raise
            await self.conn.commit()
            self.transactions += 1

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: committed on success, rolled back on any error."""
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                await self.conn.rollback()
                raise
            await self.conn.commit()
            self.transactions += 1

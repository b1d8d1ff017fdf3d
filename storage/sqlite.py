"""The SQLite backend: one connection, opened once and handed to the repositories.

One connection in autocommit mode; every write goes through ``write()``, which
serialises writers with a lock and wraps them in ``BEGIN IMMEDIATE`` so that
concurrent tasks never interleave statements inside each other's transactions.
WAL mode lets reads go on while a write is open. One process per file
(``storage/lock.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from storage.db import Database, DatabaseCorruptError, UniqueViolation
from storage.migrations import migrate_sqlite

log = logging.getLogger(__name__)

# Primary SQLite result codes that mean "these bytes are not a sound database".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


@contextlib.contextmanager
def _unique_violations() -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if "UNIQUE" in str(exc):
            raise UniqueViolation(str(exc)) from exc
        raise


class _SqliteTransaction:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        with _unique_violations():
            async with self.conn.execute(sql, parameters) as cursor:
                return cursor.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with _unique_violations():
            await self.conn.executemany(sql, rows)

    async def fetch(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        with _unique_violations():  # an INSERT … RETURNING is a fetch
            return list(await self.conn.execute_fetchall(sql, parameters))

    async def fetchone(self, sql: str, parameters: Sequence[Any] = ()) -> Any | None:
        rows = await self.fetch(sql, parameters)
        return rows[0] if rows else None


class SqliteDatabase(Database):
    """An open blogmirror database in one SQLite file."""

    backend = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        super().__init__()
        self.conn = conn
        self.path = path
        self._write_lock = asyncio.Lock()
        self._tx = _SqliteTransaction(conn)

    @classmethod
    async def open(cls, path: Path | str) -> SqliteDatabase:
        """Open (creating folder and file if needed), configure and migrate."""
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
            await migrate_sqlite(conn)
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

    async def fetch(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """One round trip to the connection's thread (``execute_fetchall``)."""
        return await self._tx.fetch(sql, parameters)

    async def write_one(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """One statement, atomic by itself in autocommit mode.

        Cheaper than ``write()`` for a lone UPDATE: one round trip to the
        connection's thread instead of three (BEGIN, statement, COMMIT), which is
        most of what an idle poll costs. The write lock is still taken, so the
        statement never lands inside another task's open transaction.
        """
        async with self._write_lock:
            changed = await self._tx.execute(sql, parameters)
            self.transactions += 1
            return changed

    @asynccontextmanager
    async def write(self) -> AsyncIterator[_SqliteTransaction]:
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._tx
            except BaseException:
                await self.conn.rollback()
                raise
            await self.conn.commit()
            self.transactions += 1

"""The database, whichever backend holds it: opened once in ``main()``, handed to the repositories.

Two backends implement one small interface, so the repositories' SQL is written
once:

- SQLite (``storage/sqlite.py``), the default: one file, one process.
- PostgreSQL (``storage/postgres.py``) when ``DATABASE_URL`` is set: several
  processes may share it (SPEC §8).

The SQL the repositories write is the portable subset both understand, with
``?`` placeholders. The only backend-specific spelling allowed is
``json_each(?)`` over a JSON array parameter (``IN (SELECT value FROM
json_each(?))`` asks "which of these" in one query); the PostgreSQL backend
rewrites it to ``jsonb_array_elements_text``. Compare integer columns against
``CAST(value AS INTEGER)``. Times are ISO-8601 UTC text in both, booleans
integers 0/1, so a value means the same in either.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

Row = Mapping[str, Any]
"""A result row: ``row["column"]`` and ``row[index]`` both work in either backend."""


class DatabaseCorruptError(Exception):
    """The file is not a readable SQLite database: damaged, truncated or something else.

    Nothing in it can be trusted, so the bot stops instead of guessing; the
    operator restores a backup or moves the file aside.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} is not a readable SQLite database ({reason})")
        self.path = path
        self.reason = reason


class UniqueViolation(Exception):
    """An INSERT or UPDATE broke a UNIQUE constraint."""


class Transaction(Protocol):
    """Statements inside one write transaction (see ``Database.write``)."""

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def fetch(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]: ...

    async def fetchone(self, sql: str, parameters: Sequence[Any] = ()) -> Any | None: ...


class Database(abc.ABC):
    """An open blogmirror database."""

    backend: str
    """``"sqlite"`` or ``"postgres"``."""

    def __init__(self) -> None:
        # Write transactions committed (each write_one/write_batch/write counts one);
        # the backfill benchmark reports them per mirrored message.
        self.transactions = 0

    @classmethod
    async def open(cls, path: Path | str) -> Database:
        """Open the SQLite file at ``path`` (creating folder and file), migrated.

        Raises ``DatabaseCorruptError`` when the file is not a readable SQLite
        database (random bytes, a truncated copy).
        """
        from storage.sqlite import SqliteDatabase

        return await SqliteDatabase.open(path)

    @abc.abstractmethod
    async def fetch(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """Every row of a query, read outside any write transaction."""

    async def fetchone(self, sql: str, parameters: Sequence[Any] = ()) -> Any | None:
        rows = await self.fetch(sql, parameters)
        return rows[0] if rows else None

    @abc.abstractmethod
    def write(self) -> AbstractAsyncContextManager[Transaction]:
        """One write transaction: committed on success, rolled back on any error."""

    @abc.abstractmethod
    async def write_one(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """One write statement, atomic on its own; returns the rows it changed."""

    async def write_batch(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement over many rows in a single transaction."""
        async with self.write() as tx:
            await tx.executemany(sql, rows)

    @abc.abstractmethod
    async def close(self) -> None: ...


async def open_database(*, path: Path | str, url: str | None) -> Database:
    """PostgreSQL when ``url`` is given (``DATABASE_URL``), else the SQLite file at ``path``."""
    if url:
        from storage.postgres import PostgresDatabase

        return await PostgresDatabase.connect(url)
    return await Database.open(path)

"""Moving a SQLite database into an empty PostgreSQL database, ids and values as they are.

The PostgreSQL schema is made by the normal migrations (``migrate_postgres``),
so it is exactly the schema a bot on ``DATABASE_URL`` expects; both backends
store the same values in the same spelling (``storage/db.py``: times as ISO-8601
text, flags as integers), so rows are copied column by column, unchanged,
parents before children (the order is worked out from the SQLite foreign keys),
in batches with ``COPY``. Identity sequences then continue after the highest id
ever handed out, which for an ``AUTOINCREMENT`` table includes deleted rows
(``sqlite_sequence``), so an id is still never reused.

Everything on the PostgreSQL side happens in one transaction: a failure at any
point leaves the database as empty as it was. The SQLite file is only read, in
one read transaction; the caller holds its lock (``storage/lock.py``) so that no
bot writes to it meanwhile.
"""

from __future__ import annotations

import contextlib
import graphlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiosqlite
import asyncpg

from storage.migrations import SCHEMA_VERSION, DatabaseTooNewError, migrate_postgres
from storage.postgres import redacted

BATCH_ROWS = 1000


class MigrationError(Exception):
    """Nothing was migrated; ``str(exc)`` says why and what to do."""


@dataclass(frozen=True, slots=True)
class CopiedTable:
    name: str
    rows: int


async def copy_sqlite_to_postgres(
    sqlite_path: Path, url: str, *, batch_rows: int = BATCH_ROWS
) -> list[CopiedTable]:
    """Copy every table of the blogmirror database at ``sqlite_path`` into ``url``.

    Refuses (``MigrationError``) a SQLite schema other than this code's and a
    PostgreSQL database that already holds data. Returns the tables in the order
    they were copied, each with its row count, verified on both sides.
    """
    async with _open_sqlite(sqlite_path) as source, _connect_postgres(url) as target:
        tables = await _tables_in_dependency_order(source)
        copied: list[CopiedTable] = []
        try:
            async with target.transaction():
                await _require_empty(target, url, set(tables))
                try:
                    await migrate_postgres(target)
                except DatabaseTooNewError as exc:
                    raise MigrationError(str(exc)) from None
                await source.execute("BEGIN")  # one read transaction: one instant of the file
                for table in tables:
                    columns = await _same_columns(source, target, table)
                    rows = await _copy_table(source, target, table, columns, batch_rows)
                    copied.append(CopiedTable(table, rows))
                await _continue_identities(source, target)
                await _verify_counts(source, target, copied)
                await source.rollback()
        except sqlite3.Error as exc:
            raise MigrationError(
                f"cannot read {sqlite_path}: {exc}; nothing was written."
            ) from None
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise MigrationError(
                f"PostgreSQL refused the copy ({exc.__class__.__name__}: {exc}); "
                "nothing was written to it."
            ) from None
    return copied


@contextlib.asynccontextmanager
async def _open_sqlite(path: Path) -> AsyncIterator[aiosqlite.Connection]:
    """The SQLite file, read-only in effect, checked to be at this code's schema version."""
    try:
        # mode=rw: a missing file is an error, never created.
        conn = await aiosqlite.connect(f"file:{quote(str(path))}?mode=rw", uri=True)
    except sqlite3.Error as exc:
        raise MigrationError(f"cannot open {path}: {exc}.") from None
    try:
        try:
            await conn.execute("PRAGMA query_only = 1")
            async with conn.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
        except sqlite3.DatabaseError as exc:
            raise MigrationError(
                f"{path} is damaged or not a SQLite database ({exc}); nothing was migrated."
            ) from None
        version = int(row[0]) if row else 0
        if version == 0:
            raise MigrationError(f"{path} holds no blogmirror data (schema version 0).")
        if version < SCHEMA_VERSION:
            raise MigrationError(
                f"{path} is at schema version {version}, this blogmirror writes version "
                f"{SCHEMA_VERSION}: start the bot once on it (without DATABASE_URL) so that it "
                "migrates the file, stop it, then run migrate-to-postgres again."
            )
        if version > SCHEMA_VERSION:
            raise MigrationError(
                f"{path} is at schema version {version}, newer than this blogmirror knows "
                f"({SCHEMA_VERSION}): upgrade blogmirror, then run migrate-to-postgres again."
            )
        yield conn
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _connect_postgres(url: str) -> AsyncIterator[asyncpg.Connection]:
    try:
        conn = await asyncpg.connect(url, timeout=30)
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError) as exc:
        raise MigrationError(
            f"cannot connect to {redacted(url)} ({exc.__class__.__name__}: {exc})."
        ) from None
    try:
        yield conn
    finally:
        await conn.close()


async def _tables_in_dependency_order(source: aiosqlite.Connection) -> list[str]:
    """Every table, each after the tables its foreign keys point at."""
    names = [
        row[0]
        for row in await source.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    graph: dict[str, set[str]] = {}
    for name in names:
        keys = await source.execute_fetchall(f'PRAGMA foreign_key_list("{name}")')
        graph[name] = {row[2] for row in keys if row[2] != name}
    return list(graphlib.TopologicalSorter(graph).static_order())


async def _require_empty(target: asyncpg.Connection, url: str, tables: set[str]) -> None:
    """No tables at all, or only blogmirror's (a bot started on it once) without a row."""
    schema = await target.fetchval("SELECT current_schema()")
    if schema is None:
        raise MigrationError(
            f"{redacted(url)} has no schema to create the tables in (check its search_path)."
        )
    present = [
        row["table_name"]
        for row in await target.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() ORDER BY table_name"
        )
    ]
    foreign = [name for name in present if name not in tables | {"schema_version"}]
    filled = [
        name
        for name in present
        if name in tables and await target.fetchval(f'SELECT EXISTS (SELECT FROM "{name}")')
    ]
    if foreign or filled:
        what = (
            f"it holds rows in {', '.join(filled)}"
            if filled
            else f"it has tables of its own ({', '.join(foreign[:5])})"
        )
        raise MigrationError(
            f"{redacted(url)} is not empty: {what}. Migrate into a new, empty database "
            "(e.g. createdb blogmirror); nothing was written."
        )


async def _same_columns(
    source: aiosqlite.Connection, target: asyncpg.Connection, table: str
) -> list[str]:
    """The table's columns, which must be the same on both sides (one schema history)."""
    mine = [row[1] for row in await source.execute_fetchall(f'PRAGMA table_info("{table}")')]
    theirs = {
        row["column_name"]
        for row in await target.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = $1",
            table,
        )
    }
    if set(mine) != theirs:
        raise MigrationError(
            f"the table {table} has columns {sorted(mine)} in SQLite but {sorted(theirs)} "
            "in PostgreSQL at the same schema version: a bug in blogmirror's migrations; "
            "nothing was written."
        )
    return mine


async def _copy_table(
    source: aiosqlite.Connection,
    target: asyncpg.Connection,
    table: str,
    columns: list[str],
    batch_rows: int,
) -> int:
    quoted = ", ".join(f'"{column}"' for column in columns)
    copied = 0
    async with source.execute(f'SELECT {quoted} FROM "{table}" ORDER BY rowid') as cursor:
        while batch := [tuple(row) for row in await cursor.fetchmany(batch_rows)]:
            await target.copy_records_to_table(table, records=batch, columns=columns)
            copied += len(batch)
    return copied


async def _continue_identities(source: aiosqlite.Connection, target: asyncpg.Connection) -> None:
    """Each identity column's next value comes after every id SQLite ever handed out."""
    handed_out = {
        str(name): int(seq)
        for name, seq in await source.execute_fetchall("SELECT name, seq FROM sqlite_sequence")
    }
    identities = await target.fetch(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND is_identity = 'YES'"
    )
    for row in identities:
        table, column = row["table_name"], row["column_name"]
        highest = await target.fetchval(f'SELECT max("{column}") FROM "{table}"') or 0
        last = max(highest, handed_out.get(table, 0))
        await target.execute(
            "SELECT setval(pg_get_serial_sequence($1, $2), $3, $4)",
            f'"{table}"',
            column,
            max(last, 1),
            last > 0,  # false: the next value is 1 itself
        )


async def _verify_counts(
    source: aiosqlite.Connection, target: asyncpg.Connection, copied: list[CopiedTable]
) -> None:
    for table in copied:
        [(expected,)] = await source.execute_fetchall(f'SELECT count(*) FROM "{table.name}"')
        found = await target.fetchval(f'SELECT count(*) FROM "{table.name}"')
        if not expected == found == table.rows:
            raise MigrationError(
                f"the table {table.name} has {expected} rows in SQLite but {found} were "
                "copied; nothing was written."
            )

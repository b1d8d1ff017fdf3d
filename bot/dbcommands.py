"""``blogmirror backup PATH`` and ``blogmirror migrate-to-postgres DATABASE_URL``.

Both work on the SQLite file at ``DATABASE_PATH``; the SQL is in ``storage/``
(``storage/backup.py``, ``storage/to_postgres.py``). Each returns an exit
status: 0 done, 2 refused or failed, with one line on stderr saying why and what
to do (never a traceback).

A backup runs beside a running bot (SQLite's online backup), so it does not take
the database's lock. A migration does: the file must not change under it, and a
bot started on it meanwhile would go on posting into a database no longer in use.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TextIO

from bot.settings import Settings
from storage import DatabaseInUseError, DatabaseLock
from storage.backup import COUNTED_TABLES, BackupError, backup_sqlite
from storage.postgres import redacted
from storage.to_postgres import MigrationError, copy_sqlite_to_postgres


def backup(settings: Settings, path: Path, out: TextIO, err: TextIO) -> int:
    """Write a consistent copy of the SQLite database to the new file ``path``."""
    if settings.database_url:
        print(
            "blogmirror backup: DATABASE_URL is set, so the data is in PostgreSQL, not in "
            "a SQLite file: back it up with pg_dump (e.g. pg_dump --format=custom).",
            file=err,
        )
        return 2
    try:
        summary = backup_sqlite(settings.database_path, path)
    except BackupError as exc:
        print(f"blogmirror backup: {exc}", file=err)
        return 2
    counts = ", ".join(
        _count(summary.counts[table], table.removesuffix("s")) for table in COUNTED_TABLES
    )
    print(f"Wrote {summary.path} ({_size(summary.size)}): {counts}.", file=out)
    return 0


def migrate_to_postgres(settings: Settings, url: str, out: TextIO, err: TextIO) -> int:
    """Copy the SQLite database into the empty PostgreSQL database at ``url``."""
    if not url.startswith(("postgresql://", "postgres://")):
        print(
            "blogmirror migrate-to-postgres: DATABASE_URL must be a postgresql:// URL, "
            "e.g. postgresql://blogmirror:password@localhost:5432/blogmirror.",
            file=err,
        )
        return 2
    database = settings.database_path
    if not database.is_file():
        print(
            f"blogmirror migrate-to-postgres: there is no database at {database} "
            "(DATABASE_PATH): nothing to migrate.",
            file=err,
        )
        return 2
    try:
        lock = DatabaseLock.acquire(database)
    except DatabaseInUseError as exc:
        pid = f" (pid {exc.holder_pid})" if exc.holder_pid is not None else ""
        print(
            f"blogmirror migrate-to-postgres: a blogmirror instance is running on {database}"
            f"{pid}; stop it first, then migrate.",
            file=err,
        )
        return 2
    with lock:
        try:
            copied = asyncio.run(copy_sqlite_to_postgres(database, url))
        except MigrationError as exc:
            print(f"blogmirror migrate-to-postgres: {exc}", file=err)
            return 2
    width = max(len(table.name) for table in copied)
    print(f"Copied {database} into {redacted(url)}:", file=out)
    for table in copied:
        print(f"  {table.name:<{width}}  {_count(table.rows, 'row'):>14}", file=out)
    print(
        "Row counts match in every table. Start the bot with this DATABASE_URL to carry on "
        f"from here; keep {database} as a backup, and do not run a bot on it again.",
        file=out,
    )
    return 0


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _size(size: int) -> str:
    if size < 1024:
        return f"{size:,} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):,.1f} MiB"

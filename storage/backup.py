"""A consistent copy of the SQLite database, taken while the bot may be running.

SQLite's online backup copies every page inside one read transaction
(``Connection.backup`` with all pages in a single step), so the copy is the
database as of one instant: in WAL mode the reader never blocks the bot's
writes, and the bot's writes never tear the copy. The bot's ``flock``
(``storage/lock.py``) is on a file of its own and is neither taken nor needed.

The copy goes to a temporary file beside the target and only then takes the
target's name, with ``link``: that fails if the name exists, so an existing
file is never overwritten (not even one created while the backup ran), and a
failed backup never leaves a half-written file under the target's name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

COUNTED_TABLES = ("subscriptions", "articles", "comments")


class BackupError(Exception):
    """The backup was not written; ``str(exc)`` says why and what to do."""


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """What a backup wrote."""

    path: Path
    size: int
    counts: dict[str, int]
    """Rows per table of ``COUNTED_TABLES``, read from the copy."""


def _connect_existing(path: Path) -> sqlite3.Connection:
    """A connection to an existing file that never creates one and never writes."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=30)
    conn.execute("PRAGMA query_only = 1")
    return conn


def backup_sqlite(source: Path, target: Path) -> BackupSummary:
    """Copy the database at ``source`` to the new file ``target``; raise ``BackupError``."""
    if not source.is_file():
        raise BackupError(f"there is no database at {source} (DATABASE_PATH): nothing to back up.")
    folder = target.parent
    if not folder.is_dir():
        raise BackupError(f"the folder {folder} does not exist: create it first.")
    if target.exists() or target.is_symlink():
        raise BackupError(
            f"{target} already exists: give a new file name (a backup never overwrites a file)."
        )
    temporary = folder / f".{target.name}.{secrets.token_hex(4)}.partial"
    try:
        try:
            counts = _copy(source, temporary)
            with open(temporary, "rb") as written:
                os.fsync(written.fileno())
            os.link(temporary, target)
        except FileExistsError:
            raise BackupError(
                f"{target} already exists: give a new file name (a backup never overwrites a file)."
            ) from None
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"cannot back up {source}: {exc}.") from None
        except OSError as exc:
            raise BackupError(f"cannot write {target}: {exc.strerror or exc}.") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        for suffix in ("-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{temporary}{suffix}").unlink()
    _fsync_folder(folder)
    return BackupSummary(target, target.stat().st_size, counts)


def _copy(source: Path, temporary: Path) -> dict[str, int]:
    """Back ``source`` up into ``temporary``, check the copy and count its rows."""
    with (
        contextlib.closing(_connect_existing(source)) as origin,
        contextlib.closing(sqlite3.connect(temporary)) as copy,
    ):
        origin.backup(copy)  # every page in one step: one read transaction, one instant
    with contextlib.closing(sqlite3.connect(temporary)) as copy:
        # One file, no -wal beside it: the copy is whole on its own.
        copy.execute("PRAGMA journal_mode = DELETE")
        [verdict] = copy.execute("PRAGMA quick_check").fetchone()
        if verdict != "ok":
            raise BackupError(f"the copy failed SQLite's check ({verdict}); nothing was written.")
        tables = {row[0] for row in copy.execute("SELECT name FROM sqlite_master")}
        missing = [name for name in COUNTED_TABLES if name not in tables]
        if missing:
            raise BackupError(
                f"{source} is not a blogmirror database (it has no {missing[0]} table)."
            )
        return {
            name: int(copy.execute(f"SELECT count(*) FROM {name}").fetchone()[0])
            for name in COUNTED_TABLES
        }


def _fsync_folder(folder: Path) -> None:
    """Make the new name durable (the file's bytes are already synced)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

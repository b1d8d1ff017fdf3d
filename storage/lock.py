"""One process per SQLite database: an exclusive lock on a file beside it.

``DatabaseLock.acquire(path)`` takes ``flock(LOCK_EX | LOCK_NB)`` on
``<database>.lock`` (next to the resolved database file) and holds it until the
lock is released or the process dies. A second process asking for the same
database gets ``DatabaseInUseError`` at once, before it has opened, migrated or
written anything.

Why ``flock`` on a file of its own, and not a lock on the database file:

- The kernel drops a ``flock`` when the last descriptor of the open file goes
  away, which includes any death of the process (SIGKILL, OOM): a crash never
  leaves a stale lock behind, so a restart is never blocked. No pid checks, no
  "is it still alive?" guesswork.
- SQLite locks the database with POSIX ``fcntl`` byte-range locks. On Linux
  those and ``flock`` are independent, so ours cannot collide with SQLite's. A
  POSIX lock, however, is dropped when the process closes *any* descriptor of
  the file; had we taken one on the database file, our own open/close (or
  SQLite's) could silently drop the other's lock. ``flock`` belongs to one open
  file description only.
- A separate file can carry the holder's pid for the refusal message without
  writing a byte into the database, and is never opened by SQLite (or by a
  backup copying the database).

The lock file is left in place on release: unlinking it while another process
has it open and is about to lock it would let two processes each hold a lock,
on two different files. The descriptor is opened close-on-exec, so a child
process never inherits (and prolongs) the lock.

``:memory:`` databases belong to their process alone and take no lock. Locks on
network file systems (NFS) are only as good as the server's lock support.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)

MEMORY = ":memory:"


class DatabaseInUseError(Exception):
    """Another process holds the lock of this database."""

    def __init__(self, path: Path, holder_pid: int | None) -> None:
        held_by = f" (pid {holder_pid})" if holder_pid is not None else ""
        super().__init__(f"database {path} is locked by another process{held_by}")
        self.path = path
        self.holder_pid = holder_pid


def lock_path_for(database_path: Path | str) -> Path:
    """The lock file of a database: beside the real file, symlinks resolved."""
    resolved = Path(database_path).resolve()
    return resolved.with_name(resolved.name + ".lock")


class DatabaseLock:
    """A held lock on one database; ``with`` it (or call ``release``) to let go."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, database_path: Path | str) -> DatabaseLock:
        """Lock the database at once or raise ``DatabaseInUseError``; never waits.

        Creates the database's folder and the lock file if needed. A refused
        caller only reads the lock file (for the holder's pid) and changes nothing.
        """
        path = Path(database_path)
        if str(path) == MEMORY:
            return cls(path, None)
        lock_path = lock_path_for(path)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DatabaseInUseError(path, holder) from None
        except BaseException:
            os.close(fd)
            raise
        # Only the holder writes: the pid of the process that holds the lock now.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        log.debug("Locked database %s (%s)", path, lock_path)
        return cls(path, fd)

    def release(self) -> None:
        """Let go of the lock (idempotent); the lock file stays, emptied."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no stale pid for the next reader
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        log.debug("Unlocked database %s", self.path)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    """The pid the holder wrote, or None if it has not written it yet (or it is garbled)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None

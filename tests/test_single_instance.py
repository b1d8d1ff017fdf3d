"""One process per SQLite database: a second bot on the same file refuses to start.

The lock itself is tested in-process; the refusal, and the restart after a
SIGKILL, with real ``tests.botprocess`` processes against the Discord double.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import DatabaseInUseError, DatabaseLock
from storage.lock import lock_path_for
from tests.conftest import TEST_TOKEN
from tests.discord_double import DiscordDouble
from tests.processes import bot_environment

# -- the lock, in one process --------------------------------------------------------------


def test_second_acquire_is_refused_while_held_and_granted_after(tmp_path: Path) -> None:
    """While one holder has the lock a second acquire raises; after release it succeeds."""
    database = tmp_path / "data" / "blogmirror.db"
    with DatabaseLock.acquire(database):
        with pytest.raises(DatabaseInUseError) as refused:
            DatabaseLock.acquire(database)
        assert refused.value.holder_pid == os.getpid()
        assert refused.value.path == database
    with DatabaseLock.acquire(database):
        pass


def test_lock_file_sits_beside_the_database_and_names_the_holder(tmp_path: Path) -> None:
    """``<db>.lock`` holds the holder's pid while locked and is emptied, not removed, after."""
    database = tmp_path / "blogmirror.db"
    lock_file = tmp_path / "blogmirror.db.lock"
    assert lock_path_for(database) == lock_file
    with DatabaseLock.acquire(database):
        assert lock_file.read_text() == f"{os.getpid()}\n"
        assert not database.exists()  # the lock never creates the database itself
    assert lock_file.exists() and lock_file.read_text() == ""


def test_a_symlink_to_the_database_shares_its_lock(tmp_path: Path) -> None:
    """Two names of one database file (a symlink) are one lock."""
    database = tmp_path / "blogmirror.db"
    database.touch()
    alias = tmp_path / "alias.db"
    alias.symlink_to(database)
    with DatabaseLock.acquire(database), pytest.raises(DatabaseInUseError):
        DatabaseLock.acquire(alias)


def test_memory_databases_take_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``:memory:`` is private to its process: two holders at once, no file written."""
    monkeypatch.chdir(tmp_path)
    with DatabaseLock.acquire(":memory:"), DatabaseLock.acquire(Path(":memory:")):
        pass
    assert list(tmp_path.iterdir()) == []


# -- real processes ------------------------------------------------------------------------


class Bots:
    """Bot processes (``tests.botprocess``) on one database, against one Discord double."""

    def __init__(self, tmp_path: Path, double: DiscordDouble) -> None:
        self.double = double
        self.guild = double.add_guild("Readers")
        self.data = tmp_path / "data"
        self.database = self.data / "blogmirror.db"
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.cwd = tmp_path
        self.processes: list[asyncio.subprocess.Process] = []

    def env(self) -> dict[str, str]:
        return bot_environment(
            self.double.url,
            DATABASE_PATH="data/blogmirror.db",
            DEV_GUILD_ID=str(self.guild.id),
        )

    async def start(self, **pipes: int) -> asyncio.subprocess.Process:
        log = (self.logs / f"bot{len(self.processes)}.log").open("ab")
        with log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.botprocess",
                env=self.env(),
                cwd=self.cwd,
                stdout=pipes.get("stdout", log),
                stderr=pipes.get("stderr", log),
            )
        self.processes.append(process)
        return process

    async def start_ready(self) -> asyncio.subprocess.Process:
        """Start a bot and wait until the double's gateway sent it READY (it is running)."""
        self.double.gateway.ready.clear()
        process = await self.start()
        ready = asyncio.create_task(self.double.gateway.ready.wait())
        exited = asyncio.create_task(process.wait())
        async with asyncio.timeout(30):
            await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        exited.cancel()
        assert process.returncode is None, f"bot exited {process.returncode}: {self.log(process)}"
        return process

    def log(self, process: asyncio.subprocess.Process) -> str:
        return (self.logs / f"bot{self.processes.index(process)}.log").read_text()

    async def stop_all(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()


@pytest.fixture
async def bots(tmp_path: Path) -> AsyncIterator[Bots]:
    async with DiscordDouble(token=TEST_TOKEN) as double:
        bots = Bots(tmp_path, double)
        try:
            yield bots
        finally:
            await bots.stop_all()


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a folder: its bytes and mtime (ns)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


async def test_second_process_on_the_same_database_exits_2_and_touches_nothing(
    bots: Bots,
) -> None:
    """A second bot on the held database: exit 2, one stderr line, no file in data/ changed."""
    first = await bots.start_ready()
    # Freeze the first bot so that any change in data/ can only come from the second one.
    first.send_signal(signal.SIGSTOP)
    try:
        before = snapshot(bots.data)
        assert {"blogmirror.db", "blogmirror.db-wal", "blogmirror.db.lock"} <= before.keys()
        second = await bots.start(stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(second.communicate(), 30)
        except TimeoutError:
            second.kill()
            await second.wait()
            raise AssertionError("the second bot did not refuse to start") from None
        after = snapshot(bots.data)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2
    assert out == b""
    assert err.decode() == (
        "blogmirror: another blogmirror instance is already running on data/blogmirror.db "
        f"(pid {first.pid}); stop it first or set DATABASE_PATH to another file.\n"
    )
    assert after == before
    assert bots.double.gateway.identifies == 1  # it never reached Discord either
    assert first.returncode is None


async def test_after_a_sigkill_a_new_process_starts_on_the_same_database(bots: Bots) -> None:
    """The kernel drops a SIGKILLed holder's lock: the next bot starts and takes it."""
    first = await bots.start_ready()
    first.send_signal(signal.SIGKILL)
    await first.wait()
    lock_file = bots.data / "blogmirror.db.lock"
    assert lock_file.read_text() == f"{first.pid}\n"  # a stale pid is left; it must not matter
    second = await bots.start_ready()
    assert lock_file.read_text() == f"{second.pid}\n"
    assert bots.double.gateway.identifies == 2

"""``blogmirror backup PATH``: a consistent copy of the SQLite database, also while the bot runs."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import Database, DatabaseInUseError, DatabaseLock
from tests.botruns import BotRuns, blogmirror
from tests.conftest import TEST_TOKEN
from tests.discord_double import DiscordDouble
from tests.feedgen import GenComment, at
from tests.feedserver import FeedServer

COMMENTS = 40
NUMBER = re.compile(r"\bcomment (\d+)\b")
LINE = re.compile(
    r"^Wrote (?P<path>\S+) \([\d.,]+ (?:bytes|KiB|MiB)\): (?P<subscriptions>\d+) subscriptions?, "
    r"(?P<articles>\d+) articles?, (?P<comments>\d+) comments?\.\n$"
)


@pytest.fixture
async def runs(tmp_path: Path) -> AsyncIterator[BotRuns]:
    async with DiscordDouble(token=TEST_TOKEN) as double, FeedServer() as feeds:
        runs = BotRuns(tmp_path, double, feeds)
        try:
            yield runs
        finally:
            await runs.stop()


def counts(path: Path) -> dict[str, int]:
    """Rows in the tables a backup reports, and comments that have a Discord message."""
    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as c:
        found = {
            table: c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("subscriptions", "articles", "comments")
        }
        found["sent"] = c.execute(
            "SELECT count(*) FROM comments WHERE message_id IS NOT NULL"
        ).fetchone()[0]
    return found


def shown(runs: BotRuns) -> list[int]:
    """The numbers of the comments in the thread, in the order of their messages."""
    return [int(NUMBER.findall(m["content"])[0]) for m in runs.thread_messages()[1:]]


def check_copy(path: Path, printed: str) -> dict[str, int]:
    """A sound, self-consistent snapshot whose counts are the ones the command printed."""
    with contextlib.closing(sqlite3.connect(path)) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert copy.execute("PRAGMA foreign_key_check").fetchall() == []
        # A comment's message lives in its article's thread: no message without the thread.
        orphans = copy.execute(
            "SELECT count(*) FROM comments AS c JOIN articles AS a ON a.id = c.article_id "
            "WHERE c.message_id IS NOT NULL AND a.thread_id IS NULL"
        ).fetchone()[0]
        assert orphans == 0
        # Every send the copy records complete is a comment marked sent, and vice versa.
        unmatched = copy.execute(
            "SELECT count(*) FROM outbox AS o JOIN comments AS c ON c.id = o.target_id "
            "WHERE o.kind = 'comment_part' AND o.completed_at IS NOT NULL AND o.part = 0 "
            "AND c.message_id IS NOT o.message_id"
        ).fetchone()[0]
        assert unmatched == 0
    assert not any(path.parent.glob(".*partial*")), "a temporary file was left behind"
    match = LINE.match(printed)
    assert match, printed
    found = counts(path)
    assert {k: int(match[k]) for k in ("subscriptions", "articles", "comments")} == {
        k: found[k] for k in ("subscriptions", "articles", "comments")
    }
    return found


async def test_backups_while_the_bot_backfills_are_consistent_snapshots(
    runs: BotRuns, tmp_path: Path
) -> None:
    """Backups taken while a running bot (holding its lock) mirrors a blog: each copy is
    sound and consistent, grows with the bot's progress, and the bot is not disturbed."""
    runs.double.set_rate_limit("POST /channels/{channel_id}/messages", 4, 1.0)
    runs.serve_comments([GenComment(n, at(10 + n), f"comment {n}") for n in range(COMMENTS)])
    await runs.start()
    await runs.command(
        "subscribe", url=runs.feeds.url("/feeds/posts/default"), channel=runs.forum.id
    )
    backups = tmp_path / "backups"
    backups.mkdir()
    taken: list[dict[str, int]] = []
    while len(runs.thread_messages()) < 1 + COMMENTS:
        runs.check_alive()
        path = backups / f"during-{len(taken)}.db"
        code, out, err = await blogmirror("backup", str(path), cwd=tmp_path)
        assert code == 0, err
        taken.append(check_copy(path, out))
    assert any(0 < t["sent"] < COMMENTS for t in taken), f"no backup mid-backfill: {taken}"
    assert [t["sent"] for t in taken] == sorted(t["sent"] for t in taken)

    await runs.wait(lambda: counts(runs.database)["sent"] == COMMENTS, "every comment recorded")
    final = counts(runs.database)
    for during in taken:
        assert all(during[k] <= final[k] for k in final), (during, final)
    code, out, err = await blogmirror("backup", "backups/after.db", cwd=tmp_path)
    assert code == 0, err
    assert check_copy(backups / "after.db", out) == final
    # The bot carried on undisturbed: every comment once, and it still holds its database.
    assert shown(runs) == list(range(COMMENTS))
    runs.check_alive()
    with pytest.raises(DatabaseInUseError):
        DatabaseLock.acquire(runs.database)


async def test_a_restored_backup_carries_on_without_reposting(
    runs: BotRuns, tmp_path: Path
) -> None:
    """Restore = copy the backup back while the bot is stopped: the bot starts from it, posts
    the comment that came since and re-posts nothing."""
    runs.serve_comments([GenComment(n, at(10 + n), f"comment {n}") for n in range(3)])
    await runs.start()
    await runs.command(
        "subscribe", url=runs.feeds.url("/feeds/posts/default"), channel=runs.forum.id
    )
    await runs.wait(lambda: counts(runs.database)["sent"] == 3, "the backfill")
    code, _, err = await blogmirror("backup", "saved.db", cwd=tmp_path)
    assert code == 0, err
    await runs.stop()
    runs.database.unlink()
    (tmp_path / "saved.db").rename(runs.database)
    runs.serve_comments([GenComment(n, at(10 + n), f"comment {n}") for n in range(4)])
    await runs.start()
    await runs.command("poll")
    await runs.wait(lambda: counts(runs.database)["sent"] == 4, "the new comment")
    assert shown(runs) == list(range(4))


# --- refusals: exit 2, one line, nothing written ---------------------------------------------


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A migrated, empty blogmirror database at ``data/blogmirror.db`` under ``tmp_path``."""

    async def make() -> Path:
        db = await Database.open(tmp_path / "data" / "blogmirror.db")
        await db.close()
        return tmp_path / "data" / "blogmirror.db"

    return asyncio.run(make())


def files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


async def refused(tmp_path: Path, *args: str, **env: str) -> str:
    """Run the backup; check it refused in one line and left every file as it was."""
    before = files(tmp_path)
    code, out, err = await blogmirror("backup", *args, cwd=tmp_path, env=env)
    assert code == 2, (out, err)
    assert out == ""
    assert "Traceback" not in err
    [line] = err.splitlines()
    assert line.startswith("blogmirror backup: ")
    assert files(tmp_path) == before
    return line


async def test_backup_refuses_a_missing_database(tmp_path: Path) -> None:
    """No database file: nothing to back up, and no empty database is created."""
    line = await refused(tmp_path, "copy.db")
    assert "no database at data/blogmirror.db (DATABASE_PATH)" in line


async def test_backup_refuses_a_missing_folder(tmp_path: Path, database: Path) -> None:
    """The target's folder must exist: the command does not guess where a backup goes."""
    line = await refused(tmp_path, "backups/copy.db")
    assert "the folder backups does not exist" in line


async def test_backup_never_overwrites_a_file(tmp_path: Path, database: Path) -> None:
    """An existing target is left as it was, with a hint to give a new name."""
    (tmp_path / "copy.db").write_bytes(b"an older backup")
    line = await refused(tmp_path, "copy.db")
    assert "copy.db already exists: give a new file name" in line
    assert (tmp_path / "copy.db").read_bytes() == b"an older backup"


async def test_backup_with_postgres_points_to_pg_dump(tmp_path: Path, database: Path) -> None:
    """With DATABASE_URL the data is not in the SQLite file: say to use pg_dump."""
    line = await refused(
        tmp_path, "copy.db", DATABASE_URL="postgresql://blogmirror:s3cret@127.0.0.1:1/blogmirror"
    )
    assert "DATABASE_URL is set" in line and "pg_dump" in line
    assert "s3cret" not in line


async def test_a_failed_backup_leaves_no_file(tmp_path: Path) -> None:
    """A database SQLite cannot read: exit 2 with the reason, no copy and no partial file."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "blogmirror.db").write_bytes(random.Random(3).randbytes(8192))
    line = await refused(tmp_path, "copy.db")
    assert "cannot back up data/blogmirror.db" in line

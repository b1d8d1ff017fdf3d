"""``blogmirror migrate-to-postgres DATABASE_URL``: the SQLite database moved, as it is."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from storage import SCHEMA_VERSION, Database, DatabaseLock, SubscriptionRepo
from storage.migrations import MIGRATIONS
from storage.postgres import PostgresDatabase
from storage.to_postgres import copy_sqlite_to_postgres
from tests.botruns import BotRuns, blogmirror, postgres_dump, sqlite_dump
from tests.conftest import TEST_TOKEN
from tests.dbview import DatabaseView
from tests.discord_double import DiscordDouble
from tests.feedgen import GenComment, at
from tests.feedserver import FeedServer
from tests.pg import fresh_schema, require_postgres

NUMBER = re.compile(r"\bcomment (\d+)\b")
SUMMARY = re.compile(r"^  (\w+) +([\d,]+) rows?$", re.MULTILINE)


@pytest.fixture
async def postgres() -> AsyncIterator[str]:
    """The URL of a fresh, empty PostgreSQL schema."""
    require_postgres()
    async with fresh_schema() as (_schema, url):
        yield url


async def tables_of(url: str) -> dict[str, int]:
    """Each table in the URL's schema and its row count."""
    conn = await asyncpg.connect(url)
    try:
        names = [
            row[0]
            for row in await conn.fetch(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            )
        ]
        return {name: await conn.fetchval(f'SELECT count(*) FROM "{name}"') for name in names}
    finally:
        await conn.close()


def comments(numbers: range) -> list[GenComment]:
    """Every third comment answers the one before it."""
    return [
        GenComment(n, at(10 + n), f"comment {n}", parent=n - 1 if n % 3 == 2 else None)
        for n in numbers
    ]


def replies(runs: BotRuns) -> list[tuple[int, int | None]]:
    """(comment number, number of the comment it is a Discord reply to) per message, in order."""
    messages = runs.thread_messages()[1:]
    number_of = {m["id"]: int(NUMBER.findall(m["content"])[0]) for m in messages}
    return [
        (number_of[m["id"]], number_of.get((m.get("message_reference") or {}).get("message_id")))
        for m in messages
    ]


async def test_a_bot_on_postgres_carries_on_where_the_sqlite_one_stopped(
    tmp_path: Path, postgres: str
) -> None:
    """Mirror with SQLite; migrating is refused while that bot runs; stopped, migrated (every
    row equal), a bot on PostgreSQL posts a new reply once, on its parent, re-posting nothing."""
    async with DiscordDouble(token=TEST_TOKEN) as double, FeedServer() as feeds:
        runs = BotRuns(tmp_path, double, feeds)
        try:
            runs.serve_comments(comments(range(8)))
            sqlite_bot = await runs.start()
            await runs.command(
                "subscribe", url=feeds.url("/feeds/posts/default"), channel=runs.forum.id
            )
            view = DatabaseView(runs.database)
            await runs.wait(
                lambda: len(replies(runs)) == 8 and view.unfinished() == 0, "the backfill"
            )

            code, out, err = await blogmirror("migrate-to-postgres", postgres, cwd=tmp_path)
            assert (code, out) == (2, "")
            assert err == (
                "blogmirror migrate-to-postgres: a blogmirror instance is running on "
                f"data/blogmirror.db (pid {sqlite_bot.pid}); stop it first, then migrate.\n"
            )
            assert await tables_of(postgres) == {}

            await runs.stop()
            before = sqlite_dump(runs.database)
            code, out, err = await blogmirror("migrate-to-postgres", postgres, cwd=tmp_path)
            assert code == 0, err
            assert err == ""
            assert {t: len(rows) for t, rows in before.items()} == {
                t: int(n.replace(",", "")) for t, n in SUMMARY.findall(out)
            }
            assert before["comments"] and before["outbox"] and before["http_cache"]
            assert await postgres_dump(postgres) == before

            runs.serve_comments(comments(range(9)))  # comment 8 answers comment 7
            await runs.start(DATABASE_URL=postgres)
            await runs.command("poll")
            await runs.wait(lambda: len(replies(runs)) == 9, "the new comment")
            await runs.wait(
                lambda: DatabaseView(url=postgres).unfinished() == 0, "the bot to settle"
            )
            await runs.command("poll")
            await runs.wait(lambda: DatabaseView(url=postgres).unfinished() == 0, "a second poll")
            assert replies(runs) == [(n, n - 1 if n % 3 == 2 else None) for n in range(9)]
            old_ids = {dict(row)["id"] for row in before["comments"]}
            [new] = [
                r
                for r in DatabaseView(url=postgres).rows("SELECT id FROM comments")
                if r["id"] not in old_ids
            ]
            assert new["id"] > max(old_ids)
        finally:
            await runs.stop()


async def test_every_value_and_id_is_copied_and_ids_continue(tmp_path: Path, postgres: str) -> None:
    """Crafted rows (huge snowflakes, JSON text, unicode, NULLs, offsets) come across equal, in
    batches; a new subscription's id follows every id SQLite ever handed out."""
    path = tmp_path / "blogmirror.db"
    db = await Database.open(path)
    await db.close()
    text = "Ünïcödé 💬 \"quotes\" 'single' \\ back\nnew line\ttab <b>html</b> &amp;"
    snowflake = 1_234_567_890_123_456_789
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for n in (1, 2, 3):
            conn.execute(
                "INSERT INTO subscriptions (id, guild_id, channel_id, feed_url, blog_title, "
                "dialect, interval_seconds, created_at, next_poll_at, last_error, "
                "last_error_status) VALUES (?, ?, ?, ?, ?, 'blogger', 300, "
                "'2024-01-02T03:04:05.123456+00:00', '2024-01-02T03:09:05+00:00', ?, ?)",
                (
                    n,
                    snowflake + n,
                    snowflake - n,
                    f"https://b{n}.example/feed",
                    text,
                    None if n == 1 else text,
                    None if n == 1 else 503,
                ),
            )
        conn.execute("DELETE FROM subscriptions WHERE id = 3")  # its id is never reused
        conn.execute("INSERT INTO guild_settings VALUES (?, ?)", (snowflake, None))
        for n in range(1, 6):
            conn.execute(
                "INSERT INTO articles (id, subscription_id, entry_id, url, title, author, "
                "published, updated, html, labels, content_hash, state, thread_id, "
                "first_seen_at) VALUES (?, 1, ?, ?, ?, ?, '2019-04-03T08:23:00+00:00', "
                "'2019-04-03T08:23:00+00:00', ?, '[\"CRC\", \"Ünï\"]', 'h', 'posted', ?, "
                "'2024-01-02T03:04:05+00:00')",
                (n * 10, f"tag:e{n}", f"https://b1.example/{n}", text, text, text, snowflake + n),
            )
            conn.execute(
                "INSERT INTO comments (id, subscription_id, article_id, entry_id, author, "
                "published, published_offset, html, permalink, content_hash, state, message_id, "
                "extra_message_ids, first_seen_at) VALUES (?, 1, ?, ?, ?, "
                "'2019-04-03T17:08:00+00:00', -34200, ?, 'https://b1.example/c', 'h', 'posted', "
                "?, ?, '2024-01-02T03:04:05+00:00')",
                (
                    n * 100,
                    n * 10,
                    f"tag:c{n}",
                    text,
                    text,
                    snowflake + 100 + n,
                    f"[{snowflake + 200 + n}]",
                ),
            )
    before = sqlite_dump(path)

    copied = await copy_sqlite_to_postgres(path, postgres, batch_rows=2)

    assert {t.name: t.rows for t in copied}["comments"] == 5
    order = [t.name for t in copied]
    assert order.index("subscriptions") < order.index("articles") < order.index("comments")
    assert await postgres_dump(postgres) == before
    database = await PostgresDatabase.connect(postgres)
    try:
        now = datetime.now(UTC)
        added = await SubscriptionRepo(database).add(
            guild_id=1,
            channel_id=2,
            feed_url="https://new.example/feed",
            blog_url=None,
            blog_title="New",
            dialect="blogger",
            comments_feed_url=None,
            mirror_comments=True,
            backfill=1,
            interval_seconds=300,
            now=now,
            next_poll_at=now,
        )
        assert added.id == 4
        article = await database.fetchone(
            "INSERT INTO articles (subscription_id, entry_id, url, title, author, published, "
            "updated, html, content_hash, state, first_seen_at) VALUES (1, 'tag:new', 'u', 't', "
            "'a', 'p', 'u', 'h', 'h', 'pending', 'f') RETURNING id"
        )
        assert article is not None and article["id"] == 51
    finally:
        await database.close()


# --- refusals: exit 2, one line, the PostgreSQL database left as it was -----------------------


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Path:
    """A migrated blogmirror database at ``data/blogmirror.db`` holding one guild setting."""
    path = tmp_path / "data" / "blogmirror.db"

    async def make() -> None:
        db = await Database.open(path)
        await db.write_one("INSERT INTO guild_settings VALUES (1, 2)")
        await db.close()

    asyncio.run(make())
    return path


async def refused(tmp_path: Path, url: str, *, watched: bool = True) -> str:
    """Run the migration; check it refused in one line and (``watched``) changed nothing
    in the database at ``url``."""
    before = await tables_of(url) if watched else None
    code, out, err = await blogmirror("migrate-to-postgres", url, cwd=tmp_path)
    assert (code, out) == (2, ""), err
    assert "Traceback" not in err
    [line] = err.splitlines()
    assert line.startswith("blogmirror migrate-to-postgres: ")
    if before is not None:
        assert await tables_of(url) == before
    return line


async def test_refused_while_a_bot_holds_the_database(
    tmp_path: Path, sqlite_database: Path, postgres: str
) -> None:
    """The bot's lock is held: the line names the holder's pid, as the bot's own refusal does."""
    with DatabaseLock.acquire(sqlite_database):
        line = await refused(tmp_path, postgres)
    assert line.endswith(
        f"running on data/blogmirror.db (pid {os.getpid()}); stop it first, then migrate."
    )


async def test_refused_into_a_database_that_holds_data(
    tmp_path: Path, sqlite_database: Path, postgres: str
) -> None:
    """A second migration into the same database is refused: it holds rows already."""
    code, _, err = await blogmirror("migrate-to-postgres", postgres, cwd=tmp_path)
    assert code == 0, err
    line = await refused(tmp_path, postgres)
    assert "is not empty: it holds rows in guild_settings" in line


async def test_refused_into_a_database_with_other_tables(
    tmp_path: Path, sqlite_database: Path, postgres: str
) -> None:
    """A database with some other application's tables is not blogmirror's to fill."""
    conn = await asyncpg.connect(postgres)
    await conn.execute("CREATE TABLE invoices (id INTEGER)")
    await conn.close()
    line = await refused(tmp_path, postgres)
    assert "is not empty: it has tables of its own (invoices)" in line


async def test_a_database_a_bot_only_created_is_empty_enough(
    tmp_path: Path, sqlite_database: Path, postgres: str
) -> None:
    """Tables a bot on DATABASE_URL made at its first start, without a row, are no obstacle."""
    database = await PostgresDatabase.connect(postgres)
    await database.close()
    code, out, err = await blogmirror("migrate-to-postgres", postgres, cwd=tmp_path)
    assert code == 0, err
    assert re.search(r"^  guild_settings +1 row$", out, re.MULTILINE), out


@pytest.mark.parametrize("version", [SCHEMA_VERSION - 1, SCHEMA_VERSION + 1])
async def test_refused_for_a_sqlite_schema_of_another_version(
    tmp_path: Path, postgres: str, version: int
) -> None:
    """An older file must first be migrated by the bot; a newer one needs a newer blogmirror."""
    path = tmp_path / "data" / "blogmirror.db"
    path.parent.mkdir()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for step in MIGRATIONS[: min(version, SCHEMA_VERSION)]:
            conn.executescript(step)
        conn.execute(f"PRAGMA user_version = {version}")
    line = await refused(tmp_path, postgres)
    assert f"data/blogmirror.db is at schema version {version}" in line
    if version < SCHEMA_VERSION:
        assert "start the bot once on it" in line
    else:
        assert "upgrade blogmirror" in line
    assert await tables_of(postgres) == {}


async def test_refused_without_a_sqlite_database(tmp_path: Path, postgres: str) -> None:
    """No file at DATABASE_PATH: nothing to migrate, and nothing created (not even data/)."""
    line = await refused(tmp_path, postgres)
    assert "there is no database at data/blogmirror.db (DATABASE_PATH)" in line
    assert not (tmp_path / "data").exists()
    assert await tables_of(postgres) == {}


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mysql://root@127.0.0.1/blog", "must be a postgresql:// URL"),
        ("postgresql://blogmirror:s3cret@127.0.0.1:1/blogmirror", "cannot connect to"),
    ],
)
async def test_refused_for_a_url_it_cannot_use(
    tmp_path: Path, sqlite_database: Path, url: str, words: str
) -> None:
    """Not a PostgreSQL URL, or no server there: one line, the password never shown."""
    line = await refused(tmp_path, url, watched=False)
    assert words in line
    assert "s3cret" not in line

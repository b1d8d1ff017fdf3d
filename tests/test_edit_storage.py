"""Schema version 5 (what ``/blog edit`` changes) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import asyncpg
import pytest

from storage import Database, SubscriptionGoneError, SubscriptionRepo, open_database
from storage.migrations import MIGRATIONS, PG_MIGRATIONS, _statements
from tests.conftest import database_for
from tests.recording import add_subscription

NOW = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
V5 = 5


async def build_v4(backend: str, path: Path, url: str | None) -> None:
    """A database left by blogmirror at schema version 4, with one subscription in it."""
    insert = (
        "INSERT INTO subscriptions (guild_id, channel_id, feed_url, dialect, interval_seconds, "
        "created_at, next_poll_at) VALUES (1, 10, 'https://b.example/feed', 'blogger', 300, "
        f"'{NOW.isoformat()}', '{NOW.isoformat()}')"
    )
    if backend == "sqlite":
        async with aiosqlite.connect(path) as conn:
            for script in MIGRATIONS[:4]:
                for statement in _statements(script):
                    await conn.execute(statement)
            await conn.execute(insert)
            await conn.execute("PRAGMA user_version = 4")
            await conn.commit()
        return
    assert url is not None
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            for script in PG_MIGRATIONS[:4]:
                for statement in _statements(script):
                    await conn.execute(statement)
            await conn.execute("CREATE TABLE schema_version (version INTEGER)")
            await conn.execute("INSERT INTO schema_version (version) VALUES (4)")
            await conn.execute(insert)
    finally:
        await conn.close()


@pytest.fixture
async def v4_then_opened(backend: str, tmp_path: Path) -> AsyncIterator[Database]:
    """A version-4 database with one subscription, opened (and so migrated) by the bot."""
    async with database_for(backend, tmp_path) as url:
        path = tmp_path / "v4.db"
        await build_v4(backend, path, url)
        db = await open_database(path=path, url=url)
        try:
            yield db
        finally:
            await db.close()


async def test_v4_database_migrates_to_v5_with_nothing_changed(v4_then_opened: Database) -> None:
    """A subscription stored before v5 pings nobody and keeps the default interval."""
    db = v4_then_opened
    assert len(MIGRATIONS) >= V5 and len(PG_MIGRATIONS) == len(MIGRATIONS)
    [sub] = await SubscriptionRepo(db).list_for_guild(1)
    assert sub.mention_role_id is None
    assert sub.interval_custom is False
    assert sub.interval_seconds == 300


async def test_edit_round_trips_a_role_id_beyond_32_bits(database: Database) -> None:
    """A Discord role id (a 64-bit snowflake) and a custom interval read back exactly."""
    repo = SubscriptionRepo(database)
    sub = await add_subscription(database, now=NOW)
    role = 1_180_000_000_000_000_123
    await repo.edit(
        sub.id,
        mirror_comments=False,
        mention_role_id=role,
        interval_seconds=60,
        interval_custom=True,
        next_poll_at=NOW + timedelta(minutes=1),
    )
    fresh = await repo.get(sub.id)
    assert fresh is not None
    assert (fresh.mention_role_id, fresh.interval_seconds, fresh.interval_custom) == (
        role,
        60,
        True,
    )
    assert fresh.mirror_comments is False
    assert fresh.next_poll_at == NOW + timedelta(minutes=1)


async def test_edit_of_a_removed_subscription_is_an_error(database: Database) -> None:
    """An UPDATE that touches no row is not success."""
    repo = SubscriptionRepo(database)
    sub = await add_subscription(database, now=NOW)
    await repo.delete(sub.id)
    with pytest.raises(SubscriptionGoneError):
        await repo.edit(
            sub.id,
            mirror_comments=True,
            mention_role_id=None,
            interval_seconds=300,
            interval_custom=False,
            next_poll_at=NOW,
        )

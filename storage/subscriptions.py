"""Subscriptions, their HTTP validators and per-guild settings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.batching import WriteBatcher
from storage.db import Database, Transaction, UniqueViolation
from storage.records import (
    Backlog,
    FeedOutcome,
    HttpValidators,
    PendingWork,
    Subscription,
    SubscriptionCounts,
    SubscriptionState,
    by_name,
    to_db_time,
)


class DuplicateSubscriptionError(Exception):
    """This feed is already subscribed in this channel."""


class SubscriptionGoneError(Exception):
    """The subscription was removed while it was being changed."""


class SubscriptionRepo:
    """Subscriptions. Guild-scoped lookups take ``guild_id`` so guilds stay isolated."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._successes: WriteBatcher[int, tuple[str, str, str, int]] = WriteBatcher(
            self._write_successes
        )

    async def add(
        self,
        *,
        guild_id: int,
        channel_id: int,
        feed_url: str,
        blog_url: str | None,
        blog_title: str,
        dialect: str,
        comments_feed_url: str | None,
        mirror_comments: bool,
        backfill: int,
        interval_seconds: int,
        now: datetime,
        next_poll_at: datetime,
    ) -> Subscription:
        try:
            async with self.db.write() as tx:
                row = await tx.fetchone(
                    """
                    INSERT INTO subscriptions (
                        guild_id, channel_id, feed_url, blog_url, blog_title, dialect,
                        comments_feed_url, mirror_comments, backfill, interval_seconds,
                        created_at, next_poll_at
                    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    RETURNING id
                    """,
                    (
                        guild_id,
                        channel_id,
                        feed_url,
                        blog_url,
                        blog_title,
                        dialect,
                        comments_feed_url,
                        int(mirror_comments),
                        backfill,
                        interval_seconds,
                        to_db_time(now),
                        to_db_time(next_poll_at),
                    ),
                )
        except UniqueViolation as exc:
            raise DuplicateSubscriptionError(feed_url) from exc
        assert row is not None
        subscription = await self.get(int(row[0]))
        assert subscription is not None
        return subscription

    async def get(self, subscription_id: int) -> Subscription | None:
        row = await self.db.fetchone("SELECT * FROM subscriptions WHERE id = ?", (subscription_id,))
        return Subscription.from_row(row) if row else None

    async def get_for_poll(self, subscription_id: int) -> PollStart | None:
        """What a cycle starts from, in one query: the subscription, the stored
        validators of its feeds and which kinds of delivery work it has.

        An idle cycle (304s, nothing pending) makes no other query: its success
        is written in a batch with others (``record_success``).
        """
        return (await self.get_for_poll_many([subscription_id])).get(subscription_id)

    async def get_for_poll_many(self, subscription_ids: Sequence[int]) -> dict[int, PollStart]:
        """``get_for_poll`` of a batch in one query (the scheduler reads ahead for
        the batch it claimed); the ids that are gone are left out."""
        if not subscription_ids:
            return {}
        rows = await self.db.fetch(
            f"""
            SELECT s.*, {_PENDING_WORK},
                   h.url AS cached_url, h.etag, h.last_modified, h.body_hash, h.entry_digests
            FROM subscriptions AS s
            LEFT JOIN http_cache AS h
              ON h.subscription_id = s.id AND (h.url = s.feed_url OR h.url = s.comments_feed_url)
            WHERE s.id IN (SELECT CAST(value AS INTEGER) FROM json_each(?))
            """,
            (json.dumps(list(subscription_ids)),),
        )
        starts: dict[int, PollStart] = {}
        for row in map(by_name, rows):
            start = starts.get(row["id"])
            if start is None:
                start = PollStart(Subscription.from_row(row), {}, _pending_work(row))
                starts[start.subscription.id] = start
            if row["cached_url"] is not None:
                start.validators[row["cached_url"]] = HttpValidators(
                    row["etag"], row["last_modified"], row["body_hash"], row["entry_digests"]
                )
        return starts

    async def get_with_work(self, subscription_id: int) -> tuple[Subscription, PendingWork] | None:
        """The subscription and which kinds of delivery work it has, in one query."""
        row = await self.db.fetchone(
            f"SELECT s.*, {_PENDING_WORK} FROM subscriptions AS s WHERE s.id = ?",
            (subscription_id,),
        )
        if row is None:
            return None
        return Subscription.from_row(row), _pending_work(row)

    async def pending_work(self, subscription_id: int) -> PendingWork:
        """Which kinds of delivery work the subscription has (none for one that is gone)."""
        found = await self.get_with_work(subscription_id)
        return (
            found[1] if found else PendingWork(threads=False, comments=False, article_edits=False)
        )

    async def list_for_guild(self, guild_id: int) -> list[Subscription]:
        rows = await self.db.fetch(
            "SELECT * FROM subscriptions WHERE guild_id = ? ORDER BY blog_title, id", (guild_id,)
        )
        return [Subscription.from_row(row) for row in rows]

    async def find_in_guild(self, guild_id: int, url: str) -> list[Subscription]:
        """Subscriptions of this guild whose feed URL or blog URL is ``url``."""
        candidates = _url_variants(url)
        marks = ", ".join("?" for _ in candidates)
        rows = await self.db.fetch(
            f"""
            SELECT * FROM subscriptions
            WHERE guild_id = ? AND (feed_url IN ({marks}) OR blog_url IN ({marks}))
            ORDER BY id
            """,
            (guild_id, *candidates, *candidates),
        )
        return [Subscription.from_row(row) for row in rows]

    async def list_due(
        self, now: datetime, limit: int, shards: Shards | None = None
    ) -> list[Subscription]:
        """Active subscriptions due by ``now``, of guilds on ``shards`` (None: all)."""
        rows = await self.db.fetch(
            f"""
            SELECT * FROM subscriptions AS s
            WHERE state = 'active' AND next_poll_at <= ? AND {_ON_SHARDS}
            ORDER BY next_poll_at
            LIMIT ?
            """,
            (to_db_time(now), *_shard_parameters(shards), limit),
        )
        return [Subscription.from_row(row) for row in rows]

    async def due_ids(self, now: datetime, limit: int, shards: Shards | None = None) -> list[int]:
        """The ids ``list_due`` would return, soonest first: all the scheduler needs.

        It asks again each time half a batch is done, and finds the other half
        still running and still due; a cycle reads its subscription afresh, so
        only ids are read here (from the due index, with no row built).
        """
        rows = await self.db.fetch(
            f"""
            SELECT id FROM subscriptions AS s
            WHERE state = 'active' AND next_poll_at <= ? AND {_ON_SHARDS}
            ORDER BY next_poll_at
            LIMIT ?
            """,
            (to_db_time(now), *_shard_parameters(shards), limit),
        )
        return [int(row[0]) for row in rows]

    async def with_unfinished_work(self, shards: Shards | None = None) -> list[Subscription]:
        """Active subscriptions with pending articles or comments, or open send intents."""
        rows = await self.db.fetch(
            f"""
            SELECT * FROM subscriptions AS s
            WHERE s.state = 'active' AND {_ON_SHARDS} AND (
                EXISTS (SELECT 1 FROM articles
                        WHERE subscription_id = s.id AND (state = 'pending' OR needs_edit = 1))
                OR EXISTS (SELECT 1 FROM comments
                           WHERE subscription_id = s.id AND (state = 'pending' OR needs_edit = 1))
                OR EXISTS (SELECT 1 FROM outbox
                           WHERE subscription_id = s.id AND completed_at IS NULL)
            )
            ORDER BY s.id
            """,
            _shard_parameters(shards),
        )
        return [Subscription.from_row(row) for row in rows]

    async def record_success(
        self, subscription_id: int, *, now: datetime, next_poll_at: datetime
    ) -> None:
        """Record a successful poll; returns once it is written.

        This runs after every poll of every feed, mostly idle ones, so the
        successes of polls finishing together are written in one batch: one
        round trip to the database thread instead of one each.
        """
        polled_at = to_db_time(now)
        await self._successes.add(
            subscription_id, (polled_at, polled_at, to_db_time(next_poll_at), subscription_id)
        )

    async def _write_successes(self, batch: Sequence[tuple[str, str, str, int]]) -> None:
        await self.db.write_batch(
            """
            UPDATE subscriptions
            SET last_poll_at = ?, last_success_at = ?, next_poll_at = ?,
                consecutive_failures = 0
            WHERE id = ?
            """,
            batch,
        )

    async def record_failure(
        self,
        subscription_id: int,
        *,
        now: datetime,
        error: str,
        status: int | None,
        next_poll_at: datetime,
        failures: int | None = None,
    ) -> int:
        """Count one more consecutive failure (or set ``failures``); return the count."""
        async with self.db.write() as tx:
            row = await tx.fetchone(
                """
                UPDATE subscriptions
                SET last_poll_at = ?, next_poll_at = ?, last_error = ?, last_error_status = ?,
                    last_error_at = ?,
                    consecutive_failures = coalesce(?, consecutive_failures + 1)
                WHERE id = ?
                RETURNING consecutive_failures
                """,
                (
                    to_db_time(now),
                    to_db_time(next_poll_at),
                    error,
                    status,
                    to_db_time(now),
                    failures,
                    subscription_id,
                ),
            )
        return int(row[0]) if row else 0

    async def set_state(
        self,
        subscription_id: int,
        state: SubscriptionState,
        *,
        next_poll_at: datetime | None = None,
        failures_cap: int = 0,
    ) -> None:
        """Change state. Activating caps the failure count at ``failures_cap``.

        A resumed feed that was failing keeps a count at the "failing" mark, so
        its next success is reported as a recovery while a further failure does
        not disable it again at once.
        """
        async with self.db.write() as tx:
            if state is SubscriptionState.ACTIVE:
                await tx.execute(
                    """
                    UPDATE subscriptions
                    SET state = ?,
                        consecutive_failures = CASE WHEN consecutive_failures > ? THEN ?
                                               ELSE consecutive_failures END,
                        next_poll_at = coalesce(?, next_poll_at)
                    WHERE id = ?
                    """,
                    (
                        state.value,
                        failures_cap,
                        failures_cap,
                        next_poll_at and to_db_time(next_poll_at),
                        subscription_id,
                    ),
                )
            else:
                await tx.execute(
                    "UPDATE subscriptions SET state = ? WHERE id = ?",
                    (state.value, subscription_id),
                )

    async def edit(
        self,
        subscription_id: int,
        *,
        mirror_comments: bool,
        mention_role_id: int | None,
        interval_seconds: int,
        interval_custom: bool,
        next_poll_at: datetime,
    ) -> None:
        """Store what ``/blog edit`` changed; raise ``SubscriptionGoneError`` when it
        was removed meanwhile (an UPDATE of no row is not success)."""
        async with self.db.write() as tx:
            row = await tx.fetchone(
                """
                UPDATE subscriptions
                SET mirror_comments = ?, mention_role_id = ?, interval_seconds = ?,
                    interval_custom = ?, next_poll_at = ?
                WHERE id = ?
                RETURNING id
                """,
                (
                    int(mirror_comments),
                    mention_role_id,
                    interval_seconds,
                    int(interval_custom),
                    to_db_time(next_poll_at),
                    subscription_id,
                ),
            )
        if row is None:
            raise SubscriptionGoneError(subscription_id)

    async def follow_default_interval(self, seconds: int) -> int:
        """Subscriptions on the bot's default interval take its current value (it may have
        changed since they were stored); returns how many changed. Custom ones keep theirs."""
        return await self.db.write_one(
            """
            UPDATE subscriptions SET interval_seconds = ?
            WHERE interval_custom = 0 AND interval_seconds <> ?
            """,
            (seconds, seconds),
        )

    async def update_feed_info(
        self, subscription_id: int, *, blog_title: str, comments_feed_url: str | None
    ) -> None:
        async with self.db.write() as tx:
            await tx.execute(
                "UPDATE subscriptions SET blog_title = ?, comments_feed_url = ? WHERE id = ?",
                (blog_title, comments_feed_url, subscription_id),
            )

    async def set_comments_seen_until(self, subscription_id: int, value: datetime) -> None:
        await self.db.write_one(_SET_COMMENTS_SEEN_UNTIL, (to_db_time(value), subscription_id))

    async def poll_soon(self, subscription_id: int, now: datetime) -> None:
        """Make an active subscription due now (a push notification for another process's
        shard: its scheduler takes it on its next tick)."""
        async with self.db.write() as tx:
            await tx.execute(
                "UPDATE subscriptions SET next_poll_at = ? "
                "WHERE id = ? AND state = 'active' AND next_poll_at > ?",
                (to_db_time(now), subscription_id, to_db_time(now)),
            )

    async def delete(self, subscription_id: int) -> None:
        async with self.db.write() as tx:
            await tx.execute("DELETE FROM subscriptions WHERE id = ?", (subscription_id,))

    async def counts(self, subscription_id: int) -> SubscriptionCounts:
        row = await self.db.fetchone(
            """
            WITH sub (id) AS (SELECT CAST(? AS BIGINT))
            SELECT
                (SELECT count(*) FROM articles
                 WHERE subscription_id = (SELECT id FROM sub)
                   AND state IN ('posted', 'detached')),
                (SELECT count(*) FROM comments
                 WHERE subscription_id = (SELECT id FROM sub) AND state = 'posted'),
                (SELECT count(*) FROM articles
                 WHERE subscription_id = (SELECT id FROM sub) AND state = 'pending'),
                (SELECT count(*) FROM comments
                 WHERE subscription_id = (SELECT id FROM sub) AND state = 'pending'),
                (SELECT count(*) FROM articles
                 WHERE subscription_id = (SELECT id FROM sub) AND refusal IS NOT NULL)
                + (SELECT count(*) FROM comments
                   WHERE subscription_id = (SELECT id FROM sub) AND refusal IS NOT NULL),
                (SELECT refusal FROM (
                    SELECT refusal, refused_at FROM articles
                    WHERE subscription_id = (SELECT id FROM sub) AND refusal IS NOT NULL
                    UNION ALL
                    SELECT refusal, refused_at FROM comments
                    WHERE subscription_id = (SELECT id FROM sub) AND refusal IS NOT NULL
                 ) AS refused ORDER BY refused_at DESC LIMIT 1)
            """,
            (subscription_id,),
        )
        assert row is not None
        return SubscriptionCounts(
            articles_mirrored=int(row[0]),
            comments_mirrored=int(row[1]),
            pending_articles=int(row[2]),
            pending_comments=int(row[3]),
            set_aside=int(row[4]),
            latest_refusal=row[5],
        )

    async def backlog(self, shards: Shards | None = None) -> Backlog:
        """Pending and set-aside items of the guilds on ``shards`` (None: all), in one query.

        Read at each ``/metrics`` scrape, never on a poll: a scan of the articles and
        comments tables, milliseconds at the sizes of SPEC §7.
        """
        parameters = _shard_parameters(shards)
        row = await self.db.fetchone(
            f"""
            SELECT
                (SELECT count(*) FROM articles AS a JOIN subscriptions AS s
                 ON s.id = a.subscription_id WHERE a.state = 'pending' AND {_ON_SHARDS}),
                (SELECT count(*) FROM comments AS c JOIN subscriptions AS s
                 ON s.id = c.subscription_id WHERE c.state = 'pending' AND {_ON_SHARDS}),
                (SELECT count(*) FROM articles AS a JOIN subscriptions AS s
                 ON s.id = a.subscription_id WHERE a.refusal IS NOT NULL AND {_ON_SHARDS}),
                (SELECT count(*) FROM comments AS c JOIN subscriptions AS s
                 ON s.id = c.subscription_id WHERE c.refusal IS NOT NULL AND {_ON_SHARDS})
            """,
            parameters * 4,
        )
        assert row is not None
        return Backlog(*(int(value) for value in row))

    # --- HTTP validators -------------------------------------------------------------

    async def validators(self, subscription_id: int, url: str) -> HttpValidators | None:
        """The stored validators; read before every fetch, so in one round trip
        (SQLite's ``execute_fetchall``, where execute + fetchone + close would be three)."""
        rows = await self.db.fetch(
            "SELECT etag, last_modified, body_hash, entry_digests FROM http_cache "
            "WHERE subscription_id = ? AND url = ?",
            (subscription_id, url),
        )
        row = next(iter(rows), None)
        return HttpValidators(row[0], row[1], row[2], row[3]) if row else None

    async def validators_for(
        self, subscription_id: int, urls: Sequence[str]
    ) -> dict[str, HttpValidators]:
        """The stored validators of several URLs of one subscription, in one round trip."""
        rows = await self.db.fetch(
            "SELECT url, etag, last_modified, body_hash, entry_digests FROM http_cache "
            "WHERE subscription_id = ? AND url IN (SELECT value FROM json_each(?))",
            (subscription_id, json.dumps(list(urls))),
        )
        return {row[0]: HttpValidators(row[1], row[2], row[3], row[4]) for row in rows}

    async def store_validators(
        self, subscription_id: int, url: str, validators: HttpValidators, *, now: datetime
    ) -> None:
        await self.db.write_one(
            _STORE_VALIDATORS, _validators_row(subscription_id, url, validators, now)
        )

    # --- guild settings --------------------------------------------------------------

    async def log_channel(self, guild_id: int) -> int | None:
        row = await self.db.fetchone(
            "SELECT log_channel_id FROM guild_settings WHERE guild_id = ?", (guild_id,)
        )
        return int(row[0]) if row and row[0] is not None else None

    async def set_log_channel(self, guild_id: int, channel_id: int | None) -> None:
        async with self.db.write() as tx:
            await tx.execute(
                """
                INSERT INTO guild_settings (guild_id, log_channel_id) VALUES (?, ?)
                ON CONFLICT (guild_id) DO UPDATE SET log_channel_id = excluded.log_channel_id
                """,
                (guild_id, channel_id),
            )


# What delivery has to do for subscription ``s``; most polls find none of it.
_PENDING_WORK = """
    EXISTS (SELECT 1 FROM articles
            WHERE subscription_id = s.id AND state = 'pending') AS pending_threads,
    EXISTS (SELECT 1 FROM comments
            WHERE subscription_id = s.id AND (state = 'pending' OR needs_edit = 1))
        AS pending_comments,
    EXISTS (SELECT 1 FROM articles
            WHERE subscription_id = s.id AND needs_edit = 1) AS pending_article_edits
"""


def _pending_work(row: Any) -> PendingWork:
    return PendingWork(
        threads=bool(row["pending_threads"]),
        comments=bool(row["pending_comments"]),
        article_edits=bool(row["pending_article_edits"]),
    )


@dataclass(frozen=True, slots=True)
class PollStart:
    """A subscription as a cycle reads it before polling (``get_for_poll``)."""

    subscription: Subscription
    validators: dict[str, HttpValidators]
    """Stored validators of its posts and comments feeds, by URL (those it has)."""
    work: PendingWork
    """Delivery work left from before the poll."""


@dataclass(frozen=True, slots=True)
class Shards:
    """The Discord shards a process runs: a guild is on ``(guild_id >> 22) % count``."""

    count: int
    ids: tuple[int, ...]

    def owns(self, guild_id: int) -> bool:
        return (guild_id >> 22) % self.count in self.ids


# Guilds on the given shards; with no shards given (one process runs them all) the
# test is ``? = 0`` on a 0, which every row passes.
_ON_SHARDS = """(? = 0 OR (s.guild_id >> 22) % ? IN (SELECT CAST(value AS INTEGER)
                                                  FROM json_each(?)))"""


def _shard_parameters(shards: Shards | None) -> tuple[int, int, str]:
    if shards is None:
        return (0, 1, "[]")
    return (1, shards.count, json.dumps(list(shards.ids)))


def _url_variants(url: str) -> tuple[str, ...]:
    """The URL as typed, with and without a trailing slash, so either form matches."""
    url = url.strip()
    base = url.rstrip("/")
    return tuple(dict.fromkeys((url, base, base + "/")))


_STORE_VALIDATORS = """
    INSERT INTO http_cache (subscription_id, url, etag, last_modified, body_hash,
                            entry_digests, fetched_at)
    VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (subscription_id, url) DO UPDATE SET
        etag = excluded.etag, last_modified = excluded.last_modified,
        body_hash = excluded.body_hash, entry_digests = excluded.entry_digests,
        fetched_at = excluded.fetched_at
"""
_SET_COMMENTS_SEEN_UNTIL = "UPDATE subscriptions SET comments_seen_until = ? WHERE id = ?"


def _validators_row(
    subscription_id: int, url: str, validators: HttpValidators, now: datetime
) -> tuple[object, ...]:
    return (
        subscription_id,
        url,
        validators.etag,
        validators.last_modified,
        validators.body_hash,
        validators.entry_digests,
        to_db_time(now),
    )


async def write_outcome(tx: Transaction, subscription_id: int, outcome: FeedOutcome) -> None:
    """A comments body's outcome (``FeedOutcome``), inside the caller's transaction."""
    await tx.execute(
        _STORE_VALIDATORS,
        _validators_row(subscription_id, outcome.url, outcome.validators, outcome.fetched_at),
    )
    if outcome.comments_seen_until is not None:
        await tx.execute(
            _SET_COMMENTS_SEEN_UNTIL, (to_db_time(outcome.comments_seen_until), subscription_id)
        )

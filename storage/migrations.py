"""Schema migrations: one history for both backends, one step per version.

Version N means the same tables, columns, states and meanings in SQLite
(``MIGRATIONS``, version in ``PRAGMA user_version``) and in PostgreSQL
(``PG_MIGRATIONS``, version in the ``schema_version`` table). Each step runs in
its own transaction together with the version bump, so a crash mid-migration
leaves the database at the previous version; in PostgreSQL an advisory lock
makes processes starting together migrate one after another. Never edit a
released step: add a new one, for both backends.
"""

from __future__ import annotations

import logging

import aiosqlite
import asyncpg

log = logging.getLogger(__name__)


class DatabaseTooNewError(Exception):
    """The database was written by a newer blogmirror than this one."""


V1 = """
-- AUTOINCREMENT: an id is never reused, so nothing keyed by a deleted
-- subscription's id (caches, locks, logs) can be mistaken for a new one's.
CREATE TABLE subscriptions (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id              INTEGER NOT NULL,
    channel_id            INTEGER NOT NULL,
    feed_url              TEXT    NOT NULL,
    blog_url              TEXT,
    blog_title            TEXT    NOT NULL DEFAULT '',
    dialect               TEXT    NOT NULL,
    comments_feed_url     TEXT,
    mirror_comments       INTEGER NOT NULL DEFAULT 1,
    backfill              INTEGER NOT NULL DEFAULT 1,
    state                 TEXT    NOT NULL DEFAULT 'active'
                          CHECK (state IN ('active', 'paused', 'disabled')),
    interval_seconds      INTEGER NOT NULL,
    created_at            TEXT    NOT NULL,
    next_poll_at          TEXT    NOT NULL,
    last_poll_at          TEXT,
    last_success_at       TEXT,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    last_error            TEXT,
    last_error_status     INTEGER,
    last_error_at         TEXT,
    -- newest comment publication time seen: paging back through a newest-first
    -- comments feed stops once it reaches comments older than this.
    comments_seen_until   TEXT,
    UNIQUE (guild_id, channel_id, feed_url)
);
CREATE INDEX subscriptions_guild ON subscriptions (guild_id);
CREATE INDEX subscriptions_due ON subscriptions (state, next_poll_at);

-- HTTP validators per fetched URL, so every poll is a conditional GET and an
-- unchanged body is never parsed twice.
CREATE TABLE http_cache (
    subscription_id  INTEGER NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    url              TEXT    NOT NULL,
    etag             TEXT,
    last_modified    TEXT,
    body_hash        TEXT,
    fetched_at       TEXT    NOT NULL,
    PRIMARY KEY (subscription_id, url)
);

CREATE TABLE guild_settings (
    guild_id        INTEGER PRIMARY KEY,
    log_channel_id  INTEGER
);

-- state: pending (to be posted), skipped (older than the backfill: seen, never
-- posted), posted (has a thread), detached (its thread was deleted in Discord).
CREATE TABLE articles (
    id                  INTEGER PRIMARY KEY,
    subscription_id     INTEGER NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    entry_id            TEXT    NOT NULL,
    url                 TEXT    NOT NULL,
    title               TEXT    NOT NULL,
    author              TEXT    NOT NULL,
    published           TEXT    NOT NULL,
    updated             TEXT    NOT NULL,
    html                TEXT    NOT NULL,
    image_url           TEXT,
    labels              TEXT    NOT NULL DEFAULT '[]',
    comments_feed_url   TEXT,
    content_hash        TEXT    NOT NULL,
    state               TEXT    NOT NULL
                        CHECK (state IN ('pending', 'skipped', 'posted', 'detached')),
    thread_id           INTEGER,
    starter_message_id  INTEGER,
    needs_edit          INTEGER NOT NULL DEFAULT 0,
    first_seen_at       TEXT    NOT NULL,
    UNIQUE (subscription_id, entry_id)
);
CREATE INDEX articles_thread ON articles (thread_id);
CREATE INDEX articles_url ON articles (subscription_id, url);

-- state: pending (to be posted, or some parts of a long comment still to send),
-- posted (every part sent), deleted (a moderator deleted its message: never
-- mirrored again), skipped (its article is not mirrored).
CREATE TABLE comments (
    id               INTEGER PRIMARY KEY,
    subscription_id  INTEGER NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    article_id       INTEGER NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    entry_id         TEXT    NOT NULL,
    parent_entry_id  TEXT,
    author           TEXT    NOT NULL,
    author_url       TEXT,
    published        TEXT    NOT NULL,
    html             TEXT    NOT NULL,
    permalink        TEXT    NOT NULL,
    removed          INTEGER NOT NULL DEFAULT 0,
    content_hash     TEXT    NOT NULL,
    state            TEXT    NOT NULL
                     CHECK (state IN ('pending', 'posted', 'deleted', 'skipped')),
    message_id       INTEGER,
    -- a long comment is several messages: ids of the parts after the first
    extra_message_ids TEXT   NOT NULL DEFAULT '[]',
    parts_sent       INTEGER NOT NULL DEFAULT 0,
    needs_edit       INTEGER NOT NULL DEFAULT 0,
    first_seen_at    TEXT    NOT NULL,
    UNIQUE (subscription_id, entry_id)
);
CREATE INDEX comments_article ON comments (article_id, state, published);
CREATE INDEX comments_message ON comments (message_id);

-- The outbox of SPEC §5: a row is written before a Discord send and completed
-- with the message id after it. Rows left open by a crash are settled at start
-- by reading the thread's recent messages.
CREATE TABLE delivery_intents (
    id               INTEGER PRIMARY KEY,
    subscription_id  INTEGER NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    kind             TEXT    NOT NULL CHECK (kind IN ('thread', 'comment')),
    target_id        INTEGER NOT NULL,
    part             INTEGER NOT NULL DEFAULT 0,
    channel_id       INTEGER NOT NULL,
    nonce            TEXT    NOT NULL UNIQUE,
    created_at       TEXT    NOT NULL,
    completed_at     TEXT,
    message_id       INTEGER
);
CREATE INDEX delivery_intents_open ON delivery_intents (channel_id, completed_at);
"""

# Version 2: the outbox (``storage/outbox.py``) replaces ``delivery_intents``, and
# articles and comments gain the ``set_aside`` state (Discord refused them for good)
# with Discord's reason. SQLite cannot change a CHECK constraint in place, so both
# tables are rebuilt (https://sqlite.org/lang_altertable.html#otheralter); foreign
# keys are off while migrations run (``Database.open`` turns them on after).
V2 = """
CREATE TABLE articles_v2 (
    id                  INTEGER PRIMARY KEY,
    subscription_id     INTEGER NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    entry_id            TEXT    NOT NULL,
    url                 TEXT    NOT NULL,
    title               TEXT    NOT NULL,
    author              TEXT    NOT NULL,
    published           TEXT    NOT NULL,
    updated             TEXT    NOT NULL,
    html                TEXT    NOT NULL,
    image_url           TEXT,
    labels              TEXT    NOT NULL DEFAULT '[]',
    comments_feed_url   TEXT,
    content_hash        TEXT    NOT NULL,
    state               TEXT    NOT NULL
                        CHECK (state IN ('pending', 'skipped', 'posted', 'detached', 'set_aside')),
    thread_id           INTEGER,
    starter_message_id  INTEGER,
    needs_edit          INTEGER NOT NULL DEFAULT 0,
    first_seen_at       TEXT    NOT NULL,
    -- why Discord refused it ("50035: Invalid Form Body …"), while set aside
    refusal             TEXT,
    refused_at          TEXT,
    UNIQUE (subscription_id, entry_id)
);
INSERT INTO articles_v2 (
    id, subscription_id, entry_id, url, title, author, published, updated, html, image_url,
    labels, comments_feed_url, content_hash, state, thread_id, starter_message_id, needs_edit,
    first_seen_at
)
SELECT id, subscription_id, entry_id, url, title, author, published, updated, html, image_url,
       labels, comments_feed_url, content_hash, state, thread_id, starter_message_id, needs_edit,
       first_seen_at
FROM articles;
DROP TABLE articles;
ALTER TABLE articles_v2 RENAME TO articles;
CREATE INDEX articles_thread ON articles (thread_id);
CREATE INDEX articles_url ON articles (subscription_id, url);

CREATE TABLE comments_v2 (
    id               INTEGER PRIMARY KEY,
    subscription_id  INTEGER NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    article_id       INTEGER NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    entry_id         TEXT    NOT NULL,
    parent_entry_id  TEXT,
    author           TEXT    NOT NULL,
    author_url       TEXT,
    published        TEXT    NOT NULL,
    html             TEXT    NOT NULL,
    permalink        TEXT    NOT NULL,
    removed          INTEGER NOT NULL DEFAULT 0,
    content_hash     TEXT    NOT NULL,
    state            TEXT    NOT NULL
                     CHECK (state IN ('pending', 'posted', 'deleted', 'skipped', 'set_aside')),
    message_id       INTEGER,
    extra_message_ids TEXT   NOT NULL DEFAULT '[]',
    parts_sent       INTEGER NOT NULL DEFAULT 0,
    needs_edit       INTEGER NOT NULL DEFAULT 0,
    first_seen_at    TEXT    NOT NULL,
    refusal          TEXT,
    refused_at       TEXT,
    -- 1: its messages end with a key line naming it (bot/render.py). Comments sent
    -- before v2 keep being split without one, so a part resumed or edited later
    -- lines up with the parts already in Discord.
    keyed            INTEGER NOT NULL DEFAULT 1,
    UNIQUE (subscription_id, entry_id)
);
INSERT INTO comments_v2 (
    id, subscription_id, article_id, entry_id, parent_entry_id, author, author_url, published,
    html, permalink, removed, content_hash, state, message_id, extra_message_ids, parts_sent,
    needs_edit, first_seen_at, keyed
)
SELECT id, subscription_id, article_id, entry_id, parent_entry_id, author, author_url,
       published, html, permalink, removed, content_hash, state, message_id, extra_message_ids,
       parts_sent, needs_edit, first_seen_at, parts_sent = 0
FROM comments;
DROP TABLE comments;
ALTER TABLE comments_v2 RENAME TO comments;
CREATE INDEX comments_article ON comments (article_id, state, published);
CREATE INDEX comments_message ON comments (message_id);

-- The outbox of SPEC §5: a row is written before a Discord write and completed,
-- in the same transaction as its effect, after it. Open rows are settled by
-- reading the channel before anything new is sent there; completed rows are
-- pruned after a day.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    subscription_id  INTEGER NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    kind             TEXT    NOT NULL CHECK (kind IN ('forum_post', 'article_message',
                             'thread_from_message', 'comment_part', 'comment_edit',
                             'article_edit')),
    target_id        INTEGER NOT NULL,
    part             INTEGER NOT NULL DEFAULT 0,
    total            INTEGER NOT NULL DEFAULT 1,
    channel_id       INTEGER NOT NULL,
    nonce            TEXT    NOT NULL UNIQUE,
    created_at       TEXT    NOT NULL,
    completed_at     TEXT,
    message_id       INTEGER
);
CREATE INDEX outbox_open ON outbox (channel_id) WHERE completed_at IS NULL;
CREATE INDEX outbox_completed ON outbox (completed_at) WHERE completed_at IS NOT NULL;

-- v1's open intents carry over: a 'thread' intent is settled by looking in its
-- channel whatever the channel's kind; a comment part's total is not known
-- (0: settling works it out from the comment).
INSERT INTO outbox (subscription_id, kind, target_id, part, total, channel_id, nonce,
                    created_at)
SELECT subscription_id,
       CASE kind WHEN 'thread' THEN 'article_message' ELSE 'comment_part' END,
       target_id, part, 0, channel_id, nonce, created_at
FROM delivery_intents WHERE completed_at IS NULL;
DROP TABLE delivery_intents;
"""

# Version 3: leases, so that several processes sharing one PostgreSQL database never
# work on one subscription at once (SPEC §8). SQLite has the table too (one history),
# though one process per file needs no lease.
V3 = """
CREATE TABLE leases (
    subscription_id  INTEGER PRIMARY KEY REFERENCES subscriptions (id) ON DELETE CASCADE,
    holder           TEXT    NOT NULL,
    expires_at       TEXT    NOT NULL
);
"""

# Version 4: a comment's publication time keeps the feed's own UTC offset, so its
# message shows the time as the blog shows it ("Thank you 18:08"). ``published``
# stays UTC text (it sorts as text); the offset is beside it, in seconds east of
# UTC. Comments stored before have none and are shown in UTC.
V4 = """
ALTER TABLE comments ADD COLUMN published_offset INTEGER;
"""

# Version 5: what ``/blog edit`` changes. ``mention_role_id``: the role pinged in each
# new article message (NULL: none). ``interval_custom``: 1 when a moderator chose
# ``interval_seconds``; 0 when it is the bot's default (POLL_INTERVAL_SECONDS), which
# every subscription stored before had.
V5 = """
ALTER TABLE subscriptions ADD COLUMN mention_role_id INTEGER;
ALTER TABLE subscriptions ADD COLUMN interval_custom INTEGER NOT NULL DEFAULT 0;
"""

# Version 6: what the last recorded body of each URL held, so the next changed body
# hands feedparser only its new and changed entries (``bot/selective.py``): the feed's
# dialect and a 16-byte digest per recorded entry. NULL: nothing known, read it all.
V6 = """
ALTER TABLE http_cache ADD COLUMN entry_digests BLOB;
"""

# Version 7: WebSub push (SPEC §6, ``bot/websub.py``). One row per pushable feed of a
# subscription (its posts feed, and its blog-wide comments feed when comments are
# mirrored): the hub, the topic (the feed's ``rel="self"``), the unguessable token
# that names the row's callback URL, the secret the hub signs notifications with,
# and where the hub subscription stands. A row outlives its subscription
# (``subscription_id`` becomes NULL) until the hub has confirmed the unsubscription,
# so that confirmation can still be answered. ``due_at``: when the row next needs
# attention (a verification deadline, a lease renewal, a retry).
V7 = """
CREATE TABLE push_topics (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id  INTEGER REFERENCES subscriptions (id) ON DELETE SET NULL,
    feed_url         TEXT    NOT NULL,
    hub_url          TEXT,
    topic_url        TEXT,
    callback_token   TEXT    NOT NULL UNIQUE,
    secret           TEXT    NOT NULL,
    state            TEXT    NOT NULL
                     CHECK (state IN ('subscribing', 'active', 'unsubscribing', 'unavailable')),
    reason           TEXT,
    requested_at     TEXT,
    lease_expires_at TEXT,
    due_at           TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL
);
CREATE UNIQUE INDEX push_topics_feed ON push_topics (subscription_id, feed_url);
CREATE INDEX push_topics_due ON push_topics (due_at);
"""

MIGRATIONS: tuple[str, ...] = (V1, V2, V3, V4, V5, V6, V7)
SCHEMA_VERSION = len(MIGRATIONS)

# --- PostgreSQL: the same versions ---------------------------------------------------
# Row ids are identities (never reused, like AUTOINCREMENT); Discord ids BIGINT;
# times ISO-8601 UTC text and flags integers, exactly as in SQLite, so every query
# reads the same in both.

PG_V1 = """
CREATE TABLE subscriptions (
    id                    BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    guild_id              BIGINT  NOT NULL,
    channel_id            BIGINT  NOT NULL,
    feed_url              TEXT    NOT NULL,
    blog_url              TEXT,
    blog_title            TEXT    NOT NULL DEFAULT '',
    dialect               TEXT    NOT NULL,
    comments_feed_url     TEXT,
    mirror_comments       INTEGER NOT NULL DEFAULT 1,
    backfill              INTEGER NOT NULL DEFAULT 1,
    state                 TEXT    NOT NULL DEFAULT 'active'
                          CHECK (state IN ('active', 'paused', 'disabled')),
    interval_seconds      INTEGER NOT NULL,
    created_at            TEXT    NOT NULL,
    next_poll_at          TEXT    NOT NULL,
    last_poll_at          TEXT,
    last_success_at       TEXT,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    last_error            TEXT,
    last_error_status     INTEGER,
    last_error_at         TEXT,
    comments_seen_until   TEXT,
    UNIQUE (guild_id, channel_id, feed_url)
);
CREATE INDEX subscriptions_guild ON subscriptions (guild_id);
CREATE INDEX subscriptions_due ON subscriptions (state, next_poll_at);
CREATE TABLE http_cache (
    subscription_id  BIGINT  NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    url              TEXT    NOT NULL,
    etag             TEXT,
    last_modified    TEXT,
    body_hash        TEXT,
    fetched_at       TEXT    NOT NULL,
    PRIMARY KEY (subscription_id, url)
);
CREATE TABLE guild_settings (
    guild_id        BIGINT PRIMARY KEY,
    log_channel_id  BIGINT
);
CREATE TABLE articles (
    id                  BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    subscription_id     BIGINT  NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    entry_id            TEXT    NOT NULL,
    url                 TEXT    NOT NULL,
    title               TEXT    NOT NULL,
    author              TEXT    NOT NULL,
    published           TEXT    NOT NULL,
    updated             TEXT    NOT NULL,
    html                TEXT    NOT NULL,
    image_url           TEXT,
    labels              TEXT    NOT NULL DEFAULT '[]',
    comments_feed_url   TEXT,
    content_hash        TEXT    NOT NULL,
    state               TEXT    NOT NULL
                        CONSTRAINT articles_state_check
                        CHECK (state IN ('pending', 'skipped', 'posted', 'detached')),
    thread_id           BIGINT,
    starter_message_id  BIGINT,
    needs_edit          INTEGER NOT NULL DEFAULT 0,
    first_seen_at       TEXT    NOT NULL,
    UNIQUE (subscription_id, entry_id)
);
CREATE INDEX articles_thread ON articles (thread_id);
CREATE INDEX articles_url ON articles (subscription_id, url);
CREATE TABLE comments (
    id               BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    subscription_id  BIGINT  NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    article_id       BIGINT  NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    entry_id         TEXT    NOT NULL,
    parent_entry_id  TEXT,
    author           TEXT    NOT NULL,
    author_url       TEXT,
    published        TEXT    NOT NULL,
    html             TEXT    NOT NULL,
    permalink        TEXT    NOT NULL,
    removed          INTEGER NOT NULL DEFAULT 0,
    content_hash     TEXT    NOT NULL,
    state            TEXT    NOT NULL
                     CONSTRAINT comments_state_check
                     CHECK (state IN ('pending', 'posted', 'deleted', 'skipped')),
    message_id       BIGINT,
    extra_message_ids TEXT   NOT NULL DEFAULT '[]',
    parts_sent       INTEGER NOT NULL DEFAULT 0,
    needs_edit       INTEGER NOT NULL DEFAULT 0,
    first_seen_at    TEXT    NOT NULL,
    UNIQUE (subscription_id, entry_id)
);
CREATE INDEX comments_article ON comments (article_id, state, published);
CREATE INDEX comments_message ON comments (message_id);
CREATE TABLE delivery_intents (
    id               BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    subscription_id  BIGINT  NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    kind             TEXT    NOT NULL CHECK (kind IN ('thread', 'comment')),
    target_id        BIGINT  NOT NULL,
    part             INTEGER NOT NULL DEFAULT 0,
    channel_id       BIGINT  NOT NULL,
    nonce            TEXT    NOT NULL UNIQUE,
    created_at       TEXT    NOT NULL,
    completed_at     TEXT,
    message_id       BIGINT
);
CREATE INDEX delivery_intents_open ON delivery_intents (channel_id, completed_at);
"""

PG_V2 = """
ALTER TABLE articles DROP CONSTRAINT articles_state_check;
ALTER TABLE articles ADD CONSTRAINT articles_state_check
    CHECK (state IN ('pending', 'skipped', 'posted', 'detached', 'set_aside'));
ALTER TABLE articles ADD COLUMN refusal TEXT;
ALTER TABLE articles ADD COLUMN refused_at TEXT;
ALTER TABLE comments DROP CONSTRAINT comments_state_check;
ALTER TABLE comments ADD CONSTRAINT comments_state_check
    CHECK (state IN ('pending', 'posted', 'deleted', 'skipped', 'set_aside'));
ALTER TABLE comments ADD COLUMN refusal TEXT;
ALTER TABLE comments ADD COLUMN refused_at TEXT;
ALTER TABLE comments ADD COLUMN keyed INTEGER NOT NULL DEFAULT 1;
UPDATE comments SET keyed = 0 WHERE parts_sent > 0;
CREATE TABLE outbox (
    id               BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    subscription_id  BIGINT  NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    kind             TEXT    NOT NULL CHECK (kind IN ('forum_post', 'article_message',
                             'thread_from_message', 'comment_part', 'comment_edit',
                             'article_edit')),
    target_id        BIGINT  NOT NULL,
    part             INTEGER NOT NULL DEFAULT 0,
    total            INTEGER NOT NULL DEFAULT 1,
    channel_id       BIGINT  NOT NULL,
    nonce            TEXT    NOT NULL UNIQUE,
    created_at       TEXT    NOT NULL,
    completed_at     TEXT,
    message_id       BIGINT
);
CREATE INDEX outbox_open ON outbox (channel_id) WHERE completed_at IS NULL;
CREATE INDEX outbox_completed ON outbox (completed_at) WHERE completed_at IS NOT NULL;
INSERT INTO outbox (subscription_id, kind, target_id, part, total, channel_id, nonce,
                    created_at)
SELECT subscription_id,
       CASE kind WHEN 'thread' THEN 'article_message' ELSE 'comment_part' END,
       target_id, part, 0, channel_id, nonce, created_at
FROM delivery_intents WHERE completed_at IS NULL;
DROP TABLE delivery_intents;
"""

PG_V3 = """
CREATE TABLE leases (
    subscription_id  BIGINT  PRIMARY KEY REFERENCES subscriptions (id) ON DELETE CASCADE,
    holder           TEXT    NOT NULL,
    expires_at       TEXT    NOT NULL
);
"""

PG_V4 = """
ALTER TABLE comments ADD COLUMN published_offset INTEGER;
"""

PG_V5 = """
ALTER TABLE subscriptions ADD COLUMN mention_role_id BIGINT;
ALTER TABLE subscriptions ADD COLUMN interval_custom INTEGER NOT NULL DEFAULT 0;
"""

PG_V6 = """
ALTER TABLE http_cache ADD COLUMN entry_digests BYTEA;
"""

PG_V7 = """
CREATE TABLE push_topics (
    id               BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    subscription_id  BIGINT  REFERENCES subscriptions (id) ON DELETE SET NULL,
    feed_url         TEXT    NOT NULL,
    hub_url          TEXT,
    topic_url        TEXT,
    callback_token   TEXT    NOT NULL UNIQUE,
    secret           TEXT    NOT NULL,
    state            TEXT    NOT NULL
                     CHECK (state IN ('subscribing', 'active', 'unsubscribing', 'unavailable')),
    reason           TEXT,
    requested_at     TEXT,
    lease_expires_at TEXT,
    due_at           TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL
);
CREATE UNIQUE INDEX push_topics_feed ON push_topics (subscription_id, feed_url);
CREATE INDEX push_topics_due ON push_topics (due_at);
"""

PG_MIGRATIONS: tuple[str, ...] = (PG_V1, PG_V2, PG_V3, PG_V4, PG_V5, PG_V6, PG_V7)
assert len(PG_MIGRATIONS) == len(MIGRATIONS), "every version exists for both backends"

# Any constant key: processes starting together take turns migrating.
_PG_MIGRATION_LOCK = 7_142_020_611


def _too_new(version: int, where: str) -> DatabaseTooNewError:
    return DatabaseTooNewError(
        f"The database is at schema version {version}, but this blogmirror only knows "
        f"up to version {SCHEMA_VERSION}. Upgrade blogmirror, or point {where} "
        "at another database."
    )


async def migrate_postgres(conn: asyncpg.Connection) -> int:
    """Bring a PostgreSQL schema to ``SCHEMA_VERSION``; refuse one that is newer."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
        version = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
    if version > SCHEMA_VERSION:
        raise _too_new(version, "DATABASE_URL")
    for index in range(version, SCHEMA_VERSION):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_MIGRATION_LOCK)
            current = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
            if current > index:
                continue  # another process got here first
            log.info("Migrating database schema to version %d", index + 1)
            for statement in _statements(PG_MIGRATIONS[index]):
                await conn.execute(statement)
            await conn.execute("DELETE FROM schema_version")
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", index + 1)
    return SCHEMA_VERSION


async def migrate_sqlite(conn: aiosqlite.Connection) -> int:
    """Bring the schema to ``SCHEMA_VERSION``; refuse a database that is newer."""
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise _too_new(version, "DATABASE_PATH")
    for index in range(version, SCHEMA_VERSION):
        log.info("Migrating database schema to version %d", index + 1)
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[index]):
                await conn.execute(statement)
            async with conn.execute("PRAGMA foreign_key_check") as cursor:
                broken = list(await cursor.fetchall())
            if broken:
                raise RuntimeError(f"migration {index + 1} broke foreign keys: {broken[:5]}")
            await conn.execute(f"PRAGMA user_version = {index + 1}")
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()
    return SCHEMA_VERSION


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (executescript would COMMIT early)."""
    cleaned = "\n".join(line for line in script.splitlines() if not line.strip().startswith("--"))
    return [part.strip() for part in cleaned.split(";") if part.strip()]

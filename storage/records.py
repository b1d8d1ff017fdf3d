"""Typed records the repositories return and accept.

Storage knows nothing of feeds or Discord: the ingestion service turns parsed
entries into ``New*`` values, delivery reads the records back.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any


def to_db_time(value: datetime) -> str:
    """Aware datetime -> ISO-8601 UTC text (sorts correctly as text)."""
    if value.tzinfo is not UTC:  # most are made in UTC already
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


def by_name(row: Any) -> Any:
    """A row to read many columns of by name: a SQLite row's every lookup by name
    compares column names one by one, so it is made a dict first."""
    if isinstance(row, sqlite3.Row):
        return dict(zip(row.keys(), row, strict=True))
    return row


def from_db_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def to_db_offset(value: datetime) -> int | None:
    """The UTC offset of an aware datetime, in seconds east of UTC, as stored beside it."""
    offset = value.utcoffset()
    return None if offset is None else int(offset.total_seconds())


def in_db_offset(value: datetime, offset: int | None) -> datetime:
    """A stored UTC time shown in its stored offset again (None: it stays UTC)."""
    if not offset:
        return value
    return value.astimezone(timezone(timedelta(seconds=offset)))


def optional_time(value: str | None) -> datetime | None:
    return None if value is None else from_db_time(value)


class SubscriptionState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    DISABLED = "disabled"


class ArticleState(StrEnum):
    PENDING = "pending"
    SKIPPED = "skipped"
    POSTED = "posted"
    DETACHED = "detached"
    # Discord refused its thread for good (a 4xx): waits for ``/blog resync``.
    SET_ASIDE = "set_aside"


class CommentState(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    DELETED = "deleted"
    SKIPPED = "skipped"
    # Discord refused one of its messages for good: waits for ``/blog resync``.
    SET_ASIDE = "set_aside"


class IntentKind(StrEnum):
    """What an outbox intent is about to do in Discord (see ``storage/outbox.py``)."""

    FORUM_POST = "forum_post"  # target: article; channel: the forum
    ARTICLE_MESSAGE = "article_message"  # target: article; channel: the text channel
    THREAD_FROM_MESSAGE = "thread_from_message"  # target: article; channel: the text channel
    COMMENT_PART = "comment_part"  # target: comment; channel: the article's thread
    COMMENT_EDIT = "comment_edit"  # target: comment; channel: the article's thread
    ARTICLE_EDIT = "article_edit"  # target: article; channel: where its message is

    @property
    def about_article(self) -> bool:
        return self not in (IntentKind.COMMENT_PART, IntentKind.COMMENT_EDIT)


@dataclass(frozen=True, slots=True)
class Subscription:
    id: int
    guild_id: int
    channel_id: int
    feed_url: str
    blog_url: str | None
    blog_title: str
    dialect: str
    comments_feed_url: str | None
    mirror_comments: bool
    backfill: int
    state: SubscriptionState
    interval_seconds: int
    created_at: datetime
    next_poll_at: datetime
    last_poll_at: datetime | None
    last_success_at: datetime | None
    consecutive_failures: int
    last_error: str | None
    last_error_status: int | None
    last_error_at: datetime | None
    comments_seen_until: datetime | None
    mention_role_id: int | None = None
    """The role pinged in each new article message (``/blog edit … mention``)."""
    interval_custom: bool = False
    """``interval_seconds`` was chosen by a moderator, not the bot's default."""

    @classmethod
    def from_row(cls, row: Any) -> Subscription:
        row = by_name(row)
        return cls(
            id=row["id"],
            guild_id=row["guild_id"],
            channel_id=row["channel_id"],
            feed_url=row["feed_url"],
            blog_url=row["blog_url"],
            blog_title=row["blog_title"],
            dialect=row["dialect"],
            comments_feed_url=row["comments_feed_url"],
            mirror_comments=bool(row["mirror_comments"]),
            backfill=row["backfill"],
            state=SubscriptionState(row["state"]),
            interval_seconds=row["interval_seconds"],
            created_at=from_db_time(row["created_at"]),
            next_poll_at=from_db_time(row["next_poll_at"]),
            last_poll_at=optional_time(row["last_poll_at"]),
            last_success_at=optional_time(row["last_success_at"]),
            consecutive_failures=row["consecutive_failures"],
            last_error=row["last_error"],
            last_error_status=row["last_error_status"],
            last_error_at=optional_time(row["last_error_at"]),
            comments_seen_until=optional_time(row["comments_seen_until"]),
            mention_role_id=row["mention_role_id"],
            interval_custom=bool(row["interval_custom"]),
        )

    @property
    def display_name(self) -> str:
        return self.blog_title or self.blog_url or self.feed_url


@dataclass(frozen=True, slots=True)
class HttpValidators:
    etag: str | None
    last_modified: str | None
    body_hash: str | None
    # What the body held (``bot/selective.py``), opaque to storage; None: nothing known.
    entry_digests: bytes | None = None


@dataclass(frozen=True, slots=True)
class FeedOutcome:
    """What a recorded comments body leaves beside its comments, written in their transaction:
    its URL's validators (and what it held) and, for a blog-wide feed, how far it has read."""

    url: str
    validators: HttpValidators
    fetched_at: datetime
    comments_seen_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewArticle:
    entry_id: str
    url: str
    title: str
    author: str
    published: datetime
    updated: datetime
    html: str
    image_url: str | None
    labels: tuple[str, ...]
    comments_feed_url: str | None
    content_hash: str


@dataclass(frozen=True, slots=True)
class ArticleRecord:
    id: int
    subscription_id: int
    entry_id: str
    url: str
    title: str
    author: str
    published: datetime
    updated: datetime
    html: str
    image_url: str | None
    labels: tuple[str, ...]
    comments_feed_url: str | None
    content_hash: str
    state: ArticleState
    thread_id: int | None
    starter_message_id: int | None
    needs_edit: bool
    refusal: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> ArticleRecord:
        return cls(
            id=row["id"],
            subscription_id=row["subscription_id"],
            entry_id=row["entry_id"],
            url=row["url"],
            title=row["title"],
            author=row["author"],
            published=from_db_time(row["published"]),
            updated=from_db_time(row["updated"]),
            html=row["html"],
            image_url=row["image_url"],
            labels=tuple(json.loads(row["labels"])),
            comments_feed_url=row["comments_feed_url"],
            content_hash=row["content_hash"],
            state=ArticleState(row["state"]),
            thread_id=row["thread_id"],
            starter_message_id=row["starter_message_id"],
            needs_edit=bool(row["needs_edit"]),
            refusal=row["refusal"],
        )


@dataclass(frozen=True, slots=True)
class NewComment:
    entry_id: str
    article_entry_id: str
    parent_entry_id: str | None
    author: str
    author_url: str | None
    published: datetime
    html: str
    permalink: str
    removed: bool
    content_hash: str


@dataclass(frozen=True, slots=True)
class CommentRecord:
    """A stored comment; ``published`` is in the feed's own UTC offset (UTC before v3)."""

    id: int
    subscription_id: int
    article_id: int
    entry_id: str
    parent_entry_id: str | None
    author: str
    author_url: str | None
    published: datetime
    html: str
    permalink: str
    removed: bool
    content_hash: str
    state: CommentState
    message_id: int | None
    extra_message_ids: tuple[int, ...]
    parts_sent: int
    needs_edit: bool
    refusal: str | None = None
    keyed: bool = True

    @classmethod
    def from_row(cls, row: Any) -> CommentRecord:
        return cls(
            id=row["id"],
            subscription_id=row["subscription_id"],
            article_id=row["article_id"],
            entry_id=row["entry_id"],
            parent_entry_id=row["parent_entry_id"],
            author=row["author"],
            author_url=row["author_url"],
            published=in_db_offset(from_db_time(row["published"]), row["published_offset"]),
            html=row["html"],
            permalink=row["permalink"],
            removed=bool(row["removed"]),
            content_hash=row["content_hash"],
            state=CommentState(row["state"]),
            message_id=row["message_id"],
            extra_message_ids=tuple(json.loads(row["extra_message_ids"])),
            parts_sent=row["parts_sent"],
            needs_edit=bool(row["needs_edit"]),
            refusal=row["refusal"],
            keyed=bool(row["keyed"]),
        )


@dataclass(frozen=True, slots=True)
class Intent:
    """One Discord write the bot is about to make, or made (``completed_at``).

    ``total`` is how many messages the comment had when its part was planned
    (so the last part's completion marks the comment posted); 0 for intents
    carried over from schema v1, which did not record it.
    """

    id: int
    subscription_id: int
    kind: IntentKind
    target_id: int
    part: int
    total: int
    channel_id: int
    nonce: str
    created_at: datetime
    completed_at: datetime | None
    message_id: int | None

    @classmethod
    def from_row(cls, row: Any) -> Intent:
        return cls(
            id=row["id"],
            subscription_id=row["subscription_id"],
            kind=IntentKind(row["kind"]),
            target_id=row["target_id"],
            part=row["part"],
            total=row["total"],
            channel_id=row["channel_id"],
            nonce=row["nonce"],
            created_at=from_db_time(row["created_at"]),
            completed_at=optional_time(row["completed_at"]),
            message_id=row["message_id"],
        )


@dataclass(frozen=True, slots=True)
class SubscriptionCounts:
    articles_mirrored: int
    comments_mirrored: int
    pending_articles: int
    pending_comments: int
    set_aside: int = 0
    latest_refusal: str | None = None


@dataclass(frozen=True, slots=True)
class Backlog:
    """Work waiting across every subscription of a process's shards (``/metrics``)."""

    pending_articles: int
    pending_comments: int
    set_aside_articles: int
    set_aside_comments: int


@dataclass(frozen=True, slots=True)
class PendingWork:
    """Which kinds of delivery work a subscription has: most polls find none at all."""

    threads: bool
    """Articles waiting for their thread."""
    comments: bool
    """Comments to post, or comment messages to edit."""
    article_edits: bool
    """Article messages to edit."""

    def __bool__(self) -> bool:
        return self.threads or self.comments or self.article_edits

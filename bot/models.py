"""Plain dataclasses that parsed feeds are turned into.

They know nothing of Discord, SQLite or feedparser: parsing produces them, the
ingestion service stores them, rendering turns them into Discord messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Dialect(StrEnum):
    """Which blog engine a feed comes from; decides where comments live."""

    BLOGGER = "blogger"
    WORDPRESS = "wordpress"
    GENERIC = "generic"


@dataclass(frozen=True, slots=True)
class Article:
    """One blog post."""

    id: str
    title: str
    url: str
    published: datetime
    updated: datetime
    author: str
    html: str
    image_url: str | None = None
    labels: tuple[str, ...] = ()
    comments_feed_url: str | None = None
    undated: bool = False
    """The feed gives no date: ``published`` is a stand-in until ingestion records the
    time the entry was first seen, which then never changes."""


@dataclass(frozen=True, slots=True)
class Comment:
    """One comment on a blog post; ``parent_id`` names the comment it answers."""

    id: str
    article_id: str
    parent_id: str | None
    author: str
    published: datetime
    html: str
    permalink: str
    author_url: str | None = None
    removed: bool = False
    undated: bool = False
    """As for ``Article.undated``."""


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """Everything one feed document says, in dialect-neutral form."""

    kind: str  # "posts" or "comments"
    dialect: Dialect
    title: str
    site_url: str | None
    articles: tuple[Article, ...] = ()
    comments: tuple[Comment, ...] = ()
    next_url: str | None = None
    comments_feed_url: str | None = None  # blog-wide comments feed, where the dialect has one
    warnings: tuple[str, ...] = field(default=())
    hub_url: str | None = None  # WebSub: the feed's ``rel="hub"`` link
    self_url: str | None = None  # WebSub: the feed's ``rel="self"`` link, the hub's topic
    unchanged: tuple[str, ...] = ()
    """Ids of entries in the document that were not read again: recorded before from these
    very bytes (``bot.selective``). They are there, unchanged; never take them for gone."""
    digests: Mapping[str, bytes] = field(default_factory=dict)
    """Entry id -> digest of the entry's raw bytes, for every entry that has one."""
    digest_context: bytes | None = None
    """What every one of those digests holds before the entry's bytes, when they share it."""
    normalised: int = 0
    """How many entries feedparser read (the others are ``unchanged``)."""


@dataclass(frozen=True, slots=True)
class PushLinks:
    """What a fetched feed says about WebSub push: its hub and topic, if any."""

    feed_url: str  # the URL the bot polls
    hub_url: str | None
    self_url: str | None

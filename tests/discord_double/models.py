"""Plain records for what the double stores: users, guilds, roles, channels, threads, messages.

Ids are ints here and become strings only when rendered to JSON (``payloads.py``), exactly
where Discord draws that line. Snowflakes are time-based and strictly increasing so that
ordering by id (which the bot and discord.py both do) matches creation order.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DISCORD_EPOCH_MS = 1420070400000


class Snowflakes:
    """Generates Discord-style ids: milliseconds since 2015 in the high bits, then a counter."""

    def __init__(self, worker: int = 1, process: int = 0) -> None:
        self._low_bits = (worker << 17) | (process << 12)
        self._last = 0

    def next(self) -> int:
        now_ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        value = max((now_ms << 22) | self._low_bits, self._last + 1)
        self._last = value
        return value

    def next_on_shard(self, shard_id: int, shard_count: int) -> int:
        """The next id whose guild shard ``(id >> 22) % shard_count`` is ``shard_id``.

        Moves the timestamp at most ``shard_count - 1`` ms ahead; later ids stay above it.
        """
        if shard_count < 1 or not 0 <= shard_id < shard_count:
            raise ValueError(f"no shard {shard_id} of {shard_count}")
        value = self.next()
        skip = (shard_id - (value >> 22)) % shard_count
        if skip:
            value = (((value >> 22) + skip) << 22) | self._low_bits
            self._last = value
        return value


def snowflake_time(snowflake: int) -> datetime:
    return datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def now_iso() -> str:
    return iso(datetime.now(UTC))


class P(enum.IntFlag):
    """Permission bits the double checks (same values as ``discord.Permissions``)."""

    CREATE_INSTANT_INVITE = 1 << 0
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_APPLICATION_COMMANDS = 1 << 31
    MANAGE_THREADS = 1 << 34
    CREATE_PUBLIC_THREADS = 1 << 35
    CREATE_PRIVATE_THREADS = 1 << 36
    SEND_MESSAGES_IN_THREADS = 1 << 38


ALL_PERMISSIONS = (1 << 53) - 1

DEFAULT_EVERYONE_PERMISSIONS = int(
    P.CREATE_INSTANT_INVITE
    | P.ADD_REACTIONS
    | P.VIEW_CHANNEL
    | P.SEND_MESSAGES
    | P.EMBED_LINKS
    | P.ATTACH_FILES
    | P.READ_MESSAGE_HISTORY
    | P.USE_APPLICATION_COMMANDS
    | P.CREATE_PUBLIC_THREADS
    | P.SEND_MESSAGES_IN_THREADS
)
"""Roughly Discord's default @everyone set: members can read, post and open public threads."""

DEFAULT_BOT_PERMISSIONS = DEFAULT_EVERYONE_PERMISSIONS
"""The bot's own role: what blogmirror needs, deliberately without Manage Threads."""

DEFAULT_MEMBER_PERMISSIONS = DEFAULT_EVERYONE_PERMISSIONS | int(P.MANAGE_GUILD)
"""An invoking member who may use ``/blog`` (which requires Manage Server)."""


class ChannelType(enum.IntEnum):
    TEXT = 0
    NEWS = 5
    NEWS_THREAD = 10
    PUBLIC_THREAD = 11
    PRIVATE_THREAD = 12
    FORUM = 15


THREAD_TYPES = frozenset(
    {ChannelType.NEWS_THREAD, ChannelType.PUBLIC_THREAD, ChannelType.PRIVATE_THREAD}
)


class ChannelFlag(enum.IntFlag):
    PINNED = 1 << 1
    REQUIRE_TAG = 1 << 4


class MessageType(enum.IntEnum):
    DEFAULT = 0
    THREAD_CREATED = 18
    REPLY = 19
    CHAT_INPUT_COMMAND = 20
    THREAD_STARTER_MESSAGE = 21


class MessageFlag(enum.IntFlag):
    SUPPRESS_EMBEDS = 1 << 2
    EPHEMERAL = 1 << 6
    LOADING = 1 << 7
    SUPPRESS_NOTIFICATIONS = 1 << 12
    IS_COMPONENTS_V2 = 1 << 15


SETTABLE_MESSAGE_FLAGS = int(
    MessageFlag.SUPPRESS_EMBEDS | MessageFlag.SUPPRESS_NOTIFICATIONS | MessageFlag.IS_COMPONENTS_V2
)


@dataclass
class User:
    id: int
    username: str
    bot: bool = False
    global_name: str | None = None


@dataclass
class Role:
    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False
    bot_id: int | None = None
    mentionable: bool = False


@dataclass
class Member:
    user: User
    role_ids: list[int]
    joined_at: str = field(default_factory=now_iso)


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, Role] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    locale: str = "en-US"

    @property
    def everyone(self) -> Role:
        return self.roles[self.id]


@dataclass
class Overwrite:
    id: int
    type: int  # 0 role, 1 member
    allow: int = 0
    deny: int = 0


@dataclass
class ForumTag:
    id: int
    name: str
    moderated: bool = False
    emoji_name: str | None = None


@dataclass
class Channel:
    """A guild channel or a thread (Discord models both as channels)."""

    id: int
    guild_id: int
    type: int
    name: str
    position: int = 0
    parent_id: int | None = None
    topic: str | None = None
    flags: int = 0
    overwrites: list[Overwrite] = field(default_factory=list)
    available_tags: list[ForumTag] = field(default_factory=list)
    default_auto_archive_duration: int = 1440
    rate_limit_per_user: int = 0
    last_message_id: int | None = None
    # Thread-only fields.
    owner_id: int | None = None
    archived: bool = False
    locked: bool = False
    invitable: bool = True
    auto_archive_duration: int = 1440
    archive_timestamp: str = field(default_factory=now_iso)
    create_timestamp: str = field(default_factory=now_iso)
    applied_tags: list[int] = field(default_factory=list)
    message_count: int = 0
    total_message_sent: int = 0
    member_ids: dict[int, str] = field(default_factory=dict)
    """Thread members: user id -> join timestamp."""

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES

    def tag_named(self, name: str) -> ForumTag:
        for tag in self.available_tags:
            if tag.name == name:
                return tag
        raise KeyError(name)


@dataclass
class Message:
    id: int
    channel_id: int
    guild_id: int
    author: User
    content: str = ""
    type: int = MessageType.DEFAULT
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    flags: int = 0
    tts: bool = False
    nonce: str | None = None
    enforce_nonce: bool = False
    message_reference: dict[str, Any] | None = None
    allowed_mentions: dict[str, Any] | None = None
    mention_user_ids: list[int] = field(default_factory=list)
    mention_role_ids: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    edited_timestamp: str | None = None
    thread_id: int | None = None
    """Set on a text-channel message that a thread was started from."""
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_metadata: dict[str, Any] | None = None
    deleted: bool = False
    deleted_by_moderator: bool = False

    @property
    def timestamp(self) -> str:
        return iso(snowflake_time(self.id))

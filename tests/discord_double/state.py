"""The double's world: guilds, channels, threads and messages, and every change to them.

REST handlers and test helpers both change the world only through ``World``'s methods, so
each change emits the gateway event Discord would send (MESSAGE_CREATE, THREAD_UPDATE, ...)
in one place. Listeners (the gateway hub) receive ``(event, data, channel)``; ``channel``
is the channel whose visibility decides whether the bot may see the event.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import errors
from .models import (
    ALL_PERMISSIONS,
    THREAD_TYPES,
    Channel,
    ChannelType,
    ForumTag,
    Guild,
    Member,
    Message,
    MessageType,
    Overwrite,
    P,
    Role,
    Snowflakes,
    User,
    now_iso,
)
from .payloads import channel_json, guild_create_json, message_json, role_json

EventSink = Callable[[str, dict[str, Any], Channel | None], None]

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


class World:
    """Everything Discord knows, plus the bookkeeping the double needs (nonces, deletions)."""

    def __init__(self, ids: Snowflakes, bot: User, application_id: int) -> None:
        self.ids = ids
        self.bot = bot
        self.application_id = application_id
        self.users: dict[int, User] = {bot.id: bot}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, list[Message]] = {}
        self.messages_by_id: dict[int, Message] = {}
        self.nonces: dict[tuple[int, int, str], tuple[int, float]] = {}
        self.listeners: list[EventSink] = []

    def emit(self, event: str, data: dict[str, Any], channel: Channel | None = None) -> None:
        for listener in self.listeners:
            listener(event, data, channel)

    # -- building ----------------------------------------------------------------------

    def add_user(self, username: str, *, bot: bool = False) -> User:
        user = User(id=self.ids.next(), username=username, bot=bot, global_name=username)
        self.users[user.id] = user
        return user

    def add_guild(
        self,
        name: str,
        *,
        everyone_permissions: int,
        bot_permissions: int,
        shard: tuple[int, int] | None = None,
    ) -> Guild:
        guild_id = self.ids.next_on_shard(*shard) if shard is not None else self.ids.next()
        owner = self.add_user(f"{name.lower()}-owner")
        guild = Guild(id=guild_id, name=name, owner_id=owner.id)
        guild.roles[guild_id] = Role(
            id=guild_id, name="@everyone", permissions=everyone_permissions
        )
        bot_role = Role(
            id=self.ids.next(),
            name=self.bot.username,
            permissions=bot_permissions,
            position=1,
            managed=True,
            bot_id=self.bot.id,
        )
        guild.roles[bot_role.id] = bot_role
        guild.members[owner.id] = Member(user=owner, role_ids=[])
        guild.members[self.bot.id] = Member(user=self.bot, role_ids=[bot_role.id])
        self.guilds[guild_id] = guild
        self.emit("GUILD_CREATE", guild_create_json(self, guild, self.bot.id))
        return guild

    def add_member(self, guild_id: int, username: str) -> User:
        guild = self.guild(guild_id)
        user = self.add_user(username)
        guild.members[user.id] = Member(user=user, role_ids=[])
        return user

    def add_role(self, guild_id: int, name: str, *, mentionable: bool) -> Role:
        guild = self.guild(guild_id)
        role = Role(id=self.ids.next(), name=name, permissions=0, mentionable=mentionable)
        guild.roles[role.id] = role
        self.emit("GUILD_ROLE_CREATE", {"guild_id": str(guild_id), "role": role_json(role)})
        return role

    def bot_role(self, guild_id: int) -> Role:
        return next(r for r in self.guild(guild_id).roles.values() if r.bot_id == self.bot.id)

    def set_role_permissions(self, guild_id: int, role_id: int, permissions: int) -> None:
        guild = self.guild(guild_id)
        role = guild.roles[role_id]
        role.permissions = permissions
        self.emit("GUILD_ROLE_UPDATE", {"guild_id": str(guild_id), "role": role_json(role)})

    def add_channel(
        self, guild_id: int, type: int, name: str, *, tags: Iterable[str] = (), **fields: Any
    ) -> Channel:
        self.guild(guild_id)
        position = sum(1 for c in self.guild_channels(guild_id) if not c.is_thread)
        channel = Channel(
            id=self.ids.next(), guild_id=guild_id, type=type, name=name, position=position, **fields
        )
        channel.available_tags = [ForumTag(id=self.ids.next(), name=t) for t in tags]
        self.channels[channel.id] = channel
        self.messages[channel.id] = []
        self.emit("CHANNEL_CREATE", channel_json(channel), channel)
        return channel

    def set_overwrite(self, channel_id: int, target_id: int, *, allow: int, deny: int) -> None:
        channel = self.channel(channel_id)
        guild = self.guild(channel.guild_id)
        kind = 0 if target_id in guild.roles else 1
        channel.overwrites = [o for o in channel.overwrites if o.id != target_id]
        if allow or deny:
            channel.overwrites.append(Overwrite(id=target_id, type=kind, allow=allow, deny=deny))
        self.emit("CHANNEL_UPDATE", channel_json(channel))

    # -- lookups -----------------------------------------------------------------------

    def guild(self, guild_id: int) -> Guild:
        try:
            return self.guilds[guild_id]
        except KeyError:
            raise errors.unknown_guild() from None

    def channel(self, channel_id: int) -> Channel:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise errors.unknown_channel() from None

    def guild_channels(self, guild_id: int) -> list[Channel]:
        return [c for c in self.channels.values() if c.guild_id == guild_id]

    def threads_of(self, parent_id: int) -> list[Channel]:
        return [c for c in self.channels.values() if c.is_thread and c.parent_id == parent_id]

    def find_message(self, message_id: int) -> Message | None:
        return self.messages_by_id.get(message_id)

    def message(self, channel_id: int, message_id: int) -> Message:
        found = self.messages_by_id.get(message_id)
        if found is None or found.deleted or found.channel_id != channel_id:
            raise errors.unknown_message()
        return found

    def channel_messages(self, channel_id: int) -> list[Message]:
        return self.messages.get(channel_id, [])

    # -- permissions -------------------------------------------------------------------

    def permissions_for(self, user_id: int, channel: Channel) -> int:
        """Discord's algorithm: roles, then @everyone, role and member overwrites.

        Threads use their parent's permissions. No View Channel means no permissions at all.
        """
        if channel.is_thread and channel.parent_id is not None:
            channel = self.channel(channel.parent_id)
        guild = self.guild(channel.guild_id)
        if user_id == guild.owner_id:
            return ALL_PERMISSIONS
        member = guild.members.get(user_id)
        if member is None:
            return 0
        perms = guild.everyone.permissions
        for role_id in member.role_ids:
            perms |= guild.roles[role_id].permissions
        if perms & P.ADMINISTRATOR:
            return ALL_PERMISSIONS
        by_id = {o.id: o for o in channel.overwrites}
        if (everyone := by_id.get(guild.id)) is not None:
            perms = (perms & ~everyone.deny) | everyone.allow
        allow = deny = 0
        for role_id in member.role_ids:
            if (o := by_id.get(role_id)) is not None:
                allow |= o.allow
                deny |= o.deny
        perms = (perms & ~deny) | allow
        if (own := by_id.get(user_id)) is not None and own.type == 1:
            perms = (perms & ~own.deny) | own.allow
        if not perms & P.VIEW_CHANNEL:
            return 0
        return perms

    def can_view(self, user_id: int, channel: Channel) -> bool:
        return bool(self.permissions_for(user_id, channel) & P.VIEW_CHANNEL)

    def require(self, user_id: int, channel: Channel, needed: int) -> None:
        """Raise Discord's 403: 50001 when the channel is invisible, 50013 when a bit is missing."""
        perms = self.permissions_for(user_id, channel)
        if not perms & P.VIEW_CHANNEL:
            raise errors.missing_access()
        if perms & needed != needed:
            raise errors.missing_permissions()

    # -- messages ----------------------------------------------------------------------

    def create_message(
        self,
        channel: Channel,
        author: User,
        *,
        message_id: int | None = None,
        emit: bool = True,
        **fields: Any,
    ) -> Message:
        message = Message(
            id=message_id or self.ids.next(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=author,
            **fields,
        )
        self._resolve_mentions(channel, message)
        self.messages.setdefault(channel.id, []).append(message)
        self.messages_by_id[message.id] = message
        channel.last_message_id = message.id
        if (
            channel.is_thread
            and message.id != channel.id
            and message.type != MessageType.THREAD_STARTER_MESSAGE
        ):
            channel.message_count += 1
            channel.total_message_sent += 1
        if message.nonce is not None and message.enforce_nonce:
            key = (channel.id, author.id, message.nonce)
            self.nonces[key] = (message.id, time.monotonic())
        if emit:
            data = message_json(self, message, include_nonce=True, with_member=True)
            self.emit("MESSAGE_CREATE", data, channel)
        return message

    def _resolve_mentions(self, channel: Channel, message: Message) -> None:
        """Record who would actually be pinged, applying ``allowed_mentions`` like Discord."""
        allowed = message.allowed_mentions
        parse = {"users", "roles", "everyone"} if allowed is None else set(allowed.get("parse", []))
        allowed_users = {int(u) for u in (allowed or {}).get("users", [])}
        allowed_roles = {int(r) for r in (allowed or {}).get("roles", [])}
        users = [int(u) for u in _USER_MENTION.findall(message.content)]
        roles = [int(r) for r in _ROLE_MENTION.findall(message.content)]
        message.mention_user_ids = [u for u in users if "users" in parse or u in allowed_users]
        author_perms = self.permissions_for(message.author.id, channel)
        # A role pings only when it is mentionable or the author may mention every role.
        guild_roles = self.guilds[channel.guild_id].roles if channel.guild_id else {}
        message.mention_role_ids = [
            r
            for r in roles
            if ("roles" in parse or r in allowed_roles)
            and r in guild_roles
            and (guild_roles[r].mentionable or bool(author_perms & P.MENTION_EVERYONE))
        ]
        message.mention_everyone = (
            "everyone" in parse
            and ("@everyone" in message.content or "@here" in message.content)
            and bool(author_perms & P.MENTION_EVERYONE)
        )
        if message.type == MessageType.REPLY and message.message_reference is not None:
            replied_user = True if allowed is None else bool(allowed.get("replied_user", False))
            parent = self.find_message(int(message.message_reference["message_id"]))
            if replied_user and parent is not None and parent.author.id not in users:
                message.mention_user_ids.append(parent.author.id)

    def edit_message(self, message: Message, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(message, name, value)
        message.edited_timestamp = now_iso()
        channel = self.channel(message.channel_id)
        self._resolve_mentions(channel, message)
        self.emit("MESSAGE_UPDATE", message_json(self, message, with_member=True), channel)

    def delete_message(self, message: Message, *, by_moderator: bool = False) -> None:
        channel = self._remove_message(message, by_moderator=by_moderator)
        data = {
            "id": str(message.id),
            "channel_id": str(message.channel_id),
            "guild_id": str(message.guild_id),
        }
        self.emit("MESSAGE_DELETE", data, channel)

    def bulk_delete_messages(self, channel: Channel, messages: list[Message]) -> None:
        """Several messages of one channel at once: one MESSAGE_DELETE_BULK, as Discord does."""
        for message in messages:
            self._remove_message(message, by_moderator=True)
        data = {
            "ids": [str(m.id) for m in messages],
            "channel_id": str(channel.id),
            "guild_id": str(channel.guild_id),
        }
        self.emit("MESSAGE_DELETE_BULK", data, channel)

    def _remove_message(self, message: Message, *, by_moderator: bool) -> Channel | None:
        message.deleted = True
        message.deleted_by_moderator = by_moderator
        channel = self.channels.get(message.channel_id)
        live = self.messages.get(message.channel_id, [])
        if message in live:
            live.remove(message)
        if channel is not None and channel.is_thread and message.id != channel.id:
            channel.message_count = max(0, channel.message_count - 1)
        return channel

    def nonce_match(
        self, channel_id: int, author_id: int, nonce: str, window: float
    ) -> Message | None:
        """The message an earlier create with this nonce made, if within ``window`` seconds."""
        found = self.nonces.get((channel_id, author_id, nonce))
        if found is None or time.monotonic() - found[1] > window:
            return None
        return self.messages_by_id[found[0]]

    # -- threads -----------------------------------------------------------------------

    def create_thread(
        self,
        parent: Channel,
        name: str,
        owner: User,
        *,
        thread_id: int | None = None,
        type: int = ChannelType.PUBLIC_THREAD,
        auto_archive_duration: int | None = None,
        applied_tags: list[int] | None = None,
        emit: bool = True,
    ) -> Channel:
        thread = Channel(
            id=thread_id or self.ids.next(),
            guild_id=parent.guild_id,
            type=type,
            name=name,
            parent_id=parent.id,
            owner_id=owner.id,
            auto_archive_duration=auto_archive_duration or parent.default_auto_archive_duration,
            applied_tags=list(applied_tags or []),
        )
        thread.member_ids[owner.id] = now_iso()
        self.channels[thread.id] = thread
        self.messages[thread.id] = []
        if emit:
            self.announce_thread(thread)
        return thread

    def announce_thread(self, thread: Channel) -> None:
        data = channel_json(thread, me_id=self.bot.id) | {"newly_created": True}
        self.emit("THREAD_CREATE", data, thread)

    def update_thread(self, thread: Channel, **changes: Any) -> None:
        if "archived" in changes and changes["archived"] != thread.archived:
            thread.archive_timestamp = now_iso()
        for name, value in changes.items():
            setattr(thread, name, value)
        self.emit("THREAD_UPDATE", channel_json(thread), thread)

    def join_thread(self, thread: Channel, user_id: int) -> None:
        thread.member_ids.setdefault(user_id, now_iso())

    def delete_thread(self, thread: Channel) -> None:
        for message in list(self.messages.get(thread.id, [])):
            message.deleted = True
        self.messages.pop(thread.id, None)
        del self.channels[thread.id]
        for message in self.messages_by_id.values():
            if message.thread_id == thread.id:
                message.thread_id = None
        data = {
            "id": str(thread.id),
            "guild_id": str(thread.guild_id),
            "parent_id": str(thread.parent_id),
            "type": thread.type,
        }
        parent = self.channels.get(thread.parent_id or 0)
        self.emit("THREAD_DELETE", data, parent)

    def delete_channel(self, channel: Channel) -> None:
        for thread in self.threads_of(channel.id):
            self.delete_thread(thread)
        for message in self.messages.pop(channel.id, []):
            message.deleted = True
        del self.channels[channel.id]
        self.emit("CHANNEL_DELETE", channel_json(channel))

    def update_channel(self, channel: Channel) -> None:
        if channel.type in THREAD_TYPES:
            self.emit("THREAD_UPDATE", channel_json(channel), channel)
        else:
            self.emit("CHANNEL_UPDATE", channel_json(channel), channel)

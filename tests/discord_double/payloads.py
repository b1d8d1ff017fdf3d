"""Rendering the stored records as the JSON objects Discord sends.

Every field discord.py reads with ``data[...]`` (not ``.get``) must be present, or the
client raises ``KeyError`` deep inside its parsers; those are the fields kept here even
when their value is dull (``thread_metadata.archive_timestamp``, ``member.flags``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .models import Channel, ChannelType, ForumTag, Guild, Member, Message, Role, User

if TYPE_CHECKING:
    from .state import World


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "username": user.username,
        "global_name": user.global_name,
        "discriminator": "0",
        "avatar": None,
        "bot": user.bot,
        "public_flags": 0,
        "flags": 0,
    }


def role_json(role: Role) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(role.id),
        "name": role.name,
        "permissions": str(role.permissions),
        "position": role.position,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "managed": role.managed,
        "mentionable": role.mentionable,
        "icon": None,
        "unicode_emoji": None,
        "flags": 0,
    }
    if role.bot_id is not None:
        data["tags"] = {"bot_id": str(role.bot_id)}
    return data


def member_json(
    member: Member, *, with_user: bool = True, permissions: int | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "roles": [str(r) for r in member.role_ids],
        "joined_at": member.joined_at,
        "nick": None,
        "avatar": None,
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": None,
    }
    if with_user:
        data["user"] = user_json(member.user)
    if permissions is not None:
        data["permissions"] = str(permissions)
    return data


def tag_json(tag: ForumTag) -> dict[str, Any]:
    return {
        "id": str(tag.id),
        "name": tag.name,
        "moderated": tag.moderated,
        "emoji_id": None,
        "emoji_name": tag.emoji_name,
    }


def thread_member_json(thread: Channel, user_id: int) -> dict[str, Any]:
    return {
        "id": str(thread.id),
        "user_id": str(user_id),
        "join_timestamp": thread.member_ids[user_id],
        "flags": 1,
    }


def channel_json(channel: Channel, *, me_id: int | None = None) -> dict[str, Any]:
    """A guild channel or thread; ``me_id`` adds the thread ``member`` object when joined."""
    data: dict[str, Any] = {
        "id": str(channel.id),
        "guild_id": str(channel.guild_id),
        "type": channel.type,
        "name": channel.name,
        "flags": channel.flags,
        "rate_limit_per_user": channel.rate_limit_per_user,
        "last_message_id": str(channel.last_message_id) if channel.last_message_id else None,
    }
    if channel.is_thread:
        data.update(
            parent_id=str(channel.parent_id),
            owner_id=str(channel.owner_id),
            message_count=channel.message_count,
            total_message_sent=channel.total_message_sent,
            member_count=len(channel.member_ids),
            applied_tags=[str(t) for t in channel.applied_tags],
            thread_metadata={
                "archived": channel.archived,
                "locked": channel.locked,
                "invitable": channel.invitable,
                "auto_archive_duration": channel.auto_archive_duration,
                "archive_timestamp": channel.archive_timestamp,
                "create_timestamp": channel.create_timestamp,
            },
        )
        if me_id is not None and me_id in channel.member_ids:
            data["member"] = thread_member_json(channel, me_id)
        return data
    data.update(
        position=channel.position,
        parent_id=str(channel.parent_id) if channel.parent_id else None,
        topic=channel.topic,
        nsfw=False,
        permission_overwrites=[
            {"id": str(o.id), "type": o.type, "allow": str(o.allow), "deny": str(o.deny)}
            for o in channel.overwrites
        ],
        default_auto_archive_duration=channel.default_auto_archive_duration,
        default_thread_rate_limit_per_user=0,
    )
    if channel.type == ChannelType.FORUM:
        data.update(
            available_tags=[tag_json(t) for t in channel.available_tags],
            default_reaction_emoji=None,
            default_sort_order=None,
            default_forum_layout=0,
        )
    return data


def message_json(
    world: World,
    message: Message,
    *,
    include_nonce: bool = False,
    with_member: bool = False,
    nested: bool = False,
) -> dict[str, Any]:
    """A message object. ``include_nonce`` only on the create response and MESSAGE_CREATE,
    as Discord does not keep nonces; ``with_member`` for gateway events."""
    data: dict[str, Any] = {
        "id": str(message.id),
        "channel_id": str(message.channel_id),
        "guild_id": str(message.guild_id),
        "type": message.type,
        "author": user_json(message.author),
        "content": message.content,
        "timestamp": message.timestamp,
        "edited_timestamp": message.edited_timestamp,
        "tts": message.tts,
        "mention_everyone": message.mention_everyone,
        "mentions": [
            user_json(u)
            for uid in message.mention_user_ids
            if (u := world.users.get(uid)) is not None
        ],
        "mention_roles": [str(r) for r in message.mention_role_ids],
        "attachments": message.attachments,
        "embeds": message.embeds,
        "components": message.components,
        "pinned": False,
        "flags": message.flags,
    }
    if include_nonce and message.nonce is not None:
        data["nonce"] = message.nonce
    if message.webhook_id is not None:
        data["webhook_id"] = str(message.webhook_id)
    if message.application_id is not None:
        data["application_id"] = str(message.application_id)
    if message.interaction_metadata is not None:
        data["interaction_metadata"] = message.interaction_metadata
    if message.message_reference is not None:
        data["message_reference"] = message.message_reference
        if not nested:
            referenced = world.find_message(int(message.message_reference["message_id"]))
            data["referenced_message"] = (
                None
                if referenced is None or referenced.deleted
                else message_json(world, referenced, nested=True)
            )
    if message.thread_id is not None and (thread := world.channels.get(message.thread_id)):
        data["thread"] = channel_json(thread)
    if with_member:
        guild = world.guilds.get(message.guild_id)
        member = guild.members.get(message.author.id) if guild else None
        if member is not None:
            data["member"] = member_json(member, with_user=False)
    return data


def guild_create_json(world: World, guild: Guild, me_id: int) -> dict[str, Any]:
    """The full GUILD_CREATE: channels, active threads the bot can see, roles, the bot member."""
    channels = [c for c in world.guild_channels(guild.id) if not c.is_thread]
    threads = [
        t
        for t in world.guild_channels(guild.id)
        if t.is_thread and not t.archived and world.can_view(me_id, t)
    ]
    me = guild.members[me_id]
    return {
        "id": str(guild.id),
        "name": guild.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "owner_id": str(guild.owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 1,
        "explicit_content_filter": 0,
        "features": [],
        "mfa_level": 0,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "preferred_locale": guild.locale,
        "premium_tier": 0,
        "nsfw_level": 0,
        "roles": [role_json(r) for r in guild.roles.values()],
        "emojis": [],
        "stickers": [],
        "joined_at": me.joined_at,
        "large": False,
        "unavailable": False,
        "member_count": len(guild.members),
        "voice_states": [],
        "members": [member_json(me)],
        "channels": [channel_json(c) for c in channels],
        "threads": [channel_json(t, me_id=me_id) for t in threads],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }

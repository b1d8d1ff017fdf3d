"""Channel and thread routes: fetch/edit/delete channels, forum posts, threads, thread members.

Discord's thread rules as the double applies them:

* A forum post (``POST /channels/{forum}/threads`` with a nested ``message``) creates the
  thread and its starter message with the *same id*; the response is the thread object
  with the message nested under ``message``. Needs Send Messages in the forum. A forum
  with the REQUIRE_TAG flag refuses a post without tags (400 / 40067).
* A thread from a message has the message's id; the thread opens with a system message of
  type 21 (THREAD_STARTER_MESSAGE) referencing it. A second thread on the same message is
  400 / 160004.
* Editing an archived thread is 400 / 50083 unless the edit un-archives it; locking, and
  un-archiving a locked thread, need Manage Threads; so does any other edit of a thread
  the bot does not own (re-opening an unlocked one only needs permission to post).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors
from .models import Channel, ChannelFlag, ChannelType, MessageType, P
from .payloads import channel_json, message_json, thread_member_json
from .rest import Call, Reply, Router
from .routes_messages import message_fields
from .validation import validate_message, validate_thread_name

if TYPE_CHECKING:
    from .double import DiscordDouble

ARCHIVE_DURATIONS = (60, 1440, 4320, 10080)


def _wrong_type() -> errors.ApiError:
    return errors.ApiError(400, 50024, "Cannot execute action on this channel type")


def _archive_duration(body: dict[str, Any], default: int) -> int:
    value = body.get("auto_archive_duration") or default
    if value not in ARCHIVE_DURATIONS:
        raise errors.invalid_form(
            "auto_archive_duration",
            "BASE_TYPE_CHOICES",
            f"Value must be one of {ARCHIVE_DURATIONS}.",
        )
    return int(value)


def _applied_tags(forum: Channel, tags: Any, perms: int) -> list[int]:
    ids = [int(t) for t in tags or []]
    if len(ids) > 5:
        raise errors.invalid_form(
            "applied_tags", "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length."
        )
    known = {t.id: t for t in forum.available_tags}
    for i, tag_id in enumerate(ids):
        if tag_id not in known:
            raise errors.invalid_form(f"applied_tags.{i}", "UNKNOWN_TAG", "Unknown tag")
        if known[tag_id].moderated and not perms & P.MANAGE_THREADS:
            raise errors.missing_permissions()
    if forum.flags & ChannelFlag.REQUIRE_TAG and not ids:
        raise errors.tag_required()
    return ids


def register(router: Router, double: DiscordDouble) -> None:
    world = double.world
    bot = double.bot

    def visible(channel_id: int) -> Channel:
        channel = world.channel(channel_id)
        if not world.can_view(bot.id, channel):
            raise errors.missing_access()
        return channel

    async def get_channel(call: Call) -> Reply:
        return Reply(200, channel_json(visible(call.id("channel_id")), me_id=bot.id))

    async def edit_channel(call: Call) -> Reply:
        channel = visible(call.id("channel_id"))
        body = call.json()
        if channel.is_thread:
            _edit_thread(channel, body)
        else:
            _edit_guild_channel(channel, body)
        return Reply(200, channel_json(channel, me_id=bot.id))

    def _edit_thread(thread: Channel, body: dict[str, Any]) -> None:
        perms = world.permissions_for(bot.id, thread)
        manage = bool(perms & P.MANAGE_THREADS)
        # Anyone who may post can re-open an unlocked thread; other edits are for its owner
        # or moderators.
        reopen_only = set(body) == {"archived"} and body["archived"] is False and not thread.locked
        may_post = bool(perms & (P.SEND_MESSAGES | P.SEND_MESSAGES_IN_THREADS))
        if thread.owner_id != bot.id and not manage and not (reopen_only and may_post):
            raise errors.missing_permissions()
        if "locked" in body and bool(body["locked"]) != thread.locked and not manage:
            raise errors.missing_permissions()
        if thread.locked and body.get("archived") is False and not manage:
            raise errors.missing_permissions()
        if thread.archived and body.get("archived") is not False:
            raise errors.thread_archived(400)
        changes: dict[str, Any] = {}
        if "name" in body:
            changes["name"] = validate_thread_name(body["name"])
        for key in ("archived", "locked", "invitable"):
            if key in body:
                changes[key] = bool(body[key])
        if "auto_archive_duration" in body:
            changes["auto_archive_duration"] = _archive_duration(body, thread.auto_archive_duration)
        if "rate_limit_per_user" in body:
            changes["rate_limit_per_user"] = int(body["rate_limit_per_user"] or 0)
        if "applied_tags" in body:
            parent = world.channel(thread.parent_id or 0)
            changes["applied_tags"] = _applied_tags(parent, body["applied_tags"], perms)
        world.update_thread(thread, **changes)

    def _edit_guild_channel(channel: Channel, body: dict[str, Any]) -> None:
        world.require(bot.id, channel, P.MANAGE_CHANNELS)
        if "name" in body:
            channel.name = validate_thread_name(body["name"])
        if "topic" in body:
            channel.topic = body["topic"]
        if "flags" in body:
            channel.flags = int(body["flags"])
        if "default_auto_archive_duration" in body:
            channel.default_auto_archive_duration = int(body["default_auto_archive_duration"])
        world.update_channel(channel)

    async def delete_channel(call: Call) -> Reply:
        channel = visible(call.id("channel_id"))
        if channel.is_thread:
            world.require(bot.id, channel, P.MANAGE_THREADS)
            body = channel_json(channel)
            world.delete_thread(channel)
        else:
            world.require(bot.id, channel, P.MANAGE_CHANNELS)
            body = channel_json(channel)
            world.delete_channel(channel)
        return Reply(200, body)

    async def create_thread(call: Call) -> Reply:
        parent = visible(call.id("channel_id"))
        body = call.json()
        name = validate_thread_name(body.get("name"))
        if parent.type == ChannelType.FORUM:
            return _forum_post(call, parent, body, name)
        if parent.type not in (ChannelType.TEXT, ChannelType.NEWS):
            raise _wrong_type()
        kind = int(body.get("type") or ChannelType.PRIVATE_THREAD)
        if kind not in (
            ChannelType.PUBLIC_THREAD,
            ChannelType.PRIVATE_THREAD,
            ChannelType.NEWS_THREAD,
        ):
            raise errors.invalid_form("type", "BASE_TYPE_CHOICES", "Value must be a thread type.")
        private = kind == ChannelType.PRIVATE_THREAD
        world.require(
            bot.id, parent, P.CREATE_PRIVATE_THREADS if private else P.CREATE_PUBLIC_THREADS
        )
        thread = world.create_thread(
            parent,
            name,
            bot,
            type=kind,
            auto_archive_duration=_archive_duration(body, parent.default_auto_archive_duration),
        )
        thread.invitable = bool(body.get("invitable", True))
        return Reply(201, channel_json(thread, me_id=bot.id))

    def _forum_post(call: Call, forum: Channel, body: dict[str, Any], name: str) -> Reply:
        world.require(bot.id, forum, P.SEND_MESSAGES)
        message = body.get("message")
        if not isinstance(message, dict):
            raise errors.invalid_form("message", "BASE_TYPE_REQUIRED", "This field is required")
        validate_message(message)
        perms = world.permissions_for(bot.id, forum)
        tags = _applied_tags(forum, body.get("applied_tags"), perms)
        fields = message_fields(double, forum, message, call.files)
        thread = world.create_thread(
            forum,
            name,
            bot,
            auto_archive_duration=_archive_duration(body, forum.default_auto_archive_duration),
            applied_tags=tags,
            emit=False,
        )
        thread.rate_limit_per_user = int(body.get("rate_limit_per_user") or 0)
        world.announce_thread(thread)
        starter = world.create_message(thread, bot, message_id=thread.id, **fields)
        forum.last_message_id = thread.id
        data = channel_json(thread, me_id=bot.id) | {"message": message_json(world, starter)}
        return Reply(201, data)

    async def thread_from_message(call: Call) -> Reply:
        parent = visible(call.id("channel_id"))
        if parent.type not in (ChannelType.TEXT, ChannelType.NEWS):
            raise _wrong_type()
        world.require(bot.id, parent, P.CREATE_PUBLIC_THREADS)
        source = world.message(parent.id, call.id("message_id"))
        if source.thread_id is not None or source.id in world.channels:
            raise errors.thread_already_created()
        body = call.json()
        name = validate_thread_name(body.get("name"))
        kind = (
            ChannelType.NEWS_THREAD
            if parent.type == ChannelType.NEWS
            else ChannelType.PUBLIC_THREAD
        )
        thread = world.create_thread(
            parent,
            name,
            bot,
            thread_id=source.id,
            type=kind,
            auto_archive_duration=_archive_duration(body, parent.default_auto_archive_duration),
            emit=False,
        )
        thread.rate_limit_per_user = int(body.get("rate_limit_per_user") or 0)
        source.thread_id = thread.id
        world.announce_thread(thread)
        reference = {
            "type": 0,
            "message_id": str(source.id),
            "channel_id": str(parent.id),
            "guild_id": str(parent.guild_id),
        }
        world.create_message(
            thread,
            source.author,
            type=MessageType.THREAD_STARTER_MESSAGE,
            message_reference=reference,
            emit=False,
        )
        return Reply(201, channel_json(thread, me_id=bot.id))

    def thread(call: Call) -> Channel:
        channel = visible(call.id("channel_id"))
        if not channel.is_thread:
            raise _wrong_type()
        return channel

    async def join(call: Call) -> Reply:
        channel = thread(call)
        if channel.archived:
            raise errors.thread_archived(400)
        world.join_thread(channel, bot.id)
        return Reply(204)

    async def leave(call: Call) -> Reply:
        thread(call).member_ids.pop(bot.id, None)
        return Reply(204)

    async def list_members(call: Call) -> Reply:
        channel = thread(call)
        return Reply(200, [thread_member_json(channel, uid) for uid in channel.member_ids])

    async def get_member(call: Call) -> Reply:
        channel = thread(call)
        user_id = call.id("user_id")
        if user_id not in channel.member_ids:
            raise errors.unknown_member()
        return Reply(200, thread_member_json(channel, user_id))

    async def archived_public(call: Call) -> Reply:
        parent = visible(call.id("channel_id"))
        world.require(bot.id, parent, P.READ_MESSAGE_HISTORY)
        archived = sorted(
            (t for t in world.threads_of(parent.id) if t.archived),
            key=lambda t: t.archive_timestamp,
            reverse=True,
        )
        if "before" in call.query:
            archived = [t for t in archived if t.archive_timestamp < call.query["before"]]
        limit = int(call.query.get("limit", 50))
        page = archived[:limit]
        members = [thread_member_json(t, bot.id) for t in page if bot.id in t.member_ids]
        return Reply(
            200,
            {
                "threads": [channel_json(t) for t in page],
                "members": members,
                "has_more": len(archived) > limit,
            },
        )

    router.add("GET", "/channels/{channel_id}", get_channel)
    router.add("PATCH", "/channels/{channel_id}", edit_channel)
    router.add("DELETE", "/channels/{channel_id}", delete_channel)
    router.add("POST", "/channels/{channel_id}/threads", create_thread)
    router.add("POST", "/channels/{channel_id}/messages/{message_id}/threads", thread_from_message)
    router.add("PUT", "/channels/{channel_id}/thread-members/@me", join)
    router.add("DELETE", "/channels/{channel_id}/thread-members/@me", leave)
    router.add("GET", "/channels/{channel_id}/thread-members", list_members)
    router.add("GET", "/channels/{channel_id}/thread-members/{user_id}", get_member)
    router.add("GET", "/channels/{channel_id}/threads/archived/public", archived_public)

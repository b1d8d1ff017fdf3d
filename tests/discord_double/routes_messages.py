"""Message routes: create (with nonce de-duplication and replies), history, fetch, edit, delete.

Behaviours the bot depends on, as Discord has them:

* ``enforce_nonce``: a second create with the same nonce, author and channel within
  ``DiscordDouble.nonce_window`` seconds returns the *first* message (200, no new message,
  no MESSAGE_CREATE). If that first message was deleted meanwhile: 404 / 10008.
* Posting into an archived thread un-archives it (THREAD_UPDATE, then MESSAGE_CREATE).
  Posting into a *locked* thread without Manage Threads is 403 / 50083 "Thread is archived".
  Editing or deleting a message in an archived thread is 400 / 50083.
* A reply to a missing message is 400 / 50035 unless ``fail_if_not_exists`` is false, in
  which case the message is sent without a reference.
* Without Embed Links, embeds are silently dropped; an embed-only message is 403 / 50013.
* Without Read Message History, history is an empty list (not an error).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors
from .models import (
    SETTABLE_MESSAGE_FLAGS,
    Channel,
    ChannelType,
    Message,
    MessageType,
    P,
)
from .payloads import message_json
from .rest import Call, Reply, Router
from .validation import validate_message

if TYPE_CHECKING:
    from .double import DiscordDouble


def message_fields(
    double: DiscordDouble, channel: Channel, body: dict[str, Any], files: list[dict[str, Any]]
) -> dict[str, Any]:
    """The stored fields of a new message from a create body (permissions already checked)."""
    perms = double.world.permissions_for(double.bot.id, channel)
    content = body.get("content") or ""
    embeds = [{"type": "rich", **e} for e in body.get("embeds") or []]
    if embeds and not perms & P.EMBED_LINKS:
        if not content.strip():
            raise errors.missing_permissions()
        embeds = []
    attachments = []
    for f in files:
        attachment_id = double.ids.next()
        url = f"https://cdn.discordapp.com/attachments/{channel.id}/{attachment_id}/{f['filename']}"
        attachments.append(
            {
                "id": str(attachment_id),
                "filename": f["filename"],
                "size": f["size"],
                "url": url,
                "proxy_url": url,
            }
        )
    return {
        "content": content,
        "embeds": embeds,
        "components": body.get("components") or [],
        "attachments": attachments,
        "flags": int(body.get("flags") or 0) & SETTABLE_MESSAGE_FLAGS,
        "tts": bool(body.get("tts")),
        "allowed_mentions": body.get("allowed_mentions"),
    }


def check_can_post(double: DiscordDouble, channel: Channel) -> int:
    """Permission and thread-state checks for posting; returns the bot's permissions."""
    perms = double.world.permissions_for(double.bot.id, channel)
    if not perms & P.VIEW_CHANNEL:
        raise errors.missing_access()
    if channel.type == ChannelType.FORUM:
        raise errors.not_text_channel()
    needed = P.SEND_MESSAGES_IN_THREADS if channel.is_thread else P.SEND_MESSAGES
    if not perms & needed:
        raise errors.missing_permissions()
    if channel.is_thread and channel.locked and not perms & P.MANAGE_THREADS:
        raise errors.thread_archived(403)
    return perms


def _reference(
    double: DiscordDouble, channel: Channel, ref: dict[str, Any]
) -> dict[str, Any] | None:
    fail = ref.get("fail_if_not_exists", True)
    if str(ref.get("channel_id", channel.id)) != str(channel.id):
        raise errors.invalid_form(
            "message_reference",
            "REPLIES_CANNOT_REFERENCE_OTHER_CHANNEL",
            "Cannot reply to a message in a different channel",
        )
    target = double.world.find_message(int(ref["message_id"]))
    if target is None or target.deleted or target.channel_id != channel.id:
        if fail:
            raise errors.invalid_form(
                "message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
            )
        return None
    return {
        "type": 0,
        "message_id": str(target.id),
        "channel_id": str(channel.id),
        "guild_id": str(channel.guild_id),
    }


def _history(messages: list[Message], call: Call) -> list[Message]:
    """Discord's paging: newest first; ``after`` gives the oldest N after the id."""
    limit = int(call.query.get("limit", 50))
    if not 1 <= limit <= 100:
        raise errors.invalid_form("limit", "NUMBER_TYPE_MAX", "Must be between 1 and 100.")
    if "around" in call.query:
        around = int(call.query["around"])
        older = [m for m in messages if m.id < around]
        itself = [m for m in messages if m.id == around]
        newer = [m for m in messages if m.id > around]
        left = older[-(limit // 2) :] if limit // 2 else []
        selected = left + itself + newer[: limit - len(left) - len(itself)]
    elif "after" in call.query:
        after = int(call.query["after"])
        selected = [m for m in messages if m.id > after][:limit]
    elif "before" in call.query:
        before = int(call.query["before"])
        selected = [m for m in messages if m.id < before][-limit:]
    else:
        selected = messages[-limit:]
    return list(reversed(selected))


def register(router: Router, double: DiscordDouble) -> None:
    world = double.world
    bot = double.bot

    async def create(call: Call) -> Reply:
        channel = world.channel(call.id("channel_id"))
        check_can_post(double, channel)
        body = call.json()
        validate_message(body)
        nonce = body.get("nonce")
        nonce = None if nonce is None else str(nonce)
        enforce = bool(body.get("enforce_nonce")) and nonce is not None
        if enforce and nonce is not None:
            earlier = world.nonce_match(channel.id, bot.id, nonce, double.nonce_window)
            if earlier is not None:
                if earlier.deleted:
                    raise errors.unknown_message()
                return Reply(200, message_json(world, earlier, include_nonce=True))
        reference = None
        if body.get("message_reference"):
            reference = _reference(double, channel, body["message_reference"])
        fields = message_fields(double, channel, body, call.files)
        if channel.is_thread:
            if channel.archived:
                world.update_thread(channel, archived=False)
            world.join_thread(channel, bot.id)
        message = world.create_message(
            channel,
            bot,
            type=MessageType.REPLY if reference else MessageType.DEFAULT,
            nonce=nonce,
            enforce_nonce=enforce,
            message_reference=reference,
            **fields,
        )
        return Reply(200, message_json(world, message, include_nonce=True))

    async def history(call: Call) -> Reply:
        channel = world.channel(call.id("channel_id"))
        perms = world.permissions_for(bot.id, channel)
        if not perms & P.VIEW_CHANNEL:
            raise errors.missing_access()
        if not perms & P.READ_MESSAGE_HISTORY:
            return Reply(200, [])
        selected = _history(world.channel_messages(channel.id), call)
        return Reply(200, [message_json(world, m) for m in selected])

    async def fetch(call: Call) -> Reply:
        channel = world.channel(call.id("channel_id"))
        world.require(bot.id, channel, P.READ_MESSAGE_HISTORY)
        return Reply(200, message_json(world, world.message(channel.id, call.id("message_id"))))

    async def edit(call: Call) -> Reply:
        channel = world.channel(call.id("channel_id"))
        message = world.message(channel.id, call.id("message_id"))
        perms = world.permissions_for(bot.id, channel)
        if not perms & P.VIEW_CHANNEL:
            raise errors.missing_access()
        body = call.json()
        if message.author.id != bot.id:
            if set(body) - {"flags"}:
                raise errors.cannot_edit_others_message()
            if not perms & P.MANAGE_MESSAGES:
                raise errors.missing_permissions()
        if channel.is_thread:
            if channel.locked and not perms & P.MANAGE_THREADS:
                raise errors.thread_archived(403)
            if channel.archived:
                raise errors.thread_archived(400)
        validate_message(body, creating=False)
        changes: dict[str, Any] = {}
        if "content" in body:
            changes["content"] = body["content"] or ""
        if "embeds" in body:
            probe = {"content": changes.get("content", message.content), "embeds": body["embeds"]}
            changes["embeds"] = message_fields(double, channel, probe, [])["embeds"]
        if body.get("flags") is not None:
            kept = message.flags & ~SETTABLE_MESSAGE_FLAGS
            changes["flags"] = kept | (int(body["flags"]) & SETTABLE_MESSAGE_FLAGS)
        for key in ("allowed_mentions", "components"):
            if key in body:
                changes[key] = body[key] if key == "allowed_mentions" else body[key] or []
        if "attachments" in body:
            keep = {str(a.get("id")) for a in body["attachments"] or []}
            changes["attachments"] = [a for a in message.attachments if a["id"] in keep]
        after = {
            name: changes.get(name, getattr(message, name))
            for name in ("content", "embeds", "attachments", "components")
        }
        if not (
            after["content"].strip()
            or after["embeds"]
            or after["attachments"]
            or after["components"]
        ):
            raise errors.empty_message()
        world.edit_message(message, **changes)
        return Reply(200, message_json(world, message))

    async def delete(call: Call) -> Reply:
        channel = world.channel(call.id("channel_id"))
        message = world.message(channel.id, call.id("message_id"))
        perms = world.permissions_for(bot.id, channel)
        if not perms & P.VIEW_CHANNEL:
            raise errors.missing_access()
        if message.author.id != bot.id and not perms & P.MANAGE_MESSAGES:
            raise errors.missing_permissions()
        if channel.is_thread and channel.archived:
            raise errors.thread_archived(400)
        world.delete_message(message)
        return Reply(204)

    async def typing(call: Call) -> Reply:
        channel = world.channel(call.id("channel_id"))
        world.require(
            bot.id, channel, P.SEND_MESSAGES_IN_THREADS if channel.is_thread else P.SEND_MESSAGES
        )
        return Reply(204)

    router.add("POST", "/channels/{channel_id}/messages", create)
    router.add("GET", "/channels/{channel_id}/messages", history)
    router.add("GET", "/channels/{channel_id}/messages/{message_id}", fetch)
    router.add("PATCH", "/channels/{channel_id}/messages/{message_id}", edit)
    router.add("DELETE", "/channels/{channel_id}/messages/{message_id}", delete)
    router.add("POST", "/channels/{channel_id}/typing", typing)

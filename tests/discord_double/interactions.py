"""Slash commands and autocomplete: building INTERACTION_CREATE, and the response endpoints.

``Interactions.invoke`` builds the payload Discord would send from the command definitions
the bot synced (option types, ``resolved.channels`` with the member's ``permissions``,
``focused`` for autocomplete), dispatches it over the gateway and returns an
``InteractionRecord`` that collects everything the bot answers.

Discord rules enforced on the answer:

* The initial callback must arrive within ``interaction_ack_timeout`` (3 s on Discord),
  else 404 / 10062 "Unknown interaction"; a second callback is 400 / 40060.
* Follow-ups before the callback are 404 / 10015 (unknown webhook).
* After a deferred response (type 5) the *first* follow-up replaces the loading message:
  it becomes the original response and keeps the deferral's ephemerality.
* Autocomplete results: at most 25 choices, names and string values 1-100 characters.
* Ephemeral messages (flag 64) never appear in the channel; others do, as type 20.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from . import errors
from .command_options import OptionBuilder
from .models import (
    ALL_PERMISSIONS,
    Channel,
    Member,
    Message,
    MessageFlag,
    MessageType,
    P,
    User,
    now_iso,
)
from .payloads import channel_json, member_json, message_json, user_json
from .rest import Call, Reply, Router
from .validation import validate_choices, validate_message

if TYPE_CHECKING:
    from .double import DiscordDouble
    from .state import World

APPLICATION_COMMAND = 2
AUTOCOMPLETE = 4
RESPONSE_MESSAGE, RESPONSE_DEFERRED, RESPONSE_AUTOCOMPLETE, RESPONSE_MODAL = 4, 5, 8, 9
COMMAND_RESPONSES = frozenset({RESPONSE_MESSAGE, RESPONSE_DEFERRED, RESPONSE_MODAL})
AUTOCOMPLETE_RESPONSES = frozenset({RESPONSE_AUTOCOMPLETE})
RESPONSE_FLAGS = int(
    MessageFlag.EPHEMERAL
    | MessageFlag.SUPPRESS_EMBEDS
    | MessageFlag.SUPPRESS_NOTIFICATIONS
    | MessageFlag.IS_COMPONENTS_V2
)


class CommandNotAvailable(Exception):
    """Discord would not offer this command to the member (``default_member_permissions``)."""


@dataclass(eq=False)
class InteractionRecord:
    """One interaction the double sent and everything the bot answered to it."""

    id: int
    token: str
    type: int
    guild_id: int
    channel_id: int
    user: User
    payload: dict[str, Any]
    world: World = field(repr=False)
    created: float = field(default_factory=time.monotonic)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    """Raw bodies of accepted ``/callback`` requests."""
    response_type: int | None = None
    original: Message | None = None
    followups: list[Message] = field(default_factory=list)
    choices: list[dict[str, Any]] | None = None
    modal: dict[str, Any] | None = None
    original_edits: int = 0
    rejected: list[errors.ApiError] = field(default_factory=list)
    """Answers the double refused (late or double acknowledgement, invalid bodies)."""
    wait_timeout: float = 10.0
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def acknowledged(self) -> bool:
        return self.response_type is not None

    @property
    def deferred(self) -> bool:
        return self.response_type == RESPONSE_DEFERRED

    @property
    def message_objects(self) -> list[Message]:
        found = [self.original] if self.original is not None else []
        return [m for m in found + self.followups if not m.deleted]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The original response, then follow-ups, as payloads; ``flags & 64``: ephemeral."""
        return [message_json(self.world, m) for m in self.message_objects]

    @property
    def contents(self) -> list[str]:
        return [m.content for m in self.message_objects]

    @property
    def ephemeral(self) -> bool:
        """True when there is at least one message and every message is ephemeral."""
        found = self.message_objects
        return bool(found) and all(m.flags & MessageFlag.EPHEMERAL for m in found)

    def done(self) -> bool:
        """Answered: a message response, a modal, choices, or a deferral that was completed."""
        if self.type == AUTOCOMPLETE:
            return self.choices is not None
        if self.response_type in (RESPONSE_MESSAGE, RESPONSE_MODAL):
            return True
        if self.response_type == RESPONSE_DEFERRED and self.original is not None:
            return not self.original.flags & MessageFlag.LOADING or bool(self.followups)
        return False

    async def wait_for(self, predicate: Callable[[Self], bool]) -> Self:
        """Until ``predicate(self)``; fails the test after ``wait_timeout`` seconds."""
        try:
            async with asyncio.timeout(self.wait_timeout):
                while not predicate(self):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"interaction {self.id} not answered as expected within {self.wait_timeout}s: "
                f"callbacks={self.callbacks} contents={self.contents} rejected={self.rejected}"
            ) from None
        return self

    async def wait_done(self) -> Self:
        return await self.wait_for(InteractionRecord.done)

    def notify(self) -> None:
        self._changed.set()


class Interactions:
    def __init__(self, double: DiscordDouble) -> None:
        self.double = double
        self.records: list[InteractionRecord] = []
        self._by_id: dict[int, InteractionRecord] = {}
        self._by_token: dict[str, InteractionRecord] = {}

    # -- building INTERACTION_CREATE ---------------------------------------------------

    def invoke(
        self,
        kind: int,
        guild_id: int,
        channel_id: int,
        name: str,
        subcommand: str | None,
        options: dict[str, Any],
        *,
        user: User,
        member_permissions: int,
        focused: str | None = None,
        locale: str = "en-US",
        check_permissions: bool = True,
    ) -> InteractionRecord:
        double, world = self.double, self.double.world
        guild = world.guild(guild_id)
        channel = world.channel(channel_id)
        command = double.commands.find(guild_id, name)
        if command is None:
            raise LookupError(f"/{name} is not synced for guild {guild_id}; call tree.sync() first")
        needed = command.get("default_member_permissions")
        admin = member_permissions & P.ADMINISTRATOR
        lacking = needed is not None and (
            needed == "0" or member_permissions & int(needed) != int(needed)
        )
        if check_permissions and lacking and not admin:
            raise CommandNotAvailable(f"/{name} needs permissions {needed}")
        if admin:
            member_permissions = ALL_PERMISSIONS
        resolved: dict[str, dict[str, Any]] = {}
        builder = OptionBuilder(world, resolved, member_permissions, focused)
        path = subcommand.split() if subcommand else []
        data: dict[str, Any] = {
            "id": command["id"],
            "name": name,
            "type": 1,
            "options": builder.build(command.get("options", []), path, options),
        }
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        if resolved:
            data["resolved"] = resolved
        record = InteractionRecord(
            id=double.ids.next(),
            token="aW50ZXJhY3Rpb246" + secrets.token_urlsafe(32),
            type=kind,
            guild_id=guild_id,
            channel_id=channel_id,
            user=user,
            payload={},
            world=world,
            wait_timeout=double.wait_timeout,
        )
        member = guild.members.get(user.id) or Member(user=user, role_ids=[])
        record.payload = {
            "id": str(record.id),
            "application_id": str(double.application_id),
            "type": kind,
            "data": data,
            "guild_id": str(guild_id),
            "guild": {"id": str(guild_id), "locale": guild.locale, "features": []},
            "channel_id": str(channel_id),
            "channel": channel_json(channel) | {"permissions": str(member_permissions)},
            "member": member_json(member, permissions=member_permissions),
            "token": record.token,
            "version": 1,
            "app_permissions": str(world.permissions_for(double.bot.id, channel)),
            "locale": locale,
            "guild_locale": guild.locale,
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild_id)},
            "context": 0,
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        self.records.append(record)
        self._by_id[record.id] = record
        self._by_token[record.token] = record
        double.gateway.dispatch("INTERACTION_CREATE", record.payload)
        return record

    # -- answering ---------------------------------------------------------------------

    def _new_message(
        self, record: InteractionRecord, data: dict[str, Any], *, loading: bool
    ) -> Message:
        double, world = self.double, self.double.world
        flags = int(data.get("flags") or 0) & RESPONSE_FLAGS
        if loading:
            flags |= MessageFlag.LOADING
        fields: dict[str, Any] = {
            "content": data.get("content") or "",
            "embeds": [{"type": "rich", **e} for e in data.get("embeds") or []],
            "components": data.get("components") or [],
            "allowed_mentions": data.get("allowed_mentions"),
            "flags": flags,
            "tts": bool(data.get("tts")),
            "type": MessageType.CHAT_INPUT_COMMAND,
            "webhook_id": double.application_id,
            "application_id": double.application_id,
            "interaction_metadata": {
                "id": str(record.id),
                "type": record.type,
                "user": user_json(record.user),
                "authorizing_integration_owners": {"0": str(record.guild_id)},
            },
        }
        channel: Channel = world.channel(record.channel_id)
        if flags & MessageFlag.EPHEMERAL:
            return Message(
                id=double.ids.next(),
                channel_id=channel.id,
                guild_id=channel.guild_id,
                author=double.bot,
                **fields,
            )
        return world.create_message(channel, double.bot, **fields)

    def _edit(self, message: Message, body: dict[str, Any]) -> None:
        changes: dict[str, Any] = {"flags": message.flags & ~MessageFlag.LOADING}
        if "content" in body:
            changes["content"] = body["content"] or ""
        if "embeds" in body:
            changes["embeds"] = [{"type": "rich", **e} for e in body["embeds"] or []]
        for key in ("components", "allowed_mentions"):
            if key in body:
                changes[key] = body[key]
        if message.id in self.double.world.messages_by_id:
            self.double.world.edit_message(message, **changes)
        else:
            for key, value in changes.items():
                setattr(message, key, value)
            message.edited_timestamp = now_iso()

    def _delete(self, message: Message) -> None:
        if message.id in self.double.world.messages_by_id:
            self.double.world.delete_message(message)
        message.deleted = True

    def register(self, router: Router) -> None:
        double = self.double
        world = double.world

        async def callback(call: Call) -> Reply:
            record = self._by_id.get(call.id("webhook_id"))
            if record is None or record.token != call.params["webhook_token"]:
                raise errors.unknown_interaction()
            try:
                reply = self._callback(record, call)
            except errors.ApiError as exc:
                record.rejected.append(exc)
                record.notify()
                raise
            record.notify()
            return reply

        def webhook_record(call: Call) -> InteractionRecord:
            record = self._by_token.get(call.params["webhook_token"])
            if call.id("webhook_id") != double.application_id or record is None:
                raise errors.unknown_webhook()
            if time.monotonic() - record.created > double.interaction_token_ttl:
                raise errors.ApiError(401, 50027, "Invalid Webhook Token")
            return record

        def find(record: InteractionRecord, key: str) -> Message:
            for message in record.message_objects:
                if (key == "@original" and message is record.original) or key == str(message.id):
                    return message
            raise errors.unknown_message()

        async def followup(call: Call) -> Reply:
            record = webhook_record(call)
            if not record.acknowledged:
                raise errors.unknown_webhook()
            body = call.json()
            validate_message(body)
            original = record.original
            if record.deferred and original is not None and original.flags & MessageFlag.LOADING:
                self._edit(original, body)
                message = original
            else:
                message = self._new_message(record, body, loading=False)
                record.followups.append(message)
            record.notify()
            wait = call.query.get("wait", "").lower() in ("1", "true")
            return Reply(200, message_json(world, message)) if wait else Reply(204)

        async def get_message(call: Call) -> Reply:
            record = webhook_record(call)
            return Reply(
                200, message_json(world, find(record, call.params.get("message_id", "@original")))
            )

        async def edit_message(call: Call) -> Reply:
            record = webhook_record(call)
            message = find(record, call.params.get("message_id", "@original"))
            body = call.json()
            validate_message(body, creating=False)
            self._edit(message, body)
            if message is record.original:
                record.original_edits += 1
            record.notify()
            return Reply(200, message_json(world, message))

        async def delete_message(call: Call) -> Reply:
            record = webhook_record(call)
            self._delete(find(record, call.params.get("message_id", "@original")))
            record.notify()
            return Reply(204)

        hook = "/webhooks/{webhook_id}/{webhook_token}"
        quiet = {"auth": False, "global_limit": False}
        router.add("POST", "/interactions/{webhook_id}/{webhook_token}/callback", callback, **quiet)
        router.add("POST", hook, followup, **quiet)
        for suffix in ("/messages/@original", "/messages/{message_id}"):
            router.add("GET", hook + suffix, get_message, **quiet)
            router.add("PATCH", hook + suffix, edit_message, **quiet)
            router.add("DELETE", hook + suffix, delete_message, **quiet)

    def _callback(self, record: InteractionRecord, call: Call) -> Reply:
        if time.monotonic() - record.created > self.double.interaction_ack_timeout:
            raise errors.unknown_interaction()
        if record.acknowledged:
            raise errors.already_acknowledged()
        body = call.json()
        kind = body.get("type")
        data = body.get("data") or {}
        allowed = AUTOCOMPLETE_RESPONSES if record.type == AUTOCOMPLETE else COMMAND_RESPONSES
        if kind not in allowed:
            raise errors.invalid_form(
                "type",
                "INTERACTION_CALLBACK_TYPE_INVALID",
                f"Callback type {kind} is not valid here",
            )
        if kind == RESPONSE_AUTOCOMPLETE:
            record.choices = validate_choices(data.get("choices", []))
        elif kind == RESPONSE_MESSAGE:
            validate_message(data)
            record.original = self._new_message(record, data, loading=False)
        elif kind == RESPONSE_DEFERRED:
            record.original = self._new_message(record, data, loading=True)
        else:
            record.modal = data
        record.callbacks.append(body)
        record.response_type = kind
        if call.query.get("with_response", "").lower() not in ("1", "true"):
            return Reply(204)
        interaction: dict[str, Any] = {"id": str(record.id), "type": record.type}
        resource: dict[str, Any] = {"type": kind}
        if record.original is not None:
            interaction.update(
                response_message_id=str(record.original.id),
                response_message_loading=kind == RESPONSE_DEFERRED,
                response_message_ephemeral=bool(record.original.flags & MessageFlag.EPHEMERAL),
            )
            resource["message"] = message_json(self.double.world, record.original)
        return Reply(200, {"interaction": interaction, "resource": resource})

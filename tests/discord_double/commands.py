"""Application commands as synced by ``CommandTree.sync()``, and the REST routes for them.

The double needs the synced definitions to build realistic interactions: option types
(a channel option's value is a snowflake string plus a ``resolved.channels`` entry),
``default_member_permissions`` (Discord never shows a command to members without them) and
channel-type restrictions all come from what the bot registered, not from the test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors
from .models import Snowflakes
from .rest import Call, Reply, Router
from .validation import validate_commands

if TYPE_CHECKING:
    from .double import DiscordDouble


class CommandRegistry:
    def __init__(self, ids: Snowflakes, application_id: int) -> None:
        self.ids = ids
        self.application_id = application_id
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}

    def commands(self, guild_id: int | None) -> list[dict[str, Any]]:
        if guild_id is None:
            return self.global_commands
        return self.guild_commands.setdefault(guild_id, [])

    def _stored(
        self, command: dict[str, Any], guild_id: int | None, old_id: str | None
    ) -> dict[str, Any]:
        stored: dict[str, Any] = {
            "type": 1,
            "options": [],
            "default_member_permissions": None,
            "nsfw": False,
            "contexts": None,
            "integration_types": [0],
            **command,
            "id": old_id or str(self.ids.next()),
            "application_id": str(self.application_id),
            "version": str(self.ids.next()),
        }
        if stored["default_member_permissions"] is not None:
            # discord.py sends an int; Discord stores and returns a string.
            stored["default_member_permissions"] = str(stored["default_member_permissions"])
        if guild_id is not None:
            stored["guild_id"] = str(guild_id)
        return stored

    def replace(self, guild_id: int | None, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Bulk overwrite; a command keeps its id when its name and type are unchanged."""
        validate_commands(commands)
        old = {(c["name"], c.get("type", 1)): c["id"] for c in self.commands(guild_id)}
        new = [self._stored(c, guild_id, old.get((c["name"], c.get("type", 1)))) for c in commands]
        if guild_id is None:
            self.global_commands = new
        else:
            self.guild_commands[guild_id] = new
        return new

    def upsert(self, guild_id: int | None, command: dict[str, Any]) -> dict[str, Any]:
        validate_commands([command])
        existing = self.commands(guild_id)
        for i, c in enumerate(existing):
            if c["name"] == command["name"] and c.get("type", 1) == command.get("type", 1):
                existing[i] = self._stored(command, guild_id, c["id"])
                return existing[i]
        stored = self._stored(command, guild_id, None)
        existing.append(stored)
        return stored

    def find(self, guild_id: int, name: str) -> dict[str, Any] | None:
        """The command a member of ``guild_id`` would see: guild commands shadow global ones."""
        for command in [*self.commands(guild_id), *self.global_commands]:
            if command["name"] == name and command.get("type", 1) == 1:
                return command
        return None


def register(router: Router, double: DiscordDouble) -> None:
    registry = double.commands

    def scope(call: Call) -> int | None:
        if call.id("application_id") != double.application_id:
            raise errors.ApiError(403, 50001, "Missing Access")
        return call.id("guild_id") if "guild_id" in call.params else None

    async def list_commands(call: Call) -> Reply:
        return Reply(200, registry.commands(scope(call)))

    async def bulk_overwrite(call: Call) -> Reply:
        guild_id = scope(call)
        if guild_id is not None:
            double.world.guild(guild_id)
        return Reply(200, registry.replace(guild_id, call.body or []))

    async def upsert(call: Call) -> Reply:
        return Reply(201, registry.upsert(scope(call), call.json()))

    async def delete(call: Call) -> Reply:
        commands = registry.commands(scope(call))
        for c in commands:
            if c["id"] == call.params["command_id"]:
                commands.remove(c)
                return Reply(204)
        raise errors.unknown_command()

    for base in (
        "/applications/{application_id}",
        "/applications/{application_id}/guilds/{guild_id}",
    ):
        router.add("GET", base + "/commands", list_commands)
        router.add("PUT", base + "/commands", bulk_overwrite)
        router.add("POST", base + "/commands", upsert)
        router.add("DELETE", base + "/commands/{command_id}", delete)

"""Login and lookup routes: the bot user, its application, the gateway URL, guilds, users.

``Client.login`` calls ``GET /users/@me`` and then ``GET /oauth2/applications/@me``; without
both, discord.py never reaches the gateway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import errors
from .payloads import channel_json, member_json, role_json, thread_member_json, user_json
from .rest import Call, Reply, Router

if TYPE_CHECKING:
    from .double import DiscordDouble


def register(router: Router, double: DiscordDouble) -> None:
    world = double.world

    async def me(call: Call) -> Reply:
        return Reply(200, user_json(double.bot) | {"verified": True, "mfa_enabled": False})

    async def application(call: Call) -> Reply:
        owner = (
            world.users[next(iter(world.guilds.values())).owner_id] if world.guilds else double.bot
        )
        return Reply(
            200,
            {
                "id": str(double.application_id),
                "name": double.bot.username,
                "description": "",
                "icon": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": user_json(owner),
                "team": None,
                "verify_key": "0" * 64,
                "flags": double.application_flags,
                "bot": user_json(double.bot),
                "interactions_endpoint_url": None,
                "redirect_uris": [],
                "approximate_guild_count": len(world.guilds),
            },
        )

    async def gateway(call: Call) -> Reply:
        return Reply(200, {"url": double.gateway_url})

    async def gateway_bot(call: Call) -> Reply:
        return Reply(
            200,
            {
                "url": double.gateway_url,
                "shards": double.recommended_shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 86_400_000,
                    "max_concurrency": 1,
                },
            },
        )

    async def get_user(call: Call) -> Reply:
        user = world.users.get(call.id("user_id"))
        if user is None:
            raise errors.unknown_user()
        return Reply(200, user_json(user))

    async def get_guild(call: Call) -> Reply:
        guild = world.guild(call.id("guild_id"))
        return Reply(
            200,
            {
                "id": str(guild.id),
                "name": guild.name,
                "icon": None,
                "owner_id": str(guild.owner_id),
                "roles": [role_json(r) for r in guild.roles.values()],
                "emojis": [],
                "stickers": [],
                "features": [],
                "preferred_locale": guild.locale,
                "verification_level": 0,
                "default_message_notifications": 1,
                "explicit_content_filter": 0,
                "mfa_level": 0,
                "premium_tier": 0,
                "nsfw_level": 0,
                "system_channel_flags": 0,
            },
        )

    async def guild_channels(call: Call) -> Reply:
        guild = world.guild(call.id("guild_id"))
        channels = [c for c in world.guild_channels(guild.id) if not c.is_thread]
        return Reply(200, [channel_json(c) for c in channels])

    async def guild_roles(call: Call) -> Reply:
        guild = world.guild(call.id("guild_id"))
        return Reply(200, [role_json(r) for r in guild.roles.values()])

    async def guild_member(call: Call) -> Reply:
        guild = world.guild(call.id("guild_id"))
        key = call.params["user_id"]
        member = guild.members.get(double.bot.id if key == "@me" else call.id("user_id"))
        if member is None:
            raise errors.unknown_member()
        return Reply(200, member_json(member))

    async def active_threads(call: Call) -> Reply:
        guild_id = call.id("guild_id")
        world.guild(guild_id)
        threads = [
            t
            for t in world.guild_channels(guild_id)
            if t.is_thread and not t.archived and world.can_view(double.bot.id, t)
        ]
        members = [
            thread_member_json(t, double.bot.id) for t in threads if double.bot.id in t.member_ids
        ]
        return Reply(200, {"threads": [channel_json(t) for t in threads], "members": members})

    router.add("GET", "/users/@me", me)
    router.add("GET", "/oauth2/applications/@me", application)
    router.add("GET", "/applications/@me", application)
    router.add("GET", "/gateway", gateway, auth=False)
    router.add("GET", "/gateway/bot", gateway_bot)
    router.add("GET", "/users/{user_id}", get_user)
    router.add("GET", "/guilds/{guild_id}", get_guild)
    router.add("GET", "/guilds/{guild_id}/channels", guild_channels)
    router.add("GET", "/guilds/{guild_id}/roles", guild_roles)
    router.add("GET", "/guilds/{guild_id}/members/{user_id}", guild_member)
    router.add("GET", "/guilds/{guild_id}/threads/active", active_threads)

"""``DiscordDouble``: the server, the world it serves, and the helpers tests call.

See the package docstring for a tour. Everything here is a thin layer over ``World``
(state), ``RestFrontend`` (REST), ``GatewayHub`` (websocket) and ``Interactions``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Self

import discord
import yarl
from aiohttp import web

from . import commands, routes_core, routes_messages, routes_threads
from .commands import CommandRegistry
from .faults import Fault, FaultKind, FaultPlan
from .gateway import GatewayHub
from .interactions import APPLICATION_COMMAND, AUTOCOMPLETE, InteractionRecord, Interactions
from .models import (
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    DEFAULT_MEMBER_PERMISSIONS,
    Channel,
    ChannelFlag,
    ChannelType,
    Guild,
    MessageType,
    Role,
    Snowflakes,
    User,
)
from .payloads import channel_json, message_json
from .ratelimit import RateLimiter, RateLimits
from .rest import RequestRecord, RestFrontend
from .state import World

PermissionsLike = int | discord.Permissions


def _bits(value: PermissionsLike) -> int:
    return value.value if isinstance(value, discord.Permissions) else int(value)


class DiscordDouble:
    """A loopback Discord (REST v10 + gateway) for the real discord.py client to talk to."""

    def __init__(
        self,
        *,
        token: str = "discord-double-token",
        bot_name: str = "blogmirror",
        rate_limits: RateLimits | None = None,
        nonce_window: float = 120.0,
        heartbeat_interval: float = 41.25,
        interaction_ack_timeout: float = 3.0,
        interaction_token_ttl: float = 900.0,
        privileged_intents: int = 0,
        wait_timeout: float = 10.0,
        recommended_shards: int = 1,
        port: int = 0,
    ) -> None:
        self.token = token
        self.nonce_window = nonce_window
        """Seconds during which ``enforce_nonce`` de-duplicates (Discord: "a few minutes")."""
        self.heartbeat_interval = heartbeat_interval
        self.interaction_ack_timeout = interaction_ack_timeout
        self.interaction_token_ttl = interaction_token_ttl
        self.privileged_intents = privileged_intents
        """Privileged intents "enabled in the developer portal"; others close with 4014."""
        self.wait_timeout = wait_timeout
        """Deadline of every ``wait_*`` helper: they fail a test instead of hanging it.
        10 s by default because discord.py sleeps 5 s before each re-IDENTIFY."""
        self.recommended_shards = recommended_shards
        """``shards`` in ``GET /gateway/bot``: what ``AutoShardedClient`` runs when not told."""
        self.application_flags = 0
        self.ids = Snowflakes()
        self.application_id = self.ids.next()
        # Bots created since 2020 have the same id as their application.
        self.bot = User(id=self.application_id, username=bot_name, bot=True)
        self.world = World(self.ids, self.bot, self.application_id)
        self.commands = CommandRegistry(self.ids, self.application_id)
        self.limiter = RateLimiter(rate_limits or RateLimits())
        self.faults = FaultPlan()
        self.gateway = GatewayHub(self)
        self.interactions = Interactions(self)
        self.rest = RestFrontend(self)
        for module in (routes_core, commands, routes_messages, routes_threads):
            module.register(self.rest.router, self)
        self.interactions.register(self.rest.router)
        self.world.listeners.append(self.gateway.dispatch)
        self.port = port
        """Where it listens: 0 picks a free port at start (a test may name one beforehand,
        to start a bot pointed at a Discord that is not there yet)."""
        self._runner: web.AppRunner | None = None
        self._testers: dict[int, User] = {}

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_get("/ws", self.gateway.handle)
        app.router.add_get("/ws/resume", self.gateway.handle)
        app.router.add_route("*", "/api/v10/{tail:.*}", self.rest.handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self.gateway.close()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def resume_gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/resume"

    @contextlib.contextmanager
    def patched(self) -> Iterator[Self]:
        """Point discord.py's REST base and default gateway at the double, restore after."""
        route_base = discord.http.Route.BASE
        default_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield self
        finally:
            discord.http.Route.BASE = route_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = default_gateway

    # -- building the world ------------------------------------------------------------

    def add_guild(
        self,
        name: str = "Test Guild",
        *,
        everyone_permissions: PermissionsLike = DEFAULT_EVERYONE_PERMISSIONS,
        bot_permissions: PermissionsLike = DEFAULT_BOT_PERMISSIONS,
        shard: tuple[int, int] | None = None,
    ) -> Guild:
        """A guild with @everyone, the bot's managed role and the bot as a member.

        ``shard=(shard_id, shard_count)`` picks an id that shard owns:
        ``(guild.id >> 22) % shard_count == shard_id``.
        """
        return self.world.add_guild(
            name,
            everyone_permissions=_bits(everyone_permissions),
            bot_permissions=_bits(bot_permissions),
            shard=shard,
        )

    def add_text_channel(
        self, guild_id: int, name: str = "general", *, topic: str | None = None
    ) -> Channel:
        return self.world.add_channel(guild_id, ChannelType.TEXT, name, topic=topic)

    def add_forum_channel(
        self,
        guild_id: int,
        name: str = "blog",
        *,
        tags: Iterable[str] = (),
        require_tag: bool = False,
    ) -> Channel:
        """A forum (type 15) with tags; ``require_tag`` sets the REQUIRE_TAG flag.

        Tag ids: ``forum.tag_named("CRC").id``.
        """
        flags = int(ChannelFlag.REQUIRE_TAG) if require_tag else 0
        return self.world.add_channel(guild_id, ChannelType.FORUM, name, tags=tags, flags=flags)

    def add_member(self, guild_id: int, name: str) -> User:
        return self.world.add_member(guild_id, name)

    def add_role(self, guild_id: int, name: str, *, mentionable: bool = True) -> Role:
        """A plain role (dispatches GUILD_ROLE_CREATE); it pings when mentioned and allowed
        only if ``mentionable`` or the author has Mention Everyone, as on Discord."""
        return self.world.add_role(guild_id, name, mentionable=mentionable)

    def set_bot_permissions(self, guild_id: int, permissions: PermissionsLike) -> None:
        """Replace the bot role's permissions (dispatches GUILD_ROLE_UPDATE)."""
        self.world.set_role_permissions(
            guild_id, self.world.bot_role(guild_id).id, _bits(permissions)
        )

    def set_everyone_permissions(self, guild_id: int, permissions: PermissionsLike) -> None:
        self.world.set_role_permissions(guild_id, guild_id, _bits(permissions))

    def set_overwrite(
        self,
        channel_id: int,
        target_id: int,
        *,
        allow: PermissionsLike = 0,
        deny: PermissionsLike = 0,
    ) -> None:
        """A channel overwrite for a role id or user id (both zero removes it)."""
        self.world.set_overwrite(channel_id, target_id, allow=_bits(allow), deny=_bits(deny))

    def deny_bot(self, channel_id: int, permissions: PermissionsLike) -> None:
        """Shorthand: a member overwrite denying ``permissions`` to the bot in one channel."""
        self.set_overwrite(channel_id, self.bot.id, deny=permissions)

    def tester(self, guild_id: int) -> User:
        """The default member who invokes commands and posts messages in a guild."""
        if guild_id not in self._testers:
            self._testers[guild_id] = self.world.add_member(guild_id, "tester")
        return self._testers[guild_id]

    # -- inspecting ----------------------------------------------------------------------

    def _message_record(self, message_id: int) -> dict[str, Any]:
        message = self.world.messages_by_id[message_id]
        data = message_json(self.world, message, include_nonce=True)
        data.update(
            allowed_mentions=message.allowed_mentions,
            enforce_nonce=message.enforce_nonce,
            deleted=message.deleted,
        )
        return data

    def messages(self, channel_id: int, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Messages in a channel or thread, oldest first, as Discord payloads (string ids)
        plus what Discord does not echo: ``allowed_mentions``, ``nonce``, ``enforce_nonce``."""
        found = [
            m
            for m in self.world.messages_by_id.values()
            if m.channel_id == channel_id and (include_deleted or not m.deleted)
        ]
        return [self._message_record(m.id) for m in sorted(found, key=lambda m: m.id)]

    def message(self, message_id: int) -> dict[str, Any]:
        return self._message_record(message_id)

    def channel(self, channel_id: int) -> dict[str, Any]:
        return channel_json(self.world.channel(channel_id), me_id=self.bot.id)

    def threads(self, parent_id: int) -> list[dict[str, Any]]:
        """Threads under a channel or forum (archived or not), oldest first."""
        threads = sorted(self.world.threads_of(parent_id), key=lambda t: t.id)
        return [channel_json(t, me_id=self.bot.id) for t in threads]

    @property
    def requests(self) -> list[RequestRecord]:
        return self.rest.log

    def requests_to(
        self, method: str | None = None, route: str | None = None
    ) -> list[RequestRecord]:
        """Logged requests by method and route template (``/channels/{channel_id}/messages``)."""
        return [
            r
            for r in self.rest.log
            if (method is None or r.method == method)
            and (route is None or (r.route or "").split(" ", 1)[-1] == route)
        ]

    @property
    def count_429(self) -> int:
        """429 responses sent so far (bucket, global and injected)."""
        return self.rest.rate_limited

    @property
    def internal_errors(self) -> list[Exception]:
        """Exceptions the double itself raised while handling requests (answered 400 / 0)."""
        return self.rest.internal_errors

    @property
    def unknown_routes(self) -> list[RequestRecord]:
        """Requests to routes the double does not implement (answered 404 / code 0)."""
        return [r for r in self.rest.log if r.route is None]

    # -- acting as members and moderators ----------------------------------------------

    def post_message(
        self,
        channel_id: int,
        content: str,
        *,
        author_id: int | None = None,
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        """A member's message (dispatches MESSAGE_CREATE)."""
        channel = self.world.channel(channel_id)
        author = self.world.users[author_id] if author_id else self.tester(channel.guild_id)
        reference = None
        if reply_to is not None:
            reference = {
                "type": 0,
                "message_id": str(reply_to),
                "channel_id": str(channel_id),
                "guild_id": str(channel.guild_id),
            }
        message = self.world.create_message(
            channel,
            author,
            content=content,
            type=MessageType.REPLY if reference else MessageType.DEFAULT,
            message_reference=reference,
        )
        return self.message(message.id)

    def delete_message(
        self, channel_id: int, message_id: int, *, by_moderator: bool = True
    ) -> None:
        """Delete as a moderator would (dispatches MESSAGE_DELETE)."""
        self.world.delete_message(
            self.world.message(channel_id, message_id), by_moderator=by_moderator
        )

    def bulk_delete_messages(self, channel_id: int, message_ids: list[int]) -> None:
        """Delete several messages at once as a moderator (dispatches MESSAGE_DELETE_BULK)."""
        channel = self.world.channel(channel_id)
        messages = [self.world.message(channel_id, m) for m in message_ids]
        self.world.bulk_delete_messages(channel, messages)

    def delete_channel(self, channel_id: int) -> None:
        """Delete a channel with its threads and messages (dispatches CHANNEL_DELETE)."""
        self.world.delete_channel(self.world.channel(channel_id))

    def delete_thread(self, thread_id: int) -> None:
        """Delete a thread and its messages (dispatches THREAD_DELETE)."""
        self.world.delete_thread(self.world.channel(thread_id))

    def archive_thread(self, thread_id: int, archived: bool = True) -> None:
        self.world.update_thread(self.world.channel(thread_id), archived=archived)

    def lock_thread(
        self, thread_id: int, locked: bool = True, *, archived: bool | None = None
    ) -> None:
        changes: dict[str, Any] = {"locked": locked}
        if archived is not None:
            changes["archived"] = archived
        self.world.update_thread(self.world.channel(thread_id), **changes)

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send any gateway event as-is."""
        self.gateway.dispatch(event, data)

    # -- faults and limits -------------------------------------------------------------

    def inject_fault(
        self,
        kind: FaultKind | str,
        path: str = ".*",
        *,
        method: str | None = None,
        status: int = 500,
        times: int | None = 1,
        delay: float = 0.0,
        retry_after: float = 0.25,
        scope: str = "user",
        body: dict[str, Any] | str | None = None,
        content: str | None = None,
    ) -> Fault:
        """See ``faults.py`` for the kinds. Returns the fault; ``fault.hits`` counts uses."""
        return self.faults.add(
            kind,
            path,
            method=method,
            status=status,
            times=times,
            delay=delay,
            retry_after=retry_after,
            scope=scope,
            body=body,
            content=content,
        )

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_rate_limit(self, route: str, limit: int, per: float) -> None:
        """E.g. ``set_rate_limit("POST /channels/{channel_id}/messages", 5, 1.0)``."""
        self.limiter.limits.routes[route] = (limit, per)

    def set_global_rate_limit(self, limit: int, per: float = 1.0) -> None:
        self.limiter.limits.global_limit = (limit, per)

    # -- gateway ---------------------------------------------------------------------------

    async def wait_ready(self) -> None:
        """Until READY and every GUILD_CREATE (or RESUMED) were sent on a live connection."""
        async with asyncio.timeout(self.wait_timeout):
            await self.gateway.ready.wait()

    async def wait_shards_ready(self, shard_ids: Iterable[int], *, count: int) -> None:
        """Until each of ``shard_ids`` (of ``count``) has a connected session that got READY
        and its GUILD_CREATEs (or RESUMED)."""
        wanted = {(shard_id, count) for shard_id in shard_ids}
        hub = self.gateway
        try:
            async with asyncio.timeout(self.wait_timeout):
                await hub.wait_until(lambda: wanted <= hub.ready_shards())
        except TimeoutError:
            missing = sorted(wanted - hub.ready_shards())
            raise AssertionError(
                f"shards {missing} not READY within {self.wait_timeout}s; "
                f"ready: {sorted(hub.ready_shards())}"
            ) from None

    async def drop_gateway(self, *, resume: bool = True, code: int | None = 4000) -> None:
        """Disconnect the client; see ``GatewayHub.drop``."""
        await self.gateway.drop(resume=resume, code=code)

    def invalidate_session(self, *, resumable: bool = False) -> None:
        self.gateway.invalidate_session(resumable=resumable)

    # -- interactions ------------------------------------------------------------------

    async def invoke_command(
        self,
        guild_id: int,
        channel_id: int,
        name: str,
        subcommand: str | None = None,
        options: dict[str, Any] | None = None,
        *,
        user_id: int | None = None,
        member_permissions: PermissionsLike = DEFAULT_MEMBER_PERMISSIONS,
        locale: str = "en-US",
        check_permissions: bool = True,
    ) -> InteractionRecord:
        """Send a slash command (INTERACTION_CREATE type 2); await ``.wait_done()`` on the result.

        ``subcommand`` may be ``"group sub"``. Channel options take a channel id.
        Raises ``CommandNotAvailable`` when the member lacks the command's
        ``default_member_permissions`` (Discord would not offer the command).
        """
        record = self.interactions.invoke(
            APPLICATION_COMMAND,
            guild_id,
            channel_id,
            name,
            subcommand,
            options or {},
            user=self._user(guild_id, user_id),
            member_permissions=_bits(member_permissions),
            locale=locale,
            check_permissions=check_permissions,
        )
        await asyncio.sleep(0)
        return record

    async def autocomplete(
        self,
        guild_id: int,
        channel_id: int,
        name: str,
        subcommand: str | None,
        option: str,
        typed: str,
        *,
        other_options: dict[str, Any] | None = None,
        user_id: int | None = None,
        member_permissions: PermissionsLike = DEFAULT_MEMBER_PERMISSIONS,
    ) -> list[dict[str, Any]]:
        """Send an autocomplete interaction (type 4) with ``option`` focused; return the choices."""
        record = self.interactions.invoke(
            AUTOCOMPLETE,
            guild_id,
            channel_id,
            name,
            subcommand,
            {**(other_options or {}), option: typed},
            user=self._user(guild_id, user_id),
            member_permissions=_bits(member_permissions),
            focused=option,
        )
        await record.wait_done()
        return record.choices or []

    def _user(self, guild_id: int, user_id: int | None) -> User:
        return self.world.users[user_id] if user_id else self.tester(guild_id)

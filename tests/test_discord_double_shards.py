"""The Discord double's shards, driven by discord.py's AutoShardedClient and sharded Clients.

A guild belongs to shard ``(guild_id >> 22) % shard_count``: its GUILD_CREATE, channel,
message and interaction events must reach the sessions of that shard and no other, whether
the shards run in one ``AutoShardedClient`` or in separate clients (separate processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.discord_double import DiscordDouble
from tests.discord_double.models import Channel, Guild
from tests.feedserver import guard_loopback_only

ShardKey = tuple[int, int]


def _intents() -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    return intents


class ShardClient(discord.Client):
    """One process running one shard, with a global /where command naming its shard."""

    def __init__(self, shard_id: int, shard_count: int) -> None:
        super().__init__(
            intents=_intents(),
            shard_id=shard_id,
            shard_count=shard_count,
            guild_ready_timeout=0.05,
        )
        self.tree = app_commands.CommandTree(self)
        self.invoked: list[int | None] = []
        self.tree.add_command(self._where())

    def _where(self) -> app_commands.Command[Any, ..., None]:
        @app_commands.command(description="Which shard answers")
        async def where(interaction: discord.Interaction, hint: str | None = None) -> None:
            self.invoked.append(interaction.guild_id)
            await interaction.response.send_message(f"shard {self.shard_id}", ephemeral=True)

        @where.autocomplete("hint")
        async def hints(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            return [app_commands.Choice(name=f"shard {self.shard_id}", value=current)]

        return where

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """No pause: discord.py's default sleeps 5 s before every re-IDENTIFY."""

    async def setup_hook(self) -> None:
        await self.tree.sync()


class AutoBot(discord.AutoShardedClient):
    """All shards in one client; ``shard_count=None`` asks ``GET /gateway/bot``."""

    def __init__(self, shard_count: int | None = None) -> None:
        super().__init__(intents=_intents(), shard_count=shard_count, guild_ready_timeout=0.05)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """No pause: discord.py sleeps 5 s before identifying every shard after the first."""


@contextlib.asynccontextmanager
async def running(double: DiscordDouble, client: discord.Client) -> AsyncIterator[None]:
    """Run ``client`` against the double (inside ``double.patched()``); close it after."""
    runner = asyncio.create_task(client.start(double.token))
    try:
        yield
    finally:
        await client.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runner, 5)


async def until(predicate: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(5):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def applied(double: DiscordDouble, client: discord.Client) -> None:
    """Until ``client`` has read every gateway event the double has sent its session."""
    ws = client.ws
    assert ws is not None and ws.session_id is not None
    sent = double.gateway.sessions[ws.session_id].seq
    await until(lambda: (ws.sequence or 0) >= sent, f"gateway event #{sent}")


def routed(double: DiscordDouble, event: str, guild_id: int) -> list[ShardKey]:
    """The shard of every session that was sent ``event`` for ``guild_id``."""
    return [
        d.shard for d in double.gateway.dispatched if d.event == event and d.guild_id == guild_id
    ]


@pytest.fixture
async def double(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordDouble]:
    guard_loopback_only(monkeypatch)
    async with DiscordDouble() as server:
        yield server
    assert server.internal_errors == []
    assert server.unknown_routes == []


@dataclass
class TwoShards:
    guilds: tuple[Guild, Guild]
    texts: tuple[Channel, Channel]
    clients: tuple[ShardClient, ShardClient]


@pytest.fixture
async def two_processes(double: DiscordDouble) -> AsyncIterator[TwoShards]:
    """Shards 0 and 1 of 2 in separate clients, as two processes would run them."""
    guilds = (double.add_guild("Zero", shard=(0, 2)), double.add_guild("One", shard=(1, 2)))
    texts = (
        double.add_text_channel(guilds[0].id, "general"),
        double.add_text_channel(guilds[1].id, "general"),
    )
    clients = (ShardClient(0, 2), ShardClient(1, 2))
    with double.patched():
        async with running(double, clients[0]), running(double, clients[1]):
            await double.wait_shards_ready({0, 1}, count=2)
            for client in clients:
                await asyncio.wait_for(client.wait_until_ready(), 5)
            yield TwoShards(guilds, texts, clients)


# -- ids and GET /gateway/bot --------------------------------------------------------------


async def test_add_guild_picks_increasing_ids_on_the_asked_shard(double: DiscordDouble) -> None:
    """add_guild(shard=...) gives ids owned by that shard, still increasing like snowflakes."""
    wanted = [(2, 3), (0, 3), (1, 2), (0, 1), (4, 5), (2, 3)]
    guilds = [double.add_guild(f"G{i}", shard=shard) for i, shard in enumerate(wanted)]
    assert [(g.id >> 22) % n for g, (_, n) in zip(guilds, wanted, strict=True)] == [
        shard_id for shard_id, _ in wanted
    ]
    later = double.add_guild("plain")
    ids = [g.id for g in guilds] + [later.id]
    assert ids == sorted(set(ids))
    with pytest.raises(ValueError):
        double.add_guild("nowhere", shard=(2, 2))


async def test_gateway_bot_reports_the_recommended_shard_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GET /gateway/bot: the configured "shards", the gateway url and session start limits."""
    guard_loopback_only(monkeypatch)
    async with DiscordDouble(recommended_shards=3) as double, aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bot {double.token}"}
        async with http.get(f"{double.api_base}/gateway/bot", headers=auth) as response:
            body = await response.json()
    assert body["shards"] == 3 and body["url"] == double.gateway_url
    assert set(body["session_start_limit"]) == {
        "total",
        "remaining",
        "reset_after",
        "max_concurrency",
    }


# -- IDENTIFY --------------------------------------------------------------------------------


async def _identify_raw(double: DiscordDouble, shard: Any) -> tuple[int | None, dict[str, Any]]:
    """IDENTIFY over a bare websocket; the close code (None if open) and the READY payload."""
    identify: dict[str, Any] = {"token": double.token, "intents": 1, "properties": {}}
    if shard is not None:
        identify["shard"] = shard
    async with aiohttp.ClientSession() as http, http.ws_connect(double.gateway_url) as ws:
        hello = await ws.receive_json(timeout=5)
        assert hello["op"] == 10
        await ws.send_json({"op": 2, "d": identify})
        message = await ws.receive(timeout=5)
        if message.type is not aiohttp.WSMsgType.TEXT:
            return ws.close_code, {}
        ready = json.loads(message.data)
        assert ready["t"] == "READY"
        return None, ready["d"]


@pytest.mark.parametrize("shard", [[2, 2], [0, 0], [-1, 2], [1], "0,1"])
async def test_invalid_shard_closes_with_4010(double: DiscordDouble, shard: Any) -> None:
    """A shard id outside 0..count-1, a count below 1 or a malformed array: close 4010."""
    code, _ = await _identify_raw(double, shard)
    assert code == 4010
    assert double.gateway.identifies == 0 and double.gateway.sessions == {}


async def test_ready_lists_only_the_guilds_of_its_shard(double: DiscordDouble) -> None:
    """READY names the shard's guilds only and echoes ``shard``; no shard means all guilds."""
    zero, one = double.add_guild("Zero", shard=(0, 2)), double.add_guild("One", shard=(1, 2))
    _, ready = await _identify_raw(double, [1, 2])
    assert [g["id"] for g in ready["guilds"]] == [str(one.id)]
    assert ready["shard"] == [1, 2]
    _, unsharded = await _identify_raw(double, None)
    assert [g["id"] for g in unsharded["guilds"]] == [str(zero.id), str(one.id)]
    assert "shard" not in unsharded


async def test_client_with_an_invalid_shard_raises_connection_closed(
    double: DiscordDouble,
) -> None:
    """discord.py gives up on 4010: Client.start raises ConnectionClosed with that code."""
    client = ShardClient(2, 2)
    with double.patched(), pytest.raises(discord.ConnectionClosed) as caught:
        await asyncio.wait_for(client.start(double.token), 10)
    assert caught.value.code == 4010
    assert client.is_closed()


# -- one AutoShardedClient ------------------------------------------------------------------


async def test_auto_sharded_client_gets_each_guild_on_its_own_shard(double: DiscordDouble) -> None:
    """shard_count=2: both shards READY, all guilds cached, each GUILD_CREATE on its shard."""
    zero, one = double.add_guild("Zero", shard=(0, 2)), double.add_guild("One", shard=(1, 2))
    client = AutoBot(shard_count=2)
    with double.patched():
        async with running(double, client):
            await double.wait_shards_ready({0, 1}, count=2)
            await asyncio.wait_for(client.wait_until_ready(), 5)
            found = [client.get_guild(zero.id), client.get_guild(one.id)]
            assert [g.shard_id if g else None for g in found] == [0, 1]
            assert sorted(client.shards) == [0, 1]
            later = double.add_guild("Later", shard=(1, 2))
            await until(lambda: client.get_guild(later.id) is not None, "the joined guild")
            joined = client.get_guild(later.id)
            assert joined is not None and joined.shard_id == 1
    assert routed(double, "GUILD_CREATE", zero.id) == [(0, 2)]
    assert routed(double, "GUILD_CREATE", one.id) == [(1, 2)]
    assert routed(double, "GUILD_CREATE", later.id) == [(1, 2)]
    assert double.gateway.identifies == 2


async def test_auto_sharded_client_uses_the_recommended_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without shard_count, AutoShardedClient runs as many shards as /gateway/bot says."""
    guard_loopback_only(monkeypatch)
    async with DiscordDouble(recommended_shards=3) as double:
        last = double.add_guild("Two of three", shard=(2, 3))
        client = AutoBot()
        with double.patched():
            async with running(double, client):
                await double.wait_shards_ready({0, 1, 2}, count=3)
                await asyncio.wait_for(client.wait_until_ready(), 5)
                assert client.shard_count == 3
                guild = client.get_guild(last.id)
                assert guild is not None and guild.shard_id == 2
        assert double.requests_to("GET", "/gateway/bot")
        assert routed(double, "GUILD_CREATE", last.id) == [(2, 3)]
        assert double.internal_errors == [] and double.unknown_routes == []


# -- shards in separate clients ----------------------------------------------------------------


async def test_separate_shard_clients_see_only_their_guilds_and_events(
    double: DiscordDouble, two_processes: TwoShards
) -> None:
    """Each client caches only its shard's guilds; a guild's events reach only its owner."""
    (g0, g1), (c0, c1) = two_processes.guilds, two_processes.clients
    text1 = two_processes.texts[1]
    assert [g.id for g in c0.guilds] == [g0.id] and [g.id for g in c1.guilds] == [g1.id]
    heard = asyncio.create_task(c1.wait_for("message", check=lambda m: m.guild.id == g1.id))
    posted = double.post_message(text1.id, "for shard 1")
    assert (await asyncio.wait_for(heard, 5)).id == int(posted["id"])
    created = asyncio.create_task(c0.wait_for("guild_channel_create"))
    news = double.add_text_channel(g0.id, "news")
    assert (await asyncio.wait_for(created, 5)).id == news.id
    await applied(double, c0)
    await applied(double, c1)
    assert all(m.id != int(posted["id"]) for m in c0.cached_messages)
    assert c1.get_channel(news.id) is None and c0.get_channel(text1.id) is None
    assert routed(double, "MESSAGE_CREATE", g1.id) == [(1, 2)]
    assert routed(double, "CHANNEL_CREATE", g0.id) == [(0, 2)]


async def test_interactions_reach_only_the_owning_shard(
    double: DiscordDouble, two_processes: TwoShards
) -> None:
    """A slash command in a shard-1 guild runs on shard 1; autocomplete in shard 0's on 0."""
    (g0, g1), (text0, text1), (c0, c1) = (
        two_processes.guilds,
        two_processes.texts,
        two_processes.clients,
    )
    record = await double.invoke_command(g1.id, text1.id, "where")
    await record.wait_done()
    assert record.contents == ["shard 1"]
    assert c1.invoked == [g1.id] and c0.invoked == []
    choices = await double.autocomplete(g0.id, text0.id, "where", None, "hint", "typed")
    assert choices == [{"name": "shard 0", "value": "typed"}]
    assert routed(double, "INTERACTION_CREATE", g1.id) == [(1, 2)]
    assert routed(double, "INTERACTION_CREATE", g0.id) == [(0, 2)]


async def test_overlapping_sessions_of_one_shard_both_receive_its_events(
    double: DiscordDouble,
) -> None:
    """Two live sessions of shard 1 (a rolling restart) both get its guild's events."""
    guild = double.add_guild("One", shard=(1, 2))
    text = double.add_text_channel(guild.id, "general")
    old, new = ShardClient(1, 2), ShardClient(1, 2)
    with double.patched():
        async with running(double, old), running(double, new):
            await double.wait_shards_ready({1}, count=2)
            for client in (old, new):
                await asyncio.wait_for(client.wait_until_ready(), 5)
            heard = [asyncio.create_task(c.wait_for("message", timeout=5)) for c in (old, new)]
            posted = double.post_message(text.id, "to both")
            assert [(await h).id for h in heard] == [int(posted["id"])] * 2
            sessions = {
                d.session_id for d in double.gateway.dispatched if d.event == "MESSAGE_CREATE"
            }
            assert len(sessions) == 2
    assert routed(double, "MESSAGE_CREATE", guild.id) == [(1, 2), (1, 2)]

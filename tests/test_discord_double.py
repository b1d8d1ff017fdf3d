"""The Discord double, driven by the real discord.py client.

These tests pin down both halves of the contract the bot's tests rely on: that the double
answers the way Discord does, and how discord.py reacts (retries, exceptions, nonces).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.discord_double import ROUTE_MESSAGES, CommandNotAvailable, DiscordDouble, P
from tests.discord_double.models import Channel, Guild
from tests.feedserver import guard_loopback_only

MESSAGES_PATH = r"/channels/\d+/messages"
FEEDS = {
    "https://partial.example/feeds/posts/default": "Partial Differential Blog",
    "https://other.example/feeds/posts/default": "Other Blog",
}


class MirrorBot(discord.Client):
    """A minimal bot shaped like blogmirror: non-privileged intents and a /blog group."""

    def __init__(self, guild_id: int) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        # guild_ready_timeout: discord.py waits this long after the last GUILD_CREATE
        # before on_ready; the default 2 s would dominate the test run.
        super().__init__(intents=intents, guild_ready_timeout=0.05)
        self.guild_id = guild_id
        self.tree = app_commands.CommandTree(self)
        self.subscribed: list[tuple[str, discord.abc.GuildChannel, int]] = []
        self.tree.add_command(self._blog_group())

    def _blog_group(self) -> app_commands.Group:
        group = app_commands.Group(
            name="blog",
            description="Mirror a blog",
            default_permissions=discord.Permissions(manage_guild=True),
            guild_only=True,
        )

        @group.command(description="Mirror a blog into a channel")
        async def subscribe(
            interaction: discord.Interaction,
            url: str,
            channel: discord.ForumChannel | discord.TextChannel,
            backfill: app_commands.Range[int, 0, 25] = 1,
        ) -> None:
            self.subscribed.append((url, channel, backfill))
            await interaction.response.send_message(
                f"Subscribed {url} to {channel.name}", ephemeral=True
            )

        @group.command(description="Show a subscription")
        async def status(interaction: discord.Interaction, feed: str) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            await interaction.followup.send(f"{FEEDS.get(feed, 'unknown')}: ok")

        @status.autocomplete("feed")
        async def feed_choices(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            return [
                app_commands.Choice(name=title, value=url)
                for url, title in FEEDS.items()
                if current.lower() in title.lower()
            ]

        return group

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """No pause: discord.py's default sleeps 5 s before every re-IDENTIFY."""

    async def setup_hook(self) -> None:
        guild = discord.Object(self.guild_id)
        self.tree.copy_global_to(guild=guild)
        await self.tree.sync(guild=guild)


@dataclass
class Setup:
    guild: Guild
    forum: Channel
    text: Channel


@pytest.fixture
async def double(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordDouble]:
    guard_loopback_only(monkeypatch)
    async with DiscordDouble() as server:
        yield server
    assert server.internal_errors == []
    assert server.unknown_routes == []


@pytest.fixture
def setup(double: DiscordDouble) -> Setup:
    guild = double.add_guild("Blog Guild")
    forum = double.add_forum_channel(guild.id, "blog", tags=["CRC", "News"])
    text = double.add_text_channel(guild.id, "general")
    return Setup(guild, forum, text)


@pytest.fixture
async def bot(double: DiscordDouble, setup: Setup) -> AsyncIterator[MirrorBot]:
    with double.patched():
        client = MirrorBot(setup.guild.id)
        runner = asyncio.create_task(client.start(double.token))
        try:
            await double.wait_ready()
            await asyncio.wait_for(client.wait_until_ready(), 5)
            yield client
        finally:
            await client.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runner, 5)


def expect(
    bot: MirrorBot, event: str, check: Callable[..., bool] = lambda *_: True
) -> asyncio.Task[Any]:
    """Start waiting for a client event now (``Client.wait_for`` registers only when awaited)."""
    return asyncio.create_task(bot.wait_for(event, check=check, timeout=5))


def text_channel(bot: MirrorBot, setup: Setup) -> discord.TextChannel:
    channel = bot.get_channel(setup.text.id)
    assert isinstance(channel, discord.TextChannel)
    return channel


def forum_channel(bot: MirrorBot, setup: Setup) -> discord.ForumChannel:
    channel = bot.get_channel(setup.forum.id)
    assert isinstance(channel, discord.ForumChannel)
    return channel


# -- raw HTTP ----------------------------------------------------------------------------


async def test_responses_carry_discord_headers_and_429_shape(
    double: DiscordDouble, setup: Setup
) -> None:
    """JSON content type, bucket headers and Via on every answer; 429s shaped like Discord's."""
    double.set_rate_limit("GET /users/@me", 1, 10.0)
    auth = {"Authorization": f"Bot {double.token}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{double.api_base}/users/@me", headers=auth) as ok:
            assert ok.status == 200
            assert ok.headers["Content-Type"] == "application/json"
            assert ok.headers["X-RateLimit-Limit"] == "1"
            assert ok.headers["X-RateLimit-Remaining"] == "0"
            assert float(ok.headers["X-RateLimit-Reset-After"]) > 9
            assert ok.headers["X-RateLimit-Bucket"] and ok.headers["Via"] == "1.1 google"
        async with http.get(f"{double.api_base}/users/@me", headers=auth) as limited:
            assert limited.status == 429
            body = await limited.json()
            assert body["global"] is False and body["retry_after"] > 9
            assert limited.headers["X-RateLimit-Scope"] == "user"
            assert int(limited.headers["Retry-After"]) >= 10 and limited.headers["Via"]
        async with http.get(f"{double.api_base}/channels/1", headers=auth) as unknown:
            assert unknown.status == 404 and (await unknown.json())["code"] == 10003
        async with http.get(f"{double.api_base}/channels/1") as anonymous:
            assert anonymous.status == 401
    assert double.count_429 == 1


# -- gateway: connecting -------------------------------------------------------------------


async def test_ready_delivers_guild_with_forum_and_text_channels(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """IDENTIFY gets READY then GUILD_CREATE with a forum (tags, flags) and a text channel."""
    guild = bot.get_guild(setup.guild.id)
    assert guild is not None
    assert bot.user is not None and bot.user.id == double.bot.id
    assert bot.application_id == double.application_id
    forum = forum_channel(bot, setup)
    assert [t.name for t in forum.available_tags] == ["CRC", "News"]
    assert text_channel(bot, setup).name == "general"
    assert guild.me.guild_permissions.send_messages
    assert not guild.me.guild_permissions.manage_threads
    assert double.gateway.identifies == 1
    assert double.unknown_routes == []


async def test_commands_are_synced_to_the_guild(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """tree.sync() stores the group with its subcommands and Manage Server default."""
    (blog,) = double.commands.commands(setup.guild.id)
    assert blog["name"] == "blog"
    assert blog["default_member_permissions"] == str(P.MANAGE_GUILD.value)
    assert [o["name"] for o in blog["options"]] == ["subscribe", "status"]


# -- messages ------------------------------------------------------------------------------


async def test_enforced_nonce_returns_the_first_message(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """A second create with the same nonce returns the first message and creates nothing."""
    channel = text_channel(bot, setup)
    first = await channel.send("comment 1", nonce="comment-1")
    again = await channel.send("comment 1 (retry)", nonce="comment-1")
    assert again.id == first.id
    stored = double.messages(setup.text.id)
    assert [m["content"] for m in stored] == ["comment 1"]
    assert stored[0]["nonce"] == "comment-1" and stored[0]["enforce_nonce"]


async def test_nonce_of_a_deleted_message_is_not_found(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """Reusing the nonce of a message a moderator deleted gets 404, as discord.py documents."""
    channel = text_channel(bot, setup)
    first = await channel.send("comment", nonce="n-1")
    double.delete_message(setup.text.id, first.id)
    with pytest.raises(discord.NotFound) as caught:
        await channel.send("comment", nonce="n-1")
    assert caught.value.code == 10008


async def test_reply_carries_message_reference_and_allowed_mentions(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """A reply is type 19 with message_reference; allowed_mentions is recorded as sent."""
    channel = text_channel(bot, setup)
    parent = await channel.send("parent")
    reply = await channel.send(
        "child <@123> @everyone", reference=parent, allowed_mentions=discord.AllowedMentions.none()
    )
    stored = double.message(reply.id)
    assert stored["type"] == 19
    assert stored["message_reference"]["message_id"] == str(parent.id)
    assert stored["allowed_mentions"] == {"parse": []}
    assert stored["mentions"] == [] and not stored["mention_everyone"]


async def test_reply_to_missing_message_fails_unless_told_not_to(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """A reply to a deleted message is 400/50035; fail_if_not_exists=False sends it plainly."""
    channel = text_channel(bot, setup)
    parent = await channel.send("parent")
    double.delete_message(setup.text.id, parent.id)
    with pytest.raises(discord.HTTPException) as caught:
        await channel.send("child", reference=parent)
    assert caught.value.status == 400 and caught.value.code == 50035
    loose = discord.MessageReference(
        message_id=parent.id, channel_id=channel.id, fail_if_not_exists=False
    )
    sent = await channel.send("child", reference=loose)
    assert "message_reference" not in double.message(sent.id)


async def test_discord_limits_are_enforced(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """Over-long content and relative embed URLs are refused with 50035, as Discord does."""
    channel = text_channel(bot, setup)
    with pytest.raises(discord.HTTPException) as too_long:
        await channel.send("x" * 2001)
    assert too_long.value.code == 50035
    with pytest.raises(discord.HTTPException) as bad_url:
        await channel.send(embed=discord.Embed(title="t", url="//blog.example/post"))
    assert bad_url.value.code == 50035
    assert double.messages(setup.text.id) == []


async def test_history_is_newest_first_and_pages(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """GET messages returns newest first; discord.py's before/after paging sees every message."""
    channel = text_channel(bot, setup)
    sent = [await channel.send(f"m{i}") for i in range(5)]
    newest = [m.id async for m in channel.history(limit=2)]
    assert newest == [sent[4].id, sent[3].id]
    after = [m.id async for m in channel.history(after=sent[1], limit=None)]
    assert after == [m.id for m in sent[2:]]


async def test_message_delete_reaches_the_client(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """A moderator's deletion in the double arrives as MESSAGE_DELETE."""
    message = await text_channel(bot, setup).send("to be deleted")
    waiter = expect(bot, "raw_message_delete", lambda e: e.message_id == message.id)
    double.delete_message(setup.text.id, message.id, by_moderator=True)
    event = await waiter
    assert event.channel_id == setup.text.id
    assert double.messages(setup.text.id) == []


async def test_bulk_delete_reaches_the_client(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """A moderator's bulk deletion arrives as one MESSAGE_DELETE_BULK naming every message."""
    channel = text_channel(bot, setup)
    sent = [await channel.send(f"m{i}") for i in range(3)]
    waiter = expect(bot, "raw_bulk_message_delete", lambda e: e.channel_id == setup.text.id)
    double.bulk_delete_messages(setup.text.id, [m.id for m in sent[:2]])
    event = await waiter
    assert event.message_ids == {m.id for m in sent[:2]}
    assert [m["id"] for m in double.messages(setup.text.id)] == [str(sent[2].id)]


# -- threads -------------------------------------------------------------------------------


async def test_forum_post_creates_thread_and_starter_message(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """ForumChannel.create_thread makes a thread whose starter message has the thread's id."""
    forum = forum_channel(bot, setup)
    crc = next(t for t in forum.available_tags if t.name == "CRC")
    created = await forum.create_thread(
        name="An article", content="Article body", applied_tags=[crc]
    )
    assert created.thread.id == created.message.id
    (thread,) = double.threads(setup.forum.id)
    assert thread["name"] == "An article" and thread["applied_tags"] == [str(crc.id)]
    (starter,) = double.messages(created.thread.id)
    assert starter["id"] == str(created.thread.id) and starter["content"] == "Article body"


async def test_forum_requiring_a_tag_refuses_untagged_posts(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """A forum with REQUIRE_TAG answers 400/40067 to a post without tags."""
    strict = double.add_forum_channel(setup.guild.id, "strict", tags=["Only"], require_tag=True)
    await asyncio.sleep(0.05)  # CHANNEL_CREATE reaches the client
    forum = bot.get_channel(strict.id)
    assert isinstance(forum, discord.ForumChannel) and forum.flags.require_tag
    with pytest.raises(discord.HTTPException) as caught:
        await forum.create_thread(name="Untagged", content="body")
    assert caught.value.code == 40067


async def test_thread_from_message_shares_the_message_id(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """Message.create_thread makes a thread with the message's id, opened by a type-21 message."""
    article = await text_channel(bot, setup).send("Article")
    thread = await article.create_thread(name="Article")
    assert thread.id == article.id
    assert [t["id"] for t in double.threads(setup.text.id)] == [str(article.id)]
    (starter,) = double.messages(thread.id)
    assert starter["type"] == 21
    assert starter["message_reference"]["message_id"] == str(article.id)
    with pytest.raises(discord.HTTPException) as caught:
        await article.create_thread(name="Again")
    assert caught.value.code == 160004


async def test_posting_reopens_an_archived_thread(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """A post into an archived (unlocked) thread un-archives it and notifies the client."""
    created = await forum_channel(bot, setup).create_thread(name="Post", content="Article")
    double.archive_thread(created.thread.id)
    reopened = expect(bot, "thread_join", lambda t: t.id == created.thread.id)
    await created.thread.send("a new comment")
    assert not double.channel(created.thread.id)["thread_metadata"]["archived"]
    assert not (await reopened).archived
    assert [m["content"] for m in double.messages(created.thread.id)] == [
        "Article",
        "a new comment",
    ]


async def test_locked_thread_refuses_posts_without_manage_threads(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """Posting into a locked thread is 403/50083 unless the bot may manage threads."""
    created = await forum_channel(bot, setup).create_thread(name="Post", content="Article")
    double.lock_thread(created.thread.id)
    with pytest.raises(discord.Forbidden) as caught:
        await created.thread.send("comment")
    assert caught.value.code == 50083
    double.set_bot_permissions(
        setup.guild.id, P.VIEW_CHANNEL | P.SEND_MESSAGES_IN_THREADS | P.MANAGE_THREADS
    )
    await created.thread.send("moderator comment")
    assert len(double.messages(created.thread.id)) == 2


async def test_missing_permission_is_50013(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """A channel overwrite denying Send Messages makes a create 403/50013."""
    double.deny_bot(setup.text.id, P.SEND_MESSAGES)
    with pytest.raises(discord.Forbidden) as caught:
        await text_channel(bot, setup).send("hello")
    assert caught.value.code == 50013


# -- rate limits and faults ----------------------------------------------------------------


async def test_client_honours_bucket_headers_without_429s(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """With 5 messages/s per channel, discord.py paces 12 sends from the headers alone."""
    double.set_rate_limit(ROUTE_MESSAGES, 5, 1.0)
    channel = text_channel(bot, setup)
    for i in range(12):
        await channel.send(f"comment {i}")
    assert double.count_429 == 0
    assert len(double.messages(setup.text.id)) == 12
    assert len(double.requests_to("POST", "/channels/{channel_id}/messages")) == 12


async def test_injected_429_storm_is_retried_once_landed(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """discord.py sleeps retry_after on a 429 (route or global) and the message lands once."""
    double.inject_fault("rate_limit", MESSAGES_PATH, method="POST", times=2, retry_after=0.05)
    double.inject_fault(
        "rate_limit", MESSAGES_PATH, method="POST", scope="global", retry_after=0.05
    )
    await text_channel(bot, setup).send("comment")
    assert double.count_429 == 3
    assert len(double.messages(setup.text.id)) == 1


async def test_long_429_storm_exhausts_discord_py_retries(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """429s count against discord.py's five attempts: a longer storm raises HTTPException 429."""
    double.inject_fault("rate_limit", MESSAGES_PATH, method="POST", times=None, retry_after=0.01)
    with pytest.raises(discord.HTTPException) as caught:
        await text_channel(bot, setup).send("comment")
    assert caught.value.status == 429
    assert double.count_429 == 5
    assert double.messages(setup.text.id) == []


async def test_500_after_commit_is_retried_into_the_same_message(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """A 500 after the message was created is retried by discord.py; the nonce prevents a twin."""
    fault = double.inject_fault("error_after_commit", MESSAGES_PATH, method="POST", status=500)
    sent = await text_channel(bot, setup).send("comment", nonce="c-500")
    assert fault.hits == 1
    assert [m["id"] for m in double.messages(setup.text.id)] == [str(sent.id)]
    assert [r.status for r in double.requests_to("POST", "/channels/{channel_id}/messages")] == [
        500,
        200,
    ]


async def test_503_after_commit_is_not_retried(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """discord.py retries only 500/502/504/524: a 503 raises although the message exists."""
    double.inject_fault("error_after_commit", MESSAGES_PATH, method="POST", status=503)
    with pytest.raises(discord.DiscordServerError):
        await text_channel(bot, setup).send("comment", nonce="c-503")
    assert len(double.messages(setup.text.id)) == 1


async def test_connection_reset_after_commit_raises_in_the_client(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """A reset after the create raises ServerDisconnectedError; the same nonce finds the message."""
    double.inject_fault("reset_after_commit", MESSAGES_PATH, method="POST")
    channel = text_channel(bot, setup)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await channel.send("comment", nonce="c-reset")
    (stored,) = double.messages(setup.text.id)
    again = await channel.send("comment", nonce="c-reset")
    assert str(again.id) == stored["id"]
    assert len(double.messages(setup.text.id)) == 1


# -- interactions --------------------------------------------------------------------------


async def test_slash_command_runs_and_answers_ephemerally(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """INTERACTION_CREATE reaches the handler with a resolved channel; the reply is ephemeral."""
    record = await double.invoke_command(
        setup.guild.id,
        setup.text.id,
        "blog",
        "subscribe",
        {"url": "https://partial.example/", "channel": setup.forum.id, "backfill": 3},
    )
    await record.wait_done()
    assert record.contents == ["Subscribed https://partial.example/ to blog"]
    assert record.ephemeral and record.response_type == 4
    assert double.messages(setup.text.id) == []
    ((url, channel, backfill),) = bot.subscribed
    assert (url, channel.id, backfill) == ("https://partial.example/", setup.forum.id, 3)


async def test_command_needs_its_default_permissions(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """A member without Manage Server is not offered /blog, so the double refuses to send it."""
    with pytest.raises(CommandNotAvailable):
        await double.invoke_command(
            setup.guild.id,
            setup.text.id,
            "blog",
            "status",
            {"feed": "x"},
            member_permissions=P.VIEW_CHANNEL | P.SEND_MESSAGES,
        )


async def test_deferred_command_followup_replaces_the_loading_message(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """defer(ephemeral) then followup.send: the follow-up becomes the ephemeral original."""
    feed = "https://other.example/feeds/posts/default"
    record = await double.invoke_command(
        setup.guild.id, setup.text.id, "blog", "status", {"feed": feed}
    )
    await record.wait_done()
    assert record.deferred
    assert record.contents == ["Other Blog: ok"]
    assert record.ephemeral and record.followups == []


async def test_autocomplete_round_trip(double: DiscordDouble, setup: Setup, bot: MirrorBot) -> None:
    """An autocomplete interaction with the focused option returns the bot's choices."""
    choices = await double.autocomplete(
        setup.guild.id, setup.text.id, "blog", "status", "feed", "parti"
    )
    assert choices == [
        {
            "name": "Partial Differential Blog",
            "value": "https://partial.example/feeds/posts/default",
        }
    ]


# -- gateway faults ------------------------------------------------------------------------


async def test_gateway_drop_resumes_and_replays_missed_events(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """After a 4000 close the client RESUMEs on resume_gateway_url and gets what it missed."""
    await double.drop_gateway(resume=True)
    missed = double.post_message(setup.text.id, "posted while disconnected")
    seen = expect(bot, "message", lambda m: m.id == int(missed["id"]))
    await double.wait_ready()
    assert (await seen).content == ""  # no MESSAGE_CONTENT intent: others' content is empty
    assert double.gateway.resumes == 1 and double.gateway.identifies == 1
    assert double.gateway.paths[-1] == "/ws/resume"
    later = expect(bot, "raw_message_delete")
    double.delete_message(setup.text.id, int(missed["id"]))
    assert (await later).message_id == int(missed["id"])


async def test_abrupt_drop_also_resumes(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """A TCP cut with no close frame (1006) is resumed too."""
    await double.drop_gateway(code=None)
    await double.wait_ready()
    assert double.gateway.resumes == 1


async def test_forgotten_session_makes_the_client_identify_again(
    double: DiscordDouble, setup: Setup, bot: MirrorBot
) -> None:
    """When the session cannot be resumed, INVALID_SESSION makes discord.py IDENTIFY anew."""
    await double.drop_gateway(resume=False)
    await double.wait_ready()
    assert double.gateway.identifies == 2
    message = await text_channel(bot, setup).send("still works")
    assert double.message(message.id)["content"] == "still works"

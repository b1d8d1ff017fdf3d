"""A loopback Discord (REST v10 + gateway) that the real discord.py client talks to.

Discord cannot be reached from the test machine, and mocking discord.py would test our
assumptions about it rather than its behaviour. So tests run the real client against this
double: one aiohttp server on 127.0.0.1 (random port) serving ``/api/v10`` and the gateway
websocket, answering the way Discord does where blogmirror depends on it.

Starting it and pointing discord.py at it::

    async with DiscordDouble() as double:
        guild = double.add_guild("G")          # @everyone, the bot's role, the bot member
        forum = double.add_forum_channel(guild.id, "blog", tags=["CRC", "News"])
        text = double.add_text_channel(guild.id, "general")
        with double.patched():                  # Route.BASE + DEFAULT_GATEWAY, restored after
            task = asyncio.create_task(bot.start(double.token))
            await double.wait_ready()           # READY and every GUILD_CREATE delivered
            await bot.wait_until_ready()
            ...
            await bot.close()

Keep ``patched()`` open for the client's whole life: discord.py reads ``Route.BASE`` on
every request. Build the world before or after connecting; later changes are dispatched
(GUILD_CREATE, CHANNEL_CREATE, ...). Pass ``guild_ready_timeout=0.05`` to the client, or
``on_ready`` waits 2 s after the last GUILD_CREATE; override ``before_identify_hook`` to skip
the 5 s discord.py sleeps before every re-IDENTIFY.

Sharding (rules and guesses in ``shards.py``): a session sees only the guilds of the shard its
IDENTIFY named (``[0, 1]`` without one); guild events and interactions go to that shard's
sessions, guild-less events to shard 0. ``wait_ready()`` waits for any one session::

    double = DiscordDouble(recommended_shards=2)        # "shards" in GET /gateway/bot
    guild = double.add_guild("G", shard=(1, 2))         # (guild.id >> 22) % 2 == 1
    await double.wait_shards_ready({0, 1}, count=2)
    [d.shard for d in double.gateway.dispatched if d.guild_id == guild.id]   # [(1, 2), ...]

Slash commands (the bot must have synced them: option types come from its definitions)::

    record = await double.invoke_command(guild.id, text.id, "blog", "subscribe",
                                         {"url": "https://b.example/", "channel": forum.id})
    await record.wait_done()                   # answered (deferrals: once completed)
    record.contents, record.ephemeral, record.messages, record.response_type, record.rejected
    choices = await double.autocomplete(guild.id, text.id, "blog", "status", "feed", "parti")

``member_permissions=`` sets the invoker's permissions (default: Manage Server); a command
whose ``default_member_permissions`` they lack raises ``CommandNotAvailable``.

Inspecting what the bot did::

    double.messages(channel_or_thread_id)      # oldest first; Discord payloads (string ids)
                                               # plus allowed_mentions, nonce, enforce_nonce
    double.message(message_id), double.channel(id), double.threads(parent_id)
    double.requests / double.requests_to("POST", "/channels/{channel_id}/messages")
    double.count_429, double.unknown_routes, double.commands.commands(guild.id)
    double.gateway.identifies / .resumes / .paths / .dispatched / .ready_shards()

Acting as members and moderators (each dispatches the matching gateway event)::

    double.post_message(thread.id, "text", author_id=None, reply_to=None)
    double.delete_message(channel_id, message_id, by_moderator=True)   # MESSAGE_DELETE
    double.bulk_delete_messages(channel_id, [message_id, ...])         # MESSAGE_DELETE_BULK
    double.delete_thread(thread_id)                                    # THREAD_DELETE
    double.archive_thread(thread_id) / double.lock_thread(thread_id)   # THREAD_UPDATE
    double.set_bot_permissions(guild.id, P.VIEW_CHANNEL | ...)         # GUILD_ROLE_UPDATE
    double.set_overwrite(channel_id, role_or_user_id, allow=..., deny=...)
    double.deny_bot(channel_id, P.SEND_MESSAGES)                       # CHANNEL_UPDATE

Faults (see ``faults.py`` for every kind) and rate limits (see ``ratelimit.py``)::

    double.inject_fault("error_after_commit", r"/channels/\\d+/messages", method="POST",
                        status=500, times=1)
    double.inject_fault("reset_after_commit", ...)    # client: aiohttp.ServerDisconnectedError
    double.inject_fault("rate_limit", ..., scope="global", retry_after=0.1, times=3)
    double.inject_fault("delay", ..., delay=30)
    DiscordDouble(rate_limits=RateLimits.discord_like())   # 5 msgs / 5 s / channel, 50 req/s
    double.set_rate_limit("POST /channels/{channel_id}/messages", 5, 1.0)
    await double.drop_gateway(resume=True, code=4000)  # code=None: TCP cut; resume=False:
                                                       # session forgotten, client re-IDENTIFYs
    double.invalidate_session(resumable=False)         # op 9 now

Discord behaviours reproduced because the bot relies on them: ``enforce_nonce``
de-duplication (``routes_messages.py``), thread rules and forum posts (``routes_threads.py``),
interaction deadlines and deferral semantics (``interactions.py``), size limits
(``validation.py``), permissions with overwrites and error codes 10003/10008/50001/50013/
50083 (``state.py``, ``errors.py``), and content redaction without the MESSAGE_CONTENT intent
(``gateway.py``).
"""

from .double import DiscordDouble
from .faults import Fault, FaultKind
from .interactions import CommandNotAvailable, InteractionRecord
from .models import ChannelType, MessageFlag, P
from .ratelimit import ROUTE_MESSAGES, RateLimits
from .rest import RequestRecord

__all__ = [
    "ROUTE_MESSAGES",
    "ChannelType",
    "CommandNotAvailable",
    "DiscordDouble",
    "Fault",
    "FaultKind",
    "InteractionRecord",
    "MessageFlag",
    "P",
    "RateLimits",
    "RequestRecord",
]

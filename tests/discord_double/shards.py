"""Sharding: which gateway session owns which guild, as Discord decides it.

A bot identifies each session with ``shard: [shard_id, shard_count]`` (no ``shard`` means
``[0, 1]``). A guild belongs to shard ``(guild_id >> 22) % shard_count``; READY lists only
that shard's guilds, and every guild-scoped dispatch (GUILD_*, CHANNEL_*, THREAD_*,
MESSAGE_*, INTERACTION_CREATE, ...) goes only to the sessions owning the guild. Events with
no guild (DMs on Discord) go to shard 0.

What Discord documents and the double reproduces: ``shard_id < shard_count`` and
``shard_count >= 1``, else close 4010 "Invalid shard"; ``GET /gateway/bot`` recommends a
shard count; READY echoes the ``shard`` array it was given.

Guesses (Discord does not document them), chosen to match what bots observe:

* Each session is routed by its *own* ``[id, count]``. Sessions with different counts may
  live side by side (a rolling re-shard): nothing compares them, so a guild can reach one
  session of each count.
* Two live sessions claiming the same shard (an overlapping restart) both receive its
  events until one disconnects; Discord does not drop the older one by itself.
* A malformed ``shard`` (not two integers) closes with 4010 as well.

Not reproduced: 4011 "Sharding required" (too many guilds per shard) and the per-bucket
identify rate limit of ``session_start_limit.max_concurrency``.
"""

from __future__ import annotations

from typing import Any

from .models import Channel

ShardKey = tuple[int, int]
"""``(shard_id, shard_count)`` as sent in IDENTIFY."""

UNSHARDED: ShardKey = (0, 1)

_GUILD_EVENTS_BY_ID = frozenset({"GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE"})
"""Events whose payload is the guild itself (its id is ``id``, not ``guild_id``)."""


class InvalidShard(ValueError):
    """IDENTIFY's ``shard`` is not ``[id, count]`` with ``0 <= id < count``."""


def identify_shard(identify: dict[str, Any]) -> ShardKey:
    """The shard an IDENTIFY asks for; ``[0, 1]`` when it names none."""
    value = identify.get("shard")
    if value is None:
        return UNSHARDED
    if not isinstance(value, list) or len(value) != 2:
        raise InvalidShard(f"shard must be [shard_id, shard_count], not {value!r}")
    shard_id, count = value
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (shard_id, count)):
        raise InvalidShard(f"shard must be two integers, not {value!r}")
    if count < 1 or not 0 <= shard_id < count:
        raise InvalidShard(f"shard {shard_id} of {count} does not exist")
    return shard_id, count


def shard_of(guild_id: int, count: int) -> int:
    return (guild_id >> 22) % count


def owns(shard: ShardKey, guild_id: int | None) -> bool:
    """Whether a session identified as ``shard`` receives events of ``guild_id``."""
    shard_id, count = shard
    if guild_id is None:
        return shard_id == 0
    return shard_of(guild_id, count) == shard_id


def event_guild_id(event: str, data: dict[str, Any], channel: Channel | None) -> int | None:
    """The guild a dispatch belongs to, or None for guild-less events."""
    raw = data.get("id") if event in _GUILD_EVENTS_BY_ID else data.get("guild_id")
    if raw is not None:
        return int(raw)
    return channel.guild_id if channel is not None else None

"""The gateway websocket: HELLO, IDENTIFY/READY, heartbeats, dispatches, RESUME and faults.

discord.py connects with ``?v=10&encoding=json&compress=zlib-stream`` but decodes plain
TEXT frames as JSON without touching its zlib context (``DiscordWebSocket.received_message``
only decompresses ``bytes``), so the double sends uncompressed TEXT frames.

A ``Session`` outlives its connection: dispatches made while the client is disconnected are
numbered and buffered, and a RESUME with the last sequence the client saw replays them, as
Discord does. A session the double forgot (``drop(resume=False)``) answers RESUME with
INVALID_SESSION ``false``, and discord.py then IDENTIFYs afresh.

Any number of sessions may be live at once: the shards of one ``AutoShardedClient``, several
processes each running some shards, or an old and a new process overlapping in a restart.
Each session belongs to the shard its IDENTIFY named and receives only that shard's guilds
(``shards.py`` has the rules and the guesses). ``ready`` is set once any session got READY
and its GUILD_CREATEs (or RESUMED) and cleared when no session is connected: the
single-client view. ``ready_shards()`` is the per-shard view. ``dispatched`` records every
numbered dispatch with the session and shard it went to.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from aiohttp import WSMsgType, web

from .models import Channel, Guild
from .payloads import guild_create_json, user_json
from .shards import UNSHARDED, InvalidShard, ShardKey, event_guild_id, identify_shard, owns

if TYPE_CHECKING:
    from .double import DiscordDouble

log = logging.getLogger(__name__)

GUILDS = 1 << 0
GUILD_MEMBERS = 1 << 1
GUILD_PRESENCES = 1 << 8
GUILD_MESSAGES = 1 << 9
MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT

EVENT_INTENTS = {
    "GUILD_CREATE": GUILDS,
    "GUILD_UPDATE": GUILDS,
    "GUILD_DELETE": GUILDS,
    "GUILD_ROLE_CREATE": GUILDS,
    "GUILD_ROLE_UPDATE": GUILDS,
    "CHANNEL_CREATE": GUILDS,
    "CHANNEL_UPDATE": GUILDS,
    "CHANNEL_DELETE": GUILDS,
    "THREAD_CREATE": GUILDS,
    "THREAD_UPDATE": GUILDS,
    "THREAD_DELETE": GUILDS,
    "MESSAGE_CREATE": GUILD_MESSAGES,
    "MESSAGE_UPDATE": GUILD_MESSAGES,
    "MESSAGE_DELETE": GUILD_MESSAGES,
    "MESSAGE_DELETE_BULK": GUILD_MESSAGES,
}
"""Which intent a dispatch needs; events not listed (INTERACTION_CREATE, ...) always go."""

OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_RESUME = 0, 1, 2, 6
OP_RECONNECT, OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 7, 9, 10, 11

REPLAY_BUFFER = 1000


class Dispatch(NamedTuple):
    """One numbered dispatch as sent to one session."""

    event: str
    seq: int
    shard: ShardKey
    guild_id: int | None
    session_id: str


@dataclass
class Session:
    id: str
    intents: int
    shard: ShardKey = UNSHARDED
    seq: int = 0
    buffer: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=REPLAY_BUFFER))
    connection: Connection | None = None
    ready: bool = False
    """READY and its GUILD_CREATEs (or RESUMED) went out on the current connection."""

    def frame(self, event: str, data: dict[str, Any]) -> str:
        self.seq += 1
        text = json.dumps({"op": OP_DISPATCH, "t": event, "s": self.seq, "d": data})
        self.buffer.append((self.seq, text))
        return text


class Connection:
    """One websocket. Frames go through a queue so synchronous code can dispatch in order."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request
        self.path = request.path
        self.session: Session | None = None
        self.closed_by_server = False
        self._queue: asyncio.Queue[str | Callable[[], None] | None] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write(), name="discord-double-gateway-writer")

    def send(self, item: str | Callable[[], None]) -> None:
        """Queue a frame, or a callback to run once everything queued before it was sent."""
        self._queue.put_nowait(item)

    def op(self, op: int, data: Any) -> None:
        self.send(json.dumps({"op": op, "d": data, "s": None, "t": None}))

    async def _write(self) -> None:
        while (item := await self._queue.get()) is not None:
            if callable(item):
                item()
                continue
            try:
                await self.ws.send_str(item)
            except (ConnectionError, RuntimeError):
                return

    async def stop(self) -> None:
        self._queue.put_nowait(None)
        await asyncio.gather(self._writer, return_exceptions=True)

    async def close(self, code: int, reason: str) -> None:
        self.closed_by_server = True
        await self.ws.close(code=code, message=reason.encode())

    def abort(self) -> None:
        """Cut the TCP connection with no close frame (the client sees code 1006)."""
        self.closed_by_server = True
        if self.request.transport is not None:
            self.request.transport.abort()


class GatewayHub:
    def __init__(self, double: DiscordDouble) -> None:
        self.double = double
        self.sessions: dict[str, Session] = {}
        self.connections: list[Connection] = []
        self.ready = asyncio.Event()
        self.identifies = 0
        self.resumes = 0
        self.heartbeats = 0
        self.paths: list[str] = []
        """The websocket path of every connection, to check RESUME used resume_gateway_url."""
        self.dispatched: list[Dispatch] = []
        """Every numbered dispatch (READY, GUILD_CREATE, events, RESUMED), per session."""
        self._changed = asyncio.Event()

    # -- websocket handler -------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0, timeout=2.0)
        await ws.prepare(request)
        conn = Connection(ws, request)
        self.connections.append(conn)
        self.paths.append(request.path)
        conn.op(OP_HELLO, {"heartbeat_interval": int(self.double.heartbeat_interval * 1000)})
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                await self._on_payload(conn, payload)
        finally:
            self._detach(conn, None if conn.closed_by_server else ws.close_code)
            await conn.stop()
        return ws

    def _detach(self, conn: Connection, close_code: int | None) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
        session = conn.session
        if session is not None and session.connection is conn:
            session.connection = None
            session.ready = False
            if close_code in (1000, 1001):
                # A clean close by the client ends the session, as on Discord. (aiohttp
                # may report 1000 for a close the server started, hence the flag.)
                self.sessions.pop(session.id, None)
        if not any(c.session is not None for c in self.connections):
            self.ready.clear()

    async def _on_payload(self, conn: Connection, payload: dict[str, Any]) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == OP_HEARTBEAT:
            self.heartbeats += 1
            conn.op(OP_HEARTBEAT_ACK, None)
        elif op == OP_IDENTIFY:
            await self._identify(conn, data or {})
        elif op == OP_RESUME:
            self._resume(conn, data or {})

    async def _identify(self, conn: Connection, data: dict[str, Any]) -> None:
        if data.get("token") != self.double.token:
            await conn.close(4004, "Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED_INTENTS & ~self.double.privileged_intents:
            await conn.close(4014, "Disallowed intent(s).")
            return
        try:
            shard = identify_shard(data)
        except InvalidShard:
            await conn.close(4010, "Invalid shard")
            return
        self.identifies += 1
        session = Session(id=secrets.token_hex(16), intents=intents, shard=shard)
        self.sessions[session.id] = session
        self._attach(conn, session)
        world = self.double.world
        guilds = [g for g in world.guilds.values() if owns(shard, g.id)]
        self._send(session, "READY", self._ready_payload(session, data, guilds), None)
        for guild in guilds:
            body = guild_create_json(world, guild, self.double.bot.id)
            self._send(session, "GUILD_CREATE", body, guild.id)
        conn.send(lambda: self._mark_ready(conn, session))

    def _resume(self, conn: Connection, data: dict[str, Any]) -> None:
        session = self.sessions.get(str(data.get("session_id")))
        seq = int(data.get("seq") or 0)
        oldest = session.buffer[0][0] if session and session.buffer else 1
        if session is None or data.get("token") != self.double.token or seq < oldest - 1:
            conn.op(OP_INVALID_SESSION, False)
            return
        self.resumes += 1
        self._attach(conn, session)
        for number, frame in session.buffer:
            if number > seq:
                conn.send(frame)
        self._send(session, "RESUMED", {}, None)
        conn.send(lambda: self._mark_ready(conn, session))

    def _attach(self, conn: Connection, session: Session) -> None:
        previous = session.connection
        if previous is not None and previous is not conn:
            previous.abort()
        session.connection = conn
        session.ready = False
        conn.session = session

    def _mark_ready(self, conn: Connection, session: Session) -> None:
        """Run by the writer once READY/GUILD_CREATE or RESUMED were sent on ``conn``."""
        if session.connection is conn:
            session.ready = True
            self.ready.set()
            self._changed.set()

    def _ready_payload(
        self, session: Session, identify: dict[str, Any], guilds: list[Guild]
    ) -> dict[str, Any]:
        double = self.double
        data: dict[str, Any] = {
            "v": 10,
            "user": user_json(double.bot) | {"verified": True, "mfa_enabled": False},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": double.resume_gateway_url,
            "application": {"id": str(double.application_id), "flags": double.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "auth": {},
        }
        if identify.get("shard") is not None:
            data["shard"] = identify["shard"]
        return data

    # -- readiness ---------------------------------------------------------------------

    def ready_shards(self) -> set[ShardKey]:
        """``(shard_id, shard_count)`` of every connected session that is READY (or RESUMED)."""
        return {s.shard for s in self.sessions.values() if s.ready and s.connection is not None}

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate()`` holds; re-checked whenever a session becomes ready."""
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    def _unready(self) -> None:
        self.ready.clear()
        for session in self.sessions.values():
            session.ready = False

    # -- dispatching -------------------------------------------------------------------

    def dispatch(self, event: str, data: dict[str, Any], channel: Channel | None = None) -> None:
        """Send an event to every session of the shard owning its guild (shard 0 if none);
        a session whose client is disconnected buffers it for a RESUME."""
        world = self.double.world
        known = channel is not None and channel.id in world.channels
        if known and channel is not None and not world.can_view(self.double.bot.id, channel):
            return  # Discord only sends what the bot can see
        needed = EVENT_INTENTS.get(event, 0)
        guild_id = event_guild_id(event, data, channel)
        for session in list(self.sessions.values()):
            if needed and not session.intents & needed:
                continue
            if not owns(session.shard, guild_id):
                continue
            body = data
            if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE"):
                body = self._redact(session, data)
            self._send(session, event, body, guild_id)

    def _send(self, session: Session, event: str, data: dict[str, Any], guild: int | None) -> None:
        frame = session.frame(event, data)
        self.dispatched.append(Dispatch(event, session.seq, session.shard, guild, session.id))
        if session.connection is not None:
            session.connection.send(frame)

    def _redact(self, session: Session, message: dict[str, Any]) -> dict[str, Any]:
        """Without MESSAGE_CONTENT, others' messages arrive with empty content, like Discord."""
        if session.intents & MESSAGE_CONTENT:
            return message
        bot_id = str(self.double.bot.id)
        if message.get("author", {}).get("id") == bot_id:
            return message
        if any(m.get("id") == bot_id for m in message.get("mentions", [])):
            return message
        return message | {"content": "", "embeds": [], "attachments": [], "components": []}

    # -- faults ------------------------------------------------------------------------

    async def drop(self, *, resume: bool = True, code: int | None = 4000) -> None:
        """Close every connection. ``code=None`` cuts TCP (1006); otherwise a close frame.

        With ``resume=False`` the sessions are forgotten first, so discord.py's RESUME gets
        INVALID_SESSION and it identifies again (events in between are lost, as on Discord).
        """
        self._unready()
        if not resume:
            self.sessions.clear()
        for conn in list(self.connections):
            if code is None:
                conn.abort()
            else:
                await conn.close(code, "Dropped by the test double")

    def invalidate_session(self, *, resumable: bool = False) -> None:
        """Send op 9. ``False`` forgets the session (re-IDENTIFY); ``True`` invites a RESUME."""
        self._unready()
        for conn in list(self.connections):
            if not resumable and conn.session is not None:
                self.sessions.pop(conn.session.id, None)
            conn.op(OP_INVALID_SESSION, resumable)

    def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: discord.py closes and resumes."""
        self._unready()
        for conn in list(self.connections):
            conn.op(OP_RECONNECT, None)

    async def close(self) -> None:
        """Server shutdown: cut connections at once (a still-running client will retry)."""
        self._unready()
        for conn in list(self.connections):
            conn.abort()
            await conn.stop()

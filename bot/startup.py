"""Getting through to Discord at start, retried while Discord cannot be reached.

Once the bot has a gateway connection, discord.py's ``connect(reconnect=True)``
rides out drops by itself. Nothing retries what comes before it: ``login``
(``GET /users/@me``, the application, the command sync in ``setup_hook``) and
the very first gateway connection, whose failure ``connect`` cannot survive (it
has no websocket yet to resume from). A bot started while the network, DNS or
Discord is down would exit with a traceback and crash-loop under a service
manager.

``login_when_reachable`` retries those steps: one WARNING line per failed
attempt ("Discord unreachable (…); retrying in N s"), exponential backoff with
jitter from ``RETRY.first`` up to ``RETRY.cap`` seconds, for as long as it
takes, until the bot is closed (SIGTERM/SIGINT), which ends the wait at once.
A token Discord refuses (401) stops it with ``CannotStartError`` (exit 2).

``login`` opens a new discord.py HTTP session on every call, so a failed
attempt's session is closed (and its connector dropped) before the next: one
attempt leaves nothing behind. The bot, the database and the bot's own HTTP
sessions are made once and outlive every attempt.

``RETRY`` is read at each call: ``tests/botprocess.py`` lowers it from the
``TEST_START_RETRY_SECONDS`` environment variable so the tests run fast.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import aiohttp
import discord
from discord.gateway import DiscordWebSocket

from bot.errors import CannotStartError

if TYPE_CHECKING:
    from bot.client import BlogMirrorBot

log = logging.getLogger(__name__)

T = TypeVar("T")

TOKEN_REFUSED = (
    "Discord refused the token (DISCORD_TOKEN): reset it in the developer portal "
    "and update the setting."
)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds between attempts: doubling from ``first`` up to ``cap``, each jittered."""

    first: float = 1.0
    cap: float = 60.0

    def delays(self, rng: Callable[[], float] = random.random) -> Iterator[float]:
        """Each delay lies between half and all of the current step ("equal jitter"), so
        many bots restarted together spread out, and none retries in a tight loop."""
        step = self.first
        while True:
            yield step * (1 + rng()) / 2
            step = min(self.cap, step * 2)


RETRY = Backoff()


class _Stopped(Exception):
    """The bot began to close while an attempt or a wait was under way."""


async def login_when_reachable(
    bot: BlogMirrorBot, token: str, *, backoff: Backoff | None = None
) -> bool:
    """Log in and make sure the gateway answers, retrying while Discord is unreachable.

    Returns True when the bot may ``connect()``, False when it was closed first.
    Raises ``CannotStartError`` when Discord refuses the token or the log-in
    for another reason that retrying cannot cure.
    """
    delays = (backoff or RETRY).delays()
    logged_in = False
    while True:
        try:
            if not logged_in:
                await _unless_stopped(bot, bot.login(token))
                logged_in = True
            await _unless_stopped(bot, _open_gateway_once(bot))
            return True
        except _Stopped:
            return False
        except discord.LoginFailure:
            raise CannotStartError(TOKEN_REFUSED) from None
        except Exception as exc:
            reason = unreachable_reason(exc)
            if reason is None:
                raise _refused(exc) from None
            if bot.stopping.is_set():
                return False
            delay = next(delays)
            log.warning("Discord unreachable (%s); retrying in %.1f s", reason, delay)
            if not logged_in:
                await _forget_http_session(bot)
            try:
                await _unless_stopped(bot, asyncio.sleep(delay))
            except _Stopped:
                return False


def unreachable_reason(exc: BaseException) -> str | None:
    """A few words on why Discord could not be reached, or None when it answered.

    Network failures (DNS, refused or reset connections, timeouts) and 5xx
    answers are worth retrying; any other answer is Discord's final word.
    """
    if isinstance(exc, discord.HTTPException):
        return f"HTTP {exc.status} from Discord" if exc.status >= 500 else None
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup of {exc.host} failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {_os_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"the gateway answered HTTP {exc.status}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return str(exc) or type(exc).__name__
    return None


def _refused(exc: Exception) -> Exception:
    if isinstance(exc, discord.HTTPException) and exc.status == 401:
        return CannotStartError(TOKEN_REFUSED)
    if isinstance(exc, discord.HTTPException):
        return CannotStartError(f"Discord refused to log the bot in ({exc}).")
    return exc


def _os_reason(exc: OSError) -> str:
    """The OS's words ("Connection refused"), not aiohttp's "Connect call failed (...)"."""
    if exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror or type(exc).__name__


async def _open_gateway_once(bot: BlogMirrorBot) -> None:
    """Open one websocket to the gateway and close it again, without identifying.

    ``Client.connect`` retries a dropped gateway only once it has had a first
    websocket; a failure of that very first one ends it with a traceback. So
    the gateway is reached once here, where a failure is retried like a failed
    log-in. (A gateway going down in the instant between this and ``connect``
    is not covered.)
    """
    url = DiscordWebSocket.DEFAULT_GATEWAY.with_query(v=10, encoding="json")
    websocket = await bot.http.ws_connect(str(url))
    await websocket.close()


async def _forget_http_session(bot: BlogMirrorBot) -> None:
    """Close the session a failed ``login`` opened; the next ``login`` opens a fresh one.

    Closing the session closes its connector too, so the connector is dropped
    as well (discord.py makes a new one when it is missing).
    """
    await bot.http.close()
    bot.http.connector = discord.utils.MISSING
    bot.http.clear()


async def _unless_stopped(bot: BlogMirrorBot, work: Awaitable[T]) -> T:
    """Await ``work``, or cancel it and raise ``_Stopped`` as soon as the bot begins to close."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(bot.stopping.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
        stopping.cancel()
        await asyncio.gather(task, stopping, return_exceptions=True)
    if task.cancelled():
        raise _Stopped
    return task.result()

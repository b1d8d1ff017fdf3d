"""A small Discord REST adapter for the writes discord.py would retry without a nonce.

discord.py silently repeats a request that got a 500/502/504. For a message
sent with a nonce that is harmless (Discord returns the first message), but a
forum post carries no nonce: each repeat makes another post. Forum posts are
therefore made here, with one request per call and nothing repeated behind
the caller's back; ``bot/outbox.py`` decides what happens after an uncertain
answer (look first, then try again).

Errors are raised as discord.py's own exceptions (``Forbidden``, ``NotFound``,
``DiscordServerError``, ``HTTPException``), so one policy handles every write.
The session is created in ``run_bot`` (or the tests' harness) and closed there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
import discord

from bot import __version__
from bot.pacing import Pacer

log = logging.getLogger(__name__)

# Discord asks for ``DiscordBot ($url, $version)``; discord.py's own, plus ours.
USER_AGENT = (
    f"DiscordBot (https://github.com/Rapptz/discord.py {discord.__version__}) "
    f"blogmirror/{__version__}"
)
RATE_LIMIT_ATTEMPTS = 5


class DiscordRest:
    """One-shot Discord requests, paced under the global limit with the rest of the bot."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        token: str,
        pacer: Pacer,
    ) -> None:
        self.session = session
        self._token = token
        self.pacer = pacer
        self._not_before: dict[str, float] = {}

    def __repr__(self) -> str:  # never show the token
        return f"<DiscordRest base={discord.http.Route.BASE!r}>"

    async def create_forum_post(self, forum_id: int, payload: dict[str, Any]) -> tuple[int, int]:
        """POST one forum post; returns ``(thread id, first message id)``.

        A 429 made nothing, so it is waited out and repeated here (paced again);
        any other failure is raised for the caller to judge.
        """
        data = await self._request("POST", f"/channels/{forum_id}/threads", payload)
        thread_id = int(data["id"])
        message = data.get("message") or {}
        return thread_id, int(message.get("id") or thread_id)

    async def _request(self, method: str, path: str, payload: dict[str, Any]) -> Any:
        url = f"{discord.http.Route.BASE}{path}"
        headers = {
            "Authorization": f"Bot {self._token}",
            "User-Agent": USER_AGENT,
            "Content-Type": "application/json",
        }
        bucket = f"{method} {path}"
        for attempt in range(RATE_LIMIT_ATTEMPTS):
            # The caller (``send_once``) paced the first try and bounds the call in
            # time; a try that had to wait is paced again, where it really starts.
            wait = self._not_before.get(bucket, 0.0) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if wait > 0 or attempt > 0:
                await self.pacer.acquire()
            async with self.session.request(
                method, url, data=json.dumps(payload), headers=headers
            ) as resp:
                text = await resp.text()
                self._note_bucket(bucket, resp.headers)
                data = _json(text)
                if 200 <= resp.status < 300 and isinstance(data, dict):
                    return data
                if resp.status == 429:
                    retry_after = data.get("retry_after", 1) if isinstance(data, dict) else 1
                    log.info("Rate limited on %s; retrying in %.2f s", bucket, retry_after)
                    await asyncio.sleep(float(retry_after))
                    continue
                error = data if isinstance(data, dict) else text[:200]
                if resp.status == 403:
                    raise discord.Forbidden(resp, error)
                if resp.status == 404:
                    raise discord.NotFound(resp, error)
                if resp.status >= 500:
                    raise discord.DiscordServerError(resp, error)
                raise discord.HTTPException(resp, error)
        raise discord.DiscordServerError(_Stub(429, "Too Many Requests"), "rate limited")

    def _note_bucket(self, bucket: str, headers: Any) -> None:
        if headers.get("X-RateLimit-Remaining") == "0":
            after = float(headers.get("X-RateLimit-Reset-After", "1"))
            self._not_before[bucket] = time.monotonic() + after


class _Stub:
    """Enough of a response for discord.py's exception constructors."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


def _json(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None

"""Client-side pacing for Discord's global rate limit.

discord.py honours per-route buckets before it sends, from the ``X-RateLimit-*``
headers, but Discord's global limit (50 requests per second per bot) sends no
headers: discord.py learns of it only from a 429. A backfill fills the global
limit by itself: ten threads each posting at their bucket's 5 per second are
50 requests a second, and every thread creation on top is one too many.
``Pacer`` keeps the bot's own requests under the limit so the 429 never comes.

It is a sliding-window log: a request may start only when fewer than ``limit``
requests started in the last ``per + margin`` seconds. Any window Discord counts
in (fixed or sliding, of ``per`` seconds, wherever it starts) therefore sees at
most ``limit`` of the bot's requests, as long as each request reaches Discord
within ``margin`` of leaving the pacer. The margin costs little: at 50 per
1.05 s a saturated backfill runs at 95% of the limit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

DISCORD_GLOBAL_LIMIT = 50
"""Requests per second Discord allows a bot across all routes."""
DEFAULT_MARGIN = 0.05
"""Seconds added to each window: the latency a request may take to reach Discord."""


class Pacer:
    """``async with pacer:`` before each REST request; at most ``limit`` per window."""

    def __init__(
        self,
        limit: int = DISCORD_GLOBAL_LIMIT,
        per: float = 1.0,
        *,
        margin: float = DEFAULT_MARGIN,
    ) -> None:
        if limit < 1 or per <= 0 or margin < 0:
            raise ValueError("a pacer needs limit >= 1, per > 0 and margin >= 0")
        self.limit = limit
        self.window = per + margin
        # Start times of the last ``limit`` requests, oldest first.
        self._starts: deque[float] = deque(maxlen=limit)
        # Waiters queue here in arrival order, so no request is starved.
        self._turn = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until one more request fits in the window, then count it as started."""
        async with self._turn:
            loop = asyncio.get_running_loop()
            while len(self._starts) == self.limit:
                delay = self._starts[0] + self.window - loop.time()
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
            self._starts.append(loop.time())

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

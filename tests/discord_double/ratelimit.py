"""Discord-style rate limits: per-route buckets keyed by major parameter, plus a global limit.

Every response carries ``X-RateLimit-Limit/Remaining/Reset/Reset-After/Bucket``; discord.py
reads them and waits *before* the next request, so a well-behaved client never sees a 429
from a bucket. The global limit has no headers (as on Discord), so only a 429 reveals it.

Buckets are fixed windows that start with their first request. ``Reset-After`` is rounded
up to the millisecond so a client that sleeps exactly that long never arrives early.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field

ROUTE_MESSAGES = "POST /channels/{channel_id}/messages"


@dataclass
class RateLimits:
    """Limits as ``(requests, per_seconds)``. Defaults are generous; see ``discord_like()``."""

    routes: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Route key (``"METHOD /template"``, as in ``discord.http.Route``) -> limit."""
    default: tuple[int, float] = (50, 1.0)
    global_limit: tuple[int, float] = (500, 1.0)

    @classmethod
    def discord_like(cls) -> RateLimits:
        """Close to Discord's real numbers: 5 messages per 5 s per channel, 50 requests/s."""
        return cls(routes={ROUTE_MESSAGES: (5, 5.0)}, default=(50, 1.0), global_limit=(50, 1.0))

    def for_route(self, route_key: str) -> tuple[int, float]:
        return self.routes.get(route_key, self.default)


@dataclass
class Verdict:
    """The outcome of counting one request: allowed or not, and the headers to send."""

    allowed: bool
    headers: dict[str, str]
    retry_after: float = 0.0


class _Window:
    def __init__(self, limit: int, per: float) -> None:
        self.limit = limit
        self.per = per
        self.remaining = limit
        self.resets_at = 0.0

    def hit(self, now: float) -> bool:
        if now >= self.resets_at:
            self.remaining = self.limit
            self.resets_at = now + self.per
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


def _ceil_ms(seconds: float) -> float:
    return math.ceil(max(seconds, 0.0) * 1000) / 1000


class RateLimiter:
    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self._buckets: dict[tuple[str, str], _Window] = {}
        self._global: _Window | None = None

    def reset(self) -> None:
        self._buckets.clear()
        self._global = None

    @staticmethod
    def bucket_hash(route_key: str) -> str:
        return hashlib.sha1(route_key.encode()).hexdigest()[:16]

    def hit_global(self) -> Verdict:
        limit, per = self.limits.global_limit
        if self._global is None or (self._global.limit, self._global.per) != (limit, per):
            self._global = _Window(limit, per)
        now = time.monotonic()
        if self._global.hit(now):
            return Verdict(True, {})
        retry_after = _ceil_ms(self._global.resets_at - now)
        return Verdict(False, global_429_headers(retry_after), retry_after)

    def hit(self, route_key: str, major: str) -> Verdict:
        limit, per = self.limits.for_route(route_key)
        window = self._buckets.get((route_key, major))
        if window is None or (window.limit, window.per) != (limit, per):
            window = self._buckets[(route_key, major)] = _Window(limit, per)
        now = time.monotonic()
        allowed = window.hit(now)
        reset_after = _ceil_ms(window.resets_at - now)
        headers = {
            "X-RateLimit-Limit": str(window.limit),
            "X-RateLimit-Remaining": str(window.remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": self.bucket_hash(route_key),
        }
        if allowed:
            return Verdict(True, headers)
        headers.update(route_429_headers(reset_after, scope="user"))
        return Verdict(False, headers, reset_after)


def route_429_headers(retry_after: float, *, scope: str) -> dict[str, str]:
    return {"Retry-After": str(math.ceil(retry_after)), "X-RateLimit-Scope": scope}


def global_429_headers(retry_after: float) -> dict[str, str]:
    return {
        "Retry-After": str(math.ceil(retry_after)),
        "X-RateLimit-Global": "true",
        "X-RateLimit-Scope": "global",
    }


def body_429(retry_after: float, *, is_global: bool) -> dict[str, object]:
    return {
        "message": "You are being rate limited.",
        "retry_after": retry_after,
        "global": is_global,
        "code": 0,
    }

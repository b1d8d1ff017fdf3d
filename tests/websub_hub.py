"""A local WebSub hub on 127.0.0.1 that plays the part of pubsubhubbub.appspot.com in tests.

It does what a real hub does, over real HTTP: takes subscribe and unsubscribe
requests (answering 202), verifies each intent by calling the subscriber's
callback with ``hub.mode``, ``hub.topic``, ``hub.challenge`` and
``hub.lease_seconds`` and checking the echo, and publishes notifications signed
with each subscriber's secret. On demand it misbehaves: answers requests with an
error status or too slowly, never verifies, grants a lease of its choosing, signs with another
algorithm, a wrong secret or not at all, or denies a subscription. It can also
send a verification nobody asked for, as an attacker would.

Typical use::

    async with HubDouble() as hub:
        ...  # the subscriber asks hub.url to subscribe
        await hub.wait_for(lambda: hub.active(topic))
        statuses = await hub.publish(topic, b"<feed/>")
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

import aiohttp
from aiohttp import web

Signing = Literal["good", "bad", "missing"]


@dataclass(frozen=True)
class HubRequest:
    """One (un)subscription request the hub received."""

    mode: str
    topic: str
    callback: str
    secret: str | None
    lease_seconds: int | None


@dataclass(frozen=True)
class Verification:
    """One intent verification the hub sent, and how the subscriber answered."""

    mode: str
    topic: str
    callback: str
    status: int
    confirmed: bool
    """2xx with the challenge echoed exactly."""


@dataclass
class HubSubscription:
    callback: str
    topic: str
    secret: str | None
    lease_seconds: int


@dataclass
class HubDouble:
    fail_status: int | None = None
    """Answer (un)subscription requests with this status instead of 202, and do nothing."""
    verify: bool = True
    """False: accept requests (202) but never verify them."""
    grant_lease: int | None = None
    """Lease to grant instead of the one asked for."""
    algorithm: str = "sha256"
    delay: float = 0.0
    """Seconds to wait before answering an (un)subscription request."""
    requests: list[HubRequest] = field(default_factory=list)
    verifications: list[Verification] = field(default_factory=list)
    subscriptions: dict[tuple[str, str], HubSubscription] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- what tests look at -----------------------------------------------------------

    def active(self, topic: str) -> list[HubSubscription]:
        """The verified subscriptions of ``topic``."""
        return [sub for (_, t), sub in self.subscriptions.items() if t == topic]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``condition()`` holds after some hub event (request, verification)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(condition)

    # --- what a hub does --------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        lease = form.get("hub.lease_seconds")
        secret = form.get("hub.secret")
        hub_request = HubRequest(
            mode=str(form.get("hub.mode", "")),
            topic=str(form.get("hub.topic", "")),
            callback=str(form.get("hub.callback", "")),
            secret=str(secret) if secret is not None else None,
            lease_seconds=int(str(lease)) if lease is not None else None,
        )
        await self._record(lambda: self.requests.append(hub_request))
        await asyncio.sleep(self.delay)
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text="hub trouble")
        if hub_request.mode not in ("subscribe", "unsubscribe"):
            return web.Response(status=400, text="unknown hub.mode")
        if self.verify:
            task = asyncio.create_task(self._verify_request(hub_request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.Response(status=202)

    async def _verify_request(self, hub_request: HubRequest) -> None:
        lease = self.grant_lease or hub_request.lease_seconds or 86_400
        verification = await self.verify_intent(
            hub_request.callback, hub_request.topic, hub_request.mode, lease
        )
        if not verification.confirmed:
            return
        key = (hub_request.callback, hub_request.topic)
        if hub_request.mode == "subscribe":
            subscription = HubSubscription(
                hub_request.callback, hub_request.topic, hub_request.secret, lease
            )
            await self._record(lambda: self.subscriptions.__setitem__(key, subscription))
        else:
            await self._record(lambda: self.subscriptions.pop(key, None))

    async def verify_intent(
        self,
        callback: str,
        topic: str,
        mode: str,
        lease_seconds: int = 86_400,
        *,
        challenge: str | None = None,
    ) -> Verification:
        """Send one verification GET (also usable on its own, as a forger would).

        ``challenge``: sent instead of a random one; ``""`` sends none at all.
        """
        assert self._session is not None
        challenge = secrets.token_urlsafe(16) if challenge is None else challenge
        params = {"hub.mode": mode, "hub.topic": topic}
        if challenge:
            params["hub.challenge"] = challenge
        if mode == "subscribe":
            params["hub.lease_seconds"] = str(lease_seconds)
        async with self._session.get(callback, params=params) as response:
            text = await response.text()
            verification = Verification(
                mode,
                topic,
                callback,
                response.status,
                response.ok and bool(text) and text == challenge,
            )
        await self._record(lambda: self.verifications.append(verification))
        return verification

    async def deny(self, callback: str, topic: str, reason: str) -> int:
        """Tell the subscriber its subscription was denied; returns its status."""
        assert self._session is not None
        params = {"hub.mode": "denied", "hub.topic": topic, "hub.reason": reason}
        async with self._session.get(callback, params=params) as response:
            self.subscriptions.pop((callback, topic), None)
            return response.status

    async def publish(
        self,
        topic: str,
        body: bytes = b"<feed xmlns='http://www.w3.org/2005/Atom'/>",
        *,
        signing: Signing = "good",
        algorithm: str | None = None,
    ) -> list[int]:
        """Notify every subscriber of ``topic``; returns the statuses they answered."""
        return [
            await self.notify(sub.callback, sub.secret, body, signing=signing, algorithm=algorithm)
            for sub in self.active(topic)
        ]

    async def notify(
        self,
        callback: str,
        secret: str | None,
        body: bytes,
        *,
        signing: Signing = "good",
        algorithm: str | None = None,
    ) -> int:
        """One content notification to ``callback``; returns the status it answered."""
        assert self._session is not None
        method = algorithm or self.algorithm
        headers = {"Content-Type": "application/atom+xml"}
        if signing != "missing":
            key = (secret or "") if signing == "good" else "not-the-secret"
            digest = hmac.new(key.encode(), body, getattr(hashlib, method)).hexdigest()
            headers["X-Hub-Signature"] = f"{method}={digest}"
        async with self._session.post(callback, data=body, headers=headers) as response:
            return response.status

    async def _record(self, change: Callable[[], object]) -> None:
        async with self._changed:
            change()
            self._changed.notify_all()

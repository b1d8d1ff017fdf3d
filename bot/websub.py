"""WebSub push (SPEC §6): subscribe pushable feeds at their hub, poll at once on notification.

How it fits together:

* Every poll that reads a feed body reports the feed's ``rel="hub"`` and
  ``rel="self"`` links (``PollSummary.push_links``); ``WebSub.observe`` keeps one
  ``push_topics`` row per pushable feed of a subscription (the posts feed and the
  blog-wide comments feed). Every request to a hub goes out from one maintenance
  task (``maintain``), so a slow hub never holds up a poll or a command.
* Each row has its own callback URL, ``PUBLIC_URL/websub/<token>``, the token
  unguessable (``secrets.token_urlsafe``), and its own secret for the hub's
  signatures. The callback never fetches anything a request names.
* The callback GET confirms only an intent we asked for and still await (topic
  and mode must match the row): it echoes ``hub.challenge`` and records the lease.
  Anything else gets 404, so nobody can subscribe us to anything.
* The callback POST checks ``X-Hub-Signature`` (HMAC of the raw body with the
  row's secret: sha1, sha256, sha384 or sha512; compared in constant time). A
  notification without a valid signature is ignored but still answered 202, as
  the WebSub recommendation allows: an attacker learns nothing about the secret
  from the status, and a hub is not made to retry. A valid one asks for a poll.
* **The pushed body is not used**: it only proves the hub has news. The
  subscription is polled through the normal poller, which keeps exactly-once
  delivery, conditional GET, comment paging and the worker-pool parsing in one
  place, and a hub that pushes only the changed entries (or an abbreviated feed)
  cannot be mistaken for the feed. The cost is one conditional GET per
  notification, usually of a body that changed anyway.
* Notifications are coalesced per subscription (``Coalescer``): a burst within
  ``COALESCE_SECONDS`` is one poll, and notifications arriving while that poll
  runs cause exactly one more poll after it, never a concurrent one. A
  subscription's two topics (posts and comments) share one poll, which reads both.
* Leases are renewed at ``RENEW_FRACTION`` of their length. A hub that refuses,
  fails, times out or never verifies within ``VERIFY_TIMEOUT`` leaves the row
  ``unavailable`` with the reason in plain words; polling goes on unchanged and
  the hub is tried again after ``RETRY_UNAVAILABLE``. Removing a subscription
  unsubscribes at the hub (``remove``), before the subscription row is deleted.
* While every pushable feed of a subscription is pushed under a valid lease,
  its polling is only a safety net, every ``SAFETY_FACTOR`` × its interval
  (``safety_interval``).

Hub URLs pass the same address guard as feeds (``bot.fetch.check_hop`` on the
literal host, the session's ``GuardedResolver`` on names): a hub on a private
address is refused unless ``ALLOW_PRIVATE_ADDRESSES`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import aiohttp
from aiohttp import web
from yarl import URL

from bot.errors import BlockedAddressError, FeedError
from bot.fetch import check_hop
from bot.models import PushLinks
from storage.db import UniqueViolation
from storage.push import PushRepo, PushRowMissingError, PushState, PushTopic

log = logging.getLogger(__name__)

CALLBACK_PREFIX: Final = "/websub/"
LEASE_SECONDS: Final = 10 * 86_400
"""Lease asked of the hub; the hub's answer at verification is what counts."""
MIN_LEASE_SECONDS: Final = 1
MAX_LEASE_SECONDS: Final = 366 * 86_400
"""Longer leases are counted as this (renewed early rather than never)."""
RENEW_FRACTION: Final = 0.85
VERIFY_TIMEOUT: Final = timedelta(minutes=5)
RETRY_UNAVAILABLE: Final = timedelta(hours=6)
SAFETY_FACTOR: Final = 4
COALESCE_SECONDS: Final = 1.0
HUB_TIMEOUT_SECONDS: Final = 30.0
MAINTAIN_SECONDS: Final = 30.0
MAX_CHALLENGE_LENGTH: Final = 1024
MAX_REASON_LENGTH: Final = 200
_NEVER: Final = timedelta(days=36_500)
_SIGNATURE_METHODS: Final = frozenset({"sha1", "sha256", "sha384", "sha512"})
_CHUNK: Final = 64 * 1024

OnNotify = Callable[[int], Awaitable[None]]
"""Polls one subscription now and returns when that poll is done."""


def safety_interval(interval_seconds: int, pushed: bool) -> int:
    """Seconds between polls of a subscription: its interval, or ``SAFETY_FACTOR`` × it
    while every one of its feeds is pushed (``WebSub.pushed`` says which are)."""
    return interval_seconds * SAFETY_FACTOR if pushed else interval_seconds


def callback_url(public_url: str, token: str) -> str:
    """The callback URL of one push row: ``PUBLIC_URL/websub/<token>``."""
    return public_url.rstrip("/") + CALLBACK_PREFIX + token


def sign(secret: str, body: bytes, method: str = "sha256") -> str:
    """An ``X-Hub-Signature`` value for ``body``: ``method=hexdigest``."""
    return f"{method}={hmac.new(secret.encode(), body, method).hexdigest()}"


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """True when ``header`` is a correct ``X-Hub-Signature`` of ``body`` (constant-time)."""
    if not header or "=" not in header:
        return False
    method, _, given = header.strip().partition("=")
    method = method.strip().lower()
    if method not in _SIGNATURE_METHODS:
        return False
    expected = hmac.new(secret.encode(), body, method).hexdigest()
    return hmac.compare_digest(expected, given.strip().lower())


class Coalescer:
    """Turns notifications into polls: at most one running per subscription, bursts merged.

    ``notify`` only marks the subscription; one drain task waits
    ``window`` seconds after the first mark (so a burst gathers), then starts
    one poll per marked subscription. A subscription marked again while its poll
    runs gets exactly one more poll after it: the news may have come after that
    poll's fetch.
    """

    def __init__(self, on_notify: OnNotify, *, window: float = COALESCE_SECONDS) -> None:
        self._on_notify = on_notify
        self._window = window
        self._marked: set[int] = set()
        self._again: set[int] = set()
        self._wakeup = asyncio.Event()
        self._running: dict[int, asyncio.Task[None]] = {}
        self._drainer: asyncio.Task[None] | None = None

    @property
    def queued(self) -> frozenset[int]:
        """Subscriptions whose poll is running with one more owed after it."""
        return frozenset(self._again)

    def notify(self, subscription_id: int) -> None:
        self._marked.add(subscription_id)
        self._wakeup.set()

    def start(self) -> None:
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain(), name="websub-coalescer")

    async def stop(self) -> None:
        tasks = [*self._running.values(), *([self._drainer] if self._drainer else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._drainer = None
        self._running.clear()

    async def _drain(self) -> None:
        while True:
            await self._wakeup.wait()
            await asyncio.sleep(self._window)
            self._wakeup.clear()
            batch, self._marked = self._marked, set()
            for subscription_id in sorted(batch):
                if subscription_id in self._running:
                    self._again.add(subscription_id)
                else:
                    self._running[subscription_id] = asyncio.create_task(
                        self._poll(subscription_id), name=f"websub-poll-{subscription_id}"
                    )

    async def _poll(self, subscription_id: int) -> None:
        try:
            while True:
                try:
                    await self._on_notify(subscription_id)
                except Exception:
                    log.exception(
                        "Poll of subscription %s after a notification failed", subscription_id
                    )
                if subscription_id not in self._again:
                    return
                self._again.discard(subscription_id)
        finally:
            self._running.pop(subscription_id, None)


class WebSub:
    """The bot's WebSub subscriber: hub requests, the callback handlers, leases, status.

    Built in ``main()`` when ``PUBLIC_URL`` is set, with the bot's HTTP session
    (the one carrying the address guard). ``start``/``stop`` run the coalescer
    and the maintenance loop; ``routes()`` go on the bot's web server.
    """

    def __init__(
        self,
        repo: PushRepo,
        session: aiohttp.ClientSession,
        *,
        public_url: str,
        allow_private: bool,
        on_notify: OnNotify,
        max_body_bytes: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lease_seconds: int = LEASE_SECONDS,
        hub_timeout: float = HUB_TIMEOUT_SECONDS,
        coalesce_seconds: float = COALESCE_SECONDS,
        maintain_seconds: float = MAINTAIN_SECONDS,
        verify_timeout: timedelta = VERIFY_TIMEOUT,
        retry_unavailable: timedelta = RETRY_UNAVAILABLE,
    ) -> None:
        self.repo = repo
        self.session = session
        self.public_url = public_url
        self.allow_private = allow_private
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.hub_timeout = hub_timeout
        self.maintain_seconds = maintain_seconds
        self.verify_timeout = verify_timeout
        self.retry_unavailable = retry_unavailable
        self.coalescer = Coalescer(on_notify, window=coalesce_seconds)
        self._maintainer: asyncio.Task[None] | None = None
        # Set when rows are due now (new feeds, removals): the hub requests go out at once.
        self._wake = asyncio.Event()

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the coalescer and the maintenance loop (renewals, deadlines, retries)."""
        self.coalescer.start()
        if self._maintainer is None:
            self._maintainer = asyncio.create_task(self._maintain_forever(), name="websub-leases")

    async def stop(self) -> None:
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintainer
            self._maintainer = None
        await self.coalescer.stop()

    async def _maintain_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.maintain()
            except Exception:
                log.exception("WebSub maintenance round failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.maintain_seconds):
                    await self._wake.wait()

    # --- what the rest of the bot calls ---------------------------------------------------

    async def observe(self, subscription_id: int, links: Iterable[PushLinks]) -> None:
        """Bring the subscription's push rows in line with what its feeds advertise.

        Called after a poll with ``PollSummary.push_links``: a new pushable feed
        gets a row to subscribe at its hub; a feed whose hub or topic changed is
        unsubscribed at the old hub and subscribed at the new; a feed without a
        hub gets a row saying so (then the subscription is not fully pushed).
        Only the database is touched here: the hub requests go out from the
        maintenance task, so a slow hub never holds up a poll. Push trouble never
        breaks polling, so nothing is raised.
        """
        now = self.clock()
        try:
            rows = {r.feed_url: r for r in await self.repo.for_subscription(subscription_id)}
            for link in links:
                hub = link.hub_url
                topic = (link.self_url or link.feed_url) if hub else None
                row = rows.get(link.feed_url)
                if row is not None and row.hub_url == hub and row.topic_url == topic:
                    continue
                if row is not None:
                    await self.repo.retire(now=now, push_id=row.id)
                try:
                    await self._new_row(subscription_id, link.feed_url, hub, topic, now)
                except UniqueViolation:
                    # A poll running at the same time (the scheduler's and a push's) got here first.
                    log.debug("WebSub: %s already being set up", link.feed_url)
        except Exception:
            log.exception("WebSub: could not record the hub of subscription %s", subscription_id)
        self._wake.set()

    async def remove(self, subscription_id: int) -> None:
        """Unsubscribe the subscription's feeds at their hubs; call before deleting it.

        Its rows are detached, so deleting the subscription leaves them to
        answer the hubs' unsubscribe verifications; the requests go out from
        the maintenance task (``/blog unsubscribe`` does not wait for hubs).
        """
        await self.repo.retire(now=self.clock(), subscription_id=subscription_id)
        self._wake.set()

    async def pushed(self, subscription_ids: Iterable[int]) -> set[int]:
        """Which of these subscriptions are fully pushed now (see ``safety_interval``)."""
        return await self.repo.pushed_subscriptions(subscription_ids, self.clock())

    async def status_line(self, subscription_id: int) -> str:
        """``/blog status`` in plain words: "push: active until …" or "push: not available: …"."""
        rows = await self.repo.for_subscription(subscription_id)
        return describe(rows, self.clock())

    async def maintain(self) -> None:
        """One round: verification deadlines, lease renewals, retries, orphaned rows."""
        now = self.clock()
        for row in await self.repo.claim_due(now, hold_until=now + self.verify_timeout):
            try:
                await self._attend(row, now)
            except PushRowMissingError:
                continue  # removed while we looked at it
            except Exception:
                log.exception("WebSub upkeep of %s failed", row.topic_url or row.feed_url)

    # --- the callback ---------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        """The callback handlers, for the bot's aiohttp web server."""
        path = CALLBACK_PREFIX + "{token}"
        return [web.get(path, self.handle_verification), web.post(path, self.handle_notification)]

    async def handle_verification(self, request: web.Request) -> web.StreamResponse:
        """The hub confirms an intent (or says it denied one): answer only what we asked."""
        row = await self.repo.by_token(request.match_info["token"])
        query = request.query
        mode = query.get("hub.mode", "")
        topic = query.get("hub.topic", "")
        if row is None or row.topic_url is None or topic != row.topic_url:
            return web.Response(status=404)
        now = self.clock()
        if mode in ("subscribe", "unsubscribe"):
            challenge = query.get("hub.challenge", "")
            if not challenge or len(challenge) > MAX_CHALLENGE_LENGTH:
                return web.Response(status=404)
            if mode == "subscribe":
                lease = _lease_seconds(query.get("hub.lease_seconds"), self.lease_seconds)
                confirmed = await self.repo.verify_subscribe(
                    row.id,
                    topic,
                    lease_expires_at=now + timedelta(seconds=lease),
                    due_at=now + timedelta(seconds=lease * RENEW_FRACTION),
                    now=now,
                )
                if confirmed:
                    log.info("WebSub: %s pushed for %d s by %s", topic, lease, row.hub_url)
            else:
                confirmed = await self.repo.verify_unsubscribe(row.id, topic)
                if confirmed:
                    log.info("WebSub: %s unsubscribed at %s", topic, row.hub_url)
            if not confirmed:
                log.info("WebSub: refused to confirm a %s of %s we did not ask for", mode, topic)
                return web.Response(status=404)
            return web.Response(text=challenge, content_type="text/plain")
        if mode == "denied" and row.subscription_id is not None:
            said = _plain(query.get("hub.reason", ""))
            reason = "the hub refused the subscription" + (f" ({said})" if said else "")
            if await self.repo.mark_unavailable(
                row.id, reason, due_at=now + self.retry_unavailable, now=now
            ):
                log.warning("WebSub: %s: %s", topic, reason)
                return web.Response(text="ok", content_type="text/plain")
        return web.Response(status=404)

    async def handle_notification(self, request: web.Request) -> web.StreamResponse:
        """A hub's content notification: check the signature, then ask for a poll."""
        row = await self.repo.by_token(request.match_info["token"])
        if row is None or row.subscription_id is None or row.state is PushState.UNSUBSCRIBING:
            # 410 tells the hub this subscription is gone, so it may stop sending.
            return web.Response(status=410)
        body = await _read_bounded(request, self.max_body_bytes)
        if body is None:
            return web.Response(status=413)
        if signature_valid(row.secret, body, request.headers.get("X-Hub-Signature")):
            log.debug("WebSub: notification for %s", row.topic_url)
            self.coalescer.notify(row.subscription_id)
        else:
            log.info(
                "WebSub: ignored a notification for %s without a valid signature", row.topic_url
            )
        return web.Response(status=202)

    # --- talking to hubs ------------------------------------------------------------------

    async def _new_row(
        self,
        subscription_id: int,
        feed_url: str,
        hub_url: str | None,
        topic_url: str | None,
        now: datetime,
    ) -> PushTopic:
        """A feed's row: to be subscribed now if it has a hub, else saying it has none."""
        return await self.repo.add(
            subscription_id=subscription_id,
            feed_url=feed_url,
            hub_url=hub_url,
            topic_url=topic_url,
            callback_token=secrets.token_urlsafe(24),
            secret=secrets.token_urlsafe(32),
            state=PushState.SUBSCRIBING if hub_url else PushState.UNAVAILABLE,
            reason=None if hub_url else "the feed advertises no WebSub hub",
            due_at=now if hub_url else now + _NEVER,
            now=now,
        )

    async def _subscribe(self, row: PushTopic) -> None:
        """Ask the hub to (re)subscribe; a failure leaves the row unavailable."""
        now = self.clock()
        state = PushState.ACTIVE if row.state is PushState.ACTIVE else PushState.SUBSCRIBING
        # Recorded before asking: a hub may verify before its answer to us arrives.
        await self.repo.requested(row.id, state, due_at=now + self.verify_timeout, now=now)
        failure = await self._ask_hub(row, "subscribe")
        if failure is not None:
            now = self.clock()
            log.info("WebSub: %s not pushed: %s", row.topic_url, failure)
            await self.repo.mark_unavailable(
                row.id, failure, due_at=now + self.retry_unavailable, now=now
            )

    async def _unsubscribe(self, row: PushTopic) -> None:
        """Ask the hub to stop pushing a detached row; the hub's verification deletes it."""
        now = self.clock()
        await self.repo.requested(
            row.id, PushState.UNSUBSCRIBING, due_at=now + self.verify_timeout, now=now
        )
        failure = await self._ask_hub(row, "unsubscribe")
        if failure is not None:
            # Nothing more to do: the hub's lease runs out, and its notifications get 410.
            log.info("WebSub: unsubscribing %s failed: %s", row.topic_url, failure)
            await self.repo.delete(row.id)

    async def _attend(self, row: PushTopic, now: datetime) -> None:
        """Whatever ``row`` is due for."""
        if row.subscription_id is None:
            if row.state is not PushState.UNSUBSCRIBING:
                # Its subscription was deleted without ``remove``: unsubscribe now.
                await self.repo.retire(now=now, push_id=row.id)
                row = await self.repo.get(row.id) or row
                if row.state is not PushState.UNSUBSCRIBING:
                    return
            if row.requested_at is None:
                await self._unsubscribe(row)
            else:
                log.info("WebSub: %s never confirmed the unsubscription; dropped", row.hub_url)
                await self.repo.delete(row.id)
            return
        if row.requested_at is not None:  # a request the hub never verified
            reason = (
                f"the hub did not confirm the subscription within "
                f"{int(self.verify_timeout.total_seconds() // 60) or 1} min"
            )
            log.info("WebSub: %s: %s", row.topic_url, reason)
            await self.repo.mark_unavailable(
                row.id, reason, due_at=now + self.retry_unavailable, now=now
            )
            return
        if row.hub_url is None:  # nothing to retry; a later poll may find a hub
            await self.repo.mark_unavailable(
                row.id, row.reason or "no hub", due_at=now + _NEVER, now=now
            )
            return
        await self._subscribe(row)  # a first subscription, a renewal, or a retry

    async def _ask_hub(self, row: PushTopic, mode: str) -> str | None:
        """POST a (un)subscription request; None when the hub accepted it, else why not."""
        assert row.hub_url is not None and row.topic_url is not None
        form = {
            "hub.mode": mode,
            "hub.topic": row.topic_url,
            "hub.callback": callback_url(self.public_url, row.callback_token),
        }
        if mode == "subscribe":
            form["hub.lease_seconds"] = str(self.lease_seconds)
            form["hub.secret"] = row.secret
        try:
            target = check_hop(URL(row.hub_url), allow_private=self.allow_private)
        except BlockedAddressError:
            return _private_hub(row.hub_url)
        except (FeedError, ValueError):
            return f"the hub address {_plain(row.hub_url)} is not a usable http(s) URL"
        host = target.raw_host or ""
        try:
            async with (
                asyncio.timeout(self.hub_timeout),
                self.session.post(target, data=form, allow_redirects=False) as response,
            ):
                if 200 <= response.status < 300:
                    return None
                return f"the hub {host} answered HTTP {response.status}"
        except BlockedAddressError:  # the session's resolver refused the hub's name
            return _private_hub(row.hub_url)
        except TimeoutError:
            return f"the hub {host} did not answer within {self.hub_timeout:g} s"
        except aiohttp.ClientError as exc:
            if _blocked(exc):
                return _private_hub(row.hub_url)
            return f"could not reach the hub {host} ({type(exc).__name__})"


def describe(rows: Sequence[PushTopic], now: datetime) -> str:
    """One plain line about a subscription's push state, for ``/blog status``."""
    if not rows:
        return "push: not set up yet (the next poll that reads the feed will)"
    if all(row.pushing(now) for row in rows):
        until = min(row.lease_expires_at for row in rows if row.lease_expires_at)
        return f"push: active until <t:{int(until.timestamp())}:f>"
    if any(row.state is PushState.SUBSCRIBING for row in rows):
        return "push: waiting for the hub to confirm the subscription"
    reasons = [row.reason for row in rows if not row.pushing(now) and row.reason]
    if reasons:
        return f"push: not available: {reasons[0]}"
    return "push: not available: the hub subscription has lapsed; it is being renewed"


def _lease_seconds(raw: str | None, asked: int) -> int:
    """The hub's granted lease (it decides), or what we asked when it names none."""
    try:
        granted = int(raw) if raw is not None else asked
    except ValueError:
        granted = asked
    return min(max(granted, MIN_LEASE_SECONDS), MAX_LEASE_SECONDS)


def _plain(text: str) -> str:
    """Text a hub sent, safe to store and show: printable, one line, bounded."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(cleaned.split())[:MAX_REASON_LENGTH]


def _private_hub(hub_url: str) -> str:
    host = URL(hub_url).raw_host or hub_url
    return (
        f"the hub {_plain(host)} is on a private address "
        "(set ALLOW_PRIVATE_ADDRESSES=true to allow it)"
    )


def _blocked(exc: BaseException) -> bool:
    """Whether the session's address guard refused the connection, however wrapped."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BlockedAddressError) or isinstance(
            getattr(current, "os_error", None), BlockedAddressError
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


async def _read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or None when it is larger than ``limit`` bytes."""
    if (request.content_length or 0) > limit:
        return None
    body = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)

"""Fetch feeds over HTTP: conditional GET, hard limits, and an SSRF guard.

Everything a hostile or broken server can do to a fetch is bounded here, so the
rest of the bot only ever sees a ``FetchResult`` or one of the ``FeedError``
subclasses from ``bot.errors`` with a message a moderator can act on:

* one whole-request time budget (connect, every redirect hop and the body);
* a body size cap counted on decompressed bytes while streaming;
* redirects followed by hand, so every hop is re-validated;
* no URL with a user name or password (typed, or as a redirect target): feeds
  are public, and a password would otherwise be stored, shown and logged;
* unless ``ALLOW_PRIVATE_ADDRESSES`` is set, no connection to loopback, private,
  link-local, multicast or reserved addresses: the session resolves host names
  through ``bot.addresses.GuardedResolver`` and every hop's IP-literal host is
  checked before connecting (the rules themselves live in ``bot.addresses``).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Final

import aiohttp
from yarl import URL

from bot import __version__
from bot.addresses import GuardedResolver, check_literal_host
from bot.errors import (
    BlockedAddressError,
    FeedError,
    FeedTooLargeError,
    InvalidFeedURLError,
    PermanentFeedError,
    TransientFeedError,
)
from bot.settings import Settings

# GuardedResolver is re-exported: callers building their own sessions take it from here.
__all__ = [
    "MAX_REDIRECTS",
    "MAX_URL_LENGTH",
    "FetchResult",
    "Fetcher",
    "GuardedResolver",
    "check_hop",
    "check_url",
    "create_session",
    "redact_userinfo",
]

log = logging.getLogger(__name__)

MAX_REDIRECTS: Final = 5
MAX_URL_LENGTH: Final = 2048
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
# Client errors that say "try again later" rather than "this URL is wrong".
_TRANSIENT_4XX: Final = frozenset({408, 425, 429})
_RETRY_AFTER_STATUSES: Final = frozenset({429, 503})
_CHUNK_SIZE: Final = 64 * 1024
_ACCEPT: Final = (
    "application/atom+xml, application/rss+xml;q=0.9, application/xml;q=0.8, "
    "text/xml;q=0.8, text/html;q=0.5, */*;q=0.1"
)
# Everything between "scheme://" (or the start) and the first "/", "?" or "#".
_AUTHORITY = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://)?([^/?#]*)")
_CREDENTIALS_REFUSED: Final = (
    "Feed URLs with a user name or password in them (user:password@…) are refused: "
    "the bot only reads public feeds and never stores credentials. "
    "Paste the address without them."
)
# The whole-request budget is enforced by Fetcher.fetch (``_Deadlines``); aiohttp's own
# per-request timeouts are switched off so only one clock (and one message) applies.
_NO_AIOHTTP_TIMEOUT: Final = aiohttp.ClientTimeout()


@dataclass(frozen=True, slots=True)
class FetchResult:
    """One successful fetch: the body, or "not modified", plus validators to store."""

    url: str
    """Final URL after redirects."""
    status: int
    """200 (or another 2xx), or 304."""
    body: bytes | None
    """Decompressed body; ``None`` on 304."""
    etag: str | None
    last_modified: str | None
    content_type: str | None

    @property
    def not_modified(self) -> bool:
        """True when the server answered 304: nothing new, nothing to parse."""
        return self.status == 304


# --- URL and address checks -------------------------------------------------------------


def check_url(url: str) -> str:
    """Validate a user-supplied feed or blog URL and return it normalised.

    Accepts only http(s) URLs with a host. A bare ``example.com/feed`` gets
    ``https://`` put in front, because that is what people paste. The fragment
    is dropped (it is never sent, and would make one feed look like two).
    """
    return str(_checked_url(url))


def _checked_url(url: str) -> URL:
    """``check_url``, returning the parsed URL (a fetch needs it parsed anyway)."""
    text = url.strip()
    if not text:
        raise InvalidFeedURLError("The feed URL is empty: paste the blog's address or feed URL.")
    if len(text) > MAX_URL_LENGTH:
        raise InvalidFeedURLError(
            f"The feed URL is longer than {MAX_URL_LENGTH} characters: check what was pasted."
        )
    if _has_userinfo(text):
        # Nothing of the URL is repeated: the part before "@" may be a password.
        if "://" not in text or text.lower().startswith(("http://", "https://")):
            raise InvalidFeedURLError(_CREDENTIALS_REFUSED)
        raise InvalidFeedURLError(
            "That is not a web address: only http:// and https:// feed URLs can be fetched."
        )
    if "://" not in text and _looks_like_bare_host(text):
        text = "https://" + text
    try:
        parsed = URL(text)
    except (ValueError, TypeError):
        raise InvalidFeedURLError(f"{text!r} is not a valid URL.") from None
    return _validated(parsed, shown=text)


def redact_userinfo(text: str) -> str:
    """``text`` with any ``user:password@`` before its host replaced by ``***@``.

    For echoing what someone typed that may be a URL with a password in it.
    """
    match = _AUTHORITY.match(text)
    if match is None or "@" not in match.group(1):
        return text
    start, end = match.span(1)
    return text[:start] + "***@" + text[start:end].rsplit("@", 1)[1] + text[end:]


def _has_userinfo(text: str) -> bool:
    """True for ``https://alice:pw@host/``, ``alice:pw@host/feed`` and ``https://@host``."""
    if "@" not in text:  # most URLs: no need to find the authority
        return False
    match = _AUTHORITY.match(text)
    return match is not None and "@" in match.group(1)


def check_hop(url: URL, *, allow_private: bool) -> URL:
    """Run the checks every request target gets (the first URL and each redirect).

    An http(s) URL with a host and a valid port, no user name or password,
    without its fragment, and, unless private addresses are allowed, no IP-literal
    host in a forbidden range. Host names are not resolved here: the session's
    ``GuardedResolver`` checks them at connect time.
    """
    checked = _validated(url, shown=_shown(url))
    if not allow_private:
        check_literal_host(checked)
    return checked


def _looks_like_bare_host(text: str) -> bool:
    """True for ``blog.example.com/feed``; false for ``javascript:x`` or ``localhost:80``."""
    host = text.split("/", 1)[0].split(":", 1)[0]
    rest = text[len(host) :]
    return (
        "." in host
        and all(part.isalnum() or "-" in part for part in host.split("."))
        and (rest == "" or rest[0] in "/:?#")
    )


def _validated(url: URL, *, shown: str) -> URL:
    if url.scheme not in ("http", "https"):
        scheme = f"{url.scheme}:" if url.scheme else "a URL without a scheme"
        raise InvalidFeedURLError(
            f"{shown!r} is not a web address ({scheme}): only http:// and https:// "
            "feed URLs can be fetched."
        )
    if not url.raw_host:
        raise InvalidFeedURLError(f"{shown!r} has no host name: check the URL.")
    if _url_has_userinfo(url):
        raise InvalidFeedURLError(_CREDENTIALS_REFUSED)
    try:
        url.port  # noqa: B018 - yarl validates the port lazily
    except ValueError:
        raise InvalidFeedURLError(f"{shown!r} has an invalid port number.") from None
    return url.with_fragment(None)


# --- session and fetcher ------------------------------------------------------------------


def create_session(*, allow_private: bool, user_agent: str | None = None) -> aiohttp.ClientSession:
    """Create the one HTTP session feed fetching shares; call it from ``main()``.

    Needs a running event loop. The session carries the SSRF-guarding resolver,
    so a ``Fetcher`` with ``allow_private=False`` must be given a session made
    here with ``allow_private=False`` too. Cookies are ignored (one feed's server
    must not influence requests for another) and proxy settings from the
    environment are not used (a proxy would bypass the address checks).
    """
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow_private=allow_private))
    return aiohttp.ClientSession(
        connector=connector,
        headers={
            "User-Agent": user_agent or f"blogmirror/{__version__}",
            "Accept": _ACCEPT,
            # Fixed rather than aiohttp's default, which grows with optional packages.
            "Accept-Encoding": "gzip, deflate",
        },
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=_NO_AIOHTTP_TIMEOUT,
        trust_env=False,
    )


class _Budget:
    """One fetch's time budget: its task, when it runs out, and whether it has."""

    __slots__ = ("deadline", "expired", "settled", "task")

    def __init__(self, task: asyncio.Task[Any], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.expired = False
        self.settled = False

    def ran_out(self) -> bool:
        """For a ``CancelledError`` the fetch met: whether it came from this budget
        (and nobody else cancelled the task meanwhile, e.g. the bot stopping)."""
        return self.expired and self.settle() == 0

    def settle(self) -> int:
        """Take back this budget's cancellation request; the requests left."""
        self.settled = True
        return self.task.uncancel()


class _Deadlines:
    """The time budgets of the fetches under way, kept by one timer for all of them.

    ``asyncio.timeout`` arms and disarms a timer of the event loop per request:
    at thousands of idle polls a second that was 7 % of their CPU
    (``bench/scale.py``). Here a fetch only notes its deadline; a check every
    ``tick`` seconds, scheduled only while fetches are under way, cancels the
    tasks past theirs. A budget therefore ends up to a tenth of itself (at most
    one second) late, which no feed or moderator can tell apart.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.tick = min(1.0, seconds / 10)
        self._running: set[_Budget] = set()
        self._check_handle: asyncio.TimerHandle | None = None

    def start(self) -> _Budget:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "a fetch runs in a task"
        budget = _Budget(task, loop.time() + self.seconds)
        self._running.add(budget)
        if self._check_handle is None:
            self._check_handle = loop.call_later(self.tick, self._check)
        return budget

    def end(self, budget: _Budget) -> None:
        self._running.discard(budget)
        if budget.expired and not budget.settled:
            # Something under the fetch swallowed the cancellation: take it back
            # so later work in the task does not count it as another's.
            budget.settle()

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for budget in self._running:
            # In a timer callback no task runs: each is waiting at an await inside
            # its fetch, where the cancellation lands.
            if not budget.expired and budget.deadline <= now:
                budget.expired = True
                budget.task.cancel()
        self._check_handle = loop.call_later(self.tick, self._check) if self._running else None


class Fetcher:
    """Fetches one URL at a time under the configured limits; safe to share between tasks."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout: float,
        max_bytes: int,
        allow_private: bool,
    ) -> None:
        self._session = session
        self._timeout = timeout
        self._deadlines = _Deadlines(timeout)
        self._max_bytes = max_bytes
        self._allow_private = allow_private

    @property
    def session(self) -> aiohttp.ClientSession:
        """The address-guarded session, shared with whatever else talks to feed hosts (hubs)."""
        return self._session

    @classmethod
    def from_settings(cls, session: aiohttp.ClientSession, settings: Settings) -> Fetcher:
        return cls(
            session,
            timeout=settings.feed_timeout_seconds,
            max_bytes=settings.max_feed_bytes,
            allow_private=settings.allow_private_addresses,
        )

    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        """GET ``url``, conditionally when validators from the last fetch are given.

        Raises a ``FeedError`` subclass for every failure; aiohttp and asyncio
        exceptions never escape.
        """
        target = _checked_url(url)
        headers: dict[str, str] = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        started = time.monotonic()
        budget = self._deadlines.start()
        try:
            result = await self._follow(target, headers)
        except asyncio.CancelledError:
            if not budget.ran_out():
                raise
            log.debug("GET %s timed out after %s s", _shown(target), self._timeout)
            raise TransientFeedError(
                f"{_shown(target)} timed out after {self._timeout:g} s."
            ) from None
        except FeedError as exc:
            log.debug("GET %s failed: %s", _shown(target), exc)
            raise
        finally:
            self._deadlines.end(budget)
        if log.isEnabledFor(logging.DEBUG):  # most polls: the arguments are not worth making
            log.debug(
                "GET %s -> %s %s (%s bytes, %.2f s)",
                _shown(target),
                result.status,
                result.url,
                len(result.body) if result.body is not None else "-",
                time.monotonic() - started,
            )
        return result

    async def _follow(self, url: URL, headers: dict[str, str]) -> FetchResult:
        """Request ``url``, following up to ``MAX_REDIRECTS`` redirects by hand."""
        chain = [url]
        status = 0
        for _ in range(MAX_REDIRECTS + 1):
            # Validated already (``_checked_url``, ``_redirect_target``): the address is left.
            if not self._allow_private:
                check_literal_host(url)
            try:
                async with self._session.get(
                    url, headers=headers, allow_redirects=False, timeout=_NO_AIOHTTP_TIMEOUT
                ) as response:
                    if response.status not in _REDIRECT_STATUSES:
                        return await self._result(response, url, sent=headers)
                    status = response.status
                    next_url = _redirect_target(response, url)
            except FeedError:
                raise
            except TimeoutError:
                raise
            except aiohttp.ClientError as exc:
                raise _client_error(exc, url) from None
            if next_url in chain:
                hops = " → ".join(_shown(u) for u in [*chain, next_url])
                raise PermanentFeedError(f"Redirect loop: {hops}.", status=status)
            chain.append(next_url)
            url = next_url
        raise PermanentFeedError(
            f"{_shown(chain[0])} redirected more than {MAX_REDIRECTS} times "
            f"(last to {_shown(url)}): use the final feed URL instead.",
            status=status,
        )

    async def _result(
        self, response: aiohttp.ClientResponse, url: URL, *, sent: dict[str, str]
    ) -> FetchResult:
        status = response.status
        if status == 304:
            # A 304 may omit the validators; the ones we sent stay valid for next time.
            etag = response.headers.get("ETag") or sent.get("If-None-Match")
            last_modified = response.headers.get("Last-Modified") or sent.get("If-Modified-Since")
            body = None
        elif 200 <= status < 300:
            etag = response.headers.get("ETag")
            last_modified = response.headers.get("Last-Modified")
            body = await self._read_body(response, url)
        else:
            raise _status_error(response, url)
        return FetchResult(
            url=str(url),
            status=status,
            body=body,
            etag=etag,
            last_modified=last_modified,
            content_type=response.headers.get("Content-Type"),
        )

    async def _read_body(self, response: aiohttp.ClientResponse, url: URL) -> bytes:
        """Read the (decompressed) body, refusing it as soon as it passes the cap."""
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        # Content-Length counts compressed bytes, so it only proves an unencoded body too big.
        if encoding in ("", "identity") and (response.content_length or 0) > self._max_bytes:
            raise self._too_large(url)
        body = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK_SIZE):
            body += chunk
            if len(body) > self._max_bytes:
                raise self._too_large(url)
        return bytes(body)

    def _too_large(self, url: URL) -> FeedTooLargeError:
        return FeedTooLargeError(
            f"{_shown(url)} is larger than the limit of {self._max_bytes} bytes "
            f"({self._max_bytes / 1_048_576:.1f} MiB, MAX_FEED_BYTES)."
        )


# --- turning responses and exceptions into FeedErrors ------------------------------------


def _shown(url: URL) -> str:
    """The URL as it may appear in messages and logs: without user name or password."""
    return str(url.with_user(None)) if _url_has_userinfo(url) else str(url)


def _url_has_userinfo(url: URL) -> bool:
    return url.raw_user is not None or url.raw_password is not None


def _redirect_target(response: aiohttp.ClientResponse, url: URL) -> URL:
    location = response.headers.get("Location", "").strip()
    if not location:
        raise PermanentFeedError(
            f"{_shown(url)} answered HTTP {response.status} (a redirect) without saying where to.",
            status=response.status,
        )
    shown_location = redact_userinfo(location)[:200]
    try:
        target = url.join(URL(location))
    except (ValueError, TypeError):
        raise InvalidFeedURLError(
            f"{_shown(url)} redirected to an invalid URL ({shown_location!r}).",
            status=response.status,
        ) from None
    if target.scheme not in ("http", "https") or not target.raw_host:
        raise InvalidFeedURLError(
            f"{_shown(url)} redirected to {shown_location!r}, which is not an http(s) URL.",
            status=response.status,
        )
    if _url_has_userinfo(target):
        raise InvalidFeedURLError(
            f"{_shown(url)} redirected to an address with a user name or password in it "
            "(user:password@…), which the bot does not follow: it only reads public feeds.",
            status=response.status,
        )
    return _validated(target, shown=_shown(target))


def _status_text(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _status_error(response: aiohttp.ClientResponse, url: URL) -> FeedError:
    status = response.status
    said = f"{_shown(url)} answered {_status_text(status)}"
    retry_after = (
        _retry_after(response.headers.get("Retry-After"))
        if status in _RETRY_AFTER_STATUSES
        else None
    )
    if status in (404, 410):
        return PermanentFeedError(f"{said}: check the URL.", status=status)
    if status in (401, 403):
        return PermanentFeedError(f"{said}: the feed is not public.", status=status)
    if status in _TRANSIENT_4XX or 500 <= status < 600:
        return TransientFeedError(
            f"{said}; will try again later.", status=status, retry_after=retry_after
        )
    if 400 <= status < 500:
        return PermanentFeedError(f"{said}.", status=status)
    return PermanentFeedError(f"{said}, which is not a feed response.", status=status)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" dates parse as naive; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _client_error(exc: aiohttp.ClientError, url: URL) -> FeedError:
    """Map an aiohttp exception to a FeedError without leaking request details."""
    blocked = _find_blocked(exc)
    if blocked is not None:
        return blocked
    host = url.raw_host or str(url)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return TransientFeedError(
            f"The host name {host} could not be resolved (DNS lookup failed): check the URL."
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientConnectorSSLError):
        return TransientFeedError(f"Secure connection to {host} failed (TLS/certificate error).")
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = _os_reason(exc.os_error)
        return TransientFeedError(f"Could not connect to {host}:{exc.port} ({reason}).")
    if isinstance(exc, aiohttp.InvalidURL):
        return InvalidFeedURLError(f"{_shown(url)} is not a URL that can be fetched.")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return TransientFeedError(f"{host} closed the connection before the response was complete.")
    if isinstance(exc, aiohttp.ClientOSError):
        reason = _os_reason(exc)
        return TransientFeedError(f"The connection to {host} failed ({reason}).")
    return TransientFeedError(f"Fetching {_shown(url)} failed ({type(exc).__name__}).")


def _os_reason(exc: OSError) -> str:
    """The OS's words ("Connection refused"), not aiohttp's "Connect call failed (...)"."""
    if exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror or type(exc).__name__


def _find_blocked(exc: BaseException) -> BlockedAddressError | None:
    """The resolver's BlockedAddressError, however deeply aiohttp has wrapped it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for candidate in (current, getattr(current, "os_error", None)):
            if isinstance(candidate, BlockedAddressError):
                return candidate
        current = current.__cause__ or current.__context__
    return None

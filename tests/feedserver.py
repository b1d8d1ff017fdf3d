"""A local HTTP server that plays the part of a blog in tests.

Feeds in tests come from a real HTTP server on 127.0.0.1 rather than a mocked
client, so the real aiohttp code paths (redirects, gzip, timeouts, dropped
connections) are what get tested. Typical use::

    async with FeedServer() as server:
        server.fixture("/feeds/posts/default", "real/blogger_posts_thumbnails.atom.xml",
                       etag='"v1"')
        server.redirect("/old", "/feeds/posts/default")
        result = await fetcher.fetch(server.url("/old"))
        assert server.hits("/feeds/posts/default") == 1

Every route is a mutable ``Route``: change its fields (or call ``route()``
again for the same path) to change what the next request gets.

``guard_loopback_only`` makes a test fail if anything tries to resolve a name
or open a connection beyond this machine.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

FIXTURES = Path(__file__).parent / "fixtures"

ATOM = "application/atom+xml; charset=UTF-8"
RSS = "application/rss+xml; charset=UTF-8"
HTML = "text/html; charset=UTF-8"
TEXT = "text/plain; charset=UTF-8"


@dataclass
class Route:
    """What the server answers on one path. Mutable: tests change it between requests."""

    body: bytes = b""
    status: int = 200
    content_type: str | None = ATOM
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers (``Location``, ``Retry-After``, ...)."""
    etag: str | None = None
    """Sent as ``ETag``; a matching ``If-None-Match`` gets 304."""
    last_modified: str | None = None
    """Sent as ``Last-Modified``; an ``If-Modified-Since`` at or after it gets 304."""
    gzip: bool = False
    """Send the body gzip-compressed with ``Content-Encoding: gzip``."""
    chunked: bool = False
    """Stream without ``Content-Length`` (chunked transfer encoding)."""
    delay: float = 0.0
    """Seconds to wait before sending the status line and headers."""
    trickle: float = 0.0
    """Seconds to wait after each ``chunk_size`` bytes of body."""
    chunk_size: int = 16 * 1024
    drop_after: int | None = None
    """Declare the full length, send only this many body bytes, then cut the connection."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received, for assertions."""

    method: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]


class FeedServer:
    """An aiohttp web server on 127.0.0.1 with a random free port, serving ``Route``s.

    Unknown paths answer 404. Use as ``async with FeedServer() as server:``.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self._routes: dict[str, Route] = {}
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start listening; ``url()`` works from here on."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that gives up (timeout tests) must not leave
        # trickling handlers behind that keep close() waiting.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.1
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        """Stop the server and drop open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- setting up routes ------------------------------------------------------------

    def url(self, path: str = "/") -> str:
        """Absolute URL of ``path`` on this server."""
        return f"http://{self.host}:{self.port}{path}"

    def route(self, path: str, body: bytes | str = b"", **options: Any) -> Route:
        """Serve ``body`` on ``path`` (replacing any earlier route); options are ``Route`` fields.

        ``path`` may include a query string (``/feed?start-index=26``); such a route
        wins over the plain path for requests with exactly that query.
        """
        data = body.encode() if isinstance(body, str) else body
        route = Route(body=data, **options)
        self._routes[path] = route
        return route

    def fixture(self, path: str, name: str, **options: Any) -> Route:
        """Serve the file ``tests/fixtures/<name>`` on ``path``."""
        return self.route(path, (FIXTURES / name).read_bytes(), **options)

    def redirect(self, path: str, location: str, status: int = 302) -> Route:
        """Redirect ``path`` to ``location`` (relative or absolute, sent as given)."""
        return self.route(path, status=status, content_type=None, headers={"Location": location})

    # --- inspecting traffic -----------------------------------------------------------

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Requests received for ``path`` (ignoring the query string)."""
        return [r for r in self.requests if r.path == path]

    def hits(self, path: str) -> int:
        """How many requests ``path`` received."""
        return len(self.requests_to(path))

    # --- serving ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            RecordedRequest(request.method, request.path, request.query_string, request.headers)
        )
        route = self._routes.get(request.path_qs) or self._routes.get(request.path)
        if route is None:
            return web.Response(status=404, text="no route for this path in the test server")
        if route.delay:
            await asyncio.sleep(route.delay)
        validators = {}
        if route.etag is not None:
            validators["ETag"] = route.etag
        if route.last_modified is not None:
            validators["Last-Modified"] = route.last_modified
        if _not_modified(route, request):
            return web.Response(status=304, headers=validators)

        body = gzip.compress(route.body) if route.gzip else route.body
        response = web.StreamResponse(status=route.status, headers={**validators, **route.headers})
        if route.content_type is not None:
            response.headers["Content-Type"] = route.content_type
        if route.gzip:
            response.headers["Content-Encoding"] = "gzip"
        if not route.chunked:
            response.content_length = len(body)
        try:
            await response.prepare(request)
            sent = body if route.drop_after is None else body[: route.drop_after]
            for start in range(0, len(sent), route.chunk_size):
                await response.write(sent[start : start + route.chunk_size])
                if route.trickle:
                    await asyncio.sleep(route.trickle)
            if route.drop_after is not None:
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write_eof()
        except ConnectionError:
            pass  # the client gave up (a timeout or size-limit test); nothing to do
        return response


def _not_modified(route: Route, request: web.Request) -> bool:
    """RFC 9110 §13.2.2: If-None-Match decides when present, else If-Modified-Since."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        if route.etag is None:
            return False
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return "*" in tags or route.etag.removeprefix("W/") in tags
    since = request.headers.get("If-Modified-Since")
    if since is None or route.last_modified is None:
        return False
    try:
        return email.utils.parsedate_to_datetime(since) >= email.utils.parsedate_to_datetime(
            route.last_modified
        )
    except (TypeError, ValueError):
        return False


def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening (for "connection refused")."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


_LOCAL_NAMES = frozenset({"localhost", "localhost."})


def guard_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the running loop refuse DNS lookups and connections beyond this machine.

    Call from an async fixture. Name lookups other than ``localhost`` and connects
    to non-loopback addresses raise ``AssertionError`` (not ``OSError``, so no
    client library mistakes it for an ordinary network failure).
    """
    loop = asyncio.get_running_loop()
    real_getaddrinfo = loop.getaddrinfo
    real_sock_connect = loop.sock_connect

    async def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in _LOCAL_NAMES and not _is_loopback(name):
            raise AssertionError(f"test tried to resolve {name!r}")
        return await real_getaddrinfo(host, *args, **kwargs)

    async def sock_connect(sock: socket.socket, address: Any) -> None:
        if not _is_loopback(str(address[0])):
            raise AssertionError(f"test tried to connect to {address!r}")
        await real_sock_connect(sock, address)

    patches: dict[str, Callable[..., Awaitable[Any]]] = {
        "getaddrinfo": getaddrinfo,
        "sock_connect": sock_connect,
    }
    for name, replacement in patches.items():
        monkeypatch.setattr(loop, name, replacement)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False

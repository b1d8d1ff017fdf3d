"""The bot's own HTTP server (``WEB_PORT``, ``WEB_HOST``): ``/healthz`` and ``/metrics``.

aiohttp's web server (aiohttp comes with discord.py), on the bot's event loop:
``/healthz`` answers from what the bot knows in memory, so a blocked loop shows
as no answer at all, which a health check counts as unhealthy too.

More routes share this server: WebSub callbacks (SPEC §6) are added with
:meth:`WebServer.add_routes` (or on ``WebServer.app.router``) after the server
is made and before :meth:`WebServer.start`, since aiohttp freezes an
application's router when it starts serving. ``serve`` takes them as
``routes`` for that reason.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from bot.errors import CannotStartError
from bot.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from bot.client import BlogMirrorBot
    from bot.settings import Settings

log = logging.getLogger(__name__)

STALL_INTERVALS = 2
"""The polling loop counts as stalled when it has not finished a round for this many
``POLL_INTERVAL_SECONDS``."""


@dataclass(frozen=True, slots=True)
class Health:
    """``/healthz``'s verdict: ``problems`` in plain words (none: healthy), ``details`` always."""

    problems: tuple[str, ...]
    details: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        first = "ok" if self.ok else "unhealthy: " + "; ".join(self.problems)
        return "\n".join((first, *self.details)) + "\n"


def check_health(bot: BlogMirrorBot) -> Health:
    """Healthy when every shard's gateway is connected and the polling loop ran lately."""
    problems: list[str] = []
    details: list[str] = []
    shards = bot.shards
    closed = sorted(shard_id for shard_id, shard in shards.items() if shard.is_closed())
    if not bot.is_ready() or not shards or bot.is_closed():
        problems.append("gateway not connected")
        details.append("gateway: not connected (not ready yet, or stopping)")
    elif closed:
        problems.append("gateway not connected")
        details.append(
            f"gateway: shard(s) {', '.join(map(str, closed))} of {len(shards)} disconnected"
        )
    else:
        details.append(f"gateway: connected, {len(shards)} shard(s)")

    limit = STALL_INTERVALS * bot.settings.poll_interval_seconds
    age = bot.metrics.loop_age()
    ran = bot.metrics.last_round is not None
    if age > limit:
        since = "" if ran else " since start"
        problems.append(f"polling loop has not run for {age:.0f} s{since} (limit {limit} s)")
    if ran:
        details.append(f"polling loop: last round {age:.1f} s ago (limit {limit} s)")
    else:
        details.append(f"polling loop: no round yet, started {age:.1f} s ago (limit {limit} s)")
    return Health(tuple(problems), tuple(details))


class WebServer:
    """aiohttp's web server with ``/healthz`` and ``/metrics`` for ``bot``; more routes may
    be added before :meth:`start` (see the module docstring)."""

    def __init__(self, bot: BlogMirrorBot, *, host: str, port: int) -> None:
        self.bot = bot
        self.host = host
        self.port = port
        """The port asked for; after :meth:`start`, the one bound (0 picks a free one)."""
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None

    def add_routes(self, routes: Iterable[web.AbstractRouteDef]) -> None:
        """More handlers on this server (WebSub callbacks); only before :meth:`start`."""
        if self._runner is not None:
            raise RuntimeError("routes must be added before the web server starts")
        self.app.router.add_routes(routes)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("Serving /healthz and /metrics on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        health = check_health(self.bot)
        return web.Response(status=200 if health.ok else 503, text=health.text())

    async def _metrics(self, request: web.Request) -> web.Response:
        backlog = await self.bot.subscriptions.backlog(self.bot.local_shards())
        body = self.bot.metrics.render(backlog)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


@contextlib.asynccontextmanager
async def serve(
    settings: Settings, bot: BlogMirrorBot, routes: Iterable[web.AbstractRouteDef] = ()
) -> AsyncIterator[WebServer | None]:
    """The server while the block runs, or None when ``WEB_PORT`` is unset."""
    if settings.web_port is None:
        yield None
        return
    server = WebServer(bot, host=settings.web_host, port=settings.web_port)
    server.add_routes(routes)
    try:
        await server.start()
    except OSError as exc:
        raise CannotStartError(
            f"cannot serve /healthz and /metrics on {settings.web_host} port "
            f"{settings.web_port}: {exc.strerror or exc}; set WEB_PORT to a free port, "
            "or WEB_HOST to an address of this machine."
        ) from None
    try:
        yield server
    finally:
        await server.stop()

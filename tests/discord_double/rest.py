"""The REST front door: routing, auth, body parsing, faults, rate limits, headers, logging.

All of ``/api/v10`` goes through ``RestFrontend.handle`` so that every response, including
errors and unknown routes, gets the same treatment: rate-limit headers, ``Via: 1.1 google``
(discord.py treats a 429 without it as a Cloudflare ban), ``Content-Type`` exactly
``application/json`` (discord.py parses the body as JSON only on an exact match) and an
entry in the request log.

Route templates use discord.py's own placeholder names (``{channel_id}``, ``{webhook_id}``,
...) because rate-limit buckets are keyed by route template plus the "major parameters"
channel, guild and webhook id/token, exactly as ``discord.http.Route`` does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from . import errors
from .faults import Fault, FaultKind
from .ratelimit import Verdict, body_429, global_429_headers, route_429_headers

if TYPE_CHECKING:
    from .double import DiscordDouble

log = logging.getLogger(__name__)

MAJOR_PARAMETERS = ("channel_id", "guild_id", "webhook_id", "webhook_token")


@dataclass(frozen=True)
class RequestRecord:
    """One REST request as the double saw it, for assertions."""

    method: str
    path: str
    route: str | None
    """The route key (``"POST /channels/{channel_id}/messages"``), None when unknown."""
    query: dict[str, str]
    body: Any
    status: int
    """The status sent; 0 when the connection was reset instead."""
    fault: FaultKind | None
    at: float = field(default_factory=time.monotonic)


@dataclass
class Call:
    """What a route handler gets: path parameters, query and the parsed JSON body."""

    method: str
    path: str
    params: dict[str, str]
    query: Mapping[str, str]
    body: Any
    files: list[dict[str, Any]]

    def id(self, name: str) -> int:
        try:
            return int(self.params[name])
        except ValueError:
            raise errors.ApiError(
                400,
                50035,
                "Invalid Form Body",
                {name: {"_errors": [{"code": "NUMBER_TYPE_COERCE"}]}},
            ) from None

    def json(self) -> dict[str, Any]:
        if not isinstance(self.body, dict):
            raise errors.invalid_form("_root", "DICT_TYPE_CONVERT", "Only dictionaries may be used")
        return self.body


@dataclass
class Reply:
    status: int = 200
    body: Any = None


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass
class RouteSpec:
    method: str
    template: str
    handler: Handler
    pattern: re.Pattern[str]
    auth: bool = True
    """Bot token required. Interaction callbacks and webhook routes need none."""
    global_limit: bool = True
    """Counts against the global limit (interaction endpoints do not, as on Discord)."""

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"

    def major(self, params: dict[str, str]) -> str:
        return "+".join(params[k] for k in MAJOR_PARAMETERS if k in params)


class Router:
    def __init__(self) -> None:
        self.routes: list[RouteSpec] = []

    def add(
        self,
        method: str,
        template: str,
        handler: Handler,
        *,
        auth: bool = True,
        global_limit: bool = True,
    ) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        spec = RouteSpec(method, template, handler, re.compile(regex), auth, global_limit)
        self.routes.append(spec)

    def match(self, method: str, path: str) -> tuple[RouteSpec, dict[str, str]] | None:
        for spec in self.routes:
            if spec.method == method and (m := spec.pattern.fullmatch(path)):
                return spec, m.groupdict()
        return None


def json_response(status: int, body: Any, headers: dict[str, str]) -> web.Response:
    if body is None:
        return web.Response(status=204 if status < 300 else status, headers=headers)
    if isinstance(body, str):
        return web.Response(
            status=status, body=body.encode(), headers={**headers, "Content-Type": "text/html"}
        )
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={**headers, "Content-Type": "application/json"},
    )


class RestFrontend:
    def __init__(self, double: DiscordDouble) -> None:
        self.double = double
        self.router = Router()
        self.log: list[RequestRecord] = []
        self.rate_limited = 0
        self.internal_errors: list[Exception] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        method = request.method
        found = self.router.match(method, path)
        if found is None:
            return self._finish(request, None, path, None, errors.not_found_route(), {}, None)
        spec, params = found
        if spec.auth and request.headers.get("Authorization") != f"Bot {self.double.token}":
            return self._finish(request, spec, path, None, errors.unauthorized(), {}, None)
        try:
            body, files = await _read_body(request)
        except errors.ApiError as exc:
            return self._finish(request, spec, path, None, exc, {}, None)
        call = Call(method, path, params, request.query, body, files)

        if spec.auth and spec.global_limit:
            verdict = self.double.limiter.hit_global()
            if not verdict.allowed:
                return self._too_many(request, spec, call, verdict, is_global=True, fault=None)
        verdict = self.double.limiter.hit(spec.key, spec.major(params))
        if not verdict.allowed:
            return self._too_many(request, spec, call, verdict, is_global=False, fault=None)

        fault = self.double.faults.take(method, path, body)
        if fault is not None and fault.kind.before:
            early = await self._apply_fault_before(request, spec, call, fault, verdict.headers)
            if early is not None:
                return early

        try:
            outcome: Reply | errors.ApiError = await spec.handler(call)
        except errors.ApiError as exc:
            outcome = exc
        except Exception as exc:
            # A bug in the double, or a body it cannot make sense of. Answer 400 (discord.py
            # would retry a 500 for 25 s) and keep the error so the test can show it.
            log.exception("discord double failed on %s %s", method, path)
            self.internal_errors.append(exc)
            outcome = errors.ApiError(400, 0, f"discord double internal error: {exc!r}")

        if fault is not None and not fault.kind.before:
            if fault.kind is FaultKind.RESET_AFTER_COMMIT:
                return self._reset(request, spec, call, fault)
            if fault.kind is FaultKind.ERROR_AFTER_COMMIT:
                return self._finish(
                    request,
                    spec,
                    path,
                    call,
                    (fault.status, fault.error_body()),
                    verdict.headers,
                    fault,
                )
            await asyncio.sleep(fault.delay)
        return self._finish(request, spec, path, call, outcome, verdict.headers, fault)

    async def _apply_fault_before(
        self,
        request: web.Request,
        spec: RouteSpec,
        call: Call,
        fault: Fault,
        headers: dict[str, str],
    ) -> web.StreamResponse | None:
        if fault.kind is FaultKind.DELAY:
            await asyncio.sleep(fault.delay)
            return None
        if fault.kind is FaultKind.RESET_BEFORE:
            return self._reset(request, spec, call, fault)
        if fault.kind is FaultKind.RATE_LIMIT:
            is_global = fault.scope == "global"
            extra = (
                global_429_headers(fault.retry_after)
                if is_global
                else route_429_headers(fault.retry_after, scope=fault.scope)
            )
            verdict = Verdict(False, {**headers, **extra}, fault.retry_after)
            return self._too_many(request, spec, call, verdict, is_global=is_global, fault=fault)
        return self._finish(
            request, spec, call.path, call, (fault.status, fault.error_body()), headers, fault
        )

    def _too_many(
        self,
        request: web.Request,
        spec: RouteSpec,
        call: Call,
        verdict: Verdict,
        *,
        is_global: bool,
        fault: Fault | None,
    ) -> web.StreamResponse:
        self.rate_limited += 1
        outcome = (429, body_429(verdict.retry_after, is_global=is_global))
        return self._finish(request, spec, call.path, call, outcome, verdict.headers, fault)

    def _reset(
        self, request: web.Request, spec: RouteSpec, call: Call, fault: Fault
    ) -> web.StreamResponse:
        """Drop the TCP connection without a response; the client sees ServerDisconnectedError."""
        self._record(request, spec, call.path, call, 0, fault)
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)

    def _finish(
        self,
        request: web.Request,
        spec: RouteSpec | None,
        path: str,
        call: Call | None,
        outcome: Reply | errors.ApiError | tuple[int, Any],
        headers: dict[str, str],
        fault: Fault | None,
    ) -> web.StreamResponse:
        body: Any
        if isinstance(outcome, errors.ApiError):
            status, body = outcome.status, outcome.body()
        elif isinstance(outcome, Reply):
            status, body = outcome.status, outcome.body
        else:
            status, body = outcome
        if body is None and status < 300:
            status = 204
        self._record(request, spec, path, call, status, fault)
        return json_response(status, body, {**headers, "Via": "1.1 google"})

    def _record(
        self,
        request: web.Request,
        spec: RouteSpec | None,
        path: str,
        call: Call | None,
        status: int,
        fault: Fault | None,
    ) -> None:
        self.log.append(
            RequestRecord(
                method=request.method,
                path=path,
                route=spec.key if spec else None,
                query=dict(request.query),
                body=call.body if call else None,
                status=status,
                fault=fault.kind if fault else None,
            )
        )


async def _read_body(request: web.Request) -> tuple[Any, list[dict[str, Any]]]:
    """JSON, or multipart/form-data with a ``payload_json`` part and ``files[n]`` parts."""
    if not request.can_read_body:
        return None, []
    if request.content_type == "multipart/form-data":
        body: Any = None
        files: list[dict[str, Any]] = []
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "payload_json":
                body = _parse_json(await part.text())
            elif part.filename:
                data = await part.read()
                files.append({"name": part.name, "filename": part.filename, "size": len(data)})
        return body, files
    text = await request.text()
    return (_parse_json(text) if text else None), []


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise errors.invalid_json() from None

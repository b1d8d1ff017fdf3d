"""Failures injected on demand into REST responses.

The exactly-once promise is about what happens when Discord *did* the work but the bot
never learned it (5xx or a dropped connection after the message was created), so most
kinds come in a "before" and an "after commit" flavour.

================== ==================================================================
kind               effect on a matching request
================== ==================================================================
error_before       respond ``status`` (default 500) without performing the action
error_after_commit perform the action, then respond ``status`` instead of the result
reset_before       close the connection with no response, action not performed
reset_after_commit perform the action, then close the connection with no response
delay              wait ``delay`` seconds, then handle normally (client timeouts)
delay_after_commit perform the action, wait ``delay`` seconds, then respond
rate_limit         answer 429 regardless of bucket counts (a storm); ``scope`` is
                   ``user``/``shared``/``global`` (``global`` sets ``"global": true``)
================== ==================================================================

A fault matches when ``method`` (or any method, if None) and ``path`` (a regex matched in
full against the path after ``/api/v10``, e.g. ``r"/channels/\\d+/messages"``) both match,
and ``content`` (a regex, if given) is found in the request's JSON body: that targets
one message (one comment's text) among many.
It applies to the next ``times`` matching requests (``None``: until removed).
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any


class FaultKind(enum.StrEnum):
    ERROR_BEFORE = "error_before"
    ERROR_AFTER_COMMIT = "error_after_commit"
    RESET_BEFORE = "reset_before"
    RESET_AFTER_COMMIT = "reset_after_commit"
    DELAY = "delay"
    DELAY_AFTER_COMMIT = "delay_after_commit"
    RATE_LIMIT = "rate_limit"

    @property
    def before(self) -> bool:
        """Whether the fault acts instead of the handler (True) or after it ran (False)."""
        return self in (
            FaultKind.ERROR_BEFORE,
            FaultKind.RESET_BEFORE,
            FaultKind.DELAY,
            FaultKind.RATE_LIMIT,
        )


@dataclass
class Fault:
    kind: FaultKind
    path: re.Pattern[str]
    method: str | None = None
    status: int = 500
    times: int | None = 1
    delay: float = 0.0
    retry_after: float = 0.25
    scope: str = "user"
    body: dict[str, Any] | str | None = None
    """Error body; a ``str`` is sent as ``text/html`` like a Cloudflare error page."""
    content: re.Pattern[str] | None = None
    hits: int = 0

    def matches(self, method: str, path: str, payload: Any = None) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        if self.content is not None and not self.content.search(
            json.dumps(payload, ensure_ascii=False)
        ):
            return False
        return self.path.fullmatch(path) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def error_body(self) -> dict[str, Any] | str:
        if self.body is not None:
            return self.body
        return {"message": f"{self.status}: Injected failure", "code": 0}


class FaultPlan:
    """The active faults, first added wins when several match."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(
        self,
        kind: FaultKind | str,
        path: str = ".*",
        *,
        method: str | None = None,
        status: int = 500,
        times: int | None = 1,
        delay: float = 0.0,
        retry_after: float = 0.25,
        scope: str = "user",
        body: dict[str, Any] | str | None = None,
        content: str | None = None,
    ) -> Fault:
        if scope not in ("user", "shared", "global"):
            raise ValueError(f"scope must be user, shared or global, not {scope!r}")
        fault = Fault(
            kind=FaultKind(kind),
            path=re.compile(path),
            method=method,
            status=status,
            times=times,
            delay=delay,
            retry_after=retry_after,
            scope=scope,
            body=body,
            content=re.compile(content) if content is not None else None,
        )
        self.faults.append(fault)
        return fault

    def take(self, method: str, path: str, payload: Any = None) -> Fault | None:
        """The first matching fault, with one use counted against it."""
        for fault in self.faults:
            if fault.matches(method, path, payload):
                fault.hits += 1
                return fault
        return None

    def clear(self) -> None:
        self.faults.clear()

"""Test-only functions to run in the worker pool (module-level, so a worker can import them)."""

from __future__ import annotations

import logging
import os
import time

from bot.errors import FeedError

log = logging.getLogger(__name__)


def sleep(seconds: float) -> float:
    """A slow document that costs no CPU: the machine stays free for what is measured."""
    time.sleep(seconds)
    return seconds


def pid() -> int:
    return os.getpid()


def refuse(status: int) -> None:
    raise FeedError("The feed said no.", status=status, retry_after=30.0)


def fail() -> None:
    raise KeyError("a bug")


def warn(text: str) -> str:
    log.warning("from the worker: %s", text)
    return text


def crash() -> None:
    os._exit(3)


_kept: list[bytearray] = []


def grow(megabytes: int) -> int:
    """Leave the worker this much bigger, as a huge document can."""
    _kept.append(bytearray(megabytes * 1024 * 1024))
    return os.getpid()

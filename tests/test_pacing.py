"""The client-side pacer keeps any window of requests under the global limit."""

from __future__ import annotations

import asyncio

import pytest

from bot.pacing import Pacer


async def test_pacer_lets_a_burst_through_then_waits_a_window() -> None:
    """`limit` requests start at once; the next waits until the first is a window old."""
    pacer = Pacer(5, 0.2, margin=0.05)
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def request() -> None:
        async with pacer:
            starts.append(loop.time())

    await asyncio.gather(*(request() for _ in range(12)))
    assert starts == sorted(starts)
    assert starts[4] - starts[0] < 0.05
    for earlier, later in zip(starts, starts[5:], strict=False):
        assert later - earlier >= 0.25 - 1e-6


def test_pacer_refuses_nonsense_limits() -> None:
    """A pacer that could never let a request through is a configuration error."""
    with pytest.raises(ValueError):
        Pacer(0)

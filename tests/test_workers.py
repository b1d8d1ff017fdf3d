"""The worker pool: answers, errors, time limits, lanes, cancellation and closing.

The slow "documents" here sleep instead of burning CPU, so the timings they
check do not depend on how busy this machine is.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections.abc import AsyncIterator, Callable

import pytest

from bot.errors import FeedError
from bot.workers import (
    RETIRE_RSS,
    RemoteTraceback,
    WorkerCrashed,
    WorkerError,
    WorkerPool,
    WorkTimeout,
)
from tests import workerjobs


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    """One worker per lane: the smallest pool, where blocking would show first."""
    async with WorkerPool(1, preload=["tests.workerjobs"]) as opened:
        yield opened


async def until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def worker_children() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == "blogmirror-worker"]


async def test_answers_come_back_and_workers_are_reused(pool: WorkerPool) -> None:
    """A call returns its function's answer; the next call reuses the idle worker."""
    first = await pool.run(workerjobs.pid, limit=10)
    second = await pool.run(workerjobs.pid, limit=10)

    assert first == second != 0
    assert pool.pids == [first]


async def test_errors_are_raised_here_as_they_were_there(pool: WorkerPool) -> None:
    """A domain error keeps its class and details; a bug carries the worker's traceback."""
    with pytest.raises(FeedError) as refused:
        await pool.run(workerjobs.refuse, 503, limit=10)
    assert (str(refused.value), refused.value.status) == ("The feed said no.", 503)
    assert refused.value.retry_after == 30.0

    with pytest.raises(KeyError) as bug:
        await pool.run(workerjobs.fail, limit=10)
    assert isinstance(bug.value.__cause__, RemoteTraceback)
    assert "in fail" in str(bug.value.__cause__)

    assert await pool.run(workerjobs.sleep, 0, limit=10) == 0  # the worker carries on


async def test_log_records_of_a_job_reach_the_bots_logging(
    pool: WorkerPool, caplog: pytest.LogCaptureFixture
) -> None:
    """What a job logs (a renderer's warning) is logged here, by the same-named logger."""
    caplog.set_level(logging.WARNING)

    await pool.run(workerjobs.warn, "odd HTML", limit=10)

    [record] = [r for r in caplog.records if r.name == "tests.workerjobs"]
    assert record.getMessage() == "from the worker: odd HTML"
    assert record.levelno == logging.WARNING


async def test_a_call_over_its_limit_is_refused_and_its_worker_replaced(pool: WorkerPool) -> None:
    """The worker of a call over its time limit is killed; the next call gets a new one."""
    before = await pool.run(workerjobs.pid, limit=10)
    started = time.monotonic()

    with pytest.raises(WorkTimeout) as caught:
        await pool.run(workerjobs.sleep, 30, limit=1)

    assert time.monotonic() - started < 10
    assert caught.value.limit == 1
    after = await pool.run(workerjobs.pid, limit=10)
    assert after != before
    await until(lambda: before not in [p.pid for p in worker_children()], "the old worker to exit")


async def test_a_worker_left_big_is_not_kept(pool: WorkerPool) -> None:
    """A worker that grew past ``RETIRE_RSS`` on a document exits instead of idling."""
    big = await pool.run(workerjobs.grow, RETIRE_RSS // 2**20 + 20, limit=30)

    assert big not in pool.pids
    await until(lambda: big not in [p.pid for p in worker_children()], "the big worker to exit")
    assert await pool.run(workerjobs.pid, limit=10) != big


async def test_a_crashed_worker_is_an_error_and_is_replaced(pool: WorkerPool) -> None:
    """A worker that dies mid-call (out of memory, killed) fails that call only."""
    with pytest.raises(WorkerCrashed):
        await pool.run(workerjobs.crash, limit=10)

    assert await pool.run(workerjobs.sleep, 0, limit=10) == 0


async def test_cancelling_a_call_frees_its_worker(pool: WorkerPool) -> None:
    """A call cancelled by its caller kills its worker: the pool's one slot is free again."""
    busy = await pool.run(workerjobs.pid, limit=10)
    call = asyncio.create_task(pool.run(workerjobs.sleep, 60, limit=120))
    await until(lambda: pool.calls == 1, "the call to start")

    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    assert pool.calls == 0
    started = time.monotonic()
    assert await pool.run(workerjobs.sleep, 0, limit=10) == 0
    assert time.monotonic() - started < 5  # not behind the 60 s sleep
    assert busy not in pool.pids
    await until(lambda: busy not in [p.pid for p in worker_children()], "the killed worker to exit")


async def test_slow_calls_do_not_hold_up_quick_ones(pool: WorkerPool) -> None:
    """With every worker taken by slow documents, a quick one still gets through at once.

    One worker per lane: the first slow call moves to the slow lane, the second
    is put back to wait for it, and the quick call gets the fast lane. The slow
    calls still finish.
    """
    slow = [asyncio.create_task(pool.run(workerjobs.sleep, 3, limit=30)) for _ in range(2)]
    await until(lambda: pool.calls == 2, "both slow calls to be taken")

    started = time.monotonic()
    assert await pool.run(workerjobs.sleep, 0, limit=10) == 0
    assert time.monotonic() - started < 2

    assert await asyncio.gather(*slow) == [3, 3]


async def test_closing_stops_every_worker(pool: WorkerPool) -> None:
    """After close no worker process is left, including one that was mid-call."""
    await pool.run(workerjobs.sleep, 0, limit=10)
    call = asyncio.create_task(pool.run(workerjobs.sleep, 60, limit=120))
    await until(lambda: pool.calls == 1, "a call to be running")
    assert [p.pid for p in worker_children()] == pool.pids

    await pool.close()

    with pytest.raises(WorkerError):
        await call
    assert worker_children() == []
    with pytest.raises(WorkerError, match="closed"):
        await pool.run(workerjobs.pid, limit=10)

"""The polling loop: every subscription on its own schedule, at most POLL_CONCURRENCY at once.

A one-second scheduler tick picks the subscriptions that are due and starts a
task for each one not already running, a batch of ``4 × POLL_CONCURRENCY`` at
a time. When a batch was full (more are due), the tick starts the next one as
soon as half of those are done instead of a second later, so a process with
many due feeds polls as fast as its CPU allows, not ``batch`` per second. Each
task is kept (no fire-and-forget) and its failure logged; the tick itself is
guarded so one bad iteration never stops the loop (``tasks.loop`` dies for good
on an unhandled exception).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from discord.ext import commands, tasks

if TYPE_CHECKING:
    from bot.client import BlogMirrorBot

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0


class PollingCog(commands.Cog):
    def __init__(self, bot: BlogMirrorBot) -> None:
        self.bot = bot
        self.gate = asyncio.Semaphore(bot.settings.poll_concurrency)
        self.running: dict[int, asyncio.Task[None]] = {}
        self.completed_rounds = 0
        """Scheduler ticks finished so far: lets tests wait for a round instead of sleeping."""
        self.batch = bot.settings.poll_concurrency * 4
        self._room = asyncio.Event()
        """Set when at most half a batch is running: time to start the next one."""
        self._ended_during_query: set[int] | None = None

    async def cog_load(self) -> None:
        self.scheduler.start()
        self.janitor.start()

    async def cog_unload(self) -> None:
        self.scheduler.cancel()
        self.janitor.cancel()
        tasks_ = list(self.running.values())
        for task in tasks_:
            task.cancel()
        await asyncio.gather(*tasks_, return_exceptions=True)

    @tasks.loop(seconds=TICK_SECONDS)
    async def scheduler(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + TICK_SECONDS
            while await self._start_due() and loop.time() < deadline:
                self._room.clear()
                if len(self.running) > self.batch // 2:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._room.wait(), deadline - loop.time())
            self.bot.metrics.loop_ran()  # for /healthz: a round that failed is no sign of life
        except Exception:
            log.exception("Polling scheduler tick failed")
        finally:
            self.completed_rounds += 1

    async def _start_due(self) -> bool:
        """Start the due subscriptions not running yet; whether more may be due and ours."""
        now = datetime.now(UTC)
        # A poll ending while the query runs may be read as still due (its success
        # committed after the query's snapshot): it must not start again at once.
        ended: set[int] = set()
        self._ended_during_query = ended
        try:
            due = await self.bot.subscriptions.due_ids(now, self.batch, self.bot.local_shards())
        finally:
            self._ended_during_query = None
        running = self.running
        fresh = [id_ for id_ in due if id_ not in running and id_ not in ended]
        # One round trip claims the whole batch; another process's are left alone.
        ours = await self.bot.leases.claim(fresh, now)
        try:  # what their cycles start from, in one query (else one query each)
            await self.bot.read_ahead([id_ for id_ in fresh if id_ in ours])
        except Exception:
            log.exception("Reading ahead for %d due subscription(s) failed", len(ours))
        for id_ in fresh:
            if id_ in ours:
                self._start(id_, claimed_at=now)
        if fresh and not ours:
            return False  # another process holds them: asking again at once would spin
        return len(due) == self.batch

    @tasks.loop(hours=1)
    async def janitor(self) -> None:
        """Prune the outbox's completed intents (kept a day as an audit trail)."""
        try:
            pruned = await self.bot.mirror.prune()
            if pruned:
                log.debug("Pruned %d completed outbox intent(s)", pruned)
        except Exception:
            log.exception("Pruning the outbox failed")

    @scheduler.before_loop
    async def _wait_until_ready(self) -> None:
        await self.bot.wait_until_ready()
        await self._resume_unfinished()

    async def _resume_unfinished(self) -> None:
        """After a restart, finish what was pending at once instead of at the next poll."""
        try:
            waiting = await self.bot.subscriptions.with_unfinished_work(self.bot.local_shards())
        except Exception:
            log.exception("Could not look for unfinished work")
            return
        for sub in waiting:
            if sub.id not in self.running:
                log.info("Resuming unfinished work of %s", sub.feed_url)
                self._start(sub.id)

    def _start(self, subscription_id: int, *, claimed_at: datetime | None = None) -> None:
        task = asyncio.create_task(
            self._run(subscription_id, claimed_at), name=f"poll-{subscription_id}"
        )
        self.running[subscription_id] = task
        task.add_done_callback(functools.partial(self._finished, subscription_id))

    async def _run(self, subscription_id: int, claimed_at: datetime | None) -> None:
        async with self.gate:
            await self.bot.cycle(subscription_id, claimed_at=claimed_at)

    def _finished(self, subscription_id: int, task: asyncio.Task[None]) -> None:
        self.running.pop(subscription_id, None)
        if self._ended_during_query is not None:
            self._ended_during_query.add(subscription_id)
        if len(self.running) <= self.batch // 2:
            self._room.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("Poll of subscription %s crashed", subscription_id, exc_info=task.exception())


async def setup(bot: BlogMirrorBot) -> None:
    await bot.add_cog(PollingCog(bot))

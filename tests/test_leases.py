"""Leases on both backends: one holder at a time per subscription, expiry, release."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from bot.leasekeeper import LeaseKeeper
from storage import Database, SubscriptionRepo
from storage.leases import Leases, SoleHolder, leases_for
from tests.conftest import Harness
from tests.recording import add_subscription

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


async def subscriptions(db: Database, count: int) -> list[int]:
    return [(await add_subscription(db, channel=10 + n, now=NOW)).id for n in range(count)]


async def test_one_holder_at_a_time_until_expiry_or_release(database: Database) -> None:
    """A second holder gets nothing while a lease runs, everything once it lapsed."""
    first, second, third = await subscriptions(database, 3)
    a = Leases(database, "host-a:1", lease_time=timedelta(seconds=60))
    b = Leases(database, "host-b:2", lease_time=timedelta(seconds=60))
    assert await a.claim([first, second], NOW) == {first, second}
    assert await b.claim([first, second, third], NOW) == {third}
    assert await a.claim([first], NOW + timedelta(seconds=30)) == {first}  # renewed
    later = NOW + timedelta(seconds=75)  # second's lease lapsed; first's was renewed
    assert await b.claim([first, second], later) == {second}
    # third's lease, never renewed, has lapsed too
    assert await a.holders([first, second, third], later) == {
        first: "host-a:1",
        second: "host-b:2",
    }
    await a.release([first, second])  # only its own
    assert await b.claim([first, second], later) == {first, second}


async def test_claims_skip_subscriptions_that_no_longer_exist(database: Database) -> None:
    """A subscription removed meanwhile is simply not claimed (no foreign-key error)."""
    [only] = await subscriptions(database, 1)
    await SubscriptionRepo(database).delete(only)
    assert await Leases(database, "x").claim([only, 999], NOW) == set()


async def test_sqlite_needs_no_lease_rows(database: Database) -> None:
    """SQLite's single process gets every claim without writing; PostgreSQL's leases are real."""
    ids = await subscriptions(database, 2)
    leases = leases_for(database, "me")
    before = database.transactions
    assert await leases.claim(ids, NOW) == set(ids)
    if database.backend == "sqlite":
        assert isinstance(leases, SoleHolder) and database.transactions == before
    else:
        assert await Leases(database, "other").claim(ids, NOW) == set()


# One process per SQLite database: another lease holder only exists with PostgreSQL.
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_command_answers_when_another_process_holds_the_lease(harness: Harness) -> None:
    """/blog poll on a subscription another process is working on says so, and polls nothing."""
    harness.feeds.fixture("/feeds/posts/default", "seed/posts.atom.xml")
    harness.feeds.fixture("/feeds/comments/default", "seed/comments.atom.xml")
    await harness.subscribe(harness.feeds.url("/feeds/posts/default"), harness.forum_id)
    await harness.wait_idle()
    [sub] = await harness.bot.subscriptions.list_for_guild(harness.guild_id)
    other = Leases(harness.bot.db, "another-host:42")
    assert await other.claim([sub.id], datetime.now(UTC)) == {sub.id}
    fetched = len(harness.feeds.requests)
    record = await harness.double.invoke_command(
        harness.guild_id, harness.text_id, "blog", "poll", {}
    )
    await record.wait_done()
    assert "Another bot process is working on this blog" in "\n".join(record.contents)
    assert len(harness.feeds.requests) == fetched
    await other.release([sub.id])
    record = await harness.double.invoke_command(
        harness.guild_id, harness.text_id, "blog", "poll", {}
    )
    await record.wait_done()
    assert "✅" in "\n".join(record.contents)


async def test_releases_ending_together_are_one_write(database: Database) -> None:
    """Twenty cycles giving their leases back at once cost one statement, and all are freed."""
    ids = await subscriptions(database, 20)
    a, b = Leases(database, "host-a:1"), Leases(database, "host-b:2")
    assert await a.claim(ids, NOW) == set(ids)
    before = database.transactions
    await asyncio.gather(*(a.release([id_]) for id_ in ids))
    assert database.transactions == before + 1
    assert await b.claim(ids, NOW) == set(ids)


async def test_a_claim_is_not_undone_by_a_release_still_queued(database: Database) -> None:
    """Claiming again while an earlier release waits for its batch keeps the new lease."""
    [only] = await subscriptions(database, 1)
    a, b = Leases(database, "host-a:1"), Leases(database, "host-b:2")
    assert await a.claim([only], NOW) == {only}
    released = a.release([only])  # queued, its batch not yet written
    assert await a.claim([only], NOW) == {only}
    await released
    assert await b.claim([only], NOW) == set()


async def test_one_loop_renews_held_leases_and_cancels_work_whose_lease_was_taken(
    database: Database,
) -> None:
    """Held leases outlive their lease time; one taken by another holder cancels its work."""
    kept, lost = await subscriptions(database, 2)
    a = Leases(database, "host-a:1", lease_time=timedelta(seconds=0.6))
    b = Leases(database, "host-b:2", lease_time=timedelta(seconds=60))
    keeper = LeaseKeeper(a)
    inside: dict[int, asyncio.Event] = {kept: asyncio.Event(), lost: asyncio.Event()}
    finish = asyncio.Event()

    async def work(subscription_id: int) -> None:
        async with keeper.hold(subscription_id) as ours:
            assert ours
            inside[subscription_id].set()
            await finish.wait()

    tasks = {id_: asyncio.create_task(work(id_)) for id_ in (kept, lost)}
    try:
        await asyncio.gather(*(event.wait() for event in inside.values()))
        # Renewed in one loop: after two renewals the first claims would have lapsed.
        await wait_for(lambda: keeper.renewals >= 3)
        assert await b.claim([kept, lost], datetime.now(UTC)) == set()
        # Another process takes ``lost`` (as if this one had stalled past its lease).
        await database.write_one(
            "UPDATE leases SET holder = ? WHERE subscription_id = ?", ("host-b:2", lost)
        )
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(tasks[lost], 10)
        assert not tasks[kept].done()
        finish.set()
        await tasks[kept]
        # Given back when done; the taken one stays with its new holder.
        assert await a.holders([kept, lost], datetime.now(UTC)) == {lost: "host-b:2"}
    finally:
        finish.set()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await keeper.close()


async def test_a_lease_is_given_back_when_the_last_of_its_holders_is_done(
    database: Database,
) -> None:
    """Two pieces of work on one subscription (a command, the scheduler) share its lease."""
    [only] = await subscriptions(database, 1)
    keeper = LeaseKeeper(Leases(database, "host-a:1"))
    other = Leases(database, "host-b:2")
    first_done, second_in = asyncio.Event(), asyncio.Event()
    try:
        async with keeper.hold(only) as first:
            assert first

            async def second() -> None:
                async with keeper.hold(only) as ours:
                    assert ours
                    second_in.set()
                    await first_done.wait()

            task = asyncio.create_task(second())
            await second_in.wait()
        assert await other.claim([only], datetime.now(UTC)) == set()  # the second still works
        first_done.set()
        await task
        assert await other.claim([only], datetime.now(UTC)) == {only}
    finally:
        await keeper.close()


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds, checking as the loop turns."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)

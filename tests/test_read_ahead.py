"""The scheduler reads a claimed batch's subscriptions in one query; a cycle starts from
that read unless someone worked on the subscription in between (both backends)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from storage import Database, SubscriptionRepo
from storage.records import HttpValidators
from tests.conftest import Harness
from tests.recording import add_subscription

POSTS = "/feeds/posts/default"
COMMENTS = "/feeds/comments/default"


async def test_a_batch_reads_as_each_of_its_subscriptions(database: Database) -> None:
    """``get_for_poll_many`` gives what ``get_for_poll`` gives for each id, in one query;
    an id that is gone is left out."""
    repo = SubscriptionRepo(database)
    subs = [await add_subscription(database, channel=10 + n) for n in range(3)]
    now = datetime(2026, 12, 7, tzinfo=UTC)
    first, second = subs[0], subs[1]
    assert second.comments_feed_url is not None
    await repo.store_validators(first.id, first.feed_url, HttpValidators('"a"', None, "h"), now=now)
    await repo.store_validators(
        second.id, second.comments_feed_url, HttpValidators(None, "Mon", None, b"d"), now=now
    )
    await repo.store_validators(
        second.id, second.feed_url, HttpValidators('"b"', None, None), now=now
    )
    ids = [sub.id for sub in subs]

    batch = await repo.get_for_poll_many([*ids, 999_999])

    assert set(batch) == set(ids)
    for id_ in ids:
        assert batch[id_] == await repo.get_for_poll(id_)
    assert len(batch[second.id].validators) == 2
    assert batch[subs[2].id].validators == {}
    assert await repo.get_for_poll_many([]) == {}


def counting(calls: list[Any], method: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return await method(*args, **kwargs)

    return counted


async def subscribed(harness: Harness) -> int:
    harness.feeds.fixture(POSTS, "seed/posts.atom.xml")
    harness.feeds.fixture(COMMENTS, "seed/comments.atom.xml")
    await harness.subscribe(harness.feeds.url(POSTS), harness.forum_id)
    await harness.wait_idle()
    [sub] = await harness.bot.subscriptions.list_for_guild(harness.guild_id)
    return sub.id


async def test_scheduled_polls_start_from_the_batch_read(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A due subscription is polled by the scheduler without a query of its own."""
    sub_id = await subscribed(harness)
    repo = harness.bot.subscriptions
    singles: list[Any] = []
    batches: list[Any] = []
    monkeypatch.setattr(repo, "get_for_poll", counting(singles, repo.get_for_poll))
    monkeypatch.setattr(repo, "get_for_poll_many", counting(batches, repo.get_for_poll_many))
    polled = len(harness.feeds.requests_to(POSTS))

    await repo.poll_soon(sub_id, datetime.now(UTC))
    await harness.wait_for(
        lambda: len(harness.feeds.requests_to(POSTS)) > polled, what="the scheduled poll"
    )
    await harness.wait_idle()

    assert [args[0] for args in batches] == [[sub_id]]
    assert singles == []
    assert harness.bot._read_ahead == {}  # used up


async def test_a_change_between_the_read_and_the_cycle_is_seen(harness: Harness) -> None:
    """Comments turned off after the batch was read: the cycle reads afresh and leaves
    the comments feed alone (it would read it from the stale batch read)."""
    sub_id = await subscribed(harness)
    bot = harness.bot
    await bot.read_ahead([sub_id])
    sub = await bot.subscriptions.get(sub_id)
    assert sub is not None
    await bot.subscriptions.edit(
        sub_id,
        mirror_comments=False,
        mention_role_id=None,
        interval_seconds=sub.interval_seconds,
        interval_custom=False,
        next_poll_at=sub.next_poll_at,
    )
    bot.changed(sub_id)  # as /blog edit does
    comments_read = len(harness.feeds.requests_to(COMMENTS))

    result = await bot.cycle(sub_id)

    assert result.error is None and result.outcome is not None
    assert len(harness.feeds.requests_to(COMMENTS)) == comments_read


async def test_a_cycle_run_meanwhile_makes_the_next_one_read_afresh(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Work under the subscription's lock (a command's cycle) between the batch read and
    the scheduled cycle: that cycle does not start from what was read before it."""
    sub_id = await subscribed(harness)
    bot = harness.bot
    await bot.read_ahead([sub_id])
    await bot.cycle(sub_id)  # takes the read: it is the first to work on it
    await bot.read_ahead([sub_id])
    async with bot.subscription_lock(sub_id):  # a resync, say
        pass
    singles: list[Any] = []
    repo = bot.subscriptions
    monkeypatch.setattr(repo, "get_for_poll", counting(singles, repo.get_for_poll))

    await bot.cycle(sub_id)

    assert len(singles) == 1


async def test_nothing_is_read_ahead_for_a_subscription_being_worked_on(harness: Harness) -> None:
    """A batch read made while a command holds the lock would be stale once it lets go."""
    sub_id = await subscribed(harness)
    bot = harness.bot
    async with bot.subscription_lock(sub_id):
        await bot.read_ahead([sub_id])
        assert sub_id not in bot._read_ahead
    await bot.read_ahead([sub_id])
    assert sub_id in bot._read_ahead

"""WebSub push (SPEC §6) against a local hub double, over real HTTP, on both backends."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from bot.fetch import Fetcher, create_session
from bot.ingest import Ingestor
from bot.models import PushLinks
from bot.parse import parse_feed
from bot.polling import Poller
from bot.untrusted import Untrusted, open_pool
from bot.websub import SAFETY_FACTOR, WebSub, describe, safety_interval, signature_valid
from storage import ArticleRepo, CommentRepo, Database, SubscriptionRepo
from storage.push import PushRepo, PushState, PushTopic
from storage.records import Subscription
from tests import recording
from tests.feedserver import FIXTURES, FeedServer
from tests.websub_hub import HubDouble

HUB_IN_FIXTURES = b"http://pubsubhubbub.appspot.com/"
POSTS = "https://blog.example/feeds/posts/default"
COMMENTS = "https://blog.example/feeds/comments/default"
POSTS_TOPIC = "https://www.blogger.com/feeds/42/posts/default"
COMMENTS_TOPIC = "https://www.blogger.com/feeds/42/comments/default"


@dataclass
class Polls:
    """What ``on_notify`` was asked to poll; a test may hold polls back with ``gate``."""

    calls: list[int] = field(default_factory=list)
    running: int = 0
    most_at_once: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        self.gate.set()

    async def __call__(self, subscription_id: int) -> None:
        async with self.changed:
            self.calls.append(subscription_id)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.changed.notify_all()
        await self.gate.wait()
        async with self.changed:
            self.running -= 1
            self.changed.notify_all()

    def count(self, subscription_id: int) -> int:
        return self.calls.count(subscription_id)

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(condition)


@dataclass
class Push:
    """A subscriber (``WebSub`` behind its callback server), a hub, one subscription."""

    websub: WebSub
    repo: PushRepo
    hub: HubDouble
    polls: Polls
    sub: Subscription
    database: Database

    def links(self, hub: str | None = None) -> list[PushLinks]:
        hub_url = hub if hub is not None else self.hub.url
        return [
            PushLinks(POSTS, hub_url, POSTS_TOPIC),
            PushLinks(COMMENTS, hub_url, COMMENTS_TOPIC),
        ]

    async def rows(self) -> list[PushTopic]:
        return await self.repo.for_subscription(self.sub.id)

    async def wait_rows(self, condition: Callable[[list[PushTopic]], bool]) -> list[PushTopic]:
        """Poll the stored state until ``condition`` holds (state changes come from HTTP)."""
        async with asyncio.timeout(10):
            while not condition(rows := await self.rows()):
                await asyncio.sleep(0.02)
        return rows

    async def activate(self) -> list[PushTopic]:
        await self.websub.observe(self.sub.id, self.links())
        await self.hub.wait_for(
            lambda: bool(self.hub.active(POSTS_TOPIC) and self.hub.active(COMMENTS_TOPIC))
        )
        return await self.wait_rows(lambda rows: all(r.state is PushState.ACTIVE for r in rows))


@contextlib.asynccontextmanager
async def subscriber(
    database: Database, *, allow_private: bool = True, **options: Any
) -> AsyncIterator[tuple[WebSub, Polls, int]]:
    """A ``WebSub`` with its routes on a callback server of the test's own."""
    polls = Polls()
    on_notify = options.pop("on_notify", polls)
    session = create_session(allow_private=allow_private)
    app = web.Application()
    runner = web.AppRunner(app)
    try:
        # The port is known only once bound; the routes read PUBLIC_URL per request.
        websub = WebSub(
            PushRepo(database),
            session,
            public_url="http://127.0.0.1:0",
            allow_private=allow_private,
            on_notify=on_notify,
            max_body_bytes=1_000_000,
            **{"coalesce_seconds": 0.2, "maintain_seconds": 0.05, **options},
        )
        app.add_routes(websub.routes())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        websub.public_url = f"http://127.0.0.1:{port}"
        websub.start()
        try:
            yield websub, polls, port
        finally:
            await websub.stop()
    finally:
        await runner.cleanup()
        await session.close()


@pytest.fixture
async def push(database: Database, loopback_only: None) -> AsyncIterator[Push]:
    sub = await recording.add_subscription(database, now=datetime.now(UTC))
    async with HubDouble() as hub, subscriber(database) as (websub, polls, _port):
        yield Push(websub, websub.repo, hub, polls, sub, database)


async def test_subscribes_at_the_hub_and_confirms_its_own_intent(push: Push) -> None:
    """Each feed gets its own callback and secret; verified, push is active for the hub's lease."""
    rows = await push.activate()
    subscribes = [r for r in push.hub.requests if r.mode == "subscribe"]
    assert {r.topic for r in subscribes} == {POSTS_TOPIC, COMMENTS_TOPIC}
    callbacks = {r.callback for r in subscribes}
    assert len(callbacks) == 2
    assert all(c.startswith(push.websub.public_url + "/websub/") for c in callbacks)
    assert all(len(c.rsplit("/", 1)[1]) >= 32 for c in callbacks)
    assert len({r.secret for r in subscribes}) == 2 and None not in {r.secret for r in subscribes}
    assert all(r.lease_seconds == 10 * 86_400 for r in subscribes)
    assert all(v.confirmed for v in push.hub.verifications)
    now = datetime.now(UTC)
    for row in rows:
        assert row.lease_expires_at is not None
        assert abs(row.lease_expires_at - (now + timedelta(days=10))) < timedelta(minutes=1)
    assert await push.websub.pushed([push.sub.id]) == {push.sub.id}
    assert safety_interval(300, True) == 300 * SAFETY_FACTOR == 1200
    assert safety_interval(300, False) == 300
    assert (await push.websub.status_line(push.sub.id)).startswith("push: active until <t:")


async def test_verification_of_an_intent_we_did_not_ask_for_is_refused(push: Push) -> None:
    """Only a pending topic+mode is confirmed: a forged or repeated verification gets 404."""
    await push.activate()
    callback = push.hub.active(POSTS_TOPIC)[0].callback
    # Nothing pending any more: a second subscribe confirmation is refused.
    assert (await push.hub.verify_intent(callback, POSTS_TOPIC, "subscribe")).status == 404
    # The right callback with another topic, an unsubscribe never asked, a guessed token.
    assert (
        await push.hub.verify_intent(callback, "https://evil.example/", "subscribe")
    ).status == 404
    assert (await push.hub.verify_intent(callback, POSTS_TOPIC, "unsubscribe")).status == 404
    guessed = callback.rsplit("/", 1)[0] + "/not-a-token"
    assert (await push.hub.verify_intent(guessed, POSTS_TOPIC, "subscribe")).status == 404
    assert all(r.state is PushState.ACTIVE for r in await push.rows())


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha384", "sha512"])
async def test_signed_notification_polls_the_subscription(push: Push, algorithm: str) -> None:
    """A notification signed with the subscription's secret makes it poll at once."""
    await push.activate()
    assert await push.hub.publish(POSTS_TOPIC, algorithm=algorithm) == [202]
    await push.polls.wait_for(lambda: push.polls.count(push.sub.id) == 1)


async def test_badly_signed_or_unsigned_notifications_are_ignored(push: Push) -> None:
    """Wrong or missing signatures are answered 2xx (as WebSub allows) but poll nothing."""
    await push.activate()
    assert await push.hub.publish(POSTS_TOPIC, signing="bad") == [202]
    assert await push.hub.publish(POSTS_TOPIC, signing="missing") == [202]
    assert await push.hub.publish(POSTS_TOPIC, algorithm="md5") == [202]
    await _settle(push)
    assert push.polls.count(push.sub.id) == 0
    assert await push.hub.publish(COMMENTS_TOPIC) == [202]
    await push.polls.wait_for(lambda: push.polls.count(push.sub.id) == 1)


async def test_a_burst_of_notifications_is_one_poll(push: Push) -> None:
    """Ten notifications (both topics) within the window cause exactly one poll."""
    await push.activate()
    for index in range(10):
        topic = POSTS_TOPIC if index % 2 else COMMENTS_TOPIC
        assert await push.hub.publish(topic) == [202]
    await push.polls.wait_for(lambda: push.polls.count(push.sub.id) >= 1)
    await _settle(push)
    assert push.polls.count(push.sub.id) == 1


async def test_notifications_during_a_poll_cause_exactly_one_more(push: Push) -> None:
    """News arriving while a poll runs queues one more poll after it, never a concurrent one."""
    await push.activate()
    push.polls.gate.clear()
    await push.hub.publish(POSTS_TOPIC)
    await push.polls.wait_for(lambda: push.polls.running == 1)
    for _ in range(5):
        await push.hub.publish(POSTS_TOPIC)
    # The coalescer queues them behind the poll that is still held, instead of starting one.
    await until(lambda: push.sub.id in push.websub.coalescer.queued)
    assert push.polls.count(push.sub.id) == 1
    push.polls.gate.set()
    await push.polls.wait_for(lambda: push.polls.count(push.sub.id) == 2)
    await _settle(push)
    assert push.polls.count(push.sub.id) == 2
    assert push.polls.most_at_once == 1


async def test_lease_is_renewed_before_it_ends(database: Database, loopback_only: None) -> None:
    """A short lease granted by the hub is renewed before it runs out, with the same callback."""
    sub = await recording.add_subscription(database, now=datetime.now(UTC))
    async with HubDouble(grant_lease=2) as hub, subscriber(database) as (websub, _polls, _port):
        await websub.observe(sub.id, [PushLinks(POSTS, hub.url, POSTS_TOPIC)])
        await hub.wait_for(lambda: len([v for v in hub.verifications if v.confirmed]) >= 3)
        subscribes = [r for r in hub.requests if r.mode == "subscribe"]
        assert len({r.callback for r in subscribes}) == 1
        assert len({r.secret for r in subscribes}) == 1
        [row] = await websub.repo.for_subscription(sub.id)
        assert row.state is PushState.ACTIVE
        assert row.lease_expires_at is not None and row.lease_expires_at > datetime.now(UTC)


async def test_removing_a_subscription_unsubscribes_at_the_hub(push: Push) -> None:
    """``remove`` asks the hub to unsubscribe and confirms it; later notifications get 410."""
    await push.activate()
    callback = push.hub.active(POSTS_TOPIC)[0].callback
    secret = push.hub.active(POSTS_TOPIC)[0].secret
    await push.websub.remove(push.sub.id)
    await push.hub.wait_for(lambda: not push.hub.subscriptions)
    assert {r.topic for r in push.hub.requests if r.mode == "unsubscribe"} == {
        POSTS_TOPIC,
        COMMENTS_TOPIC,
    }
    await recording_delete(push)
    await until_async(lambda: _push_rows(push.database), 0)
    assert await push.hub.notify(callback, secret, b"<feed/>") == 410
    assert push.polls.calls == []


@pytest.mark.parametrize("status", [500, 503, 404])
async def test_hub_errors_leave_push_unavailable(push: Push, status: int) -> None:
    """A hub answering an error: push is unavailable with the reason, polling unchanged."""
    push.hub.fail_status = status
    await push.websub.observe(push.sub.id, push.links())
    rows = await push.wait_rows(
        lambda rows: len(rows) == 2 and all(r.state is PushState.UNAVAILABLE for r in rows)
    )
    assert rows[0].reason == f"the hub 127.0.0.1 answered HTTP {status}"
    assert await push.websub.pushed([push.sub.id]) == set()
    line = await push.websub.status_line(push.sub.id)
    assert line == f"push: not available: the hub 127.0.0.1 answered HTTP {status}"


async def test_a_hub_that_never_verifies_is_given_up(
    database: Database, loopback_only: None
) -> None:
    """No verification within the deadline: unavailable, and retried after the retry delay."""
    sub = await recording.add_subscription(database, now=datetime.now(UTC))
    async with (
        HubDouble(verify=False) as hub,
        subscriber(
            database, verify_timeout=timedelta(seconds=0.3), retry_unavailable=timedelta(hours=1)
        ) as (websub, _polls, _port),
    ):
        await websub.observe(sub.id, [PushLinks(POSTS, hub.url, POSTS_TOPIC)])
        async with asyncio.timeout(10):
            while (row := (await websub.repo.for_subscription(sub.id))[0]).state is not (
                PushState.UNAVAILABLE
            ):
                await asyncio.sleep(0.02)
        assert row.reason == "the hub did not confirm the subscription within 1 min"
        assert row.due_at > datetime.now(UTC) + timedelta(minutes=50)
        assert len(hub.requests) == 1


async def test_a_denied_subscription_is_unavailable(push: Push) -> None:
    """The hub's ``hub.mode=denied`` ends push with the hub's reason in plain words."""
    await push.activate()
    callback = push.hub.active(POSTS_TOPIC)[0].callback
    assert await push.hub.deny(callback, POSTS_TOPIC, "topic\x00 not allowed\nhere") == 200
    line = await push.websub.status_line(push.sub.id)
    assert line == "push: not available: the hub refused the subscription (topic not allowed here)"
    assert await push.websub.pushed([push.sub.id]) == set()


async def test_a_feed_without_a_hub_is_not_pushed(push: Push) -> None:
    """A feed advertising no hub keeps the whole subscription on plain polling."""
    await push.websub.observe(
        push.sub.id,
        [PushLinks(POSTS, push.hub.url, POSTS_TOPIC), PushLinks(COMMENTS, None, None)],
    )
    await push.hub.wait_for(lambda: bool(push.hub.active(POSTS_TOPIC)))
    await push.wait_rows(lambda rows: any(r.state is PushState.ACTIVE for r in rows))
    assert await push.websub.pushed([push.sub.id]) == set()
    line = await push.websub.status_line(push.sub.id)
    assert line == "push: not available: the feed advertises no WebSub hub"


async def test_a_new_hub_replaces_the_old_one(push: Push) -> None:
    """When a feed moves to another hub, the old one is unsubscribed and the new subscribed."""
    await push.activate()
    async with HubDouble() as other:
        await push.websub.observe(push.sub.id, [PushLinks(POSTS, other.url, POSTS_TOPIC)])
        await other.wait_for(lambda: bool(other.active(POSTS_TOPIC)))
        await push.hub.wait_for(lambda: not push.hub.active(POSTS_TOPIC))
        assert push.hub.active(COMMENTS_TOPIC)
        rows = await push.wait_rows(lambda rows: all(r.state is PushState.ACTIVE for r in rows))
        assert {r.hub_url for r in rows} == {push.hub.url, other.url}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_hub_on_a_private_address_is_refused(
    database: Database, loopback_only: None, host: str
) -> None:
    """Without ALLOW_PRIVATE_ADDRESSES a hub on loopback is never contacted."""
    sub = await recording.add_subscription(database, now=datetime.now(UTC))
    async with (
        HubDouble() as hub,
        subscriber(database, allow_private=False) as (websub, _polls, _port),
    ):
        hub_url = f"http://{host}:{hub.port}/"
        await websub.observe(sub.id, [PushLinks(POSTS, hub_url, POSTS_TOPIC)])
        async with asyncio.timeout(10):
            while (row := (await websub.repo.for_subscription(sub.id))[0]).state is not (
                PushState.UNAVAILABLE
            ):
                await asyncio.sleep(0.02)
        assert row.reason == (
            f"the hub {host} is on a private address (set ALLOW_PRIVATE_ADDRESSES=true to allow it)"
        )
        assert hub.requests == []


def test_signature_check() -> None:
    """Each supported algorithm verifies; other methods, case tricks and garbage do not."""
    body = b"<feed/>"
    for method in ("sha1", "sha256", "sha384", "sha512"):
        digest = hmac.new(b"s3cret", body, getattr(hashlib, method)).hexdigest()
        assert signature_valid("s3cret", body, f"{method}={digest}")
        assert signature_valid("s3cret", body, f"{method.upper()}={digest.upper()}")
        assert not signature_valid("other", body, f"{method}={digest}")
        assert not signature_valid("s3cret", body + b" ", f"{method}={digest}")
    md5 = hmac.new(b"s3cret", body, "md5").hexdigest()
    for header in (None, "", "sha256", "=abc", f"md5={md5}", "sha256=zz"):
        assert not signature_valid("s3cret", body, header)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds, looking every 10 ms."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def until_async(count: Callable[[], Awaitable[int]], expected: int) -> None:
    """Wait until ``await count()`` is ``expected``, looking every 20 ms."""
    async with asyncio.timeout(10):
        while await count() != expected:
            await asyncio.sleep(0.02)


async def _stored_comments(database: Database, subscription_id: int) -> int:
    rows = await database.fetch(
        "SELECT count(*) FROM comments WHERE subscription_id = ?", (subscription_id,)
    )
    return int(rows[0][0])


async def _push_rows(database: Database) -> int:
    return int((await database.fetch("SELECT count(*) FROM push_topics"))[0][0])


async def recording_delete(push: Push) -> None:
    """Delete the subscription the way ``/blog unsubscribe`` does, after ``remove``."""
    await SubscriptionRepo(push.database).delete(push.sub.id)


async def _settle(push: Push) -> None:
    """Wait until the coalescer has drained everything sent so far: a notification for
    another subscription is polled only after any polls still owed to earlier ones."""
    before = {s.callback for s in push.hub.subscriptions.values()}
    other = await recording.add_subscription(push.database, channel=99, now=datetime.now(UTC))
    await push.websub.observe(other.id, [PushLinks(POSTS, push.hub.url, POSTS_TOPIC)])
    await push.hub.wait_for(lambda: len(push.hub.active(POSTS_TOPIC)) == 2)
    [new] = [s for s in push.hub.active(POSTS_TOPIC) if s.callback not in before]
    assert await push.hub.notify(new.callback, new.secret, b"<feed/>") == 202
    await push.polls.wait_for(lambda: push.polls.count(other.id) == 1 and push.polls.running == 0)


async def test_polls_observing_at_once_subscribe_each_feed_once(push: Push) -> None:
    """Two polls of one subscription reporting the same links make one row and request per feed."""
    await asyncio.gather(
        push.websub.observe(push.sub.id, push.links()),
        push.websub.observe(push.sub.id, push.links()),
    )
    await push.wait_rows(lambda rows: all(r.state is PushState.ACTIVE for r in rows))
    assert len(await push.rows()) == 2
    assert sorted(r.topic for r in push.hub.requests) == [COMMENTS_TOPIC, POSTS_TOPIC]


async def test_due_rows_are_claimed_by_one_taker(database: Database) -> None:
    """Takers racing for due rows (processes sharing PostgreSQL) each get different ones."""
    repo = PushRepo(database)
    now = datetime.now(UTC)
    for index in range(20):
        sub = await recording.add_subscription(database, channel=100 + index, now=now)
        await repo.add(
            subscription_id=sub.id,
            feed_url=POSTS,
            hub_url="https://hub.example/",
            topic_url=POSTS_TOPIC,
            callback_token=f"token-{index}",
            secret="s",
            state=PushState.ACTIVE,
            reason=None,
            due_at=now - timedelta(seconds=1),
            now=now,
        )
    later = now + timedelta(minutes=5)
    taken = await asyncio.gather(
        *(repo.claim_due(now, hold_until=later, limit=20) for _ in range(4))
    )
    ids = [row.id for batch in taken for row in batch]
    assert len(ids) == len(set(ids)) == 20
    assert await repo.claim_due(now, hold_until=later) == []
    assert all(row.due_at == later for batch in taken for row in batch)


def test_hub_and_topic_are_read_from_atom_and_json_feeds() -> None:
    """Blogger's Atom names its hub and self link; JSON Feed its WebSub ``hubs`` and feed_url."""
    atom = parse_feed((FIXTURES / "seed" / "posts.atom.xml").read_bytes(), POSTS)
    assert atom.hub_url == "http://pubsubhubbub.appspot.com/"
    assert atom.self_url == "https://www.blogger.com/feeds/4790201928346512375/posts/default"
    document = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "J",
        "feed_url": "/feed.json",
        "hubs": [
            {"type": "rssCloud", "url": "https://cloud.example/"},
            {"type": "WebSub", "url": "https://hub.example/"},
        ],
        "items": [],
    }
    json_feed = parse_feed(json.dumps(document).encode(), "https://jay.example/x/feed.json")
    assert (json_feed.hub_url, json_feed.self_url) == (
        "https://hub.example/",
        "https://jay.example/feed.json",
    )
    bare = parse_feed((FIXTURES / "real" / "wp_posts.rss2.xml").read_bytes(), POSTS)
    assert bare.hub_url is None


def test_status_lines_in_plain_words() -> None:
    """Each push state reads as one plain line."""
    now = datetime.now(UTC)

    def row(
        state: PushState, reason: str | None = None, lease: timedelta | None = None
    ) -> PushTopic:
        return PushTopic(
            id=1,
            subscription_id=1,
            feed_url=POSTS,
            hub_url="https://hub.example/",
            topic_url=POSTS_TOPIC,
            callback_token="t",
            secret="s",
            state=state,
            reason=reason,
            requested_at=None,
            lease_expires_at=now + lease if lease is not None else None,
            due_at=now,
            updated_at=now,
        )

    until = now + timedelta(days=3)
    assert describe([], now) == "push: not set up yet (the next poll that reads the feed will)"
    assert describe([row(PushState.ACTIVE, lease=timedelta(days=3))], now) == (
        f"push: active until <t:{int(until.timestamp())}:f>"
    )
    assert describe([row(PushState.SUBSCRIBING)], now) == (
        "push: waiting for the hub to confirm the subscription"
    )
    assert (
        describe(
            [row(PushState.ACTIVE, lease=timedelta(days=3)), row(PushState.UNAVAILABLE, "no hub")],
            now,
        )
        == "push: not available: no hub"
    )
    assert describe([row(PushState.ACTIVE, lease=-timedelta(seconds=1))], now) == (
        "push: not available: the hub subscription has lapsed; it is being renewed"
    )


async def test_a_notification_brings_a_new_comment_in_through_the_poller(
    database: Database, loopback_only: None
) -> None:
    """Wired as the bot will be: a later comment arrives by the poll a notification triggers."""
    async with (
        FeedServer() as server,
        HubDouble() as hub,
        create_session(allow_private=True) as session,
        open_pool() as pool,
    ):
        seed = FIXTURES / "seed"
        posts = (seed / "posts.atom.xml").read_bytes().replace(HUB_IN_FIXTURES, hub.url.encode())
        full = (seed / "comments.atom.xml").read_bytes().replace(HUB_IN_FIXTURES, hub.url.encode())
        first, end = full.index(b"<entry>"), full.index(b"</entry>") + len(b"</entry>")
        server.route("/feeds/posts/default", posts)
        server.route("/feeds/comments/default", full[:first] + full[end:])
        subs, comments = SubscriptionRepo(database), CommentRepo(database)
        fetcher = Fetcher(session, timeout=10, max_bytes=1_000_000, allow_private=True)
        ingestor = Ingestor(fetcher, subs, ArticleRepo(database), comments, Untrusted(pool))
        poller = Poller(ingestor, subs)
        sub = await subs.add(
            guild_id=1,
            channel_id=10,
            feed_url=server.url("/feeds/posts/default"),
            blog_url=None,
            blog_title="",
            dialect="blogger",
            comments_feed_url=server.url("/feeds/comments/default"),
            mirror_comments=True,
            backfill=1,
            interval_seconds=600,
            now=datetime(2019, 4, 1, tzinfo=UTC),
            next_poll_at=datetime(2019, 4, 1, tzinfo=UTC),
        )
        finished: list[int] = []

        async def poll(subscription_id: int) -> None:
            """What the bot's ``on_notify`` does: poll (the poller keeps push in line)."""
            current = await subs.get(subscription_id)
            assert current is not None
            outcome = await poller.poll(current)
            assert outcome.summary is not None, outcome.error
            finished.append(subscription_id)

        async with subscriber(database, on_notify=poll) as (websub, _polls, _port):
            poller.push = websub
            await poll(sub.id)
            blog = "https://www.blogger.com/feeds/4790201928346512375"
            topics = (f"{blog}/posts/default", f"{blog}/comments/default")
            await hub.wait_for(lambda: all(hub.active(topic) for topic in topics))
            await until_async(lambda: _stored_comments(database, sub.id), 6)
            assert await websub.pushed([sub.id]) == {sub.id}

            server.route("/feeds/comments/default", full)
            assert await hub.publish(topics[1], full) == [202]
            await until(lambda: len(finished) == 2)
            assert await _stored_comments(database, sub.id) == 7
            # That poll, of a pushed subscription, set the next one 4 × 600 s ± 10 % away.
            polled = await subs.get(sub.id)
            assert polled is not None and polled.last_poll_at is not None
            wait = (polled.next_poll_at - polled.last_poll_at).total_seconds()
            assert 2400 * 0.9 <= wait <= 2400 * 1.1


async def test_a_subscription_deleted_without_remove_is_unsubscribed_at_renewal(
    database: Database, loopback_only: None
) -> None:
    """A push row orphaned by a plain delete is unsubscribed when it next falls due."""
    sub = await recording.add_subscription(database, now=datetime.now(UTC))
    async with HubDouble(grant_lease=1) as hub, subscriber(database) as (websub, _polls, _port):
        await websub.observe(sub.id, [PushLinks(POSTS, hub.url, POSTS_TOPIC)])
        await hub.wait_for(lambda: bool(hub.active(POSTS_TOPIC)))
        await SubscriptionRepo(database).delete(sub.id)
        await hub.wait_for(lambda: any(r.mode == "unsubscribe" for r in hub.requests))
        await hub.wait_for(lambda: not hub.subscriptions)
        await until_async(lambda: _push_rows(database), 0)


async def test_rows_no_hub_holds_are_dropped_at_once(push: Push) -> None:
    """Removing a subscription whose feeds were never subscribed asks no hub anything."""
    push.hub.fail_status = 503
    await push.websub.observe(
        push.sub.id, [PushLinks(POSTS, push.hub.url, POSTS_TOPIC), PushLinks(COMMENTS, None, None)]
    )
    await push.wait_rows(lambda rows: all(r.state is PushState.UNAVAILABLE for r in rows))
    await push.websub.remove(push.sub.id)
    assert await _push_rows(push.database) == 0
    assert [r.mode for r in push.hub.requests] == ["subscribe"]


async def test_a_hub_that_does_not_answer_in_time_leaves_push_unavailable(
    database: Database, loopback_only: None
) -> None:
    """A hub slower than the timeout is a failure, and its late verification is refused."""
    sub = await recording.add_subscription(database, now=datetime.now(UTC))
    async with (
        HubDouble(delay=1) as hub,
        subscriber(database, hub_timeout=0.2) as (websub, _polls, _port),
    ):
        await websub.observe(sub.id, [PushLinks(POSTS, hub.url, POSTS_TOPIC)])
        async with asyncio.timeout(10):
            while (row := (await websub.repo.for_subscription(sub.id))[0]).state is not (
                PushState.UNAVAILABLE
            ):
                await asyncio.sleep(0.02)
        assert row.reason == "the hub 127.0.0.1 did not answer within 0.2 s"
        # The hub gets round to verifying later: too late, it is refused.
        await hub.wait_for(lambda: len(hub.verifications) == 1)
        assert hub.verifications[0].status == 404
        assert hub.subscriptions == {}


async def test_only_the_pending_intent_is_confirmed(
    database: Database, loopback_only: None
) -> None:
    """While our subscribe awaits verification, only its exact topic, mode and a challenge count."""
    sub = await recording.add_subscription(database, now=datetime.now(UTC))
    async with HubDouble(verify=False) as hub, subscriber(database) as (websub, _polls, _port):
        await websub.observe(sub.id, [PushLinks(POSTS, hub.url, POSTS_TOPIC)])
        await hub.wait_for(lambda: len(hub.requests) == 1)
        callback = hub.requests[0].callback
        forged = [
            await hub.verify_intent(callback, "https://evil.example/feed", "subscribe"),
            await hub.verify_intent(callback, POSTS_TOPIC, "unsubscribe"),
            await hub.verify_intent(callback, POSTS_TOPIC, "subscribe", challenge=""),
            await hub.verify_intent(callback, POSTS_TOPIC, "subscribe", challenge="x" * 2000),
        ]
        assert [v.status for v in forged] == [404, 404, 404, 404]
        assert await hub.deny(callback, "https://evil.example/feed", "no") == 404
        [row] = await websub.repo.for_subscription(sub.id)
        assert (row.state, row.requested_at is not None) == (PushState.SUBSCRIBING, True)
        # An absurd lease is taken as a year, not an overflow.
        genuine = await hub.verify_intent(callback, POSTS_TOPIC, "subscribe", 10**15)
        assert (genuine.status, genuine.confirmed) == (200, True)
        [row] = await websub.repo.for_subscription(sub.id)
        assert row.state is PushState.ACTIVE and row.lease_expires_at is not None
        assert row.lease_expires_at < datetime.now(UTC) + timedelta(days=367)


async def test_notifications_while_unsubscribing_are_gone(push: Push) -> None:
    """Once removed, a subscription's notifications get 410 even before the hub confirms."""
    await push.activate()
    [held] = push.hub.active(POSTS_TOPIC)
    push.hub.verify = False
    await push.websub.remove(push.sub.id)
    await push.hub.wait_for(lambda: sum(r.mode == "unsubscribe" for r in push.hub.requests) == 2)
    assert await push.hub.notify(held.callback, held.secret, b"<feed/>") == 410
    assert await _push_rows(push.database) == 2
    assert push.polls.calls == []

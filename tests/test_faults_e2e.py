"""Discord misbehaving mid-backfill: no duplicates, nothing lost, the bot keeps running."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import pytest

from tests.conftest import Harness
from tests.feedgen import GenComment, at, blogger_comments, blogger_post, blogger_posts

NUMBER = re.compile(r"comment number (\d+)\b")
MESSAGES = r"/channels/\d+/messages"
FORUM_POSTS = r"/channels/\d+/threads"


def serve(harness: Harness, articles: int = 1, per_article: int = 20) -> int:
    """``articles`` posts with ``per_article`` comments each; returns the comment count.

    Each post's own comments feed is served too (``/blog resync`` reads it).
    """
    posts = [
        blogger_post(
            str(900 + a),
            f"Article {a}",
            at(a),
            comments_url=harness.feeds.url(f"/feeds/{900 + a}/comments/default"),
        )
        for a in range(articles)
    ]
    harness.feeds.route("/feeds/posts/default", blogger_posts(posts))
    comments = [
        GenComment(
            10_000 + a * 1000 + n, at(60 + n), f"comment number {a * 1000 + n}", post=str(900 + a)
        )
        for a in range(articles)
        for n in range(per_article)
    ]
    harness.feeds.route("/feeds/comments/default", blogger_comments(comments))
    for a in range(articles):
        own = [c for c in comments if c.post == str(900 + a)]
        harness.feeds.route(f"/feeds/{900 + a}/comments/default", blogger_comments(own))
    return len(comments)


def numbers(harness: Harness) -> Counter[int]:
    seen: Counter[int] = Counter()
    for thread in harness.double.threads(harness.forum_id):
        for message in harness.double.messages(int(thread["id"])):
            found = NUMBER.findall(message["content"])
            if found:
                seen[int(found[0])] += 1
    return seen


async def backfill(harness: Harness, articles: int, total: int, rounds: int = 6) -> None:
    """Subscribe, then poll until everything is there (failed rounds retry next poll)."""
    await harness.subscribe(
        harness.feeds.url("/feeds/posts/default"), harness.forum_id, backfill=articles
    )
    for _ in range(rounds):
        if sum(numbers(harness).values()) >= total:
            break
        record = await harness.double.invoke_command(
            harness.guild_id, harness.text_id, "blog", "poll", {}
        )
        await record.wait_done()


def assert_exactly_once(harness: Harness, total: int, articles: int) -> None:
    seen = numbers(harness)
    duplicates = {n: c for n, c in seen.items() if c > 1}
    assert not duplicates, duplicates
    assert len(seen) == total
    names = Counter(t["name"] for t in harness.double.threads(harness.forum_id))
    assert len(names) == articles and set(names.values()) == {1}


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_after_the_message_was_made(harness: Harness, status: int) -> None:
    """5xx answers after Discord already created the message never duplicate it."""
    total = serve(harness)
    harness.double.inject_fault(
        "error_after_commit", MESSAGES, method="POST", status=status, times=2
    )
    await backfill(harness, 1, total)
    assert_exactly_once(harness, total, 1)


async def test_connection_resets_and_timeouts_on_messages(harness: Harness) -> None:
    """Resets after the message was made, and a response that never comes in time."""
    total = serve(harness)
    harness.double.inject_fault("reset_after_commit", MESSAGES, method="POST", times=3)
    harness.double.inject_fault("delay_after_commit", MESSAGES, method="POST", delay=60, times=1)
    harness.bot.mirror.policy.timeout = 1.0
    await backfill(harness, 1, total)
    assert_exactly_once(harness, total, 1)


@pytest.mark.parametrize("kind", ["error_after_commit", "reset_after_commit"])
async def test_faults_on_forum_post_creation(harness: Harness, kind: str) -> None:
    """A forum post whose creation answer is lost is found again, not made twice."""
    total = serve(harness, articles=3, per_article=4)
    harness.double.inject_fault(kind, FORUM_POSTS, method="POST", status=500, times=2)
    await backfill(harness, 3, total)
    assert_exactly_once(harness, total, 3)


async def test_forum_post_answer_that_never_comes(harness: Harness) -> None:
    """A forum post whose answer times out is found in the forum, not made again."""
    total = serve(harness, articles=2, per_article=3)
    harness.double.inject_fault("delay_after_commit", FORUM_POSTS, method="POST", delay=60, times=1)
    harness.bot.mirror.policy.timeout = 1.0
    await backfill(harness, 2, total)
    assert_exactly_once(harness, total, 2)


async def test_rate_limit_storms(harness: Harness) -> None:
    """Per-channel and global 429 storms: retried, nothing lost or doubled."""
    total = serve(harness, articles=2, per_article=15)
    harness.double.inject_fault("rate_limit", MESSAGES, method="POST", retry_after=0.05, times=6)
    harness.double.inject_fault(
        "rate_limit", MESSAGES, method="POST", scope="global", retry_after=0.05, times=6
    )
    await backfill(harness, 2, total)
    assert_exactly_once(harness, total, 2)


@pytest.mark.parametrize("resume", [True, False])
async def test_gateway_dropped_mid_backfill(harness: Harness, resume: bool) -> None:
    """The gateway drops (resume, or a fresh IDENTIFY) while comments are being posted."""
    total = serve(harness, articles=1, per_article=40)
    harness.double.set_rate_limit("POST /channels/{channel_id}/messages", 10, 1.0)
    task = asyncio.create_task(backfill(harness, 1, total))
    await harness.wait_for(lambda: sum(numbers(harness).values()) >= 5)
    await harness.double.drop_gateway(resume=resume)
    await task
    await harness.double.wait_ready()
    assert_exactly_once(harness, total, 1)
    # Still alive: a new comment arrives on the next poll.
    harness.feeds.route(
        "/feeds/comments/default",
        blogger_comments([GenComment(99_999, at(500), "comment number 99999", post="900")]),
    )
    record = await harness.double.invoke_command(
        harness.guild_id, harness.text_id, "blog", "poll", {}
    )
    await record.wait_done()
    assert numbers(harness)[99_999] == 1


async def test_one_refused_article_does_not_hold_back_the_others(harness: Harness) -> None:
    """A forum post Discord refuses is set aside: the others go on; resync makes it later."""
    total = serve(harness, articles=3, per_article=2)
    harness.double.inject_fault(
        "error_before",
        FORUM_POSTS,
        method="POST",
        status=400,
        times=1,
        body={"message": "Invalid Form Body", "code": 50035},
    )
    record = await harness.subscribe(
        harness.feeds.url("/feeds/posts/default"), harness.forum_id, backfill=3
    )
    await record.wait_for(lambda r: any("Discord refused 1 item" in c for c in r.contents))
    assert len(harness.double.threads(harness.forum_id)) == 2
    assert sum(numbers(harness).values()) == 4
    [sub] = await harness.bot.subscriptions.list_for_guild(harness.guild_id)
    assert sub.consecutive_failures == 0 and sub.last_error is None
    counts = await harness.bot.subscriptions.counts(sub.id)
    assert counts.set_aside == 1 and counts.latest_refusal == "50035: Invalid Form Body"
    # A poll does not retry it (it would be refused again); a resync of the article does.
    await backfill_poll(harness)
    assert len(harness.double.threads(harness.forum_id)) == 2
    refused = {t["name"] for t in harness.double.threads(harness.forum_id)} ^ {
        "Article 0",
        "Article 1",
        "Article 2",
    }
    [name] = refused
    resync = await harness.double.invoke_command(
        harness.guild_id,
        harness.text_id,
        "blog",
        "resync",
        {"article_url": f"https://probationmatters.blogspot.com/{900 + int(name[-1])}.html"},
    )
    await resync.wait_done()
    assert_exactly_once(harness, total, 3)
    assert (await harness.bot.subscriptions.counts(sub.id)).set_aside == 0


async def backfill_poll(harness: Harness) -> None:
    record = await harness.double.invoke_command(
        harness.guild_id, harness.text_id, "blog", "poll", {}
    )
    await record.wait_done()

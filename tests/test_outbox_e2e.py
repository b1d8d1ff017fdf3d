"""The outbox end to end: refused items set aside, shared permalinks, multi-part comments.

Each test runs the real bot against the Discord double and the local feed
server, and reads what Discord holds.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.render import comment_key, key_in
from storage.outbox import NewIntent
from storage.records import ArticleState, CommentState, IntentKind
from tests.conftest import Harness
from tests.feedgen import (
    ARTICLE_URL,
    POST,
    SITE,
    GenComment,
    at,
    blogger_comments,
    blogger_post,
    blogger_posts,
    comment_id,
)

MESSAGES = r"/channels/\d+/messages"
REFUSAL = {"message": "Invalid Form Body", "code": 50035}


def serve(harness: Harness, comments: list[GenComment], *, shared_permalink: bool = False) -> str:
    """One article (with its own comments feed for resync) and ``comments``."""
    own = harness.feeds.url(f"/feeds/{POST}/comments/default")
    post = blogger_post(POST, "The article", at(0), comments_url=own)
    harness.feeds.route("/feeds/posts/default", blogger_posts([post]))
    page = blogger_comments(comments)
    if shared_permalink:
        # A sloppy feed: every comment's link is the article itself.
        page = re.sub(rb"href='[^']*#c\d+'", f"href='{ARTICLE_URL}'".encode(), page)
    harness.feeds.route("/feeds/comments/default", page)
    harness.feeds.route(f"/feeds/{POST}/comments/default", page)
    return harness.feeds.url("/feeds/posts/default")


async def command(harness: Harness, name: str, **options: Any) -> Any:
    """Run ``/blog name`` and wait for its final answer (progress edits come before it)."""
    record = await harness.double.invoke_command(
        harness.guild_id, harness.text_id, "blog", name, options
    )
    await record.wait_done()
    return await record.wait_for(
        lambda r: bool(r.messages) and not any("⏳" in c for c in r.contents)
    )


def thread_messages(harness: Harness) -> list[dict[str, Any]]:
    [thread] = harness.double.threads(harness.forum_id)
    return harness.double.messages(int(thread["id"]))[1:]  # after the article message


def texts(harness: Harness) -> list[str]:
    return [m["content"] for m in thread_messages(harness)]


async def subscription(harness: Harness) -> Any:
    [sub] = await harness.bot.subscriptions.list_for_guild(harness.guild_id)
    return sub


async def test_a_refused_comment_is_set_aside_and_the_thread_goes_on(harness: Harness) -> None:
    """A 400 on one comment: later comments and its reply go on; no failure; resync retries."""
    comments = [
        GenComment(1, at(1), "first comment"),
        GenComment(2, at(2), "refused comment"),
        GenComment(3, at(3), "reply to the refused one", parent=2),
        GenComment(4, at(4), "last comment"),
    ]
    url = serve(harness, comments)
    fault = harness.double.inject_fault(
        "error_before",
        MESSAGES,
        method="POST",
        status=400,
        body=REFUSAL,
        content="refused comment",
        times=1,
    )
    await harness.subscribe(url, harness.forum_id)
    await harness.wait_for_thread_messages(harness.forum_id, 4)
    assert fault.hits == 1
    shown = texts(harness)
    assert [next(w for w in ("first", "reply", "last") if w in t) for t in shown] == [
        "first",
        "reply",
        "last",
    ]
    reply = thread_messages(harness)[1]
    assert "no longer available" in reply["content"] and not reply.get("message_reference")
    for _ in range(3):  # polls neither retry it nor count it as a failure
        await command(harness, "poll")
    sub = await subscription(harness)
    assert sub.consecutive_failures == 0 and sub.last_error is None
    assert fault.hits == 1 and len(texts(harness)) == 3
    status = await command(harness, "status", feed=url)
    embeds = [e for m in status.messages for e in m.get("embeds") or []]
    field = next(f for e in embeds for f in e["fields"] if f["name"] == "Set aside")
    assert (
        "1 item(s) Discord refused" in field["value"]
        and "50035: Invalid Form Body" in field["value"]
    )
    summary = await command(harness, "status")
    assert "1 item(s) Discord refused" in "\n".join(summary.contents)
    resync = await command(harness, "resync", article_url=f"{SITE}/{POST}.html")
    assert "posted 1 comment(s)" in "\n".join(resync.contents)
    assert sum("refused comment" in t for t in texts(harness)) == 1
    assert (await harness.bot.subscriptions.counts(sub.id)).set_aside == 0


async def test_a_refused_text_channel_article_does_not_stop_the_others(harness: Harness) -> None:
    """A 400 on one article message in a text channel: the other article and its comments go."""
    posts = [
        blogger_post("801", "Refused article", at(0)),
        blogger_post("802", "Fine article", at(1)),
    ]
    harness.feeds.route("/feeds/posts/default", blogger_posts(posts))
    harness.feeds.route(
        "/feeds/comments/default",
        blogger_comments(
            [
                GenComment(11, at(5), "on the refused article", post="801"),
                GenComment(12, at(6), "on the fine article", post="802"),
            ]
        ),
    )
    harness.double.inject_fault(
        "error_before",
        MESSAGES,
        method="POST",
        status=400,
        body=REFUSAL,
        content="Refused article",
        times=1,
    )
    record = await harness.subscribe(
        harness.feeds.url("/feeds/posts/default"), harness.text_id, backfill=2
    )
    await record.wait_for(lambda r: any("Discord refused 1 item" in c for c in r.contents))
    [thread] = harness.double.threads(harness.text_id)
    assert thread["name"] == "Fine article"
    inside = [m["content"] for m in harness.double.messages(int(thread["id"])) if m["type"] != 21]
    assert len(inside) == 1 and "on the fine article" in inside[0]
    sub = await subscription(harness)
    assert sub.consecutive_failures == 0
    counts = await harness.bot.subscriptions.counts(sub.id)
    assert counts.set_aside == 1 and counts.latest_refusal == "50035: Invalid Form Body"


async def test_shared_permalinks_and_a_send_that_made_nothing(harness: Harness) -> None:
    """Comments sharing one permalink, one send failing before Discord made it: both appear."""
    comments = [GenComment(n, at(n), f"comment number {n}") for n in range(1, 4)]
    url = serve(harness, comments, shared_permalink=True)
    # Every try of the second comment fails before anything is made: that poll gives up
    # with its intent open, and the next one must not take comment 1's message for it.
    fault = harness.double.inject_fault(
        "reset_before", MESSAGES, method="POST", content="comment number 2", times=4
    )
    await harness.subscribe(url, harness.forum_id)
    await harness.wait_for(lambda: fault.hits == 4)
    sub = await subscription(harness)
    await harness.wait_for(lambda: len(harness.double.threads(harness.forum_id)) == 1)
    await command(harness, "poll")
    await harness.wait_for_thread_messages(harness.forum_id, 4)
    shown = texts(harness)
    assert [int(re.findall(r"comment number (\d)", t)[0]) for t in shown] == [1, 2, 3]
    keys = [key_in(t) for t in shown]
    assert keys == [(comment_key(sub.id, comment_id(n)), 0) for n in (1, 2, 3)]
    [article] = await harness.bot.articles.list_by_state(sub.id, ArticleState.POSTED)
    stored = await harness.bot.comments.for_article(article.id)
    assert {c.state for c in stored} == {CommentState.POSTED}
    assert sorted(c.message_id for c in stored) == sorted(
        int(m["id"]) for m in thread_messages(harness)
    )


def long_text(label: str, sentences: int) -> str:
    """Numbered sentences, so any lost or repeated text shows."""
    return " ".join(f"{label} sentence {n:03d} goes on for a while here." for n in range(sentences))


def sentences_in(contents: list[str], label: str) -> list[int]:
    return [int(n) for text in contents for n in re.findall(rf"{label} sentence (\d{{3}})", text)]


async def test_multi_part_comment_grows_then_is_removed(harness: Harness) -> None:
    """A long comment in parts; a reply points at part 1; an edit needing more parts loses
    no text; a removal leaves one placeholder and deletes the other parts."""
    long = GenComment(1, at(1), long_text("long", 60))  # ~2,900 characters: two parts
    reply = GenComment(2, at(2), "a reply to the long one", parent=1)
    url = serve(harness, [long, reply])
    await harness.subscribe(url, harness.forum_id)
    await harness.wait_for_thread_messages(harness.forum_id, 4)
    first, second, answer = thread_messages(harness)
    assert sentences_in([first["content"], second["content"]], "long") == list(range(60))
    assert key_in(second["content"]) is not None and key_in(second["content"])[1] == 1  # type: ignore[index]
    assert answer["message_reference"]["message_id"] == first["id"]

    grown = GenComment(1, at(1), long_text("long", 100))  # now three parts
    serve(harness, [grown, reply])
    await command(harness, "poll")
    contents = texts(harness)
    assert len(contents) == 4
    assert sentences_in([contents[0], contents[1], contents[3]], "long") == list(range(100))
    extra = thread_messages(harness)[3]
    assert extra["message_reference"]["message_id"] == first["id"]  # continues part 1
    assert key_in(extra["content"]) == (key_in(first["content"])[0], 2)  # type: ignore[index]

    removed = GenComment(1, at(1), "", removed=True)
    serve(harness, [removed, reply])
    await command(harness, "poll")
    remaining = thread_messages(harness)
    assert [m["id"] for m in remaining] == [first["id"], answer["id"]]
    assert "removed on the blog" in remaining[0]["content"]
    assert "sentence" not in remaining[0]["content"]
    sub = await subscription(harness)
    [article] = await harness.bot.articles.list_by_state(sub.id, ArticleState.POSTED)
    [stored, _] = await harness.bot.comments.for_article(article.id)
    assert stored.parts_sent == 1 and stored.extra_message_ids == ()
    assert stored.state == CommentState.POSTED


async def test_the_janitor_prunes_completed_intents_older_than_a_day(harness: Harness) -> None:
    """The polling cog's hourly janitor forgets completed intents after a day, keeps the rest."""
    url = serve(harness, [GenComment(1, at(1), "one comment")])
    await harness.subscribe(url, harness.forum_id)
    await harness.wait_idle()
    sub = await subscription(harness)
    outbox = harness.bot.outbox
    [thread] = harness.double.threads(harness.forum_id)
    [open_] = await outbox.open(
        [NewIntent(sub.id, IntentKind.COMMENT_PART, 1, int(thread["id"]))],
        now=datetime.now(UTC) - timedelta(days=3),
    )
    cog = harness.bot.get_cog("PollingCog")
    assert cog is not None
    harness.bot.mirror.clock = lambda: datetime.now(UTC) + timedelta(days=2)
    await cog.janitor()  # type: ignore[attr-defined]
    left = [row[0] for row in await harness.bot.db.fetch("SELECT id FROM outbox")]
    assert left == [open_.id]  # the completed ones went; the open one never does

"""The bot end to end: real discord.py client, Discord double, local feed server, SQLite."""

from __future__ import annotations

from typing import Any

from tests.conftest import Harness
from tests.feedserver import FIXTURES

SEED = FIXTURES / "seed"
TITLE = "Great Leadership, But Poor Output?"
SEED_ORDER = [
    "Almost a copy and paste",
    "This is easily explained",
    "Yes so true upw",
    "I think we need to think",
    "Thank you 18:08",
    "Carrot and stick",
    "'For the period",
]


def serve_seed(harness: Harness) -> str:
    harness.feeds.fixture("/feeds/posts/default", "seed/posts.atom.xml", etag='"p1"')
    harness.feeds.fixture("/feeds/comments/default", "seed/comments.atom.xml", etag='"c1"')
    return harness.feeds.url("/feeds/posts/default")


def reply_to(message: dict[str, Any]) -> str | None:
    reference = message.get("message_reference")
    return str(reference["message_id"]) if reference else None


def assert_seed_thread(messages: list[dict[str, Any]]) -> None:
    """The starter message, then the seed's 7 comments in order, replies on their parents."""
    starter, *comments = messages
    assert TITLE in starter["content"]
    assert len(comments) == 7
    for text, message in zip(SEED_ORDER, comments, strict=True):
        assert text in message["content"], (text, message["content"][:120])
    ids = [m["id"] for m in comments]
    assert [reply_to(m) for m in comments] == [None, ids[0], ids[0], None, None, ids[4], None]
    for message in messages:
        assert (
            message["allowed_mentions"] == {"parse": []}
            or message["allowed_mentions"].get("parse") == []
        )


async def test_subscribe_seed_into_a_forum(harness: Harness) -> None:
    """/blog subscribe on the seed blog makes one forum post holding exactly the seed thread."""
    url = serve_seed(harness)
    record = await harness.subscribe(url, harness.forum_id)
    assert record.ephemeral
    await harness.wait_for(lambda: sum(map(len, harness.thread_messages(harness.forum_id))) >= 8)
    [thread] = harness.double.threads(harness.forum_id)
    assert thread["name"] == TITLE
    assert_seed_thread(harness.double.messages(int(thread["id"])))
    text = "\n".join(record.contents)
    assert "On Probation" in text and url in text


async def test_subscribe_seed_into_a_text_channel(harness: Harness) -> None:
    """In a text channel the article message is posted there and the thread made from it."""
    url = serve_seed(harness)
    await harness.subscribe(url, harness.text_id)
    await harness.wait_for(lambda: sum(map(len, harness.thread_messages(harness.text_id))) >= 7)
    [thread] = harness.double.threads(harness.text_id)
    [starter] = [m for m in harness.double.messages(harness.text_id) if TITLE in m["content"]]
    assert thread["id"] == starter["id"]
    # Discord opens a thread made from a message with a "thread starter" system message.
    inside = [m for m in harness.double.messages(int(thread["id"])) if m["type"] != 21]
    assert_seed_thread([starter, *inside])

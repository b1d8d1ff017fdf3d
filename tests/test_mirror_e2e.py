"""The bot end to end: real discord.py client, Discord double, local feed server, SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import Harness
from tests.feedgen import SEED_COMMENT_STARTS, GenComment, at, blogger_comments, blogger_post
from tests.feedserver import FIXTURES

SEED = FIXTURES / "seed"
TITLE = "Great Leadership, But Poor Output?"
SEED_ORDER = SEED_COMMENT_STARTS
# Each seed comment's time as the blog shows it (+01:00): "Thank you 18:08" answers [4].
SEED_LOCAL_TIMES = ("09:51", "11:20", "13:40", "18:08", "20:15", "21:02", "07:45")


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
    for local, message in zip(SEED_LOCAL_TIMES, comments, strict=True):
        assert message["content"].startswith(f"**Anonymous** · {local} · <t:"), message["content"]
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
    await harness.wait_for_thread_messages(harness.forum_id, 8)
    await harness.wait_idle()
    [thread] = harness.double.threads(harness.forum_id)
    assert thread["name"] == TITLE
    # The article's labels are CRC and HMI Probation; the forum has tags CRC and News.
    tags = {t["id"]: t["name"] for t in harness.double.channel(harness.forum_id)["available_tags"]}
    assert [tags[t] for t in thread["applied_tags"]] == ["CRC"]
    assert_seed_thread(harness.double.messages(int(thread["id"])))
    text = "\n".join(record.contents)
    assert "On Probation" in text and url in text


async def test_subscribe_seed_into_a_text_channel(harness: Harness) -> None:
    """In a text channel the article message is posted there and the thread made from it."""
    url = serve_seed(harness)
    await harness.subscribe(url, harness.text_id)
    await harness.wait_for_thread_messages(harness.text_id, 8)
    await harness.wait_idle()
    [thread] = harness.double.threads(harness.text_id)
    [starter] = [m for m in harness.double.messages(harness.text_id) if TITLE in m["content"]]
    assert thread["id"] == starter["id"]
    # Discord opens a thread made from a message with a "thread starter" system message.
    inside = [m for m in harness.double.messages(int(thread["id"])) if m["type"] != 21]
    assert_seed_thread([starter, *inside])


def comments_page(harness: Harness, comments: list[GenComment]) -> None:
    harness.feeds.route("/feeds/comments/default", blogger_comments(comments))


async def poll(harness: Harness) -> Any:
    record = await harness.double.invoke_command(
        harness.guild_id, harness.text_id, "blog", "poll", {}
    )
    await record.wait_done()
    return record


def seed_thread(harness: Harness) -> tuple[int, list[dict[str, Any]]]:
    [thread] = harness.double.threads(harness.forum_id)
    return int(thread["id"]), harness.double.messages(int(thread["id"]))


async def test_news_between_polls_is_mirrored_and_removals_edited(harness: Harness) -> None:
    """A new reply and a new article arrive on the next poll; a removed comment is edited."""
    url = serve_seed(harness)
    await harness.subscribe(url, harness.forum_id)
    await harness.wait_for_thread_messages(harness.forum_id, 8)
    _thread_id, before = seed_thread(harness)
    first_comment = before[1]
    seed = (SEED / "comments.atom.xml").read_text()
    victim_id = "6612093358810427745"  # "I think we need to think ..."
    removed = seed.replace(
        f"#c{victim_id}' title=''/>",
        f"#c{victim_id}' title=''/>"
        "<gd:extendedProperty name='blogger.contentRemoved' value='true'/>",
    )
    reply = blogger_comments(
        [GenComment(777, at(2000), "A late reply", parent=2918836402210955103)]
    )
    reply_entry = reply.decode().split("<entry>", 1)[1].removesuffix("</feed>")
    removed = removed.replace("<entry>", "<entry>" + reply_entry + "<entry>", 1)
    harness.feeds.route("/feeds/comments/default", removed.encode())
    posts = (SEED / "posts.atom.xml").read_text()
    new_post = blogger_post("555", "A brand new article", datetime.now(UTC))
    harness.feeds.route(
        "/feeds/posts/default", posts.replace("<entry>", new_post + "<entry>", 1).encode()
    )
    record = await poll(harness)
    assert "1 new article(s), 1 new comment(s)" in "\n".join(record.contents)
    assert "updated 1 message(s)" in "\n".join(record.contents)
    threads = {t["name"]: int(t["id"]) for t in harness.double.threads(harness.forum_id)}
    assert set(threads) == {TITLE, "A brand new article"}
    messages = harness.double.messages(threads[TITLE])
    assert len(messages) == 9
    late = messages[-1]
    assert "A late reply" in late["content"] and reply_to(late) == first_comment["id"]
    edited = harness.double.message(int(before[4]["id"]))
    assert "removed on the blog" in edited["content"]
    assert "Probation Service Officer colleagues" not in edited["content"]


def removed_on_blog(entry_ids: list[str]) -> bytes:
    """The seed's comments feed with these comments marked removed, as Blogger marks them."""
    seed = (SEED / "comments.atom.xml").read_text()
    for entry_id in entry_ids:
        number = entry_id.rsplit("post-", 1)[-1]  # tag:blogger.com,1999:blog-1.post-NUMBER
        link = f"#c{number}' title=''/>"
        assert link in seed, entry_id
        seed = seed.replace(
            link, link + "<gd:extendedProperty name='blogger.contentRemoved' value='true'/>"
        )
    return seed.encode()


def requests_about(harness: Harness, since: int, snowflake: int) -> list[str]:
    """REST calls made after the ``since``-th that name this message or channel."""
    return [
        f"{r.method} {r.path}"
        for r in harness.double.requests[since:]
        if str(snowflake) in r.path.split("/")
    ]


async def moderator_deletes(harness: Harness, victims: list[int], *, bulk: bool) -> None:
    """Delete mirrored comment messages; the blog then removes those comments.

    The deletion must be recorded from the gateway event, before any poll.
    Then, although the blog changed those comments, the next poll must not try
    to edit their messages: only a bot that missed the deletion would (and
    learn of it from Discord's 404).
    """
    await harness.wait_idle()
    thread_id, messages = seed_thread(harness)
    if bulk:
        harness.double.bulk_delete_messages(thread_id, victims)
    else:
        for victim in victims:
            harness.double.delete_message(thread_id, victim, by_moderator=True)

    def recorded() -> bool:
        rows = [harness.db.comment_of_message(victim) for victim in victims]
        return all(row is not None and row["state"] == "deleted" for row in rows)

    await harness.wait_for(recorded, what="the bot to record the deletions")
    entry_ids = [harness.db.comment_of_message(victim)["entry_id"] for victim in victims]
    harness.feeds.route("/feeds/comments/default", removed_on_blog(entry_ids))
    since = len(harness.double.requests)
    record = await poll(harness)
    assert "❌" not in "\n".join(record.contents)
    for victim in victims:
        assert requests_about(harness, since, victim) == []
    remaining = harness.double.messages(thread_id)
    assert len(remaining) == len(messages) - len(victims)
    assert {str(v) for v in victims}.isdisjoint(m["id"] for m in remaining)


async def test_moderator_deleted_message_is_not_mirrored_again(harness: Harness) -> None:
    """A comment message a moderator deletes is recorded at once and never touched again."""
    await harness.subscribe(serve_seed(harness), harness.forum_id)
    await harness.wait_for_thread_messages(harness.forum_id, 8)
    _thread_id, messages = seed_thread(harness)
    await moderator_deletes(harness, [int(messages[2]["id"])], bulk=False)


async def test_bulk_deleted_messages_are_not_mirrored_again(harness: Harness) -> None:
    """Messages a moderator deletes in bulk are all recorded at once and never touched again."""
    await harness.subscribe(serve_seed(harness), harness.forum_id)
    await harness.wait_for_thread_messages(harness.forum_id, 8)
    _thread_id, messages = seed_thread(harness)
    await moderator_deletes(harness, [int(messages[2]["id"]), int(messages[5]["id"])], bulk=True)


async def test_deleted_thread_is_not_recreated(harness: Harness) -> None:
    """A thread a moderator deletes detaches its article at once; polls never go near it."""
    url = serve_seed(harness)
    await harness.subscribe(url, harness.forum_id)
    await harness.wait_for_thread_messages(harness.forum_id, 8)
    await harness.wait_idle()
    thread_id, _ = seed_thread(harness)
    harness.double.delete_thread(thread_id)

    def detached() -> bool:
        row = harness.db.article_of_thread(thread_id)
        return row is not None and row["state"] == "detached"

    await harness.wait_for(detached, what="the bot to record the deleted thread")
    comments_page(harness, [GenComment(901, at(3000), "Anyone here?")])
    since = len(harness.double.requests)
    record = await poll(harness)
    assert "1 new comment(s)" in "\n".join(record.contents)
    # A bot that missed the deletion would look the thread up (and learn of it from a 404).
    assert requests_about(harness, since, thread_id) == []
    assert harness.double.threads(harness.forum_id) == []


async def test_discord_faults_on_message_creation_never_duplicate(harness: Harness) -> None:
    """500s after the message was made, connection resets and 429 storms: each comment once."""
    # discord.py sleeps up to ~9 s retrying 500s before a poll can answer: wait on the
    # answer, with room for a loaded machine, rather than on the double's 10 s default.
    harness.double.wait_timeout = 60.0
    harness.feeds.fixture("/feeds/posts/default", "seed/posts.atom.xml")
    comments_page(
        harness, [GenComment(2000 + n, at(10 + n), f"comment number {n}") for n in range(30)]
    )
    path = r"/channels/\d+/messages"
    harness.double.inject_fault("error_after_commit", path, method="POST", status=500, times=3)
    harness.double.inject_fault("reset_after_commit", path, method="POST", times=3)
    harness.double.inject_fault("error_after_commit", path, method="POST", status=503, times=2)
    harness.double.inject_fault("rate_limit", path, method="POST", retry_after=0.05, times=5)
    await harness.subscribe(harness.feeds.url("/feeds/posts/default"), harness.forum_id)
    for _ in range(5):
        done = sum(map(len, harness.thread_messages(harness.forum_id))) >= 31
        if done:
            break
        await poll(harness)
    await harness.wait_idle()
    _thread_id, messages = seed_thread(harness)
    texts = [m["content"] for m in messages[1:]]
    numbers = [int(t.rsplit("comment number ", 1)[1].split()[0]) for t in texts]
    assert numbers == list(range(30))


async def test_forum_requiring_a_tag_gets_its_first_tag(harness: Harness) -> None:
    """A forum that requires a tag and matches no label gets its first available tag."""
    forum = harness.double.add_forum_channel(
        harness.guild_id, "strict", tags=["Zeta", "Other"], require_tag=True
    )
    await harness.wait_gateway_applied()
    await harness.subscribe(serve_seed(harness), forum.id)
    await harness.wait_for_thread_messages(forum.id, 8)
    await harness.wait_idle()
    [thread] = harness.double.threads(forum.id)
    tags = {t["id"]: t["name"] for t in harness.double.channel(forum.id)["available_tags"]}
    assert [tags[t] for t in thread["applied_tags"]] == ["Zeta"]


async def test_archived_thread_is_reopened_by_the_next_comment(harness: Harness) -> None:
    """A comment arriving for an archived thread is posted and the thread is open again."""
    await harness.subscribe(serve_seed(harness), harness.forum_id)
    await harness.wait_for_thread_messages(harness.forum_id, 8)
    thread_id, _ = seed_thread(harness)
    harness.double.archive_thread(thread_id)
    await harness.wait_gateway_applied()
    comments_page(harness, [GenComment(61, at(5000), "Reviving this thread")])
    await poll(harness)
    messages = harness.double.messages(thread_id)
    assert "Reviving this thread" in messages[-1]["content"]
    assert not harness.double.channel(thread_id)["thread_metadata"]["archived"]


async def test_locked_thread_gets_nothing_and_says_why_in_the_log(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """New comments for a locked thread wait; the log says the thread is locked."""
    caplog.set_level("INFO", logger="bot.delivery")
    await harness.subscribe(serve_seed(harness), harness.forum_id)
    await harness.wait_for_thread_messages(harness.forum_id, 8)
    thread_id, _ = seed_thread(harness)
    harness.double.lock_thread(thread_id)
    await harness.wait_gateway_applied()
    comments_page(harness, [GenComment(62, at(5000), "Too late")])
    record = await poll(harness)
    assert len(harness.double.messages(thread_id)) == 8
    assert "is locked" in caplog.text
    assert "comments wait in 1 locked thread(s)" in "\n".join(record.contents)


async def test_a_deleted_channel_marks_the_subscription_failing(harness: Harness) -> None:
    """When the channel is gone, the poll records a clear error instead of crashing."""
    text = harness.double.add_text_channel(harness.guild_id, "doomed")
    await harness.wait_gateway_applied()
    await harness.subscribe(serve_seed(harness), text.id)
    await harness.wait_for_thread_messages(text.id, 8)
    harness.double.delete_channel(text.id)
    await harness.wait_gateway_applied()
    comments_page(harness, [GenComment(63, at(5000), "Anyone?")])
    record = await poll(harness)
    assert "no longer exists" in "\n".join(record.contents)
    [sub] = await harness.bot.subscriptions.list_for_guild(harness.guild_id)
    assert sub.consecutive_failures == 1 and "no longer exists" in (sub.last_error or "")
    await poll(harness)  # the poll itself succeeds; the broken channel still counts
    [sub] = await harness.bot.subscriptions.list_for_guild(harness.guild_id)
    assert sub.consecutive_failures == 2


async def test_changed_article_in_an_archived_post_is_edited(harness: Harness) -> None:
    """An article edited on the blog updates its archived forum post without an error."""
    await harness.subscribe(serve_seed(harness), harness.forum_id)
    await harness.wait_for_thread_messages(harness.forum_id, 8)
    thread_id, messages = seed_thread(harness)
    harness.double.archive_thread(thread_id)
    await harness.wait_gateway_applied()
    body = (SEED / "posts.atom.xml").read_bytes().replace(b"Twitter", b"Mastodon")
    harness.feeds.route("/feeds/posts/default", body, etag='"p2"')
    record = await poll(harness)
    assert "❌" not in "\n".join(record.contents)
    assert "Mastodon" in harness.double.message(int(messages[0]["id"]))["content"]
    [sub] = await harness.bot.subscriptions.list_for_guild(harness.guild_id)
    assert sub.consecutive_failures == 0


VICTIM = "6612093358810427745"  # "I think we need to think ..."


async def test_edits_between_polls_are_mirrored_though_unchanged_comments_are_not_reread(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """An edited and a removed comment are edited in Discord; the five others are not re-read."""
    caplog.set_level("DEBUG", logger="bot.polling")
    await harness.subscribe(serve_seed(harness), harness.forum_id)
    await harness.wait_for_thread_messages(harness.forum_id, 8)
    _thread_id, before = seed_thread(harness)
    seed = removed_on_blog(
        ["tag:blogger.com,1999:blog-4790201928346512375.post-6612093358810427745"]
    )
    old_text = b"Carrot and stick style of writing. There is nothing like good management"
    assert seed.count(old_text) == 1
    edited = seed.replace(old_text, b"Carrot and stick, as edited on the blog an hour later")
    harness.feeds.route("/feeds/comments/default", edited, etag='"c2"')
    record = await poll(harness)
    assert "updated 2 message(s)" in "\n".join(record.contents)
    assert "5 entries not read again" in caplog.text
    removed = harness.double.message(int(before[4]["id"]))
    assert "removed on the blog" in removed["content"]
    assert "Probation Service Officer colleagues" not in removed["content"]
    changed = harness.double.message(int(before[6]["id"]))
    assert "as edited on the blog an hour later" in changed["content"]
    assert "There is nothing like good management" not in changed["content"]

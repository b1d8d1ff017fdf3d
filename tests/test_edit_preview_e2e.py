"""/blog preview and /blog edit through the real client and the double's interactions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.errors import BlogMirrorError
from tests.conftest import Harness, running_bot
from tests.discord_double import DiscordDouble
from tests.feedgen import GenComment, at, blogger_comments, blogger_post, blogger_posts
from tests.feedserver import FeedServer, guard_loopback_only
from tests.processes import TEST_TOKEN
from tests.test_commands_e2e import POSTS, TITLE, command, serve_seed, subscribed, text_of

TABLES = ("subscriptions", "http_cache", "articles", "comments", "outbox")


def embeds_of(record: Any) -> list[dict[str, Any]]:
    return [embed for message in record.messages for embed in message.get("embeds") or []]


def rows_in_every_table(harness: Harness) -> int:
    return sum(len(harness.db.rows(f"SELECT * FROM {table}")) for table in TABLES)


async def preview(harness: Harness, url: str) -> Any:
    """Invoke /blog preview and wait for its whole answer (the last part says so)."""
    record = await command(harness, "preview", url=url)
    return await record.wait_for(
        lambda r: (
            any("Nothing was posted" in c or c.startswith("❌") for c in r.contents)
            and (len(embeds_of(r)) >= 4 or any(c.startswith("❌") for c in r.contents))
        )
    )


async def test_preview_shows_the_newest_thread_and_posts_nothing(harness: Harness) -> None:
    """The answer names the blog, feed and thread, shows the article and the first three
    comments with their reply markers; no channel gets a message and nothing is stored."""
    url = serve_seed(harness)
    record = await preview(harness, url)
    assert record.ephemeral and record.deferred
    header = record.contents[0]
    assert "On Probation" in header and url in header
    assert f"Newest article's thread: **{TITLE}**" in header
    assert "the first 3 of its 7 comment(s), in posting order" in header
    article, *comments = embeds_of(record)
    assert article["title"] == "Article message"
    assert (
        "Read the article: <https://probationmatters.blogspot.com/2019/04/"
        in (article["description"])
    )
    assert [c["title"] for c in comments] == [
        "Comment 1",
        "Comment 2 · ↳ Discord reply to comment 1",
        "Comment 3 · ↳ Discord reply to comment 1",
    ]
    assert "Almost a copy and paste" in comments[0]["description"]
    assert "**Anonymous** · 11:20 · <t:" in comments[1]["description"]
    for message in record.messages:
        assert len(message.get("content") or "") <= 2000
        embeds = message.get("embeds") or []
        assert len(embeds) <= 10
        assert sum(len(e.get("title", "")) + len(e.get("description", "")) for e in embeds) <= 6000
    for channel in (harness.forum_id, harness.text_id):
        assert harness.double.messages(channel) == []
        assert harness.double.threads(channel) == []
    assert rows_in_every_table(harness) == 0


async def test_preview_errors_are_one_line_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad URL, private address, not a feed, timeout: one human line each, nothing stored."""
    guard_loopback_only(monkeypatch)
    async with running_bot(
        tmp_path, allow_private_addresses=False, feed_timeout_seconds=0.5
    ) as harness:
        private = await preview(harness, harness.feeds.url(POSTS))
        assert "private" in text_of(private).lower() or "loopback" in text_of(private).lower()
        bad = await preview(harness, "ftp://example.invalid/feed")
        assert "http" in text_of(bad)
    async with running_bot(tmp_path / "2", feed_timeout_seconds=0.5) as harness:
        harness.feeds.route(
            "/page",
            "<html><head><title>Hi</title></head><body>x</body></html>",
            content_type="text/html",
        )
        page = await preview(harness, harness.feeds.url("/page"))
        assert "No feed found" in text_of(page)
        harness.feeds.route("/slow", b"<feed/>", delay=3)
        slow = await preview(harness, harness.feeds.url("/slow"))
        assert "time" in text_of(slow).lower()
        for record in (page, slow):
            [line] = record.contents
            assert line.startswith("❌") and "\n" not in line and "Traceback" not in line
        assert rows_in_every_table(harness) == 0


async def edit(harness: Harness, feed: str, **options: Any) -> str:
    record = await command(harness, "edit", feed=feed, **options)
    assert record.ephemeral
    return text_of(record)


async def test_edit_changes_each_option_and_says_what_changed(harness: Harness) -> None:
    """Each option changes the subscription in place; the reply names exactly the change,
    and status and list show the interval and the role."""
    url = await subscribed(harness)
    role = harness.double.add_role(harness.guild_id, "Blog news")
    await harness.wait_gateway_applied()

    assert "Nothing changed" in await edit(harness, url)
    assert await edit(harness, url, comments=False) == (
        "✅ **On Probation**: comments are no longer mirrored."
    )
    assert "Nothing changed" in await edit(harness, url, comments=False)
    assert await edit(harness, url, mention=role.id) == (
        f"✅ **On Probation**: new articles ping <@&{role.id}>."
    )
    assert await edit(harness, url, interval=15) == "✅ **On Probation**: polled every 15 minutes."
    status = text_of(await command(harness, "status", feed=url))
    assert "every 15 minutes" in status and f"<@&{role.id}>" in status
    assert "not mirrored" in status
    listing = text_of(await command(harness, "list"))
    assert "every 15 minutes" in listing and f"pings <@&{role.id}>" in listing
    assert "every 15 minutes" in text_of(await command(harness, "status"))
    both = await edit(harness, url, comments=True, no_mention=True, interval=0)
    assert both == (
        "✅ **On Probation**: comments are mirrored; new articles ping nobody; "
        "polled every 5 minutes (the bot's default)."
    )
    [row] = harness.db.rows("SELECT * FROM subscriptions")
    columns = ("mirror_comments", "mention_role_id", "interval_seconds", "interval_custom")
    assert [row[c] for c in columns] == [1, None, 300, 0]
    assert "every 5 minutes (default)" in text_of(await command(harness, "status", feed=url))
    quiet = harness.double.add_role(harness.guild_id, "Quiet", mentionable=False)
    await harness.wait_gateway_applied()
    warned = await edit(harness, url, mention=quiet.id)
    assert warned.startswith(f"✅ **On Probation**: new articles ping <@&{quiet.id}>.")
    assert "not mentionable" in warned.splitlines()[1]


async def test_edit_refusals_are_one_line_each(harness: Harness) -> None:
    """@everyone, mention with no_mention, an out-of-range interval, an unknown feed and
    another server's feed are refused in one line; nothing changes."""
    url = await subscribed(harness)
    role = harness.double.add_role(harness.guild_id, "Blog news")
    other = harness.double.add_guild("Elsewhere")
    other_text = harness.double.add_text_channel(other.id, "general")
    await harness.wait_gateway_applied()
    before = harness.db.rows("SELECT * FROM subscriptions")

    everyone = await edit(harness, url, mention=harness.guild_id)
    assert everyone.startswith("❌") and "@everyone" in everyone
    both = await edit(harness, url, mention=role.id, no_mention=True)
    assert both.startswith("❌") and "not both" in both
    unknown = await edit(harness, "https://elsewhere.example/feed", interval=5)
    assert unknown.startswith("❌") and "No subscription" in unknown
    foreign = await command(
        harness, "edit", guild_id=other.id, channel_id=other_text.id, feed=url, interval=5
    )
    assert "No subscription" in text_of(foreign)
    for text in (everyone, both, unknown, text_of(foreign)):
        assert "\n" not in text and "Traceback" not in text
    with pytest.raises(ValueError, match="outside the option's range"):
        await command(harness, "edit", feed=url, interval=1441)  # Discord's client refuses
    [sub] = await harness.bot.subscriptions.list_for_guild(harness.guild_id)
    with pytest.raises(BlogMirrorError, match="between 1 and 1440"):
        await harness.bot.service.edit(sub, interval_minutes=-1)
    assert harness.db.rows("SELECT * FROM subscriptions") == before


def allows_nothing(allowed: dict[str, Any]) -> bool:
    """No one at all may be pinged: nothing parsed, no role, no user, no replied-to author."""
    return allowed.get("parse") == [] and not any(
        allowed.get(key) for key in ("roles", "users", "replied_user")
    )


def new_post(harness: Harness, number: str, title: str) -> None:
    """The blog publishes one article now, with two comments (the second a reply)."""
    base, now = int(number) * 10, datetime.now(UTC)
    harness.feeds.route(POSTS, blogger_posts([blogger_post(number, title, now)]))
    harness.feeds.route(
        "/feeds/comments/default",
        blogger_comments(
            [
                GenComment(base + 1, now + timedelta(seconds=1), f"On {title}", post=number),
                GenComment(
                    base + 2, now + timedelta(seconds=2), "A reply", parent=base + 1, post=number
                ),
            ]
        ),
    )


async def test_the_chosen_role_is_pinged_by_new_article_messages_alone(harness: Harness) -> None:
    """After `mention`, a new article's message (forum post and text channel alike) starts
    with the role, allowed alone; its comments allow nothing; after `no_mention`, nothing."""
    url = await subscribed(harness)
    in_text = await harness.subscribe(url, harness.text_id)
    await in_text.wait_for(lambda r: "Done." in text_of(r))
    await harness.wait_idle()
    role = harness.double.add_role(harness.guild_id, "Blog news")
    await harness.wait_gateway_applied()
    for sub in await harness.bot.subscriptions.list_for_guild(harness.guild_id):
        assert "ping" in await edit(harness, str(sub.id), mention=role.id)

    new_post(harness, "9001", "Brand new post")
    await command(harness, "poll")
    await harness.wait_idle()
    forum_post = harness.double.threads(harness.forum_id)[-1]
    assert forum_post["name"] == "Brand new post"
    starter, *comments = harness.double.messages(int(forum_post["id"]))
    [article] = [
        m for m in harness.double.messages(harness.text_id) if "Brand new post" in m["content"]
    ]
    for message in (starter, article):
        assert message["content"].startswith(f"<@&{role.id}>\n**[Brand new post]")
        assert message["allowed_mentions"] == {"parse": [], "roles": [role.id]}
        assert message["mention_roles"] == [str(role.id)]
        assert message["mention_everyone"] is False and message["mentions"] == []
    text_thread = [  # the comments in the thread made from it, not its system message
        m for m in harness.double.messages(int(article["id"])) if m["type"] in (0, 19)
    ]
    for comment in comments + text_thread:
        assert allows_nothing(comment["allowed_mentions"])
        assert comment["mention_roles"] == [] and comment["mentions"] == []
    assert len(comments) == 2 and len(text_thread) == 2

    for sub in await harness.bot.subscriptions.list_for_guild(harness.guild_id):
        assert "ping nobody" in await edit(harness, str(sub.id), no_mention=True)
    new_post(harness, "9002", "Another post")
    await command(harness, "poll")
    await harness.wait_idle()
    later = harness.double.messages(int(harness.double.threads(harness.forum_id)[-1]["id"]))[0]
    assert later["content"].startswith("**[Another post]")
    assert allows_nothing(later["allowed_mentions"]) and later["mention_roles"] == []


async def test_a_custom_interval_is_honoured_by_the_scheduler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default at an hour, a poll of a feed edited to 1 minute schedules its next
    poll a minute on, while the other feed's next poll stays an hour on (the scheduler
    takes whatever is due by that time, so the schedule is what it honours)."""
    guard_loopback_only(monkeypatch)
    async with running_bot(tmp_path, poll_interval_seconds=3600) as harness:
        url = await subscribed(harness)
        other = "/other/feeds/posts/default"
        harness.feeds.route(other, blogger_posts([blogger_post("8001", "Elsewhere", at(0))]))
        record = await harness.subscribe(harness.feeds.url(other), harness.text_id, comments=False)
        await record.wait_for(lambda r: "Done." in text_of(r))
        await harness.wait_idle()
        assert "polled every 1 minute." in await edit(harness, url, interval=1)
        status = text_of(await command(harness, "status"))
        assert "polled every 1 minute\n" in status and "polled every 1 hour (default)" in status
        polls = harness.feeds.hits(POSTS)
        answer = await command(harness, "poll")
        await answer.wait_for(lambda r: text_of(r).count("posted 0 thread(s)") == 2)
        await harness.wait_idle()
        assert harness.feeds.hits(POSTS) > polls
        gaps = {
            row["feed_url"]: (
                datetime.fromisoformat(row["next_poll_at"])
                - datetime.fromisoformat(row["last_poll_at"])
            )
            for row in harness.db.rows(
                "SELECT feed_url, last_poll_at, next_poll_at FROM subscriptions"
            )
        }
        assert gaps[harness.feeds.url(POSTS)] <= timedelta(minutes=1, seconds=1), gaps
        assert gaps[harness.feeds.url(other)] >= timedelta(minutes=59), gaps


async def test_a_mentioned_forum_post_answered_with_an_error_is_adopted_once(
    harness: Harness,
) -> None:
    """Discord makes the forum post but answers 500: the bot finds it by its last line
    (the mention line in front does not hide it) and posts no second one."""
    url = await subscribed(harness)
    role = harness.double.add_role(harness.guild_id, "Blog news")
    await harness.wait_gateway_applied()
    await edit(harness, url, mention=role.id)
    fault = harness.double.inject_fault(
        "error_after_commit", r"/channels/\d+/threads", method="POST", times=1
    )
    new_post(harness, "9001", "Brand new post")
    await command(harness, "poll")
    await harness.wait_idle()
    assert fault.hits == 1
    names = [t["name"] for t in harness.double.threads(harness.forum_id)]
    assert names.count("Brand new post") == 1
    starter, *comments = harness.double.messages(
        int(harness.double.threads(harness.forum_id)[-1]["id"])
    )
    assert starter["content"].startswith(f"<@&{role.id}>\n") and len(comments) == 2


async def test_a_mentioned_article_message_cut_off_mid_send_is_settled_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot stops while Discord holds back its answer to a mentioned article message:
    started again, it adopts that message (its mention line and all) and posts no other."""
    guard_loopback_only(monkeypatch)
    double, feeds = DiscordDouble(token=TEST_TOKEN), FeedServer()
    await double.start()
    await feeds.start()
    path = tmp_path / "blogmirror.db"
    try:
        async with running_bot(tmp_path, double=double, feeds=feeds, database_path=path) as first:
            url = serve_seed(first)
            record = await first.subscribe(url, first.text_id)
            await record.wait_for(lambda r: "Done." in text_of(r))
            await first.wait_idle()
            role = double.add_role(first.guild_id, "Blog news")
            await first.wait_gateway_applied()
            await edit(first, url, mention=role.id)
            fault = double.inject_fault(
                "delay_after_commit",
                rf"/channels/{first.text_id}/messages",
                method="POST",
                delay=30,
                content="Brand new post",
            )
            new_post(first, "9001", "Brand new post")
            await double.invoke_command(first.guild_id, first.text_id, "blog", "poll", {})
            await first.wait_for(lambda: fault.hits == 1, what="the held-back article message")
            text_id = first.text_id
        double.clear_faults()
        async with running_bot(tmp_path, double=double, feeds=feeds, database_path=path) as again:
            await again.wait_idle()
        made = [m for m in double.messages(text_id) if "Brand new post" in m["content"]]
        assert len(made) == 1
        assert made[0]["content"].startswith(f"<@&{role.id}>\n")
        thread = [m for m in double.messages(int(made[0]["id"])) if m["type"] in (0, 19)]
        assert len(thread) == 2
    finally:
        await feeds.close()
        await double.stop()


async def test_feeds_on_the_default_follow_a_changed_poll_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restarted with another POLL_INTERVAL_SECONDS, a feed on the default takes it; a feed
    with an interval of its own keeps that."""
    guard_loopback_only(monkeypatch)
    double, feeds = DiscordDouble(token=TEST_TOKEN), FeedServer()
    await double.start()
    await feeds.start()
    path = tmp_path / "blogmirror.db"
    try:
        async with running_bot(tmp_path, double=double, feeds=feeds, database_path=path) as first:
            url = await subscribed(first)
            second = await first.subscribe(url, first.text_id)
            await second.wait_for(lambda r: "Done." in text_of(r))
            [custom] = [
                s
                for s in await first.bot.subscriptions.list_for_guild(first.guild_id)
                if s.channel_id == first.text_id
            ]
            await edit(first, str(custom.id), interval=20)
            await first.wait_idle()
        async with running_bot(
            tmp_path, double=double, feeds=feeds, database_path=path, poll_interval_seconds=600
        ) as again:
            rows = again.db.rows("SELECT * FROM subscriptions ORDER BY id")
            assert [(r["interval_seconds"], r["interval_custom"]) for r in rows] == [
                (600, 0),
                (1200, 1),
            ]
    finally:
        await feeds.close()
        await double.stop()

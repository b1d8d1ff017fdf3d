"""Every /blog subcommand through the real client and the double's interactions."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Harness, running_bot
from tests.discord_double import CommandNotAvailable, P
from tests.feedgen import GenComment, at, blogger_comments
from tests.feedserver import FIXTURES, guard_loopback_only

POSTS = "/feeds/posts/default"
TITLE = "Great Leadership, But Poor Output?"


PER_POST = "/feeds/7128854030391125582/comments/default"


def serve_seed(harness: Harness) -> str:
    """The seed blog, its post's own comments feed served locally too."""
    posts = (FIXTURES / "seed" / "posts.atom.xml").read_bytes()
    local = posts.replace(
        f"https://probationmatters.blogspot.com{PER_POST}".encode(),
        harness.feeds.url(PER_POST).encode(),
    )
    harness.feeds.route(POSTS, local, etag='"p1"')
    harness.feeds.fixture("/feeds/comments/default", "seed/comments.atom.xml", etag='"c1"')
    harness.feeds.fixture(PER_POST, "seed/post-7128854030391125582-comments.atom.xml")
    return harness.feeds.url(POSTS)


async def command(
    harness: Harness,
    sub: str,
    guild_id: int | None = None,
    channel_id: int | None = None,
    **options: Any,
) -> Any:
    record = await harness.double.invoke_command(
        guild_id or harness.guild_id, channel_id or harness.text_id, "blog", sub, options
    )
    await record.wait_done()
    return record


async def finished(record: Any) -> Any:
    """Wait for a deferred command's final answer (progress edits come before it)."""
    return await record.wait_for(lambda r: any(m in text_of(r) for m in ("✅", "❌")))


def text_of(record: Any) -> str:
    parts = list(record.contents)
    for message in record.messages:
        for embed in message.get("embeds") or []:
            parts.append(str(embed))
    return "\n".join(parts)


async def subscribed(harness: Harness) -> str:
    url = serve_seed(harness)
    await harness.subscribe(url, harness.forum_id)
    await harness.wait_for_thread_messages(harness.forum_id, 8)
    await harness.wait_idle()
    return url


async def test_subscribe_refuses_duplicates_bad_urls_and_missing_feeds(harness: Harness) -> None:
    """Each expected subscribe failure is one clear ephemeral line."""
    url = await subscribed(harness)
    again = await harness.subscribe(url, harness.forum_id)
    assert again.ephemeral and "already mirrored" in text_of(again)
    ftp = await harness.subscribe("ftp://example.invalid/feed", harness.forum_id)
    assert "http" in text_of(ftp).lower()
    harness.feeds.route("/gone", b"nope", status=404)
    missing = await harness.subscribe(harness.feeds.url("/gone"), harness.text_id)
    assert "404" in text_of(missing)
    for record in (again, ftp, missing):
        assert "Traceback" not in text_of(record)


async def test_subscribe_refuses_credentials_and_keeps_them_nowhere(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A feed URL with user:password@ is refused in one line; afterwards the password is in
    no reply, no log line (DEBUG included) and no byte of the database."""
    secret = "S3cretPassw0rd"
    caplog.set_level(logging.DEBUG)
    # As bot.settings.configure_logging does in production: discord.py's gateway log,
    # which would hold the raw interaction the moderator typed, stays at WARNING.
    caplog.set_level(logging.WARNING, logger="discord.gateway")
    url = serve_seed(harness).replace("http://", f"http://alice:{secret}@")

    record = await harness.subscribe(url, harness.forum_id)
    listing = await command(harness, "list")
    status = await command(harness, "status", feed=url)

    refusal = text_of(record)
    assert refusal.startswith("❌") and "user name or password" in refusal
    assert "\n" not in refusal
    assert "No subscriptions" in text_of(listing)
    assert harness.feeds.requests == []
    for text in (refusal, text_of(listing), text_of(status), caplog.text):
        assert secret not in text
    if harness.database_url is None:
        files = list(harness.database_path.parent.glob(harness.database_path.name + "*"))
        assert harness.database_path in files
        for file in files:
            assert secret.encode() not in file.read_bytes()
    else:  # every text column of every table
        for table in ("subscriptions", "http_cache", "articles", "comments", "outbox"):
            for row in harness.db.rows(f"SELECT * FROM {table}"):
                assert secret not in repr(row), table


async def test_subscribe_to_a_page_in_an_undecodable_charset_is_a_clear_error(
    harness: Harness,
) -> None:
    """``Content-Type: text/html; charset=idna`` (a codec that cannot decode a page) is read
    anyway, and a page naming no feed is answered with what is wrong, not with the apology
    for an internal error."""
    harness.feeds.route(
        "/", "<html><head><title>Blog</title></head></html>", content_type="text/html; charset=idna"
    )
    record = await harness.subscribe(harness.feeds.url("/"), harness.forum_id)
    reply = text_of(record)
    assert reply.startswith("❌") and "feed" in reply
    assert "Sorry" not in reply


async def test_subscribe_names_missing_permissions(harness: Harness) -> None:
    """Without Send Messages in the channel, subscribe says which permission is missing."""
    serve_seed(harness)
    harness.double.deny_bot(harness.forum_id, P.SEND_MESSAGES)
    await harness.wait_gateway_applied()
    record = await harness.subscribe(harness.feeds.url(POSTS), harness.forum_id)
    assert "Send Messages" in text_of(record)
    assert harness.double.threads(harness.forum_id) == []


async def test_list_status_and_autocomplete(harness: Harness) -> None:
    """list and status show the subscription; autocomplete offers it by blog title."""
    url = await subscribed(harness)
    listing = text_of(await command(harness, "list"))
    assert "On Probation" in listing and "active" in listing
    status = text_of(await command(harness, "status", feed=url))
    assert "7 comments" in status and "1 articles" in status
    summary = text_of(await command(harness, "status"))
    assert "On Probation" in summary
    choices = await harness.double.autocomplete(
        harness.guild_id, harness.text_id, "blog", "status", "feed", "probation"
    )
    assert [c["value"] for c in choices] == [url]
    assert "On Probation" in choices[0]["name"]
    none = await harness.double.autocomplete(
        harness.guild_id, harness.text_id, "blog", "status", "feed", "nothing-like-it"
    )
    assert none == []


async def test_unknown_feed_is_a_clear_error(harness: Harness) -> None:
    """Naming a feed this server does not have says so."""
    record = await command(harness, "status", feed="https://elsewhere.example/feed")
    assert "No subscription" in text_of(record)


async def test_guilds_are_isolated(harness: Harness) -> None:
    """Another server sees none of this server's subscriptions, autocomplete included."""
    url = await subscribed(harness)
    other = harness.double.add_guild("Elsewhere")
    other_text = harness.double.add_text_channel(other.id, "general")
    await harness.wait_gateway_applied()
    listing = await command(harness, "list", guild_id=other.id, channel_id=other_text.id)
    assert "No subscriptions" in text_of(listing)
    for sub in ("status", "pause", "unsubscribe"):
        record = await command(harness, sub, guild_id=other.id, channel_id=other_text.id, feed=url)
        assert "No subscription" in text_of(record)
    choices = await harness.double.autocomplete(
        other.id, other_text.id, "blog", "status", "feed", ""
    )
    assert choices == []
    mine = await command(harness, "status", feed=url)
    assert "active" in text_of(mine)


async def test_pause_holds_back_a_due_subscription_and_resume_posts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A paused feed that is due is neither polled by the scheduler nor by poll; resume posts."""
    guard_loopback_only(monkeypatch)
    async with running_bot(tmp_path, poll_interval_seconds=1) as harness:
        url = await subscribed(harness)
        paused = await command(harness, "pause", feed=url)
        assert "Paused" in text_of(paused)
        await harness.wait_idle()  # a scheduled poll that began before the pause is over

        def due() -> bool:
            [row] = harness.db.rows("SELECT next_poll_at FROM subscriptions")
            return datetime.fromisoformat(row["next_poll_at"]) <= datetime.now(UTC)

        # The interval is 1 s: the subscription is due again a second after its last poll.
        await harness.wait_for(due, what="the subscription to be due")
        harness.feeds.route(
            "/feeds/comments/default",
            blogger_comments([GenComment(43, at(4000), "Written while paused")]),
        )
        requests = len(harness.feeds.requests)
        refused = await command(harness, "poll", feed=url)
        assert "no active subscription" in text_of(refused).lower()
        polling = harness.polling
        rounds = polling.completed_rounds
        # The round under way may have begun before the poll command; the next one did not.
        await harness.wait_for(
            lambda: polling.completed_rounds >= rounds + 2, what="two scheduler rounds"
        )
        await harness.wait_idle()
        assert len(harness.feeds.requests) == requests, "a paused feed was fetched"
        [thread] = harness.double.threads(harness.forum_id)
        assert len(harness.double.messages(int(thread["id"]))) == 8
        resumed = await command(harness, "resume", feed=url)
        assert "Resumed" in text_of(resumed)
        assert len(harness.feeds.requests) > requests
        assert "Written while paused" in harness.double.messages(int(thread["id"]))[-1]["content"]


async def test_unsubscribe_stops_requests_and_keeps_threads(harness: Harness) -> None:
    """After unsubscribe the feed is never fetched again; the thread stays."""
    url = await subscribed(harness)
    record = await command(harness, "unsubscribe", feed=url)
    assert "Stopped mirroring" in text_of(record)
    before = harness.feeds.hits(POSTS)
    await command(harness, "poll")
    assert harness.feeds.hits(POSTS) == before
    assert len(harness.double.threads(harness.forum_id)) == 1


async def test_poll_mirrors_news(harness: Harness) -> None:
    """/blog poll brings a new comment in at once and says so."""
    await subscribed(harness)
    harness.feeds.route(
        "/feeds/comments/default", blogger_comments([GenComment(42, at(4000), "Fresh thoughts")])
    )
    record = await command(harness, "poll")
    assert "1 new comment(s)" in text_of(record)
    [thread] = harness.double.threads(harness.forum_id)
    assert "Fresh thoughts" in harness.double.messages(int(thread["id"]))[-1]["content"]


async def test_failing_disabled_and_recovered_reach_the_log_channel_once_each(
    harness: Harness,
) -> None:
    """3 failures: one 'failing' message; 10: disabled, one message; resume: one 'recovered'."""
    url = await subscribed(harness)
    log_channel = harness.double.add_text_channel(harness.guild_id, "bot-log")
    await harness.wait_gateway_applied()
    record = await command(harness, "logchannel", channel=log_channel.id)
    assert "reported" in text_of(record)
    harness.feeds.route(POSTS, b"down", status=500)
    for _ in range(10):
        await command(harness, "poll", feed=url)
    messages = [m["content"] for m in harness.double.messages(log_channel.id)]
    assert len(messages) == 2
    assert "failing" in messages[0] and "500" in messages[0]
    assert "disabled" in messages[1] and "/blog resume" in messages[1]
    status = text_of(await command(harness, "status", feed=url))
    assert "disabled" in status and "HTTP 500" in status
    serve_seed(harness)
    resumed = await command(harness, "resume", feed=url)
    assert "all good" in text_of(resumed)
    messages = [m["content"] for m in harness.double.messages(log_channel.id)]
    assert len(messages) == 3 and "recovered" in messages[2]


async def test_resync_recreates_a_deleted_thread_once(harness: Harness) -> None:
    """resync after the thread was deleted makes one complete thread; a second run adds nothing."""
    await subscribed(harness)
    [thread] = harness.double.threads(harness.forum_id)
    harness.double.delete_thread(int(thread["id"]))

    def detached() -> bool:
        row = harness.db.article_of_thread(int(thread["id"]))
        return row is not None and row["state"] == "detached"

    await harness.wait_for(detached, what="the bot to record the deleted thread")
    article_url = (
        "https://probationmatters.blogspot.com/2019/04/great-leadership-but-poor-output.html"
    )
    first = await finished(await command(harness, "resync", article_url=article_url))
    assert "created its thread" in text_of(first)
    [new_thread] = harness.double.threads(harness.forum_id)
    assert len(harness.double.messages(int(new_thread["id"]))) == 8
    second = await finished(await command(harness, "resync", article_url=article_url))
    assert "posted 0 comment(s)" in text_of(second)
    assert len(harness.double.messages(int(new_thread["id"]))) == 8


async def test_resync_of_an_unknown_article_is_a_clear_error(harness: Harness) -> None:
    """An article no subscription has is named as such."""
    await subscribed(harness)
    record = await command(harness, "resync", article_url="https://elsewhere.example/post.html")
    assert "No subscription of this server has that article" in text_of(record)


async def test_members_without_manage_server_cannot_use_blog(harness: Harness) -> None:
    """The group carries default permission Manage Server: others are not offered it."""
    with pytest.raises(CommandNotAvailable):
        await harness.double.invoke_command(
            harness.guild_id, harness.text_id, "blog", "list", {}, member_permissions=0
        )
    [group] = [c for c in harness.double.commands.commands(None) if c["name"] == "blog"]
    assert int(group["default_member_permissions"]) == P.MANAGE_GUILD
    assert group.get("contexts") == [0] or group.get("dm_permission") is False


async def test_unexpected_errors_get_an_apology(harness: Harness) -> None:
    """An internal failure answers with a short apology, not a traceback."""
    async with harness.bot.db.write() as tx:  # the database breaks under the bot
        await tx.execute("ALTER TABLE subscriptions RENAME TO broken")
    record = await command(harness, "list")
    assert "Sorry, something went wrong" in text_of(record)
    assert "Traceback" not in text_of(record)


async def test_long_backfill_reports_progress(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A 60-comment backfill edits its answer with progress and logs it."""
    caplog.set_level("INFO", logger="cogs.commands")
    harness.feeds.fixture(POSTS, "seed/posts.atom.xml")
    comments = [GenComment(7000 + n, at(10 + n), f"Comment {n}") for n in range(60)]
    harness.feeds.route("/feeds/comments/default", blogger_comments(comments))
    record = await harness.subscribe(harness.feeds.url(POSTS), harness.forum_id)
    await record.wait_for(lambda r: "Done." in text_of(r))
    assert record.original_edits >= 3  # 20/60, 40/60, 60/60, then the final answer
    assert "mirrored 40/60 comments" in caplog.text


async def test_resync_finds_an_article_older_than_the_subscription(harness: Harness) -> None:
    """An article recorded as seen (older than the backfill) gets its thread on resync."""
    url = serve_seed(harness)
    record = await harness.subscribe(url, harness.forum_id, backfill=0)
    await record.wait_for(lambda r: "Done." in text_of(r))
    assert "1 older article(s) are recorded and won't be posted" in text_of(record)
    assert harness.double.threads(harness.forum_id) == []
    article_url = (
        "https://probationmatters.blogspot.com/2019/04/great-leadership-but-poor-output.html"
    )
    resync = await finished(await command(harness, "resync", article_url=article_url + "?m=1"))
    assert "created its thread" in text_of(resync)
    [thread] = harness.double.threads(harness.forum_id)
    assert len(harness.double.messages(int(thread["id"]))) == 8


async def test_one_feed_in_two_channels_is_never_confused(harness: Harness) -> None:
    """Autocomplete tells the two apart by channel; a bare URL asks which one is meant."""
    url = await subscribed(harness)
    second = await harness.subscribe(url, harness.text_id)
    await second.wait_for(lambda r: "Done." in text_of(r))
    choices = await harness.double.autocomplete(
        harness.guild_id, harness.text_id, "blog", "pause", "feed", ""
    )
    assert sorted(c["name"] for c in choices) == [
        "On Probation in #blog-comments",
        "On Probation in #general",
    ]
    ambiguous = await command(harness, "pause", feed=url)
    assert "several channels" in text_of(ambiguous)
    [general] = [c for c in choices if c["name"].endswith("#general")]
    paused = await command(harness, "pause", feed=general["value"])
    assert "Paused" in text_of(paused)
    states = {
        s.channel_id: s.state
        for s in await harness.bot.subscriptions.list_for_guild(harness.guild_id)
    }
    assert states == {harness.forum_id: "active", harness.text_id: "paused"}


async def test_resync_with_an_unreadable_comments_feed_says_so(harness: Harness) -> None:
    """The thread is still made; the answer says the article's comments feed failed."""
    url = serve_seed(harness)
    harness.feeds.route(PER_POST, b"down", status=503)
    record = await harness.subscribe(url, harness.forum_id, backfill=0)
    await record.wait_for(lambda r: "Done." in text_of(r))
    article_url = (
        "https://probationmatters.blogspot.com/2019/04/great-leadership-but-poor-output.html"
    )
    resync = await finished(await command(harness, "resync", article_url=article_url))
    assert "created its thread" in text_of(resync)
    assert "comments feed could not be read" in text_of(resync) and "503" in text_of(resync)
    assert len(harness.double.threads(harness.forum_id)) == 1

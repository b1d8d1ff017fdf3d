"""The command line as a user runs it: ``python -m bot`` and ``python -m bot preview``."""

from __future__ import annotations

import contextlib
import os
import random
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.feedgen import (
    ARTICLE_URL,
    POST,
    SEED_COMMENT_STARTS,
    GenComment,
    at,
    blogger_comments,
    blogger_post,
    blogger_posts,
)
from tests.feedserver import FIXTURES, TEXT, FeedServer, free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.very-secret-token-value-xyz"


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"DISCORD_TOKEN", "DEV_GUILD_ID"}}
    base.update(env or {})
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        env=base,
        cwd=cwd or ROOT,
        timeout=60,
        check=False,
    )


def test_missing_token_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    """Without a token the bot explains what is missing and exits 2, without a traceback."""
    result = run(cwd=tmp_path)
    assert result.returncode == 2
    assert "DISCORD_TOKEN is missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_invalid_setting_is_listed_and_the_token_never_shown(tmp_path: Path) -> None:
    """All problems in one message; no part of the token appears anywhere in the output."""
    (tmp_path / ".env").write_text(f"DISCORD_TOKEN=bad {SECRET}\nPOLL_CONCURRENCY=0\n")
    result = run(cwd=tmp_path, env={"LOG_LEVEL": "chatty"})
    assert result.returncode == 2
    for name in ("DISCORD_TOKEN", "POLL_CONCURRENCY", "LOG_LEVEL"):
        assert name in result.stderr
    output = result.stdout + result.stderr
    assert SECRET[:10] not in output and SECRET[-10:] not in output


def test_preview_of_the_seed_prints_the_expected_thread() -> None:
    """The seed folder previews as one thread: 7 comments in order, 3 replies under parents."""
    result = run("preview", str(FIXTURES / "seed"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "=== Thread: Great Leadership, But Poor Output?" in out
    labels = re.findall(r"^( *)(↳ )?\[(\d)\](?: Discord reply to \[(\d)\])?$", out, re.MULTILINE)
    assert [(int(n), int(p) if p else None) for _, _, n, p in labels] == [
        (1, None),
        (2, 1),
        (3, 1),
        (4, None),
        (5, None),
        (6, 5),
        (7, None),
    ]
    starts = SEED_COMMENT_STARTS
    positions = [out.index(text) for text in starts]
    assert positions == sorted(positions)
    # The blog's own time, then the Discord timestamp shown in the blog's zone: the same.
    headers = re.findall(
        r"\*\*Anonymous\*\* · (\d\d:\d\d) · \d{4}-\d\d-(\d\d) (\d\d:\d\d) \+0100", out
    )
    assert [f"{day} {local}" for local, day, _ in headers] == [
        "03 09:51",
        "03 11:20",
        "03 13:40",
        "03 18:08",
        "03 20:15",
        "03 21:02",
        "04 07:45",
    ]
    assert all(local == shown for local, _, shown in headers)


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (FIXTURES / "real").iterdir() if p.suffix == ".xml")
)
def test_preview_of_each_real_fixture(name: str) -> None:
    """Every real feed previews without error and names its blog."""
    result = run("preview", str(FIXTURES / "real" / name))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Blog: ")
    assert "Traceback" not in result.stderr


def test_preview_of_hidden_comments_is_a_clear_error() -> None:
    """A non-feed file fails with one line naming the problem."""
    result = run("preview", str(FIXTURES / "real" / "blogger_post_comments_hidden.txt"))
    assert result.returncode == 1
    assert "hides its comments" in result.stderr
    assert "Traceback" not in result.stderr


def test_preview_of_a_missing_path() -> None:
    """A path that does not exist is named in the error."""
    result = run("preview", "no/such/feed.xml")
    assert result.returncode == 1
    assert "No such file or folder" in result.stderr


async def test_preview_of_a_live_blogger_url() -> None:
    """A Blogger posts feed URL is fetched with the blog's comments feed, as the bot reads
    it (one request for every article, not the post's own comments feed)."""
    async with FeedServer() as server:
        site = server.url("/").rstrip("/")
        posts = (
            (FIXTURES / "seed" / "posts.atom.xml")
            .read_bytes()
            .replace(b"https://probationmatters.blogspot.com", site.encode())
        )
        server.route("/feeds/posts/default", posts)
        server.fixture("/feeds/comments/default", "seed/comments.atom.xml")
        result = await _run_async("preview", server.url("/feeds/posts/default"))
        assert server.hits("/feeds/7128854030391125582/comments/default") == 0
    assert result[0] == 0, result[2]
    assert result[1].count("Discord reply to") == 3


async def test_preview_refuses_loopback_without_the_setting() -> None:
    """Loopback feed URLs are refused unless ALLOW_PRIVATE_ADDRESSES is true."""
    async with FeedServer() as server:
        server.fixture("/feed", "seed/posts.atom.xml")
        code, _, err = await _run_async("preview", server.url("/feed"), allow_private=False)
    assert code == 1
    assert "ALLOW_PRIVATE_ADDRESSES" in err


async def _run_async(*args: str, allow_private: bool = True) -> tuple[int, str, str]:
    import asyncio

    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
    env["PYTHONPATH"] = str(ROOT)
    env["ALLOW_PRIVATE_ADDRESSES"] = "true" if allow_private else "false"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def test_preview_refuses_credentials_without_repeating_them() -> None:
    """A feed URL with user:password@ is refused in one line that does not repeat them."""
    url = f"http://alice:S3cretPassw0rd@127.0.0.1:{free_port()}/feed"
    result = run("preview", url, env={"ALLOW_PRIVATE_ADDRESSES": "true"})
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "user name or password" in line
    assert "S3cretPassw0rd" not in line and "alice" not in line


def _damaged_databases(tmp_path: Path) -> dict[str, bytes]:
    """Random bytes, and a real blogmirror database cut short."""
    import asyncio

    from storage import Database

    async def make() -> Path:
        db = await Database.open(tmp_path / "made.db")
        await db.close()
        return db.path

    made = asyncio.run(make())
    conn = sqlite3.connect(made)
    conn.execute("PRAGMA journal_mode = DELETE")  # everything into the main file
    conn.close()
    whole = made.read_bytes()
    return {
        "random": random.Random(7).randbytes(16_384),
        "truncated": whole[: len(whole) // 2],
    }


@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_a_damaged_database_stops_the_bot_with_one_line(tmp_path: Path, kind: str) -> None:
    """A file that is not a readable SQLite database: exit 2, one line naming the file and
    what to do, no traceback, and the file left as it was."""
    data = tmp_path / "data"
    data.mkdir()
    database = data / "blogmirror.db"
    damaged = _damaged_databases(tmp_path)[kind]
    database.write_bytes(damaged)
    env = {
        "DISCORD_TOKEN": "discord-double-token-0123456789",
        "DATABASE_PATH": "data/blogmirror.db",
        "LOG_LEVEL": "INFO",
    }
    result = run(env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("blogmirror: ") and "data/blogmirror.db" in line
    assert "backup" in line and "move it aside" in line
    assert database.read_bytes() == damaged


def test_a_database_newer_than_the_code_stops_the_bot_with_one_line(tmp_path: Path) -> None:
    """A database a newer blogmirror migrated (after a downgrade): exit 2, so a service
    manager does not restart it in a loop, one line saying so, the schema left alone."""
    from storage import SCHEMA_VERSION

    (tmp_path / "data").mkdir()
    database = tmp_path / "data" / "blogmirror.db"
    with contextlib.closing(sqlite3.connect(database)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    env = {"DISCORD_TOKEN": "discord-double-token-0123456789", "LOG_LEVEL": "INFO"}
    result = run(env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"blogmirror: The database is at schema version {SCHEMA_VERSION + 1}")
    assert "Upgrade blogmirror" in line
    with contextlib.closing(sqlite3.connect(database)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 1,)


# --- preview: what was not read, and local files -----------------------------------------


def test_preview_of_a_posts_file_says_its_comments_were_not_loaded() -> None:
    """A lone posts feed has no comments in it: "not loaded", never "no comments"."""
    result = run("preview", str(FIXTURES / "real" / "blogger_posts_thumbnails.atom.xml"))
    assert result.returncode == 0, result.stderr
    assert "--- no comments" not in result.stdout
    assert result.stdout.count("--- comments not loaded: only this posts feed file was read") == 5


async def test_preview_says_why_a_failed_comments_feed_was_not_loaded() -> None:
    """An article whose comments feed fails shows the failure in its thread."""
    async with FeedServer() as server:
        posts = blogger_posts(
            [blogger_post("1001", "Hidden", at(0), comments_url=server.url("/c/1001"))]
        )
        server.route("/feeds/posts/default", posts)
        server.fixture(
            "/feeds/comments/default", "real/blogger_post_comments_hidden.txt", content_type=TEXT
        )
        code, out, err = await _run_async("preview", server.url("/feeds/posts/default"))
    assert code == 0, err
    assert "--- no comments" not in out
    assert (
        "--- comments not loaded: the blog's comments feed failed: "
        "The blog hides its comments, so its comments feed cannot be read."
    ) in out


def test_preview_shows_only_comments_of_articles_missing_from_the_feed_as_such(
    tmp_path: Path,
) -> None:
    """Comments of an older article that is in the feed (just not shown) are not "on an
    article not in this feed"; comments of one that is not are, under the article's link."""
    (tmp_path / "posts.xml").write_bytes(
        blogger_posts([blogger_post("1001", "Newer", at(60)), blogger_post(POST, "Older", at(0))])
    )
    (tmp_path / "comments.xml").write_bytes(
        blogger_comments(
            [GenComment(1, at(70), "On the newer", post="1001"), GenComment(2, at(10), "Old")]
        )
    )
    shown = run("preview", str(tmp_path), "--articles", "1")
    assert shown.returncode == 0, shown.stderr
    assert "not in this feed" not in shown.stdout
    assert "1 older article(s) not shown" in shown.stdout

    (tmp_path / "posts.xml").unlink()
    orphaned = run("preview", str(tmp_path))
    assert orphaned.returncode == 0, orphaned.stderr
    assert f"=== Comments on an article not in this feed: {ARTICLE_URL}\n" in orphaned.stdout


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "The file is empty"),
        (b"Just some notes.\n", "The file holds plain text"),
        (b"<!DOCTYPE html><html><body>Blog</body></html>", "The file holds a web page"),
        (b"<?xml version='1.0'?><svg/>", "The file holds an XML document <svg>"),
    ],
)
def test_preview_of_a_file_that_is_not_a_feed_speaks_of_the_file(
    tmp_path: Path, content: bytes, words: str
) -> None:
    """One line naming the file and what it holds; no "URL" in it (nothing was fetched)."""
    path = tmp_path / "saved.xml"
    path.write_bytes(content)
    result = run("preview", str(path))
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"blogmirror preview: {path}: {words}")
    assert "URL" not in line


def test_preview_of_an_unreadable_path_is_one_line(tmp_path: Path) -> None:
    """A path the system cannot read (here: a name too long) is named with the reason."""
    result = run("preview", str(tmp_path / ("x" * 300)))
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "Cannot read" in line and "File name too long" in line
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_preview_of_a_file_without_read_permission(tmp_path: Path) -> None:
    """A saved feed the user may not read: one line naming the file and the reason."""
    path = tmp_path / "feed.xml"
    path.write_bytes((FIXTURES / "seed" / "posts.atom.xml").read_bytes())
    path.chmod(0)
    result = run("preview", str(path))
    assert result.returncode == 1
    assert result.stderr == f"blogmirror preview: {path}: cannot read the file: Permission denied\n"


@pytest.mark.parametrize("contents", [{}, {"notes.txt": b"Just notes.\n", "pic.png": b"\x89PNG"}])
def test_preview_of_a_folder_without_feeds_is_an_error(
    tmp_path: Path, contents: dict[str, bytes]
) -> None:
    """An empty folder, or one holding no feed, is one line and exit 1, not an empty blog."""
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    result = run("preview", str(tmp_path))
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"blogmirror preview: No feed file in the folder {tmp_path}")
    assert "URL" not in line


def test_help_names_the_token_and_the_settings_file(tmp_path: Path) -> None:
    """``--help`` says a bot token (DISCORD_TOKEN) is needed and where settings are listed."""
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "DISCORD_TOKEN" in text
    assert ".env.example" in text


def test_run_help_says_what_running_does(tmp_path: Path) -> None:
    """``run --help`` says it connects to Discord, polls feeds and mirrors comments, with
    settings from the environment and .env."""
    result = run("run", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for words in ("connects to Discord", "polls", "comments", "environment", ".env"):
        assert words in text, text

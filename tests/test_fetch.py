"""Tests for bot.fetch against a local feed server on 127.0.0.1.

No test reaches beyond this machine: ``guard_loopback_only`` fails any test that
resolves a name other than localhost or connects to a non-loopback address.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from bot import __version__
from bot.errors import (
    BlockedAddressError,
    FeedTooLargeError,
    InvalidFeedURLError,
    PermanentFeedError,
    TransientFeedError,
)
from bot.fetch import (
    Fetcher,
    GuardedResolver,
    check_hop,
    check_url,
    create_session,
    redact_userinfo,
)
from tests.feedserver import FIXTURES, HTML, FeedServer, free_port

POSTS = (FIXTURES / "real" / "blogger_posts_thumbnails.atom.xml").read_bytes()
LAST_MODIFIED = "Tue, 13 Jun 2023 10:00:00 GMT"

MakeFetcher = Callable[..., Awaitable[Fetcher]]


pytestmark = pytest.mark.usefixtures("loopback_only")


@pytest.fixture
async def make_fetcher() -> AsyncIterator[MakeFetcher]:
    """Build Fetchers on real sessions from create_session; all are closed afterwards."""
    sessions: list[aiohttp.ClientSession] = []

    async def make(
        *,
        timeout: float = 5.0,
        max_bytes: int = 1_048_576,
        allow_private: bool = True,
        session_allows_private: bool | None = None,
    ) -> Fetcher:
        allow = allow_private if session_allows_private is None else session_allows_private
        session = create_session(allow_private=allow)
        sessions.append(session)
        return Fetcher(session, timeout=timeout, max_bytes=max_bytes, allow_private=allow_private)

    yield make
    for session in sessions:
        await session.close()


@pytest.fixture
async def fetcher(make_fetcher: MakeFetcher) -> Fetcher:
    return await make_fetcher()


# --- plain and conditional GET ------------------------------------------------------------


async def test_fetches_body_and_metadata(server: FeedServer, fetcher: Fetcher) -> None:
    """A 200 returns the exact bytes, the final URL, the content type and the validators."""
    server.fixture("/feed", "real/blogger_posts_thumbnails.atom.xml", etag='"v1"')

    result = await fetcher.fetch(server.url("/feed"))

    assert result.status == 200
    assert not result.not_modified
    assert result.body == POSTS
    assert result.url == server.url("/feed")
    assert result.etag == '"v1"'
    assert result.content_type is not None and "atom" in result.content_type


async def test_sends_user_agent_and_accepts_gzip(server: FeedServer, fetcher: Fetcher) -> None:
    """Blog hosts see who is polling, and may compress."""
    server.route("/feed", POSTS)

    await fetcher.fetch(server.url("/feed"))

    headers = server.requests_to("/feed")[0].headers
    assert headers["User-Agent"] == f"blogmirror/{__version__}"
    assert "gzip" in headers["Accept-Encoding"]
    assert "If-None-Match" not in headers
    assert "If-Modified-Since" not in headers


async def test_etag_gives_304_without_body(server: FeedServer, fetcher: Fetcher) -> None:
    """The second poll sends If-None-Match and gets a body-less 304."""
    server.route("/feed", POSTS, etag='"v1"')
    first = await fetcher.fetch(server.url("/feed"))

    second = await fetcher.fetch(server.url("/feed"), etag=first.etag)

    assert second.status == 304
    assert second.not_modified
    assert second.body is None
    assert second.etag == '"v1"'
    assert server.requests_to("/feed")[1].headers["If-None-Match"] == '"v1"'


async def test_changed_etag_gives_new_body(server: FeedServer, fetcher: Fetcher) -> None:
    """When the feed changes between polls the stale ETag no longer matches."""
    route = server.route("/feed", POSTS, etag='"v1"')
    first = await fetcher.fetch(server.url("/feed"))
    route.body, route.etag = b"<feed>new</feed>", '"v2"'

    second = await fetcher.fetch(server.url("/feed"), etag=first.etag)

    assert second.status == 200
    assert second.body == b"<feed>new</feed>"
    assert second.etag == '"v2"'


async def test_last_modified_gives_304(server: FeedServer, fetcher: Fetcher) -> None:
    """Servers without ETags are polled with If-Modified-Since."""
    server.route("/feed", POSTS, last_modified=LAST_MODIFIED)
    first = await fetcher.fetch(server.url("/feed"))
    assert first.last_modified == LAST_MODIFIED

    second = await fetcher.fetch(server.url("/feed"), last_modified=first.last_modified)

    assert second.not_modified
    assert second.last_modified == LAST_MODIFIED
    assert server.requests_to("/feed")[1].headers["If-Modified-Since"] == LAST_MODIFIED


async def test_304_keeps_validators_the_server_omitted(
    server: FeedServer, fetcher: Fetcher
) -> None:
    """A 304 without ETag still reports the validators to store for the next poll."""
    server.route("/feed", status=304)

    result = await fetcher.fetch(server.url("/feed"), etag='"old"', last_modified=LAST_MODIFIED)

    assert result.not_modified
    assert result.etag == '"old"'
    assert result.last_modified == LAST_MODIFIED


async def test_gzip_body_is_decompressed(server: FeedServer, fetcher: Fetcher) -> None:
    """A gzip-encoded feed arrives as the original bytes."""
    server.route("/feed", POSTS, gzip=True)

    result = await fetcher.fetch(server.url("/feed"))

    assert result.body == POSTS


async def test_chunked_body_without_content_length(server: FeedServer, fetcher: Fetcher) -> None:
    """A streamed body without Content-Length is read completely."""
    server.route("/feed", POSTS, chunked=True, chunk_size=1000)

    result = await fetcher.fetch(server.url("/feed"))

    assert result.body == POSTS


# --- redirects ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_follows_redirect_statuses(server: FeedServer, fetcher: Fetcher, status: int) -> None:
    """Every redirect status is followed and the final URL is reported."""
    server.redirect("/old", server.url("/feed"), status=status)
    server.route("/feed", POSTS)

    result = await fetcher.fetch(server.url("/old"))

    assert result.body == POSTS
    assert result.url == server.url("/feed")


@pytest.mark.parametrize("location", ["/blog/feed", "feed", "../blog/feed"])
async def test_relative_redirect_is_resolved(
    server: FeedServer, fetcher: Fetcher, location: str
) -> None:
    """A relative Location is resolved against the URL that answered it."""
    server.redirect("/blog/old", location)
    server.route("/blog/feed", POSTS)

    result = await fetcher.fetch(server.url("/blog/old"))

    assert result.url == server.url("/blog/feed")


async def test_conditional_headers_survive_redirects(server: FeedServer, fetcher: Fetcher) -> None:
    """A moved feed still answers 304 because the validators go to every hop."""
    server.redirect("/old", "/feed")
    server.route("/feed", POSTS, etag='"v1"')

    result = await fetcher.fetch(server.url("/old"), etag='"v1"')

    assert result.not_modified


async def test_five_redirects_are_followed(server: FeedServer, fetcher: Fetcher) -> None:
    """Five hops is within the limit."""
    for hop in range(5):
        server.redirect(f"/r{hop}", f"/r{hop + 1}")
    server.route("/r5", POSTS)

    result = await fetcher.fetch(server.url("/r0"))

    assert result.url == server.url("/r5")


async def test_six_redirects_are_refused(server: FeedServer, fetcher: Fetcher) -> None:
    """A sixth hop is refused without being requested."""
    for hop in range(6):
        server.redirect(f"/r{hop}", f"/r{hop + 1}")
    server.route("/r6", POSTS)

    with pytest.raises(PermanentFeedError, match="redirected more than 5 times"):
        await fetcher.fetch(server.url("/r0"))
    assert server.hits("/r6") == 0


async def test_redirect_loop_is_refused(server: FeedServer, fetcher: Fetcher) -> None:
    """A loop is detected the moment a URL comes round again, and named in the error."""
    server.redirect("/a", "/b")
    server.redirect("/b", "/a")

    with pytest.raises(PermanentFeedError, match="Redirect loop") as info:
        await fetcher.fetch(server.url("/a"))

    assert server.url("/b") in str(info.value)
    assert info.value.status == 302
    assert server.hits("/a") == 1


async def test_redirect_to_itself_is_a_loop(server: FeedServer, fetcher: Fetcher) -> None:
    """The shortest loop of all."""
    server.redirect("/a", "/a", status=301)

    with pytest.raises(PermanentFeedError, match="Redirect loop"):
        await fetcher.fetch(server.url("/a"))


@pytest.mark.parametrize("location", ["ftp://127.0.0.1/feed", "file:///etc/passwd"])
async def test_redirect_to_non_http_is_refused(
    server: FeedServer, fetcher: Fetcher, location: str
) -> None:
    """Each hop is held to the same scheme rule as the first URL."""
    server.redirect("/old", location)

    with pytest.raises(InvalidFeedURLError, match="not an http"):
        await fetcher.fetch(server.url("/old"))


async def test_redirect_without_location(server: FeedServer, fetcher: Fetcher) -> None:
    """A redirect that goes nowhere is a clear error, not a crash."""
    server.route("/old", status=302)

    with pytest.raises(PermanentFeedError, match="without saying where"):
        await fetcher.fetch(server.url("/old"))


# --- size cap -------------------------------------------------------------------------------


async def test_body_at_the_limit_is_accepted(server: FeedServer, make_fetcher: MakeFetcher) -> None:
    """The limit is inclusive."""
    fetcher = await make_fetcher(max_bytes=1000)
    server.route("/feed", b"x" * 1000, chunked=True)

    result = await fetcher.fetch(server.url("/feed"))

    assert result.body == b"x" * 1000


async def test_content_length_over_limit_is_refused_early(
    server: FeedServer, make_fetcher: MakeFetcher
) -> None:
    """A declared length over the cap is refused before the (here very slow) body is read."""
    fetcher = await make_fetcher(max_bytes=1000, timeout=2.0)
    server.route("/feed", b"x" * 5000, chunk_size=100, trickle=1.0)

    with pytest.raises(FeedTooLargeError, match="1000 bytes"):
        await fetcher.fetch(server.url("/feed"))


async def test_streamed_body_over_limit_is_refused(
    server: FeedServer, make_fetcher: MakeFetcher
) -> None:
    """Without Content-Length the cap is enforced while streaming."""
    fetcher = await make_fetcher(max_bytes=1000)
    server.route("/feed", b"x" * 5000, chunked=True, chunk_size=300)

    with pytest.raises(FeedTooLargeError, match="MAX_FEED_BYTES"):
        await fetcher.fetch(server.url("/feed"))


async def test_gzip_bomb_is_refused(server: FeedServer, make_fetcher: MakeFetcher) -> None:
    """The cap counts decompressed bytes: 20 kB of gzip that inflates to 20 MB is refused."""
    fetcher = await make_fetcher(max_bytes=1_048_576)
    bomb = b"\0" * 20_000_000
    # Compressed, it is well under the cap, so only the streaming check can catch it.
    assert len(gzip.compress(bomb)) < 100_000
    server.route("/feed", bomb, gzip=True)

    with pytest.raises(FeedTooLargeError):
        await fetcher.fetch(server.url("/feed"))


# --- timeouts -------------------------------------------------------------------------------


async def test_slow_body_times_out(server: FeedServer, make_fetcher: MakeFetcher) -> None:
    """A server trickling its body is cut off by the whole-request timeout."""
    fetcher = await make_fetcher(timeout=0.5)
    server.route("/feed", POSTS, chunk_size=100, trickle=0.1)

    with pytest.raises(TransientFeedError, match=r"timed out after 0\.5 s"):
        await fetcher.fetch(server.url("/feed"))


async def test_slow_headers_time_out(server: FeedServer, make_fetcher: MakeFetcher) -> None:
    """A server that never answers is cut off too."""
    fetcher = await make_fetcher(timeout=0.3)
    server.route("/feed", POSTS, delay=5)

    with pytest.raises(TransientFeedError, match="timed out"):
        await fetcher.fetch(server.url("/feed"))


async def test_a_timeout_leaves_the_task_as_it_found_it(
    server: FeedServer, make_fetcher: MakeFetcher
) -> None:
    """The budget's cancellation is taken back: the task is not left "being cancelled",
    so its later waits (another fetch, the next poll's) behave as before."""
    fetcher = await make_fetcher(timeout=0.3)
    server.route("/slow", POSTS, delay=5)
    server.route("/feed", POSTS)

    with pytest.raises(TransientFeedError, match="timed out"):
        await fetcher.fetch(server.url("/slow"))
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert (await fetcher.fetch(server.url("/feed"))).status == 200
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):  # a timeout of asyncio's own still reads as one
            await asyncio.sleep(1)


async def test_a_cancelled_fetch_stays_cancelled(
    server: FeedServer, make_fetcher: MakeFetcher
) -> None:
    """Cancelling a fetch (the bot stopping) is not taken for the feed timing out,
    even when its time budget runs out at the same moment."""
    fetcher = await make_fetcher(timeout=0.3)
    server.route("/slow", POSTS, delay=5)

    task = asyncio.create_task(fetcher.fetch(server.url("/slow")))
    await asyncio.sleep(0.05)  # under way, its budget not yet spent
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    # Both at once: the budget's check cancels it, and so does someone else.
    task = asyncio.create_task(fetcher.fetch(server.url("/slow")))
    deadlines = fetcher._deadlines
    while not deadlines._running:
        await asyncio.sleep(0.01)
    for budget in deadlines._running:
        budget.deadline = 0.0
    deadlines._check()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_fetches_under_way_each_keep_their_own_budget(
    server: FeedServer, make_fetcher: MakeFetcher
) -> None:
    """One slow feed among quick ones times out alone; the quick ones are answered."""
    fetcher = await make_fetcher(timeout=0.5)
    server.route("/slow", POSTS, delay=5)
    server.route("/feed", POSTS)

    async def quick_ones() -> list[int]:
        statuses = []
        for _ in range(5):
            statuses.append((await fetcher.fetch(server.url("/feed"))).status)
            await asyncio.sleep(0.05)
        return statuses

    slow, quick = await asyncio.gather(
        fetcher.fetch(server.url("/slow")), quick_ones(), return_exceptions=True
    )
    assert isinstance(slow, TransientFeedError) and "timed out" in str(slow)
    assert quick == [200] * 5


async def test_timeout_covers_all_redirect_hops(
    server: FeedServer, make_fetcher: MakeFetcher
) -> None:
    """The budget is for the whole fetch, not per hop: three 0.3 s hops exceed 0.6 s."""
    fetcher = await make_fetcher(timeout=0.6)
    for hop in range(3):
        server.redirect(f"/r{hop}", f"/r{hop + 1}").delay = 0.3
    server.route("/r3", POSTS)

    with pytest.raises(TransientFeedError, match="timed out"):
        await fetcher.fetch(server.url("/r0"))


# --- HTTP errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "phrase"), [(404, "Not Found"), (410, "Gone")])
async def test_gone_feed_is_permanent(
    server: FeedServer, fetcher: Fetcher, status: int, phrase: str
) -> None:
    """A missing feed tells the moderator to check the URL."""
    server.route("/feed", b"nope", status=status, content_type=HTML)

    with pytest.raises(PermanentFeedError, match=f"HTTP {status} {phrase}: check the URL") as info:
        await fetcher.fetch(server.url("/feed"))

    assert not isinstance(info.value, TransientFeedError)
    assert info.value.status == status


async def test_unknown_path_is_404(server: FeedServer, fetcher: Fetcher) -> None:
    """The test server's default answer maps like any 404."""
    with pytest.raises(PermanentFeedError) as info:
        await fetcher.fetch(server.url("/nothing-here"))

    assert info.value.status == 404


@pytest.mark.parametrize("status", [400, 401, 403, 451])
async def test_other_client_errors_are_permanent(
    server: FeedServer, fetcher: Fetcher, status: int
) -> None:
    """Retrying soon will not fix a 4xx."""
    server.route("/feed", status=status)

    with pytest.raises(PermanentFeedError, match=f"HTTP {status}") as info:
        await fetcher.fetch(server.url("/feed"))

    assert info.value.status == status


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
async def test_server_errors_are_transient(
    server: FeedServer, fetcher: Fetcher, status: int
) -> None:
    """5xx and the 'try later' 4xx codes are worth retrying."""
    server.route("/feed", status=status)

    with pytest.raises(TransientFeedError, match=f"HTTP {status}") as info:
        await fetcher.fetch(server.url("/feed"))

    assert info.value.status == status
    assert info.value.retry_after is None


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_seconds(server: FeedServer, fetcher: Fetcher, status: int) -> None:
    """Retry-After in delta-seconds is passed on."""
    server.route("/feed", status=status, headers={"Retry-After": "120"})

    with pytest.raises(TransientFeedError) as info:
        await fetcher.fetch(server.url("/feed"))

    assert info.value.retry_after == 120


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_http_date(server: FeedServer, fetcher: Fetcher, status: int) -> None:
    """Retry-After as an HTTP-date becomes seconds from now."""
    when = datetime.now(UTC) + timedelta(minutes=10)
    header = email.utils.format_datetime(when, usegmt=True)
    server.route("/feed", status=status, headers={"Retry-After": header})

    with pytest.raises(TransientFeedError) as info:
        await fetcher.fetch(server.url("/feed"))

    assert info.value.retry_after is not None
    assert 590 <= info.value.retry_after <= 600


@pytest.mark.parametrize("value", ["Wed, 21 Oct 2015 07:28:00 GMT", "soon", "-5"])
async def test_retry_after_past_or_garbage(
    server: FeedServer, fetcher: Fetcher, value: str
) -> None:
    """A date in the past means 'now'; an unreadable value is ignored."""
    server.route("/feed", status=503, headers={"Retry-After": value})

    with pytest.raises(TransientFeedError) as info:
        await fetcher.fetch(server.url("/feed"))

    assert info.value.retry_after == (0.0 if "2015" in value else None)


# --- connection failures --------------------------------------------------------------------


async def test_connection_dropped_mid_body(server: FeedServer, fetcher: Fetcher) -> None:
    """A body cut short by the server is a transient failure, never a short feed."""
    server.route("/feed", POSTS, drop_after=1000)

    with pytest.raises(TransientFeedError, match="closed the connection"):
        await fetcher.fetch(server.url("/feed"))


async def test_connection_refused(fetcher: Fetcher) -> None:
    """Nothing listening is transient (the blog may be restarting)."""
    port = free_port()

    with pytest.raises(TransientFeedError, match=f"Could not connect to 127.0.0.1:{port}"):
        await fetcher.fetch(f"http://127.0.0.1:{port}/feed")


async def test_dns_failure(fetcher: Fetcher) -> None:
    """An unresolvable name says so; .invalid never leaves the machine (the guard checks)."""
    with pytest.raises(TransientFeedError, match="could not be resolved") as info:
        await fetcher.fetch("http://blog.example.invalid/feed")

    assert "blog.example.invalid" in str(info.value)


# --- URL validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/feed",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "mailto:blog@example.com",
        "http://",
        "http:///feed",
        "",
        "   ",
        "not a url",
        "localhost:8080/feed",
        "http://example.com:99999/feed",
    ],
)
async def test_non_http_urls_are_invalid(fetcher: Fetcher, url: str) -> None:
    """Only http(s) URLs with a host are ever requested."""
    with pytest.raises(InvalidFeedURLError):
        check_url(url)
    with pytest.raises(InvalidFeedURLError):
        await fetcher.fetch(url)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://example.com/feed", "https://example.com/feed"),
        ("  HTTPS://Example.COM/feed  ", "https://example.com/feed"),
        ("http://example.com/feed#top", "http://example.com/feed"),
        ("example.blogspot.com", "https://example.blogspot.com"),
        ("blog.example.com/feed/atom/", "https://blog.example.com/feed/atom/"),
        ("http://example.com/feeds/posts/default?alt=rss", None),
    ],
)
def test_check_url_normalises(given: str, expected: str | None) -> None:
    """Pasted URLs are tidied: scheme added, case folded, fragment dropped."""
    assert check_url(given) == (expected or given)


SECRET = "S3cretPassw0rd"


@pytest.mark.parametrize(
    "url",
    [
        f"http://alice:{SECRET}@127.0.0.1/feed",
        f"https://alice:{SECRET}@blog.example.com/feeds/posts/default",
        f"HTTPS://{SECRET}@blog.example.com/",
        f"https://:{SECRET}@blog.example.com/",
        f"alice:{SECRET}@blog.example.com/feed",
        f"https://alice:{SECRET}@[broken/feed",
        f"https://alice:{SECRET}@blog.example.com:99999/feed",
    ],
)
async def test_credentials_in_urls_are_refused_without_repeating_them(
    fetcher: Fetcher, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A user name or password in a feed URL is refused, and no error or log repeats it."""
    caplog.set_level("DEBUG")
    with pytest.raises(InvalidFeedURLError, match="user name or password") as checked:
        check_url(url)
    with pytest.raises(InvalidFeedURLError, match="user name or password") as fetched:
        await fetcher.fetch(url)

    for text in (str(checked.value), str(fetched.value), caplog.text):
        assert SECRET not in text and "alice" not in text


def test_hop_check_refuses_credentials() -> None:
    """Every request target is checked for credentials, not only the URL a moderator typed."""
    with pytest.raises(InvalidFeedURLError, match="user name or password") as info:
        check_hop(URL(f"http://user:{SECRET}@127.0.0.1/feed"), allow_private=False)

    assert SECRET not in str(info.value)


async def test_redirect_to_a_url_with_credentials_is_refused(
    server: FeedServer, fetcher: Fetcher, caplog: pytest.LogCaptureFixture
) -> None:
    """A server cannot make the bot send (or show, or log) credentials it names in Location."""
    caplog.set_level("DEBUG")
    server.route("/private", POSTS)
    server.redirect("/feed", server.url("/private").replace("http://", f"http://bob:{SECRET}@"))

    with pytest.raises(InvalidFeedURLError, match="user name or password") as info:
        await fetcher.fetch(server.url("/feed"))

    assert server.hits("/private") == 0
    assert SECRET not in str(info.value) and SECRET not in caplog.text


async def test_invalid_redirect_targets_are_shown_without_credentials(
    server: FeedServer, fetcher: Fetcher
) -> None:
    """Even a Location that is no http(s) URL is repeated without what precedes its "@"."""
    server.redirect("/feed", f"ftp://bob:{SECRET}@files.example/feed")

    with pytest.raises(InvalidFeedURLError, match="not an http") as info:
        await fetcher.fetch(server.url("/feed"))

    assert SECRET not in str(info.value) and "ftp://***@files.example/feed" in str(info.value)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"https://alice:{SECRET}@host/feed", "https://***@host/feed"),
        (f"alice:{SECRET}@host", "***@host"),
        ("https://host/feed?reply=a@b", "https://host/feed?reply=a@b"),
        ("On Probation", "On Probation"),
    ],
)
def test_redact_userinfo(text: str, shown: str) -> None:
    """What precedes the host's "@" is masked; an "@" in the path or query is left alone."""
    assert redact_userinfo(text) == shown


# --- SSRF guard -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[ff02::1]/",
        "http://[2002:7f00:1::]/",
        "http://[fec0::1]/",
    ],
)
def test_hop_check_refuses_private_literals(url: str) -> None:
    """Every forbidden range is refused by the per-hop check, whatever its spelling."""
    with pytest.raises(BlockedAddressError, match="ALLOW_PRIVATE_ADDRESSES=true"):
        check_hop(URL(url), allow_private=False)


@pytest.mark.parametrize(
    "url", ["http://93.184.216.34/feed", "https://[2606:4700::1111]/", "https://example.com/"]
)
def test_hop_check_allows_public_targets(url: str) -> None:
    """Public literals pass; names are left to the resolver at connect time."""
    assert str(check_hop(URL(url), allow_private=False)) == url


def test_hop_check_allows_private_when_configured() -> None:
    """ALLOW_PRIVATE_ADDRESSES lets a self-hosted blog on the LAN through."""
    assert str(check_hop(URL("http://10.0.0.1/feed"), allow_private=True)) == "http://10.0.0.1/feed"


@pytest.mark.parametrize(
    "url_of",
    [
        lambda port: f"http://127.0.0.1:{port}/feed",
        lambda port: f"http://localhost:{port}/feed",
        lambda port: f"http://[::1]:{port}/feed",
        lambda port: "http://10.0.0.1/feed",
    ],
    ids=["ipv4-loopback", "localhost", "ipv6-loopback", "private"],
)
async def test_private_targets_refused_before_connecting(
    server: FeedServer, make_fetcher: MakeFetcher, url_of: Callable[[int], str]
) -> None:
    """With private addresses disallowed, nothing is sent (the guard would fail on 10.0.0.1)."""
    fetcher = await make_fetcher(allow_private=False)
    server.route("/feed", POSTS)

    with pytest.raises(BlockedAddressError, match="private address") as info:
        await fetcher.fetch(url_of(server.port))

    assert "ALLOW_PRIVATE_ADDRESSES=true" in str(info.value)
    assert server.requests == []


async def test_name_resolving_to_loopback_is_refused_by_resolver(
    server: FeedServer, make_fetcher: MakeFetcher
) -> None:
    """'localhost' passes the literal check; the session's resolver stops it at connect time."""
    fetcher = await make_fetcher(allow_private=False)

    with pytest.raises(BlockedAddressError, match=r"localhost resolves to a private address;"):
        await fetcher.fetch(server.url("/feed").replace("127.0.0.1", "localhost"))


async def test_redirect_to_private_literal_is_refused(
    server: FeedServer, make_fetcher: MakeFetcher
) -> None:
    """A redirect hop is re-checked before connecting.

    The first hop goes to 'localhost' through a session whose resolver allows it,
    standing in for a public blog; the redirect then points at 10.0.0.1.
    """
    fetcher = await make_fetcher(allow_private=False, session_allows_private=True)
    server.redirect("/feed", "http://10.0.0.1/feed")
    start = server.url("/feed").replace("127.0.0.1", "localhost")

    with pytest.raises(BlockedAddressError, match=r"10\.0\.0\.1"):
        await fetcher.fetch(start)

    assert server.hits("/feed") == 1


class FakeDNS(AbstractResolver):
    """Answers from a table, like a DNS server we control (e.g. one doing rebinding)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Return the table's addresses for ``host``."""
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for address in self.table[host]
        ]

    async def close(self) -> None:
        """Record that the guard released its inner resolver."""
        self.closed = True


DNS_TABLE = {
    "public.example": ["93.184.216.34", "2606:2800:220:1::1"],
    "intranet.example": ["10.1.2.3"],
    "rebind.example": ["93.184.216.34", "127.0.0.1"],
    "mapped.example": ["::ffff:192.168.0.1"],
    "linklocal.example": ["fe80::1%eth0"],
}


async def test_resolver_passes_public_addresses() -> None:
    """Public answers come back unchanged."""
    resolver = GuardedResolver(allow_private=False, inner=FakeDNS(DNS_TABLE))

    results = await resolver.resolve("public.example", 443)

    assert [r["host"] for r in results] == DNS_TABLE["public.example"]


@pytest.mark.parametrize("host", ["intranet.example", "rebind.example", "mapped.example"])
async def test_resolver_refuses_private_answers(host: str) -> None:
    """One forbidden address among the answers is enough to refuse the name."""
    resolver = GuardedResolver(allow_private=False, inner=FakeDNS(DNS_TABLE))

    with pytest.raises(BlockedAddressError, match=f"{host} resolves to a private address"):
        await resolver.resolve(host, 80)


async def test_refusal_names_the_host_but_never_its_addresses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Any guild's moderator reads the refusal: it must not answer DNS questions about the
    operator's network. The addresses go to the operator's log, at DEBUG."""
    table = {"internal-db.corp": ["10.1.2.3", "fd00::7"]}
    caplog.set_level("DEBUG", logger="bot.addresses")
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(allow_private=False, inner=FakeDNS(table))
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        fetcher = Fetcher(session, timeout=5, max_bytes=1_000_000, allow_private=False)
        with pytest.raises(BlockedAddressError) as info:
            await fetcher.fetch("http://internal-db.corp/feed")

    assert str(info.value) == (
        "The feed host internal-db.corp resolves to a private address; "
        "set ALLOW_PRIVATE_ADDRESSES=true to allow it."
    )
    assert "10.1.2.3" in caplog.text and "fd00::7" in caplog.text


@pytest.mark.parametrize("host", ["intranet.example", "rebind.example", "mapped.example"])
async def test_resolver_refusals_hide_the_answers(host: str) -> None:
    """Whatever the answers, the message holds none of them."""
    resolver = GuardedResolver(allow_private=False, inner=FakeDNS(DNS_TABLE))

    with pytest.raises(BlockedAddressError) as info:
        await resolver.resolve(host, 80)

    assert not any(address in str(info.value) for address in DNS_TABLE[host])


async def test_resolver_refuses_scoped_link_local(caplog: pytest.LogCaptureFixture) -> None:
    """A scope id does not hide a link-local address."""
    resolver = GuardedResolver(allow_private=False, inner=FakeDNS(DNS_TABLE))
    caplog.set_level("DEBUG", logger="bot.addresses")

    with pytest.raises(BlockedAddressError, match=r"linklocal\.example resolves to a private"):
        await resolver.resolve("linklocal.example", 80)

    assert "fe80::1 is link-local" in caplog.text


async def test_resolver_allows_private_when_configured() -> None:
    """With ALLOW_PRIVATE_ADDRESSES the guard only passes answers through."""
    resolver = GuardedResolver(allow_private=True, inner=FakeDNS(DNS_TABLE))

    results = await resolver.resolve("intranet.example", 80)

    assert results[0]["host"] == "10.1.2.3"


async def test_real_resolver_refuses_localhost() -> None:
    """The default inner resolver is guarded too ('localhost' is answered from /etc/hosts)."""
    resolver = GuardedResolver(allow_private=False)

    with pytest.raises(BlockedAddressError, match="localhost resolves to a private address"):
        await resolver.resolve("localhost", 80, socket.AF_INET)
    await resolver.close()


async def test_resolver_fails_invalid_names_without_asking_dns() -> None:
    """RFC 6761: .invalid names fail at once (the fake would raise KeyError if asked)."""
    resolver = GuardedResolver(allow_private=True, inner=FakeDNS({}))

    with pytest.raises(socket.gaierror):
        await resolver.resolve("feed.example.invalid", 80)


async def test_resolver_close_releases_inner() -> None:
    """Closing the guard closes what it wraps."""
    inner = FakeDNS({})
    await GuardedResolver(allow_private=False, inner=inner).close()

    assert inner.closed

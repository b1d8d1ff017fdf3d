"""What the benchmarks share: a feed server in its own process, feed bodies, JSON output.

Budgets (SPEC §7) are ratios against a baseline measured in the same run, so a
benchmark must keep anything it does not mean to measure out of its numbers.
The feed server is the big one: its CPU would otherwise be counted as the
bot's, so it runs in a separate process (``ServerProcess``) and is reached over
127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import os
import random
import re
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from xml.sax.saxutils import escape, quoteattr

if TYPE_CHECKING:
    from storage import SubscriptionRepo
    from storage.records import Subscription
    from tests.feedserver import FeedServer

_STOP = "stop"
_UPDATE = "update"
_START_TIMEOUT = 60.0


# --- running and reporting ---------------------------------------------------------------


class InvalidRunError(Exception):
    """The benchmark did not measure what it meant to (a poll was not idle, ...).

    Its figures would mean nothing, so ``run`` prints no JSON and exits 2.
    """


def run(measure: Callable[[], Coroutine[Any, Any, Mapping[str, Any]]]) -> int:
    """Run a benchmark's ``measure`` coroutine and report it: the scripts' ``main``."""
    try:
        result = asyncio.run(measure())
    except InvalidRunError as exc:
        print(f"benchmark invalid: {exc}", file=sys.stderr)
        return 2
    return emit(result)


def emit(result: Mapping[str, Any]) -> int:
    """Print the one JSON object a benchmark reports; return its exit status.

    Exit 0 means within budget, 1 means over it, so a CI step can both read the
    figures and fail on them.
    """
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = math.ceil(fraction * len(ordered) - 1e-9)  # 0.99 * 100 must give rank 99
    return ordered[min(max(rank, 1), len(ordered)) - 1]


# --- subscriptions ------------------------------------------------------------------------


async def all_due(repo: SubscriptionRepo, count: int) -> list[Subscription]:
    """Up to ``count`` active subscriptions, as the polling scheduler gets them when all are due.

    That is the scheduler's due query (``list_due``, whose ids ``due_ids`` reads)
    asked at the end of time, so every poll starts from each subscription's stored
    state. In id order, the order they were added, so the n-th is blog n.
    """
    due = await repo.list_due(datetime.max.replace(tzinfo=UTC), count)
    return sorted(due, key=lambda sub: sub.id)


# --- feed server in another process -----------------------------------------------------


def pin_apart() -> set[int] | None:
    """Keep the feed server off the benchmark's CPUs; return the CPUs left for the server.

    Call before any thread is started: Linux pins the calling thread, and
    threads started later inherit it. Without this, on a small machine the
    server and the measured process share cores, and every hand-off between the
    event loop and a worker thread (aiosqlite, ``to_thread``) may wake a thread
    on the other core: an inter-processor interrupt, which on a VM is costly and
    is charged to the measured process, making its figures swing by 2x from run
    to run. The server gets the last CPU, the benchmark all the others (on a
    two-CPU machine that is one core for the event loop and its worker threads
    together). None (nothing pinned) with fewer than two CPUs or no affinity API.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    available = os.sched_getaffinity(0)
    if len(available) < 2:
        return None
    server = {max(available)}
    os.sched_setaffinity(0, available - server)
    return server


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One path the server answers: ``body`` with an ``ETag``; 304 when it matches.

    The optional fields make a misbehaving blog (``tests.feedserver.Route`` has
    the same ones): another ``status`` (give it no ``etag``, or a matching
    ``If-None-Match`` gets a 304 first), a ``delay`` before answering, or a
    connection cut after ``drop_after`` body bytes of a declared full length.
    """

    path: str
    body: bytes
    etag: str | None
    last_modified: str | None
    status: int = 200
    delay: float = 0.0
    drop_after: int | None = None


@dataclass(frozen=True, slots=True)
class ServerStats:
    """What the server saw, so a benchmark can prove it measured what it meant to."""

    requests: int
    not_modified: int


RouteSource = Sequence[RouteSpec] | Callable[[], Sequence[RouteSpec]]
"""Routes, or a picklable function (module level, or a ``functools.partial`` of one) making them."""


class ServerProcess:
    """``tests.feedserver.FeedServer`` serving ``routes`` on 127.0.0.1, in a child process.

    A spawned (not forked) child: the parent may already run threads (aiosqlite,
    the default executor), which fork would copy in an undefined state.
    ``cpus`` pins the server to those CPUs (see ``pin_apart``). ``routes`` may be
    a function, called in the child: the feed bodies then never take memory in
    the parent, whose memory ``bench/memory.py`` measures.
    Use as ``with ServerProcess(routes) as server: server.url(path)``; ``update``
    changes what the server answers between batches of requests.
    """

    def __init__(self, routes: RouteSource, *, cpus: set[int] | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(routes if callable(routes) else list(routes), child_conn, cpus),
            name="bench-feed-server",
            daemon=True,
        )
        self._child_conn = child_conn
        self.port = 0
        self.stats: ServerStats | None = None

    def __enter__(self) -> Self:
        self._process.start()
        self._child_conn.close()  # so a child that dies shows up as EOF here
        try:
            if not self._conn.poll(_START_TIMEOUT):
                raise InvalidRunError("the feed server did not start in time")
            self.port = int(self._conn.recv())
        except (EOFError, InvalidRunError) as exc:
            self._kill()
            raise InvalidRunError(f"the feed server did not start ({exc or 'it exited'})") from exc
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._conn.send(_STOP)
            if self._conn.poll(10):
                requests, not_modified = self._conn.recv()
                self.stats = ServerStats(requests, not_modified)
        except (EOFError, OSError):
            pass  # the child died; join/kill below still cleans up
        self._process.join(10)
        if self._process.is_alive():
            self._kill()
        self._conn.close()

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on the server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def update(self, routes: Sequence[RouteSpec]) -> ServerStats:
        """Answer ``routes`` from now on (other paths keep theirs); return the counts so far.

        Call it between batches of requests, never while one is in flight: each
        request is counted as a 304 or not by the routes in force at the next
        ``update`` (or at the end).
        """
        self._conn.send((_UPDATE, list(routes)))
        if not self._conn.poll(_START_TIMEOUT):
            raise InvalidRunError("the feed server did not take the new routes in time")
        requests, not_modified = self._conn.recv()
        return ServerStats(requests, not_modified)

    def _kill(self) -> None:
        self._process.kill()
        self._process.join(5)


def _serve(routes: RouteSource, conn: Connection, cpus: set[int] | None) -> None:
    """Child process entry point: serve until the parent says stop."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    asyncio.run(_serve_until_stopped(routes, conn))


async def _serve_until_stopped(routes: RouteSource, conn: Connection) -> None:
    # Imported here: only the child needs the test server (and the pytest it imports).
    from tests.feedserver import FeedServer

    async with FeedServer("127.0.0.1") as server:
        tally = _Tally(server)
        tally.apply(routes() if callable(routes) else routes)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_message() -> None:
            try:
                message = conn.recv()
            except EOFError:  # the parent died
                message = _STOP
            if message == _STOP:
                loop.remove_reader(conn.fileno())
                stop.set()
                return
            _kind, new_routes = message
            tally.apply(new_routes)
            conn.send(tally.counts())

        loop.add_reader(conn.fileno(), on_message)
        conn.send(server.port)
        await stop.wait()
        tally.catch_up()
        conn.send(tally.counts())


class _Tally:
    """Counts the server's requests and its 304 answers as routes change."""

    def __init__(self, server: FeedServer) -> None:
        self.server = server
        self.etags: dict[str, str | None] = {}
        self.requests = 0
        self.not_modified = 0

    def apply(self, routes: Sequence[RouteSpec]) -> None:
        self.catch_up()  # judge the requests so far by the routes that answered them
        for route in routes:
            self.server.route(
                route.path,
                route.body,
                etag=route.etag,
                last_modified=route.last_modified,
                status=route.status,
                delay=route.delay,
                drop_after=route.drop_after,
            )
            self.etags[route.path] = route.etag

    def catch_up(self) -> None:
        for request in self.server.requests:
            etag = self.etags.get(request.path)
            if etag is not None and request.headers.get("If-None-Match") == etag:
                self.not_modified += 1
        self.requests += len(self.server.requests)
        self.server.requests.clear()  # a long soak must not grow the server's log

    def counts(self) -> tuple[int, int]:
        return self.requests, self.not_modified


# --- feed bodies -------------------------------------------------------------------------

BLOG_ID = "8674748682166248033"
SITE = "https://bench-blog.blogspot.com"
_LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud "
    "exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure in "
    "reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint "
    "occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim id est "
    "laborum"
)
_WORDS = _LOREM.split()
_LABELS = ("Travel", "Food", "Photography", "Music", "Technology", "Family", "Books", "Garden")
_TAG_RE = re.compile(r"<[^>]*>")
_IMAGE = "https://blogger.googleusercontent.com/img/b/R29vZ2xl/AVvXsEh{n}/s{size}/photo-{n}.jpg"


def blogger_posts_feed(entries: int, *, seed: int = 0) -> bytes:
    """A Blogger posts feed with ``entries`` realistic posts (each a few KB of HTML).

    The shape copies ``tests/fixtures/real/blogger_posts_thumbnails.atom.xml``:
    labels, both ``rel='replies'`` links, ``media:thumbnail``, ``gd:image`` and
    ``thr:total``, with escaped HTML content holding images, links, lists,
    quotes and entities, so feedparser's sanitiser has real work to do.
    """
    rng = random.Random(seed)
    newest = datetime(2024, 6, 1, 9, 30, tzinfo=UTC)
    posts = "".join(
        _blogger_post(rng, number, newest - timedelta(hours=7 * number))
        for number in range(entries)
    )
    return (
        "<?xml version='1.0' encoding='UTF-8'?>"
        "<feed xmlns='http://www.w3.org/2005/Atom' "
        "xmlns:openSearch='http://a9.com/-/spec/opensearchrss/1.0/' "
        "xmlns:blogger='http://schemas.google.com/blogger/2008' "
        "xmlns:georss='http://www.georss.org/georss' "
        'xmlns:gd="http://schemas.google.com/g/2005" '
        "xmlns:thr='http://purl.org/syndication/thread/1.0'>"
        f"<id>tag:blogger.com,1999:blog-{BLOG_ID}</id>"
        f"<updated>{newest.isoformat(timespec='milliseconds')}</updated>"
        + "".join(f'<category term="{label}"/>' for label in _LABELS)
        + "<title type='text'>Bench Blog</title><subtitle type='html'></subtitle>"
        f"<link rel='http://schemas.google.com/g/2005#feed' type='application/atom+xml' "
        f"href='{SITE}/feeds/posts/default'/>"
        f"<link rel='self' type='application/atom+xml' "
        f"href='https://www.blogger.com/feeds/{BLOG_ID}/posts/default'/>"
        f"<link rel='alternate' type='text/html' href='{SITE}/'/>"
        "<link rel='hub' href='http://pubsubhubbub.appspot.com/'/>"
        "<author><name>Bench Author</name><email>noreply@blogger.com</email></author>"
        "<generator version='7.00' uri='http://www.blogger.com'>Blogger</generator>"
        f"<openSearch:totalResults>{entries}</openSearch:totalResults>"
        "<openSearch:startIndex>1</openSearch:startIndex>"
        f"<openSearch:itemsPerPage>{entries}</openSearch:itemsPerPage>"
        f"{posts}</feed>"
    ).encode()


def blogger_post_id(number: int) -> str:
    """The numeric id of post ``number`` (0 = the newest) of ``blogger_posts_feed``."""
    return f"{1301013119352122500 + number * 7919}"


def _blogger_post(rng: random.Random, number: int, published: datetime) -> str:
    post_id = blogger_post_id(number)
    title = _sentence(rng, 4, 9).rstrip(".")
    slug = "-".join(title.lower().split()[:6])
    url = f"{SITE}/{published:%Y/%m}/{slug}.html"
    stamp = published.isoformat(timespec="milliseconds")
    labels = rng.sample(_LABELS, rng.randint(1, 3))
    comments = rng.randint(0, 40)
    return (
        f"<entry><id>tag:blogger.com,1999:blog-{BLOG_ID}.post-{post_id}</id>"
        f"<published>{stamp}</published><updated>{stamp}</updated>"
        + "".join(
            f'<category scheme="http://www.blogger.com/atom/ns#" term="{label}"/>'
            for label in labels
        )
        + f"<title type='text'>{escape(title)}</title>"
        f"<content type='html'>{escape(_post_html(rng, number))}</content>"
        f"<link rel='replies' type='application/atom+xml' "
        f"href='{SITE}/feeds/{post_id}/comments/default' title='Post Comments'/>"
        f"<link rel='replies' type='text/html' href='{url}#comment-form' "
        f"title='{comments} Comments'/>"
        f"<link rel='edit' type='application/atom+xml' "
        f"href='https://www.blogger.com/feeds/{BLOG_ID}/posts/default/{post_id}'/>"
        f"<link rel='self' type='application/atom+xml' "
        f"href='https://www.blogger.com/feeds/{BLOG_ID}/posts/default/{post_id}'/>"
        f"<link rel='alternate' type='text/html' href='{url}' title={quoteattr(title)}/>"
        "<author><name>Bench Author</name>"
        "<uri>http://www.blogger.com/profile/16413293425780700748</uri>"
        "<email>noreply@blogger.com</email>"
        "<gd:image rel='http://schemas.google.com/g/2005#thumbnail' width='32' height='32' "
        "src='//3.bp.blogspot.com/avatar/s100/author.jpg'/></author>"
        '<media:thumbnail xmlns:media="http://search.yahoo.com/mrss/" '
        f'url="{_IMAGE.format(n=number, size="72-c")}" height="72" width="72"/>'
        f"<thr:total>{comments}</thr:total></entry>"
    )


def _post_html(rng: random.Random, number: int) -> str:
    """About 3-5 KB of the HTML Blogger's editor produces."""
    image = _IMAGE.format(n=number, size="1600")
    parts = [
        '<div class="separator" style="clear: both; text-align: center;">'
        f'<a href="{image}" style="margin-left: 1em; margin-right: 1em;">'
        f'<img border="0" data-original-height="1067" data-original-width="1600" '
        f'height="426" src="{_IMAGE.format(n=number, size="640")}" width="640" /></a></div>'
    ]
    for _ in range(rng.randint(5, 8)):
        text = " ".join(_sentence(rng, 8, 20) for _ in range(rng.randint(2, 4)))
        words = text.split(" ")
        at = rng.randrange(len(words))
        words[at] = f'<a href="{SITE}/search/label/{rng.choice(_LABELS)}">{words[at]}</a>'
        words[rng.randrange(len(words))] += " &amp; <b>more</b>&nbsp;&#8212;"
        parts.append(f'<p style="text-align: justify;">{" ".join(words)}</p>')
        if rng.random() < 0.4:
            items = "".join(f"<li>{_sentence(rng, 3, 8)}</li>" for _ in range(rng.randint(2, 5)))
            parts.append(f"<ul>{items}</ul>")
        if rng.random() < 0.25:
            parts.append(f'<blockquote class="tr_bq">{_sentence(rng, 10, 25)}</blockquote>')
    parts.append('<div><br /></div><script>console.log("stripped by the sanitiser")</script>')
    return "".join(parts)


def _sentence(rng: random.Random, low: int, high: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(low, high))]
    return " ".join(words).capitalize() + "."


# Every comment is dated after every post of ``blogger_posts_feed`` (newest: 09:30 that day).
COMMENTS_START = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
_COMMENT_SPACING = timedelta(minutes=17)
_COMMENTERS = ("Anonymous", "Anonymous", "Jim Brown", "Maria Lopez", "K. Osei", "probation_pete")


def blogger_comment_id(number: int) -> str:
    """The numeric id of comment ``number`` of ``blogger_comments_feed``."""
    return f"{5226945339900040673 + number * 104729}"


def blogger_comments_feed(numbers: Iterable[int], *, posts: int, seed: int = 0) -> bytes:
    """One page of a Blogger blog-wide comments feed holding comments ``numbers``, newest first.

    Comment ``n`` is on post ``n % posts`` of ``blogger_posts_feed`` and is dated
    17 minutes after comment ``n - 1``; every third one (after the first round)
    replies to the one before it on the same post. Its HTML, a few hundred
    bytes with line breaks, a link or entities, depends only on ``seed`` and
    ``n``: a comment reads the same on every page, as a known comment must. The
    shape copies ``fixtures/seed/comments.atom.xml`` (as ``tests/feedgen.py`` does).
    """
    ordered = sorted(set(numbers), reverse=True)
    entries = "".join(_blogger_comment(n, posts, seed) for n in ordered)
    newest = COMMENTS_START + _COMMENT_SPACING * (ordered[0] if ordered else 0)
    return (
        "<?xml version='1.0' encoding='UTF-8'?>"
        "<feed xmlns='http://www.w3.org/2005/Atom' "
        "xmlns:openSearch='http://a9.com/-/spec/opensearchrss/1.0/' "
        "xmlns:gd='http://schemas.google.com/g/2005' "
        "xmlns:thr='http://purl.org/syndication/thread/1.0'>"
        f"<id>tag:blogger.com,1999:blog-{BLOG_ID}.comments</id>"
        f"<updated>{newest.isoformat(timespec='milliseconds')}</updated>"
        "<title type='text'>Bench Blog</title>"
        f"<link rel='http://schemas.google.com/g/2005#feed' type='application/atom+xml' "
        f"href='{SITE}/feeds/comments/default'/>"
        f"<link rel='self' type='application/atom+xml' "
        f"href='https://www.blogger.com/feeds/{BLOG_ID}/comments/default'/>"
        f"<link rel='alternate' type='text/html' href='{SITE}/'/>"
        "<author><name>Bench Author</name><email>noreply@blogger.com</email></author>"
        "<generator version='7.00' uri='http://www.blogger.com'>Blogger</generator>"
        f"<openSearch:totalResults>{len(ordered)}</openSearch:totalResults>"
        "<openSearch:startIndex>1</openSearch:startIndex>"
        "<openSearch:itemsPerPage>25</openSearch:itemsPerPage>"
        f"{entries}</feed>"
    ).encode()


def _blogger_comment(number: int, posts: int, seed: int) -> str:
    rng = random.Random(seed * 1_000_003 + number)
    post_id = blogger_post_id(number % posts)
    comment_id = blogger_comment_id(number)
    published = COMMENTS_START + _COMMENT_SPACING * number
    stamp = published.isoformat(timespec="milliseconds")
    epoch_ms = int(published.timestamp() * 1000)
    text = _comment_html(rng)
    plain = " ".join(_TAG_RE.sub(" ", text).split())
    author = rng.choice(_COMMENTERS)
    profile = (
        ""
        if author == "Anonymous"
        else f"<uri>https://www.blogger.com/profile/{10**19 + rng.randrange(10**18)}</uri>"
    )
    feeds = f"https://www.blogger.com/feeds/{BLOG_ID}/{post_id}/comments/default"
    related = (
        f"<link rel='related' type='application/atom+xml' "
        f"href='{feeds}/{blogger_comment_id(number - posts)}'/>"
        if number >= posts and number % 3 == 2
        else ""
    )
    return (
        f"<entry><id>tag:blogger.com,1999:blog-{BLOG_ID}.post-{comment_id}</id>"
        f"<published>{stamp}</published><updated>{stamp}</updated>"
        f"<title type='text'>{escape(plain[:40])}</title>"
        f"<content type='html'>{escape(text)}</content>"
        f"<link rel='edit' type='application/atom+xml' href='{feeds}/{comment_id}'/>"
        f"<link rel='self' type='application/atom+xml' href='{feeds}/{comment_id}'/>"
        f"<link rel='alternate' type='text/html' "
        f"href='{SITE}/2024/05/post-{post_id}.html?showComment={epoch_ms}#c{comment_id}' "
        "title=''/>"
        f"{related}"
        f"<author><name>{escape(author)}</name>{profile}<email>noreply@blogger.com</email>"
        "<gd:image rel='http://schemas.google.com/g/2005#thumbnail' width='16' height='16' "
        "src='https://img1.blogblog.com/img/blank.gif'/></author>"
        f"<thr:in-reply-to href='{SITE}/2024/05/post-{post_id}.html' "
        f"ref='tag:blogger.com,1999:blog-{BLOG_ID}.post-{post_id}' "
        f"source='https://www.blogger.com/feeds/{BLOG_ID}/posts/default/{post_id}' "
        "type='text/html'/>"
        "<gd:extendedProperty name='blogger.itemClass' value='pid-1'/>"
        f"<gd:extendedProperty name='blogger.displayTime' value='{published.date()}'/>"
        "</entry>"
    )


def _comment_html(rng: random.Random) -> str:
    """Two to four sentences as Blogger stores a comment: ``<br />`` between them."""
    parts = [_sentence(rng, 8, 22) for _ in range(rng.randint(2, 4))]
    if rng.random() < 0.3:
        label = rng.choice(_LABELS)
        parts.append(f'See <a href="{SITE}/search/label/{label}" rel="nofollow">{label}</a>')
    if rng.random() < 0.3:
        parts[0] += " &quot;Quite so&quot; &amp; thanks&#8230;"
    return "<br /><br />".join(parts)

"""SPEC §7 memory: the bot's peak RSS with 1,000 subscriptions and 50,000 mapped comments.

The measured process is the bot's polling path as it runs in production: an
existing SQLite database (1,000 Blogger subscriptions, 5 mirrored articles
each with thread and starter-message ids, 50,000 comments mapped to Discord
message ids), the real ``Poller`` over every subscription at
``POLL_CONCURRENCY``, the real fetcher, parser and repositories.

What the bot does not do at run time is kept out of the measured process: the
database is built by a spawned child (through the storage repositories, from
parsing the very feeds the server serves, so content hashes match), and the
feed server, with every feed body, runs in another child. The first round is
a mix: most feeds answer 304, some bodies are new (a new article on every
10th blog, three new comments on every 4th), some are the same bytes with a
new ``ETag`` (no parse); later rounds are all 304.

The figure is the process's peak resident set (``VmHWM``, or ``ru_maxrss``
where there is no ``/proc``), against a 150 MB budget. Feeds are parsed in the
bot's worker processes (``bot/workers.py``), which that figure does not count:
``workers_peak_rss_mb`` adds up their peaks (read before the pool closes; the
documents here are quick, so no worker was retired before then), and
``total_peak_rss_mb``, the bot's peak plus theirs, is held to the budget too. It
overstates a little: pages a worker shares with the others and with their fork
server (which is left out) count once per worker. ``baseline_rss_mb`` is
the same interpreter's resident set after importing the whole bot (discord.py,
aiohttp, feedparser, the cogs) and before any work: the part of the peak the
bot's own work cannot shrink. ``--tracemalloc N`` prints the N biggest Python
allocation sites still alive after the first round, and the traced peak, to
stderr (tracing itself costs memory, so that run's RSS figures are inflated).

Run ``python -m bench.memory [--subscriptions 1000] [--comments 50000]``; prints
one JSON object, exits 0 within budget and 1 over it (2 if the set-up went wrong).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import hashlib
import importlib
import multiprocessing
import resource
import sys
import tempfile
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a file: make ``bench``, ``bot`` and ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    InvalidRunError,
    RouteSpec,
    ServerProcess,
    all_due,
    blogger_comments_feed,
    blogger_posts_feed,
    pin_apart,
    run,
)
from bot.models import ParsedFeed
from bot.parse import parse_feed
from bot.settings import DEFAULTS

# The bot's worker processes import this module again (multiprocessing re-imports
# ``__main__`` in each; ``python -m bot`` is spared that), so the bot's heavier
# modules are imported where they are used: the workers' figure stays the bot's.
if TYPE_CHECKING:
    from bot.polling import Poller, PollOutcome
    from storage import SubscriptionRepo
    from storage.records import Subscription

BUDGET_MB = 150.0
POSTS = 5  # articles per blog, all mirrored
PAGE = 25  # comments per page of Blogger's comments feed
NEW_COMMENTS = 3  # on a changed comments page
VARIANTS = 8  # distinct blogs' worth of text; blog i reads like blog i % VARIANTS
ETAG = '"v1"'
CHANGED_ETAG = '"v2"'
SAME_BYTES_ETAG = '"v1-again"'
LAST_MODIFIED = "Sat, 01 Jun 2024 09:30:00 GMT"
_SEED_TIMEOUT = 900.0


def posts_path(index: int) -> str:
    return f"/blog{index}/feeds/posts/default"


def comments_path(index: int) -> str:
    return f"/blog{index}/feeds/comments/default"


# --- what each blog serves in the first round ------------------------------------------


@dataclass(frozen=True, slots=True)
class Mix:
    """What blog ``index`` answers in the first round: ``"304"``, ``"changed"`` or ``"same"``.

    ``"same"`` is the same bytes under a new ``ETag``: a 200 the bot must not parse.
    """

    posts: str
    comments: str


def mix(index: int) -> Mix:
    posts = "changed" if index % 10 == 0 else "same" if index % 10 == 5 else "304"
    comments = "changed" if index % 4 == 1 else "same" if index % 10 == 7 else "304"
    return Mix(posts, comments)


def _posts_body(variant: int, *, changed: bool) -> bytes:
    # One more (older) post: the first POSTS entries are byte for byte the same.
    return blogger_posts_feed(POSTS + 1 if changed else POSTS, seed=variant)


def _comments_page(variant: int, per_blog: int, *, changed: bool) -> bytes:
    newest = per_blog + (NEW_COMMENTS if changed else 0)
    return blogger_comments_feed(range(max(0, newest - PAGE), newest), posts=POSTS, seed=variant)


def feed_routes(subscriptions: int, per_blog: int) -> list[RouteSpec]:
    """Every blog's two feeds; run in the server's process (see ``ServerProcess``)."""
    bodies: dict[tuple[str, int, bool], bytes] = {}

    def body(kind: str, variant: int, changed: bool) -> bytes:
        key = (kind, variant, changed)
        if key not in bodies:
            bodies[key] = (
                _posts_body(variant, changed=changed)
                if kind == "posts"
                else _comments_page(variant, per_blog, changed=changed)
            )
        return bodies[key]

    etags = {"304": ETAG, "changed": CHANGED_ETAG, "same": SAME_BYTES_ETAG}
    routes: list[RouteSpec] = []
    for index in range(subscriptions):
        wanted = mix(index)
        variant = index % VARIANTS
        for kind, path, state in (
            ("posts", posts_path(index), wanted.posts),
            ("comments", comments_path(index), wanted.comments),
        ):
            data = body(kind, variant, state == "changed")
            routes.append(RouteSpec(path, data, etags[state], LAST_MODIFIED))
    return routes


# --- the database, built in a child process ---------------------------------------------


def build_database(path: Path, port: int, subscriptions: int, per_blog: int) -> None:
    """Child process entry point: make the database the measured bot opens."""
    asyncio.run(_build(path, port, subscriptions, per_blog))


async def _build(path: Path, port: int, subscriptions: int, per_blog: int) -> None:
    from bot.ingest import new_article, new_comment
    from storage import ArticleRepo, CommentRepo, Database, Outbox, SubscriptionRepo
    from storage.records import ArticleState, CommentState, HttpValidators, to_db_time
    from tests.recording import record_comment, record_thread

    db = await Database.open(path)
    try:
        subs, articles, comments = SubscriptionRepo(db), ArticleRepo(db), CommentRepo(db)
        outbox = Outbox(db)
        now = datetime.now(UTC)
        message_id = 1_200_000_000_000_000_000  # Discord snowflakes, counted up
        parsed: dict[int, tuple[bytes, bytes, ParsedFeed, ParsedFeed]] = {}
        base = f"http://127.0.0.1:{port}"
        for index in range(subscriptions):
            variant = index % VARIANTS
            feed_url, comments_url = base + posts_path(index), base + comments_path(index)
            if variant not in parsed:
                # Blogs of one variant differ only in their URLs, which no entry mentions.
                posts_body = _posts_body(variant, changed=False)
                everything = blogger_comments_feed(range(per_blog), posts=POSTS, seed=variant)
                parsed[variant] = (
                    posts_body,
                    _comments_page(variant, per_blog, changed=False),
                    parse_feed(posts_body, feed_url, kind="posts"),
                    parse_feed(everything, comments_url, kind="comments"),
                )
            posts_body, page, parsed_posts, parsed_comments = parsed[variant]
            sub = await subs.add(
                guild_id=1 + index // 50,
                channel_id=10_000 + index,
                feed_url=feed_url,
                blog_url=f"https://blog{index}.blogspot.com/",
                blog_title=f"{parsed_posts.title} {index}",
                dialect=parsed_posts.dialect.value,
                comments_feed_url=comments_url,
                mirror_comments=True,
                backfill=POSTS,
                interval_seconds=int(DEFAULTS["POLL_INTERVAL_SECONDS"]),
                now=now,
                next_poll_at=now,
            )
            now_text = to_db_time(now)
            await articles.insert_many(
                sub.id,
                [(new_article(a), ArticleState.PENDING) for a in parsed_posts.articles],
                now_text=now_text,
            )
            known = await articles.known(sub.id, [a.id for a in parsed_posts.articles])
            await comments.insert_many(
                sub.id,
                [
                    (known[c.article_id].row_id, new_comment(c), CommentState.PENDING)
                    for c in parsed_comments.comments
                ],
                now_text=now_text,
            )
            for entry in known.values():
                message_id += 1
                await record_thread(outbox, sub.id, entry.row_id, message_id)
            stored = await comments.known(sub.id, [c.id for c in parsed_comments.comments])
            for entry in stored.values():
                message_id += 1
                await record_comment(outbox, sub.id, entry.row_id, message_id)
            for url, body in ((feed_url, posts_body), (comments_url, page)):
                validators = HttpValidators(ETAG, LAST_MODIFIED, hashlib.sha256(body).hexdigest())
                await subs.store_validators(sub.id, url, validators, now=now)
            await subs.record_success(sub.id, now=now, next_poll_at=now)
            if parsed_comments.comments:
                newest = max(c.published for c in parsed_comments.comments)
                await subs.set_comments_seen_until(sub.id, newest)
    finally:
        await db.close()


def _build_in_child(path: Path, port: int, subscriptions: int, per_blog: int) -> None:
    """Build the database in a spawned process, so none of it counts in this one's peak."""
    context = multiprocessing.get_context("spawn")
    child = context.Process(
        target=build_database,
        args=(path, port, subscriptions, per_blog),
        name="bench-memory-database",
        daemon=True,
    )
    child.start()
    child.join(_SEED_TIMEOUT)
    if child.is_alive():
        child.kill()
        child.join(5)
        raise InvalidRunError("building the database took too long")
    if child.exitcode != 0:
        raise InvalidRunError(f"building the database failed (exit status {child.exitcode})")


# --- measuring ----------------------------------------------------------------------------


def load_bot() -> None:
    """Import everything the running bot imports: the client, its services and the cogs."""
    from bot.client import EXTENSIONS

    for extension in EXTENSIONS:
        importlib.import_module(extension)


def rss_mb(field: str, pid: int | None = None) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process (or ``pid``) in MB, from ``/proc``.

    Without ``/proc``, both fall back on ``ru_maxrss`` (the peak so far), which
    before any work is close to the current size; another process then counts 0.
    """
    try:
        with open(f"/proc/{pid or 'self'}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        if pid is not None:
            return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 1_048_576  # kB, macOS bytes


async def measure(
    subscriptions: int,
    comments: int,
    rounds: int,
    concurrency: int,
    server_cpus: set[int] | None = None,
    trace_top: int = 0,
) -> dict[str, Any]:
    """Baseline after imports, then build, open and poll; the peak is the process's."""
    from bot.fetch import Fetcher, create_session
    from bot.ingest import Ingestor
    from bot.polling import Poller
    from bot.untrusted import Untrusted, open_pool
    from storage import ArticleRepo, CommentRepo, Database, SubscriptionRepo

    per_blog = comments // subscriptions
    gc.collect()
    baseline = rss_mb("VmRSS")
    if trace_top:
        tracemalloc.start()
    routes = functools.partial(feed_routes, subscriptions, per_blog)
    with ServerProcess(routes, cpus=server_cpus) as server, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "memory.sqlite3"
        await asyncio.to_thread(_build_in_child, path, server.port, subscriptions, per_blog)
        db = await Database.open(path)
        session = create_session(allow_private=True)
        pool = open_pool()
        workers_peak = 0.0
        try:
            repo = SubscriptionRepo(db)
            await _check_database(repo, subscriptions, per_blog)
            fetcher = Fetcher(
                session,
                timeout=float(DEFAULTS["FEED_TIMEOUT_SECONDS"]),
                max_bytes=int(DEFAULTS["MAX_FEED_BYTES"]),
                allow_private=True,
            )
            ingestor = Ingestor(fetcher, repo, ArticleRepo(db), CommentRepo(db), Untrusted(pool))
            poller = Poller(ingestor, repo)
            for number in range(rounds):
                due = await all_due(repo, subscriptions)
                outcomes = await _poll_all(poller, due, concurrency)
                _check_round(outcomes, first=number == 0)
                if trace_top and number == 0:
                    _print_top(trace_top)
            workers_peak = sum(rss_mb("VmHWM", pid) for pid in pool.pids)
        finally:
            await session.close()
            await pool.close()
            await db.close()
    peak = rss_mb("VmHWM")
    total = peak + workers_peak
    _check_traffic(server, subscriptions, rounds)
    return {
        "benchmark": "memory",
        "subscriptions": subscriptions,
        "comments": per_blog * subscriptions,
        "peak_rss_mb": round(peak, 1),
        "workers_peak_rss_mb": round(workers_peak, 1),
        "total_peak_rss_mb": round(total, 1),
        "baseline_rss_mb": round(baseline, 1),
        "budget_mb": BUDGET_MB,
        "ok": peak <= BUDGET_MB and total <= BUDGET_MB,
    }


async def _poll_all(
    poller: Poller, subs: Sequence[Subscription], concurrency: int
) -> list[PollOutcome]:
    """Every subscription once, ``concurrency`` at a time, as the polling cog gates them."""
    gate = asyncio.Semaphore(concurrency)

    async def one(sub: Subscription) -> PollOutcome:
        async with gate:
            return await poller.poll(sub)

    return await asyncio.gather(*(one(sub) for sub in subs))


async def _check_database(repo: SubscriptionRepo, subscriptions: int, per_blog: int) -> None:
    subs = await all_due(repo, subscriptions + 1)
    if len(subs) != subscriptions:
        raise InvalidRunError(f"the database holds {len(subs)} subscriptions")
    for sub in (subs[0], subs[-1]):
        counts = await repo.counts(sub.id)
        if (counts.articles_mirrored, counts.comments_mirrored) != (POSTS, per_blog):
            raise InvalidRunError(f"subscription {sub.id} was built wrong: {counts}")


def _check_round(outcomes: Sequence[PollOutcome], *, first: bool) -> None:
    """Every poll succeeded and found exactly what its blog's mix put there."""
    for index, outcome in enumerate(outcomes):
        summary = outcome.summary
        if summary is None:
            raise InvalidRunError(f"poll of blog {index} failed: {outcome.error}")
        wanted = mix(index) if first else Mix("304", "304")
        found = (
            summary.skipped_articles,
            summary.new_comments,
            summary.new_articles + summary.changed_articles + summary.changed_comments,
        )
        expected = (
            int(wanted.posts == "changed"),
            NEW_COMMENTS if wanted.comments == "changed" else 0,
            0,
        )
        if found != expected:
            raise InvalidRunError(f"poll of blog {index} found {summary}, expected {wanted}")


def _check_traffic(server: ServerProcess, subscriptions: int, rounds: int) -> None:
    """Two requests per poll; 304s for every unchanged feed, all of them after round one."""
    first_304 = sum(
        (m.posts == "304") + (m.comments == "304") for m in map(mix, range(subscriptions))
    )
    expected = (2 * subscriptions * rounds, first_304 + 2 * subscriptions * (rounds - 1))
    stats = server.stats
    if stats is None or (stats.requests, stats.not_modified) != expected:
        raise InvalidRunError(f"expected (requests, 304s) {expected}, the server saw {stats}")


def _print_top(count: int) -> None:
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    print(
        f"tracemalloc after round 1: {current / 1e6:.1f} MB alive, traced peak {peak / 1e6:.1f} MB",
        file=sys.stderr,
    )
    for stat in tracemalloc.take_snapshot().statistics("lineno")[:count]:
        print(f"  {stat}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--comments", type=int, default=50_000, help="mapped comments in all")
    parser.add_argument("--rounds", type=int, default=2, help="polls of every subscription")
    parser.add_argument(
        "--concurrency", type=int, default=int(DEFAULTS["POLL_CONCURRENCY"]), help="polls at once"
    )
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="N",
        help="print the N biggest allocation sites after round 1 to stderr (inflates RSS)",
    )
    parser.add_argument("--no-pin", action="store_true", help="let the feed server share CPUs")
    args = parser.parse_args(argv)
    if args.subscriptions < 1 or args.rounds < 1 or args.comments < args.subscriptions:
        parser.error("need at least one subscription, one round and one comment per blog")
    load_bot()
    server_cpus = None if args.no_pin else pin_apart()
    return run(
        lambda: measure(
            args.subscriptions,
            args.comments,
            args.rounds,
            args.concurrency,
            server_cpus,
            args.tracemalloc,
        )
    )


if __name__ == "__main__":
    sys.exit(main())

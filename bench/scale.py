"""SPEC §7 scale: idle polling at 20,000 subscriptions, on SQLite and on shared PostgreSQL.

Two cases, each with real bot processes (``python -m tests.botprocess``: the
bot's own ``main``) against the Discord double of this process and a feed
server in a child process that answers every conditional GET with 304:

- ``sqlite``: one process runs both shards and all subscriptions in one file.
- ``postgres``: two processes share one PostgreSQL schema, ``SHARD_COUNT=2``
  with ``SHARD_IDS=0`` and ``1``; each polls the subscriptions of the guilds on
  its shard, under leases (SPEC §8).

Rounds are driven from here: the subscriptions are made due at once (one
UPDATE, as if their interval had elapsed together), and a round ends when
every one of them has recorded a successful poll. Each process's CPU is read
from ``/proc/<pid>/stat`` (user + system, its worker processes included)
before and after, and divided by the polls it made; the baseline is the same
number of bare aiohttp conditional GETs, same session settings, same
concurrency, in a child process of its own, alternated with the bot's rounds;
each round's ratio is taken against the baseline round just before it, and
the median ratio is reported (the machine's load drifts across a run).
The server counts every request: each round must be exactly two 304s per
subscription, so a subscription polled twice (or by both processes) or not
at all makes the run invalid. With PostgreSQL, the CPU of the database
backends serving the bots is reported too (it is on the same machine).

Peak RSS is each bot process's ``VmHWM`` plus that of every process it
started (the worker pool and its fork server); the budget holds the sum. The
JSON also reports polls per second per core (1 / CPU per poll), round wall
times and the database's size per subscription, the figures the README's
projection to 1M feeds is built from.

Run ``python -m bench.scale [--subscriptions 20000] [--rounds 2] [--case sqlite|postgres]``;
prints one JSON object, exits 0 within budget, 1 over it, 2 if it could not
measure. ``--database-url`` names the PostgreSQL server (default: the local
test server); a fresh schema is made and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import multiprocessing
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

if __package__ in (None, ""):  # run as a file: make ``bench``, ``bot`` and ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import InvalidRunError, RouteSpec, ServerProcess, blogger_posts_feed, pin_apart
from bench.common import run as run_benchmark
from bench.procstat import cpu_seconds, peak_rss_mb
from storage.records import to_db_time

BUDGET_RATIO = 2.0
BUDGET_MB = 250.0
SHARDS = 2
GUILDS_PER_SHARD = 10
CONCURRENCY = 20  # POLL_CONCURRENCY's default
ETAG = '"scale-v1"'
LAST_MODIFIED = "Sat, 01 Jun 2024 09:30:00 GMT"
APPLICATION = "blogmirror-scale"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
ROUND_TIMEOUT = 900.0
ROOT = Path(__file__).resolve().parent.parent


def posts_path(index: int) -> str:
    return f"/blog{index}/feeds/posts/default"


def comments_path(index: int) -> str:
    return f"/blog{index}/feeds/comments/default"


def feed_routes(count: int) -> list[RouteSpec]:
    """Every blog's two feeds (run in the server's process); a body only if a GET misses."""
    body = blogger_posts_feed(1)
    return [
        RouteSpec(path(i), body, ETAG, LAST_MODIFIED)
        for i in range(count)
        for path in (posts_path, comments_path)
    ]


# --- the bare aiohttp baseline, in a process of its own ------------------------------------


class BareClient:
    """A child process making the conditional GETs an idle poll cannot avoid, on request."""

    def __init__(self, port: int, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_bare_main, args=(port, count, child), name="bench-bare", daemon=True
        )
        self._process.start()
        child.close()

    def round(self) -> float:
        """One round over every blog; the child's CPU per poll in ms."""
        self._conn.send("round")
        if not self._conn.poll(ROUND_TIMEOUT):
            raise InvalidRunError("the bare client's round took too long")
        answer = self._conn.recv()
        if isinstance(answer, str):
            raise InvalidRunError(answer)
        return float(answer)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)


def _bare_main(port: int, count: int, conn: Connection) -> None:
    asyncio.run(_bare_serve(port, count, conn))


async def _bare_serve(port: int, count: int, conn: Connection) -> None:
    from bot.fetch import create_session

    session = create_session(allow_private=True)
    headers = {"If-None-Match": ETAG, "If-Modified-Since": LAST_MODIFIED}
    base = f"http://127.0.0.1:{port}"
    gate = asyncio.Semaphore(CONCURRENCY)

    async def poll(index: int) -> None:
        async with gate:
            for url in (base + posts_path(index), base + comments_path(index)):
                async with session.get(url, headers=headers, allow_redirects=False) as response:
                    await response.read()
                    if response.status != 304:
                        raise InvalidRunError(f"bare GET {url} answered {response.status}")

    try:
        while conn.recv() == "round":
            started = time.process_time()
            try:
                await asyncio.gather(*(poll(i) for i in range(count)))
            except InvalidRunError as exc:
                conn.send(str(exc))
                continue
            conn.send((time.process_time() - started) * 1000 / count)
    except EOFError:
        pass
    finally:
        await session.close()


# --- the world: guilds, database, bot processes --------------------------------------------


@dataclass(frozen=True, slots=True)
class Home:
    guild_id: int
    channel_id: int
    shard: int


@dataclass
class Case:
    """One configuration: a database and the bot processes sharing it."""

    name: str
    shard_ids: list[str]  # one entry per process
    path: Path | None = None  # SQLite
    url: str | None = None  # PostgreSQL (the schema selected in the URL)
    schema: str | None = None


async def _seed(case: Case, homes: Sequence[Home], port: int, count: int) -> list[int]:
    """Write ``count`` subscriptions as a first poll leaves them; return each one's shard.

    Bulk statements instead of ``SubscriptionRepo.add`` (a transaction each):
    the rows are the same, the set-up takes seconds instead of minutes.
    """
    db = await _open(case)
    now = datetime.now(UTC)
    later = to_db_time(now + timedelta(days=1))  # due only when a round makes it so
    base = f"http://127.0.0.1:{port}"
    try:
        async with db.write() as tx:
            await tx.executemany(
                """
                INSERT INTO subscriptions (
                    guild_id, channel_id, feed_url, blog_url, blog_title, dialect,
                    comments_feed_url, mirror_comments, backfill, interval_seconds,
                    created_at, next_poll_at, last_poll_at, last_success_at
                ) VALUES (?, ?, ?, NULL, ?, 'blogger', ?, 1, 1, 3600, ?, ?, ?, ?)
                """,
                [
                    (
                        home.guild_id,
                        home.channel_id,
                        base + posts_path(i),
                        f"Blog {i}",
                        base + comments_path(i),
                        to_db_time(now),
                        later,
                        to_db_time(now),
                        to_db_time(now),
                    )
                    for i, home in ((i, homes[i % len(homes)]) for i in range(count))
                ],
            )
            await tx.execute(
                """
                INSERT INTO http_cache (subscription_id, url, etag, last_modified, body_hash,
                                        fetched_at)
                SELECT id, feed_url, ?, ?, NULL, ? FROM subscriptions
                UNION ALL
                SELECT id, comments_feed_url, ?, ?, NULL, ? FROM subscriptions
                """,
                (ETAG, LAST_MODIFIED, to_db_time(now)) * 2,
            )
    finally:
        await db.close()
    return [homes[i % len(homes)].shard for i in range(count)]


async def _open(case: Case) -> Any:
    if case.url is not None:
        from storage.postgres import PostgresDatabase

        return await PostgresDatabase.connect(case.url)
    from storage import Database

    assert case.path is not None
    return await Database.open(case.path)


async def _make_due(case: Case, when: datetime) -> None:
    db = await _open(case)
    try:
        await db.write_one("UPDATE subscriptions SET next_poll_at = ?", (to_db_time(when),))
    finally:
        await db.close()


async def _polled_since(case: Case, since: datetime) -> int:
    db = await _open(case)
    try:
        row = await db.fetchone(
            "SELECT count(*) FROM subscriptions WHERE last_success_at >= ?", (to_db_time(since),)
        )
    finally:
        await db.close()
    return int(row[0]) if row else 0


async def _database_bytes(case: Case) -> int:
    """The database's size on disk: the SQLite file (after a checkpoint), or the schema."""
    if case.path is not None:
        return sum(p.stat().st_size for p in case.path.parent.glob(case.path.name + "*"))
    import asyncpg

    assert case.url is not None
    conn = await asyncpg.connect(case.url)
    try:
        size = await conn.fetchval(
            """
            SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
            FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
            WHERE n.nspname = $1 AND c.relkind = 'r'
            """,
            case.schema,
        )
    finally:
        await conn.close()
    return int(size)


async def _backend_pids(case: Case) -> list[int]:
    """PostgreSQL server processes serving the bots (named by ``application_name``)."""
    if case.url is None:
        return []
    import asyncpg

    conn = await asyncpg.connect(case.url.replace(APPLICATION, "bench-observer"))
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", APPLICATION
        )
    finally:
        await conn.close()
    return [int(row["pid"]) for row in rows]


class Bots:
    """The bot processes of one case, started against the double of this process."""

    def __init__(
        self, case: Case, double_url: str, workdir: Path, profile: Path | None = None
    ) -> None:
        self.case = case
        self.double_url = double_url
        self.workdir = workdir
        self.profile = profile
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        from tests.processes import bot_environment

        for number, shard_ids in enumerate(self.case.shard_ids):
            settings = {
                "SHARD_COUNT": str(SHARDS),
                "SHARD_IDS": shard_ids,
                "ALLOW_PRIVATE_ADDRESSES": "true",
                "POLL_INTERVAL_SECONDS": "3600",
                "POLL_CONCURRENCY": str(CONCURRENCY),
            }
            if self.case.url is not None:
                settings["DATABASE_URL"] = self.case.url
            else:
                settings["DATABASE_PATH"] = str(self.case.path)
            profiler = []
            if self.profile is not None:  # cProfile writes its file when the bot exits
                out = self.profile / f"{self.case.name}-bot{number}.prof"
                profiler = ["-m", "cProfile", "-o", str(out)]
            log = (self.workdir / f"bot{number}.log").open("ab")
            with log:
                self.processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        *profiler,
                        "-m",
                        "tests.botprocess",
                        env=bot_environment(self.double_url, **settings),
                        cwd=self.workdir,
                        stdout=log,
                        stderr=log,
                    )
                )

    def check_alive(self) -> None:
        for number, process in enumerate(self.processes):
            if process.returncode is not None:
                tail = (self.workdir / f"bot{number}.log").read_text()[-2000:]
                raise InvalidRunError(f"bot process {number} exited: {tail}")

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def _postgres_schema(server_url: str) -> AsyncIterator[tuple[str, str]]:
    """A fresh schema, dropped after: ``(name, URL selecting it and naming the bots)``."""
    import asyncpg

    schema = f"bm_scale_{secrets.token_hex(6)}"
    try:
        conn = await asyncpg.connect(server_url, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise InvalidRunError(f"PostgreSQL at {server_url} is not reachable ({exc})") from exc
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        query = urlencode({"search_path": schema, "application_name": APPLICATION})
        yield schema, f"{server_url}{'&' if '?' in server_url else '?'}{query}"
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


# --- measuring ----------------------------------------------------------------------------


@dataclass
class Tally:
    """One bot process's CPU per poll in each measured round, and the baseline's beside it."""

    polls: int
    cpu_ms: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)


async def measure_case(
    case: Case,
    port: int,
    count: int,
    rounds: int,
    bare: BareClient,
    workdir: Path,
    profile: Path | None,
    drain: Callable[[], object],
) -> dict[str, Any]:
    from tests.conftest import TEST_TOKEN
    from tests.discord_double import DiscordDouble

    async with DiscordDouble(token=TEST_TOKEN) as double:
        homes = []
        for shard in range(SHARDS):
            for number in range(GUILDS_PER_SHARD):
                guild = double.add_guild(f"Guild {shard}.{number}", shard=(shard, SHARDS))
                forum = double.add_forum_channel(guild.id, "blog-comments")
                homes.append(Home(guild.id, forum.id, shard))
        shards = await _seed(case, homes, port, count)
        per_process = [sum(1 for s in shards if str(s) in ids.split(",")) for ids in case.shard_ids]
        bots = Bots(case, double.url, workdir, profile)
        await bots.start()
        try:
            await double.wait_shards_ready(range(SHARDS), count=SHARDS)
            tallies = [Tally(polls) for polls in per_process]
            bare_ms: list[float] = []
            round_seconds: list[float] = []
            db_cpu = 0.0
            for number in range(rounds + 1):  # round 0 warms up: connections, caches
                bare_round = await asyncio.to_thread(bare.round)
                if number:
                    bare_ms.append(bare_round)
                pids = [p.pid for p in bots.processes]
                before = [cpu_seconds(pid) for pid in pids]
                backends = await _backend_pids(case)
                db_before = {pid: cpu_seconds(pid, with_descendants=False) for pid in backends}
                started = time.monotonic()
                await _round(case, bots, count)
                elapsed = time.monotonic() - started
                after = [cpu_seconds(pid) for pid in pids]
                backends = await _backend_pids(case)
                await asyncio.to_thread(drain)  # the server's request log, counted and emptied
                if number:
                    round_seconds.append(elapsed)
                    db_cpu += sum(
                        cpu_seconds(pid, with_descendants=False) - db_before.get(pid, 0.0)
                        for pid in backends
                    )
                    for tally, first, last in zip(tallies, before, after, strict=True):
                        # Each round against the baseline measured just before it: the
                        # machine's load drifts less between the two than across the run.
                        ms = (last - first) * 1000 / tally.polls
                        tally.cpu_ms.append(ms)
                        tally.ratios.append(ms / bare_round)
            peaks = [peak_rss_mb(p.pid) for p in bots.processes]
            size = await _database_bytes(case)
        finally:
            await bots.stop()
    bare_ms_per_poll = statistics.median(bare_ms)
    processes = []
    for ids, tally, (own, workers) in zip(case.shard_ids, tallies, peaks, strict=True):
        ms = statistics.median(tally.cpu_ms)
        ratio = statistics.median(tally.ratios)
        total = own + workers
        processes.append(
            {
                "shard_ids": ids,
                "subscriptions": tally.polls,
                "cpu_ms_per_poll": round(ms, 4),
                "ratio": round(ratio, 3),
                "round_ratios": [round(r, 3) for r in tally.ratios],
                # None: the round was too short for /proc's 10 ms CPU ticks to see.
                "polls_per_second_per_core": round(1000 / ms, 1) if ms else None,
                "peak_rss_mb": round(own, 1),
                "workers_peak_rss_mb": round(workers, 1),
                "total_peak_rss_mb": round(total, 1),
                "ok": ratio <= BUDGET_RATIO and total <= BUDGET_MB,
            }
        )
    result: dict[str, Any] = {
        "name": case.name,
        "subscriptions": count,
        "rounds": rounds,
        "every_subscription_polled_each_round": True,  # else _round raised
        "baseline_cpu_ms_per_poll": round(bare_ms_per_poll, 4),
        "baseline_round_ms_per_poll": [round(ms, 4) for ms in bare_ms],
        "round_seconds": round(statistics.median(round_seconds), 2),
        "processes": processes,
        "database_bytes_per_subscription": round(size / count),
        "ok": all(p["ok"] for p in processes),
    }
    if case.url is not None:
        result["database_cpu_ms_per_poll"] = round(db_cpu * 1000 / (count * rounds), 4)
    return result


async def _round(case: Case, bots: Bots, count: int) -> None:
    """Make every subscription due; return once each recorded a successful poll."""
    start = datetime.now(UTC)
    await _make_due(case, start)
    deadline = time.monotonic() + ROUND_TIMEOUT
    while (polled := await _polled_since(case, start)) < count:
        bots.check_alive()
        if time.monotonic() > deadline:
            raise InvalidRunError(f"only {polled} of {count} subscriptions polled in time")
        await asyncio.sleep(0.25)


async def measure(
    count: int,
    rounds: int,
    cases: Sequence[str],
    database_url: str,
    server_cpus: set[int] | None,
    profile: Path | None = None,
    logs: Path | None = None,
) -> dict[str, Any]:
    routes = functools.partial(feed_routes, count)
    results = []
    with ServerProcess(routes, cpus=server_cpus) as server, tempfile.TemporaryDirectory() as tmp:
        expected = 0

        def drain() -> object:
            return server.update([])

        for name in cases:
            workdir = (logs or Path(tmp)) / name
            workdir.mkdir(parents=True, exist_ok=True)
            # The baseline polls as many blogs as the busiest bot process does.
            per_process = count if name == "sqlite" else -(-count // SHARDS)
            bare = BareClient(server.port, per_process)
            try:
                if name == "sqlite":
                    case = Case("sqlite", ["0,1"], path=workdir / "scale.sqlite3")
                    results.append(
                        await measure_case(
                            case, server.port, count, rounds, bare, workdir, profile, drain
                        )
                    )
                else:
                    async with _postgres_schema(database_url) as (schema, url):
                        case = Case("postgres", ["0", "1"], url=url, schema=schema)
                        results.append(
                            await measure_case(
                                case, server.port, count, rounds, bare, workdir, profile, drain
                            )
                        )
            finally:
                bare.close()
            expected += 2 * (count + per_process) * (rounds + 1)
            stats = server.update([])
            if (stats.requests, stats.not_modified) != (expected, expected):
                raise InvalidRunError(
                    f"expected {expected} requests, all 304, after {name}; the server saw {stats}"
                )
    return {
        "benchmark": "scale",
        "cases": results,
        "budget_ratio": BUDGET_RATIO,
        "budget_mb": BUDGET_MB,
        "ok": all(case["ok"] for case in results),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subscriptions", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds after a warm-up")
    parser.add_argument(
        "--case", action="append", choices=("sqlite", "postgres"), help="default: both"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BLOGMIRROR_TEST_POSTGRES", DEFAULT_DATABASE_URL),
        help="PostgreSQL server for the postgres case (a fresh schema is made and dropped)",
    )
    parser.add_argument("--no-pin", action="store_true", help="let the feed server share CPUs")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run each bot under cProfile, writing CASE-botN.prof here (inflates the CPU figures)",
    )
    parser.add_argument(
        "--logs", type=Path, metavar="DIR", help="keep the bots' logs (and SQLite file) here"
    )
    args = parser.parse_args(argv)
    if args.subscriptions < SHARDS * GUILDS_PER_SHARD or args.rounds < 1:
        parser.error(f"need at least {SHARDS * GUILDS_PER_SHARD} subscriptions and one round")
    server_cpus = None if args.no_pin else pin_apart()
    cases = args.case or ["sqlite", "postgres"]
    return run_benchmark(
        lambda: measure(
            args.subscriptions,
            args.rounds,
            cases,
            args.database_url,
            server_cpus,
            args.profile and args.profile.resolve(),
            args.logs and args.logs.resolve(),
        )
    )


if __name__ == "__main__":
    sys.exit(main())

"""The PostgreSQL half of the suite: a fresh schema per test on the machine's server.

The server is ``BLOGMIRROR_TEST_POSTGRES`` (default: the local PostgreSQL 15 at
127.0.0.1:5432, database ``test``, trust auth). Without a reachable server the
PostgreSQL tests are skipped with the reason shown; with ``CI=true`` (as
``.ci/run`` sets) they fail instead, so CI can never pass without them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from functools import cache
from urllib.parse import urlencode

import asyncpg
import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    return os.environ.get("BLOGMIRROR_TEST_POSTGRES", DEFAULT_URL)


@cache
def unavailable() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""

    async def probe() -> None:
        conn = await asyncpg.connect(server_url(), timeout=5)
        await conn.close()

    try:
        # In a thread of its own: callers may be inside a running event loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, probe()).result()
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL at {server_url()} is not reachable ({exc.__class__.__name__}: {exc})"
    return None


def require_postgres() -> None:
    """Skip (or, under CI, fail) the calling test when there is no server."""
    reason = unavailable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs PostgreSQL: {reason}")
    pytest.skip(reason)


@contextlib.asynccontextmanager
async def fresh_schema() -> AsyncIterator[tuple[str, str]]:
    """A new, empty schema for one test: ``(schema name, URL that selects it)``.

    asyncpg passes unknown URL query parameters on as server settings, so the URL
    selects the schema for any process given it as ``DATABASE_URL``.
    """
    require_postgres()
    schema = f"bm_test_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(server_url())
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        separator = "&" if "?" in server_url() else "?"
        yield schema, f"{server_url()}{separator}{urlencode({'search_path': schema})}"
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()

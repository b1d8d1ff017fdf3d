"""A read-only look at the bot's SQLite file, for tests that wait on what the bot recorded.

Tests wait on conditions, never on a fixed sleep; many of those conditions are
"the bot has recorded X" (a deletion, a finished backfill). This reads the same
file over a second, read-only connection (WAL lets it read while the bot
writes; it can never change what the bot sees), so it works for a bot running
in this process or in a subprocess, and it is the one place tests know the schema.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# What the bot still has to do: in active subscriptions, articles or comments to post or
# edit (comments of an article whose thread Discord refused wait for a resync, so they
# do not count), and sends not yet settled (open outbox intents).
UNFINISHED = """
SELECT
    (SELECT count(*) FROM articles AS a JOIN subscriptions AS s ON s.id = a.subscription_id
     WHERE s.state = 'active' AND (a.state = 'pending' OR a.needs_edit = 1))
  + (SELECT count(*) FROM comments AS c JOIN subscriptions AS s ON s.id = c.subscription_id
     JOIN articles AS a ON a.id = c.article_id
     WHERE s.state = 'active' AND a.state IN ('pending', 'posted')
       AND (c.state = 'pending' OR c.needs_edit = 1))
  + (SELECT count(*) FROM outbox AS i JOIN subscriptions AS s ON s.id = i.subscription_id
     WHERE s.state = 'active' AND i.completed_at IS NULL)
"""


class DatabaseView:
    """Read-only queries on one blogmirror database: a SQLite file, or a PostgreSQL URL."""

    def __init__(self, path: Path | None = None, *, url: str | None = None) -> None:
        self.path = path
        self.url = url

    def rows(self, sql: str, *parameters: Any) -> list[Any]:
        if self.url is not None:
            return _postgres_rows(self.url, sql, parameters)
        assert self.path is not None
        if not self.path.exists():
            return []
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, parameters).fetchall()

    def unfinished(self) -> int:
        """Articles and comments still to post or edit, and sends not yet settled."""
        [row] = self.rows(UNFINISHED) or [(0,)]
        return int(row[0])

    def subscription_ids(self) -> list[int]:
        return [row["id"] for row in self.rows("SELECT id FROM subscriptions ORDER BY id")]

    def comment_of_message(self, message_id: int) -> sqlite3.Row | None:
        """The comment whose (first) Discord message is ``message_id``."""
        found = self.rows("SELECT * FROM comments WHERE message_id = ?", message_id)
        return found[0] if found else None

    def article_of_thread(self, thread_id: int) -> sqlite3.Row | None:
        found = self.rows("SELECT * FROM articles WHERE thread_id = ?", thread_id)
        return found[0] if found else None


class _Row(dict[str, Any]):
    """A PostgreSQL row read like ``sqlite3.Row``: by column name or by position."""

    def __getitem__(self, key: str | int) -> Any:  # type: ignore[override]
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)


def _postgres_rows(url: str, sql: str, parameters: Sequence[Any]) -> list[Any]:
    """The same query through a short read-only psycopg connection (tests only)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    base, _, query = url.partition("?")
    settings = dict(part.split("=", 1) for part in query.split("&") if part)
    options = " ".join(f"-c {key}={value}" for key, value in settings.items())
    info = conninfo_to_dict(base) | ({"options": options} if options else {})
    with psycopg.connect(**info) as conn:
        conn.read_only = True
        cursor = conn.execute(sql.replace("?", "%s"), parameters)  # type: ignore[arg-type]
        names = [column.name for column in cursor.description or []]
        return [_Row(zip(names, row, strict=True)) for row in cursor.fetchall()]

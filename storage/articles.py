"""Articles and their comments: what has been seen, what is pending, what is mirrored.

"Which of these entry ids are known" is always one query (``json_each`` over the
id list), never one per id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from storage.db import Database, Transaction
from storage.records import (
    ArticleRecord,
    ArticleState,
    CommentRecord,
    CommentState,
    FeedOutcome,
    NewArticle,
    NewComment,
    from_db_time,
    to_db_offset,
    to_db_time,
)
from storage.subscriptions import write_outcome


@dataclass(frozen=True, slots=True)
class KnownEntry:
    """What storage remembers of an entry, enough to tell new from changed."""

    row_id: int
    content_hash: str
    state: str
    removed: bool = False


class ArticleRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def known(self, subscription_id: int, entry_ids: Iterable[str]) -> dict[str, KnownEntry]:
        rows = await self.db.fetch(
            """
            SELECT entry_id, id, content_hash, state FROM articles
            WHERE subscription_id = ? AND entry_id IN (SELECT value FROM json_each(?))
            """,
            (subscription_id, json.dumps(list(entry_ids))),
        )
        return {row[0]: KnownEntry(row[1], row[2], row[3]) for row in rows}

    async def insert_many(
        self,
        subscription_id: int,
        articles: Sequence[tuple[NewArticle, ArticleState]],
        *,
        now_text: str,
    ) -> int:
        """Insert articles not seen before; an already-known entry is left alone."""
        if not articles:
            return 0
        ids = json.dumps([a.entry_id for a, _ in articles])
        async with self.db.write() as tx:
            before = await _count(tx, "articles", subscription_id, ids)
            await tx.executemany(
                """
                INSERT INTO articles (
                    subscription_id, entry_id, url, title, author, published, updated, html,
                    image_url, labels, comments_feed_url, content_hash, state, first_seen_at
                ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (subscription_id, entry_id) DO NOTHING
                """,
                [
                    (
                        subscription_id,
                        a.entry_id,
                        a.url,
                        a.title,
                        a.author,
                        to_db_time(a.published),
                        to_db_time(a.updated),
                        a.html,
                        a.image_url,
                        json.dumps(list(a.labels)),
                        a.comments_feed_url,
                        a.content_hash,
                        state.value,
                        now_text,
                    )
                    for a, state in articles
                ],
            )
            return await _count(tx, "articles", subscription_id, ids) - before

    async def update_content(self, subscription_id: int, article: NewArticle) -> None:
        """Store changed content; a posted article is flagged for an edit in Discord."""
        async with self.db.write() as tx:
            await tx.execute(
                """
                UPDATE articles
                SET url = ?, title = ?, author = ?, updated = ?, html = ?, image_url = ?,
                    labels = ?, comments_feed_url = ?, content_hash = ?,
                    needs_edit = CASE WHEN state = 'posted' THEN 1 ELSE needs_edit END
                WHERE subscription_id = ? AND entry_id = ?
                """,
                (
                    article.url,
                    article.title,
                    article.author,
                    to_db_time(article.updated),
                    article.html,
                    article.image_url,
                    json.dumps(list(article.labels)),
                    article.comments_feed_url,
                    article.content_hash,
                    subscription_id,
                    article.entry_id,
                ),
            )

    async def get(self, article_id: int) -> ArticleRecord | None:
        row = await self.db.fetchone("SELECT * FROM articles WHERE id = ?", (article_id,))
        return ArticleRecord.from_row(row) if row else None

    async def get_by_entry(self, subscription_id: int, entry_id: str) -> ArticleRecord | None:
        row = await self.db.fetchone(
            "SELECT * FROM articles WHERE subscription_id = ? AND entry_id = ?",
            (subscription_id, entry_id),
        )
        return ArticleRecord.from_row(row) if row else None

    async def find_by_urls(
        self, subscription_ids: Iterable[int], urls: Iterable[str]
    ) -> ArticleRecord | None:
        """The first article of these subscriptions with one of these URLs."""
        row = await self.db.fetchone(
            """
            SELECT * FROM articles
            WHERE subscription_id IN (SELECT CAST(value AS INTEGER) FROM json_each(?))
              AND url IN (SELECT value FROM json_each(?))
            ORDER BY id LIMIT 1
            """,
            (json.dumps(list(subscription_ids)), json.dumps(list(urls))),
        )
        return ArticleRecord.from_row(row) if row else None

    async def by_thread(self, thread_id: int) -> ArticleRecord | None:
        row = await self.db.fetchone("SELECT * FROM articles WHERE thread_id = ?", (thread_id,))
        return ArticleRecord.from_row(row) if row else None

    async def list_by_state(self, subscription_id: int, state: ArticleState) -> list[ArticleRecord]:
        """Articles in ``state``, oldest publication first (the order threads are made)."""
        rows = await self.db.fetch(
            """
            SELECT * FROM articles WHERE subscription_id = ? AND state = ?
            ORDER BY published, id
            """,
            (subscription_id, state.value),
        )
        return [ArticleRecord.from_row(row) for row in rows]

    async def needing_edit(self, subscription_id: int) -> list[ArticleRecord]:
        rows = await self.db.fetch(
            "SELECT * FROM articles WHERE subscription_id = ? AND needs_edit = 1 ORDER BY id",
            (subscription_id,),
        )
        return [ArticleRecord.from_row(row) for row in rows]

    async def mirrored(self, subscription_id: int, limit: int) -> list[ArticleRecord]:
        """Articles that are (to be) mirrored, newest first: whose comments we follow."""
        rows = await self.db.fetch(
            """
            SELECT * FROM articles
            WHERE subscription_id = ? AND state IN ('pending', 'posted')
            ORDER BY published DESC, id DESC LIMIT ?
            """,
            (subscription_id, limit),
        )
        return [ArticleRecord.from_row(row) for row in rows]

    async def oldest_mirrored_published(self, subscription_id: int) -> datetime | None:
        row = await self.db.fetchone(
            """
            SELECT min(published) FROM articles
            WHERE subscription_id = ? AND state IN ('pending', 'posted')
            """,
            (subscription_id,),
        )
        return from_db_time(row[0]) if row and row[0] else None

    async def make_deliverable(self, article_id: int) -> None:
        """``/blog resync``: a skipped, detached or set-aside article gets a thread again."""
        async with self.db.write() as tx:
            await tx.execute(
                """
                UPDATE articles SET state = 'pending', refusal = NULL, refused_at = NULL
                WHERE id = ? AND state IN ('skipped', 'detached', 'set_aside')
                """,
                (article_id,),
            )

    async def detach_thread(self, thread_id: int) -> ArticleRecord | None:
        """A moderator deleted the thread: forget it; only a resync makes a new one."""
        async with self.db.write() as tx:
            await tx.execute(
                """
                UPDATE articles SET state = 'detached', needs_edit = 0
                WHERE thread_id = ? AND state = 'posted'
                """,
                (thread_id,),
            )
        return await self.by_thread(thread_id)


class CommentRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def known(self, subscription_id: int, entry_ids: Iterable[str]) -> dict[str, KnownEntry]:
        rows = await self.db.fetch(
            """
            SELECT entry_id, id, content_hash, state, removed FROM comments
            WHERE subscription_id = ? AND entry_id IN (SELECT value FROM json_each(?))
            """,
            (subscription_id, json.dumps(list(entry_ids))),
        )
        return {row[0]: KnownEntry(row[1], row[2], row[3], bool(row[4])) for row in rows}

    async def known_with_articles(
        self, subscription_id: int, comment_ids: Iterable[str], article_ids: Iterable[str]
    ) -> tuple[dict[str, KnownEntry], dict[str, KnownEntry]]:
        """``known`` for these comments and ``ArticleRepo.known`` for these articles, in one
        query: a page of comments asks both."""
        rows = await self.db.fetch(
            """
            SELECT 0, entry_id, id, content_hash, state, removed FROM comments
            WHERE subscription_id = ? AND entry_id IN (SELECT value FROM json_each(?))
            UNION ALL
            SELECT 1, entry_id, id, content_hash, state, 0 FROM articles
            WHERE subscription_id = ? AND entry_id IN (SELECT value FROM json_each(?))
            """,
            (
                subscription_id,
                json.dumps(list(comment_ids)),
                subscription_id,
                json.dumps(list(article_ids)),
            ),
        )
        found: tuple[dict[str, KnownEntry], dict[str, KnownEntry]] = ({}, {})
        for row in rows:
            found[int(row[0])][row[1]] = KnownEntry(row[2], row[3], row[4], bool(row[5]))
        return found

    async def insert_many(
        self,
        subscription_id: int,
        comments: Sequence[tuple[int, NewComment, CommentState]],
        *,
        now_text: str,
    ) -> int:
        """Insert ``(article row id, comment, state)`` triples not seen before."""
        if not comments:
            return 0
        async with self.db.write() as tx:
            return await _insert_comments(tx, subscription_id, comments, now_text)

    async def update_content(self, subscription_id: int, comments: Sequence[NewComment]) -> None:
        """Store changed text or removal; posted comments are flagged for an edit.

        A comment once removed on the blog stays removed: a later feed showing
        its old text again (a stale cache page) does not bring the text back.
        """
        if not comments:
            return
        async with self.db.write() as tx:
            await _update_comments(tx, subscription_id, comments)

    async def record(
        self,
        subscription_id: int,
        new: Sequence[tuple[int, NewComment, CommentState]],
        changed: Sequence[NewComment],
        *,
        now_text: str,
        outcome: FeedOutcome | None = None,
    ) -> int:
        """A comments body recorded in one transaction: ``insert_many``, ``update_content``
        and the body's ``outcome``; returns how many comments were new."""
        if not (new or changed or outcome):
            return 0
        async with self.db.write() as tx:
            added = await _insert_comments(tx, subscription_id, new, now_text) if new else 0
            if changed:
                await _update_comments(tx, subscription_id, changed)
            if outcome is not None:
                await write_outcome(tx, subscription_id, outcome)
        return added

    async def get(self, comment_id: int) -> CommentRecord | None:
        row = await self.db.fetchone("SELECT * FROM comments WHERE id = ?", (comment_id,))
        return CommentRecord.from_row(row) if row else None

    async def for_article(
        self, article_id: int, states: Sequence[CommentState] | None = None
    ) -> list[CommentRecord]:
        """An article's comments in publication order (ties by first sighting)."""
        wanted = [s.value for s in states] if states else [s.value for s in CommentState]
        rows = await self.db.fetch(
            """
            SELECT * FROM comments
            WHERE article_id = ? AND state IN (SELECT value FROM json_each(?))
            ORDER BY published, id
            """,
            (article_id, json.dumps(wanted)),
        )
        return [CommentRecord.from_row(row) for row in rows]

    async def articles_with_pending(self, subscription_id: int) -> list[int]:
        rows = await self.db.fetch(
            """
            SELECT DISTINCT article_id FROM comments
            WHERE subscription_id = ? AND state = 'pending' ORDER BY article_id
            """,
            (subscription_id,),
        )
        return [row[0] for row in rows]

    async def articles_needing_edit(self, subscription_id: int) -> list[int]:
        """Ids of the articles with a comment message to edit."""
        rows = await self.db.fetch(
            "SELECT DISTINCT article_id FROM comments "
            "WHERE subscription_id = ? AND needs_edit = 1 ORDER BY article_id",
            (subscription_id,),
        )
        return [row[0] for row in rows]

    async def needing_edit(self, article_id: int) -> list[CommentRecord]:
        """One article's comments whose Discord messages must be edited."""
        rows = await self.db.fetch(
            "SELECT * FROM comments WHERE article_id = ? AND needs_edit = 1 ORDER BY id",
            (article_id,),
        )
        return [CommentRecord.from_row(row) for row in rows]

    async def message_ids(self, subscription_id: int, entry_ids: Iterable[str]) -> dict[str, int]:
        """Discord message ids of these comments, where they have one."""
        rows = await self.db.fetch(
            """
            SELECT entry_id, message_id FROM comments
            WHERE subscription_id = ? AND message_id IS NOT NULL
              AND entry_id IN (SELECT value FROM json_each(?))
            """,
            (subscription_id, json.dumps(list(entry_ids))),
        )
        return {row[0]: row[1] for row in rows}

    async def article_entries(
        self, subscription_id: int, entry_ids: Iterable[str]
    ) -> dict[str, str]:
        """Map stored comment entry ids to their article's entry id."""
        rows = await self.db.fetch(
            """
            SELECT c.entry_id, a.entry_id FROM comments AS c
            JOIN articles AS a ON a.id = c.article_id
            WHERE c.subscription_id = ? AND c.entry_id IN (SELECT value FROM json_each(?))
            """,
            (subscription_id, json.dumps(list(entry_ids))),
        )
        return {row[0]: row[1] for row in rows}

    async def entries_in_state(
        self, subscription_id: int, entry_ids: Iterable[str], state: CommentState
    ) -> set[str]:
        rows = await self.db.fetch(
            """
            SELECT entry_id FROM comments
            WHERE subscription_id = ? AND state = ?
              AND entry_id IN (SELECT value FROM json_each(?))
            """,
            (subscription_id, state.value, json.dumps(list(entry_ids))),
        )
        return {row[0] for row in rows}

    async def prepare_resync(self, article_id: int, *, new_thread: bool) -> None:
        """Make an article's comments deliverable again for ``/blog resync``.

        Comments recorded while the article was not mirrored become pending. When
        the thread is made anew (its old one was deleted), the comments whose
        messages went with it are posted again; those a moderator deleted one by
        one stay deleted.
        """
        states = ["skipped", "posted", "set_aside"] if new_thread else ["skipped"]
        async with self.db.write() as tx:
            await tx.execute(
                """
                UPDATE comments
                SET state = 'pending', message_id = NULL, extra_message_ids = '[]',
                    parts_sent = 0, needs_edit = 0, refusal = NULL, refused_at = NULL
                WHERE article_id = ? AND state IN (SELECT value FROM json_each(?))
                """,
                (article_id, json.dumps(states)),
            )
            # Items Discord refused are tried again: a set-aside comment goes on
            # from the parts it has; a refused edit is made again.
            await tx.execute(
                """
                UPDATE comments
                SET state = CASE WHEN state = 'set_aside' THEN 'pending' ELSE state END,
                    needs_edit = CASE WHEN state = 'posted' THEN 1 ELSE needs_edit END,
                    refusal = NULL, refused_at = NULL
                WHERE article_id = ? AND refusal IS NOT NULL
                """,
                (article_id,),
            )

    async def mark_complete(self, comment_id: int) -> None:
        """A pending comment whose new text needs no more parts than it has: posted.

        Its messages still show the old split, so it is flagged for an edit.
        """
        await self.db.write_one(
            """
            UPDATE comments SET state = 'posted', needs_edit = 1
            WHERE id = ? AND state = 'pending' AND parts_sent > 0
            """,
            (comment_id,),
        )

    async def mark_message_deleted(self, message_id: int) -> bool:
        """A moderator deleted this message: never mirror that comment again."""
        changed = await self.db.write_one(
            "UPDATE comments SET state = 'deleted', needs_edit = 0 WHERE message_id = ?",
            (message_id,),
        )
        return changed > 0


# One row of an INSERT's VALUES; 14 placeholders a row keeps a statement far below both
# SQLite's (32,766) and PostgreSQL's (32,767) limits.
_COMMENT_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ROWS_PER_INSERT = 1000


async def _count(tx: Transaction, table: str, subscription_id: int, entry_ids: str) -> int:
    """How many of these entries (a JSON list) the subscription has in ``table``."""
    row = await tx.fetchone(
        f"""
        SELECT count(*) FROM {table}
        WHERE subscription_id = ? AND entry_id IN (SELECT value FROM json_each(?))
        """,
        (subscription_id, entry_ids),
    )
    assert row is not None
    return int(row[0])


async def _insert_comments(
    tx: Transaction,
    subscription_id: int,
    comments: Sequence[tuple[int, NewComment, CommentState]],
    now_text: str,
) -> int:
    """Insert the comments not stored yet, in as few statements as the placeholder limits
    allow (one round trip each: the rows inserted come back); how many were new."""
    added = 0
    for first in range(0, len(comments), _ROWS_PER_INSERT):
        chunk = comments[first : first + _ROWS_PER_INSERT]
        values = ", ".join([_COMMENT_ROW] * len(chunk))
        parameters = [
            value
            for article_id, c, state in chunk
            for value in (
                subscription_id,
                article_id,
                c.entry_id,
                c.parent_entry_id,
                c.author,
                c.author_url,
                to_db_time(c.published),
                to_db_offset(c.published),
                c.html,
                c.permalink,
                int(c.removed),
                c.content_hash,
                state.value,
                now_text,
            )
        ]
        inserted = await tx.fetch(
            f"""
            INSERT INTO comments (
                subscription_id, article_id, entry_id, parent_entry_id, author, author_url,
                published, published_offset, html, permalink, removed, content_hash, state,
                first_seen_at
            ) VALUES {values}
            ON CONFLICT (subscription_id, entry_id) DO NOTHING
            RETURNING entry_id
            """,
            parameters,
        )
        added += len(inserted)
    return added


async def _update_comments(
    tx: Transaction, subscription_id: int, comments: Sequence[NewComment]
) -> None:
    await tx.executemany(
        """
        UPDATE comments
        SET html = CASE WHEN removed = 1 THEN '' ELSE ? END,
            removed = CASE WHEN ? = 1 THEN 1 ELSE removed END,
            content_hash = ?,
            needs_edit = CASE WHEN state = 'posted' THEN 1 ELSE needs_edit END
        WHERE subscription_id = ? AND entry_id = ?
        """,
        [
            (
                "" if c.removed else c.html,
                int(c.removed),
                c.content_hash,
                subscription_id,
                c.entry_id,
            )
            for c in comments
        ],
    )

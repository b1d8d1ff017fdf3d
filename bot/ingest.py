"""The ingestion service: poll one subscription once and record what is new.

feed bytes -> parsed entries -> decisions (new, changed) -> storage. Nothing
here talks to Discord: new and changed articles and comments are stored as
pending work, which the mirror delivers.

Rules worth knowing (SPEC §4-§6):

* On a subscription's first successful poll the ``backfill`` newest articles
  become pending; older ones are stored as ``skipped`` (seen, never posted).
  Later, an unknown article is pending when it was published after the
  subscription was made (with an hour's grace for feed caches); an older one
  that surfaces (feed reordering, back-dated posts) is skipped, never a flood.
* Comments are only stored for articles that are mirrored. A comment that
  disappears from the feed is never treated as deleted: its message stays.
* An entry the feed gives no date (``undated``) is dated when it is first
  recorded, and a stored entry's date never changes: its thread name and its
  place among the others stay put from poll to poll.
* Blogger: one blog-wide comments request per poll, newest first, paging back
  through ``rel="next"`` until a page reaches known comments, comments older
  than the last poll's newest one, or comments older than every mirrored
  article. That is how comments posted while the bot was down are caught up.
* WordPress and other feeds: the site-wide comments feed where there is one,
  and the per-article comment feeds of recent mirrored articles otherwise (or
  when the site-wide feed shows no known comment, meaning we may have missed
  some).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from bot.errors import FeedError, PermanentFeedError
from bot.fetch import Fetcher
from bot.models import Article, Comment, Dialect, ParsedFeed, PushLinks
from bot.paging import feed_pages
from bot.selective import remember
from bot.untrusted import Untrusted
from storage import ArticleRepo, CommentRepo, SubscriptionRepo
from storage.articles import KnownEntry
from storage.records import (
    ArticleRecord,
    ArticleState,
    CommentState,
    FeedOutcome,
    HttpValidators,
    NewArticle,
    NewComment,
    Subscription,
    to_db_time,
)

log = logging.getLogger(__name__)

EntryT = TypeVar("EntryT", Article, Comment)

NEW_ARTICLE_GRACE = timedelta(hours=1)
MODERATION_GRACE = timedelta(days=1)


@dataclass(slots=True)
class PollSummary:
    """What one poll found; returned to the poller and shown in logs and status."""

    posts_not_modified: bool = False
    new_articles: int = 0
    skipped_articles: int = 0
    changed_articles: int = 0
    new_comments: int = 0
    changed_comments: int = 0
    requests: int = 0
    # Entries of changed bodies not read again: recorded before, byte for byte the same.
    unchanged_entries: int = 0
    warnings: list[str] = field(default_factory=list)
    blog_title: str | None = None
    push_links: list[PushLinks] = field(default_factory=list)
    """The hub and topic of the posts and blog-wide comments feeds, when their bodies were read."""


@dataclass(frozen=True, slots=True)
class _CommentPlan:
    """What recording a batch of comments will write, and the ids storage will then hold."""

    inserts: list[tuple[int, NewComment, CommentState]]
    changed: list[NewComment]
    recorded: set[str]


@dataclass(frozen=True, slots=True)
class _KnownArticles:
    """Articles asked about already while paging: the ids asked, and those stored."""

    asked: set[str] = field(default_factory=set)
    found: dict[str, KnownEntry] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fetched:
    """A fetched and parsed document, or ``parsed=None`` when it had not changed."""

    url: str
    parsed: ParsedFeed | None


class Ingestor:
    """Polls subscriptions through a ``Fetcher`` into the repositories."""

    def __init__(
        self,
        fetcher: Fetcher,
        subscriptions: SubscriptionRepo,
        articles: ArticleRepo,
        comments: CommentRepo,
        untrusted: Untrusted,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_comment_pages: int = 40,
        per_article_feeds: int = 10,
    ) -> None:
        self.fetcher = fetcher
        self.subscriptions = subscriptions
        self.articles = articles
        self.comments = comments
        self.untrusted = untrusted
        self.clock = clock
        self.max_comment_pages = max_comment_pages
        self.per_article_feeds = per_article_feeds
        # Validators of parsed bodies wait here until their content is recorded.
        self._pending_validators: dict[tuple[int, str], HttpValidators] = {}

    def forget(self, subscription_id: int) -> None:
        """Drop what is held in memory for a subscription that was removed."""
        for key in [k for k in self._pending_validators if k[0] == subscription_id]:
            del self._pending_validators[key]

    async def poll(
        self, sub: Subscription, validators: Mapping[str, HttpValidators] | None = None
    ) -> PollSummary:
        """Fetch the posts feed and the comments, store what is new; raise ``FeedError``.

        ``validators``: those stored for the subscription's feeds, if the caller
        read them with it (``get_for_poll``); else they are read here, in one query.
        """
        summary = PollSummary()
        urls = [sub.feed_url]
        if sub.mirror_comments and sub.comments_feed_url:
            urls.append(sub.comments_feed_url)
        # Both feeds' validators in one round trip (or none: the cycle's own query
        # brought them): most polls end with two 304s.
        found = (
            validators
            if validators is not None
            else await self.subscriptions.validators_for(sub.id, urls)
        )
        known: dict[str, HttpValidators | None] = {url: found.get(url) for url in urls}
        posts = await self._fetch(
            sub, sub.feed_url, "posts", summary, conditional=True, prefetched=known
        )
        if posts.parsed is None:
            summary.posts_not_modified = True
        else:
            await self._record_articles(sub, posts.parsed.articles, summary)
            summary.blog_title = posts.parsed.title or None
            summary.warnings += posts.parsed.warnings
        if sub.mirror_comments:
            await self._poll_comments(sub, posts.parsed, summary, known)
        # Validators are stored only once everything from this body is recorded,
        # so a failure part-way re-reads the same body next time.
        if posts.parsed is not None:
            articles = posts.parsed.articles
            await self._store_validators(
                sub, posts, {a.id for a in articles}.union(posts.parsed.unchanged)
            )
        return summary

    # --- one article, for /blog resync -------------------------------------------------

    async def find_article(
        self, sub: Subscription, matches: Callable[[Article], bool], *, max_pages: int = 20
    ) -> Article | None:
        """Page back through the posts feed (``rel="next"``) for an article."""
        pages = feed_pages(
            self.fetcher, self.untrusted, sub.feed_url, kind="posts", max_pages=max_pages
        )
        async for page in pages:
            for article in page.articles:
                if matches(article):
                    return article
        return None

    async def record_article(self, sub: Subscription, article: Article) -> None:
        """Store an article found by a resync as pending, or update it if known."""
        known = await self.articles.known(sub.id, [article.id])
        row = new_article(
            _first_seen(article, self.clock()) if article.id not in known else article
        )
        if article.id in known:
            if known[article.id].content_hash != row.content_hash:
                await self.articles.update_content(sub.id, row)
            return
        await self.articles.insert_many(
            sub.id, [(row, ArticleState.PENDING)], now_text=to_db_time(self.clock())
        )

    async def fetch_article_comments(
        self, sub: Subscription, article: ArticleRecord, *, max_pages: int = 40
    ) -> PollSummary:
        """Read one article's own comments feed, every page, and store what is new."""
        summary = PollSummary()
        pages = feed_pages(
            self.fetcher,
            self.untrusted,
            article.comments_feed_url,
            kind="comments",
            article_id=article.entry_id,
            max_pages=max_pages,
        )
        async for page in pages:
            summary.requests += 1
            await self._record_comments(sub, page.comments, summary)
        return summary

    # --- fetching ----------------------------------------------------------------------

    async def _fetch(
        self,
        sub: Subscription,
        url: str,
        kind: Literal["posts", "comments"],
        summary: PollSummary,
        *,
        conditional: bool,
        article_id: str | None = None,
        prefetched: Mapping[str, HttpValidators | None] | None = None,
    ) -> Fetched:
        """Fetch ``url``, conditionally with its stored validators (read already when
        ``prefetched`` is given), and parse it unless it is unchanged."""
        cached: HttpValidators | None = None
        if conditional:
            if prefetched is not None and url in prefetched:
                cached = prefetched[url]
            else:
                cached = await self.subscriptions.validators(sub.id, url)
        summary.requests += 1
        result = await self.fetcher.fetch(
            url,
            etag=cached.etag if cached else None,
            last_modified=cached.last_modified if cached else None,
        )
        if result.not_modified or result.body is None:
            return Fetched(url, None)
        body_hash = hashlib.sha256(result.body).hexdigest()
        if cached is not None and cached.body_hash == body_hash:
            # Same bytes as last time but no 304 (many servers): no parse needed.
            await self.subscriptions.store_validators(
                sub.id,
                url,
                HttpValidators(result.etag, result.last_modified, body_hash, cached.entry_digests),
                now=self.clock(),
            )
            return Fetched(url, None)
        # What the last body held spares feedparser the entries that come again; not on the
        # first poll, whose backfill ranks every article.
        known = cached.entry_digests if cached and sub.last_success_at is not None else None
        parsed = await self.untrusted.parse_feed(
            result.body, result.url, kind=kind, article_id=article_id, known=known
        )
        summary.unchanged_entries += len(parsed.unchanged)
        self._pending_validators[(sub.id, url)] = HttpValidators(
            result.etag, result.last_modified, body_hash
        )
        if url in (sub.feed_url, sub.comments_feed_url):
            summary.push_links.append(PushLinks(url, parsed.hub_url, parsed.self_url))
        return Fetched(url, parsed)

    async def _store_validators(
        self, sub: Subscription, fetched: Fetched, recorded: Collection[str]
    ) -> None:
        """Store the body's validators, and what it held: the entries now ``recorded``."""
        validators = self._validators_to_store(sub, fetched, recorded)
        if validators is not None:
            await self.subscriptions.store_validators(
                sub.id, fetched.url, validators, now=self.clock()
            )

    def _validators_to_store(
        self, sub: Subscription, fetched: Fetched, recorded: Collection[str]
    ) -> HttpValidators | None:
        """The parsed body's validators, with what it held: the entries ``recorded``."""
        validators = self._pending_validators.pop((sub.id, fetched.url), None)
        if validators is None or fetched.parsed is None:
            return None
        return replace(validators, entry_digests=remember(fetched.parsed, recorded))

    # --- articles ----------------------------------------------------------------------

    async def _record_articles(
        self, sub: Subscription, articles: Sequence[Article], summary: PollSummary
    ) -> None:
        if not articles:
            return
        known = await self.articles.known(sub.id, [a.id for a in articles])
        now = self.clock()
        articles = [a if a.id in known else _first_seen(a, now) for a in articles]
        first_poll = sub.last_success_at is None
        newest_first = sorted(articles, key=lambda a: a.published, reverse=True)
        backfilled = {a.id for a in newest_first[: sub.backfill]} if first_poll else set()
        cutoff = sub.created_at - NEW_ARTICLE_GRACE
        inserts: list[tuple[NewArticle, ArticleState]] = []
        for article in articles:
            row = new_article(article)
            entry = known.get(article.id)
            if entry is None:
                mirrored = article.id in backfilled if first_poll else article.published >= cutoff
                state = ArticleState.PENDING if mirrored else ArticleState.SKIPPED
                inserts.append((row, state))
                if mirrored:
                    summary.new_articles += 1
                else:
                    summary.skipped_articles += 1
            elif entry.content_hash != row.content_hash:
                await self.articles.update_content(sub.id, row)
                summary.changed_articles += 1
        await self.articles.insert_many(sub.id, inserts, now_text=to_db_time(self.clock()))

    # --- comments ----------------------------------------------------------------------

    async def _poll_comments(
        self,
        sub: Subscription,
        posts: ParsedFeed | None,
        summary: PollSummary,
        validators: Mapping[str, HttpValidators | None],
    ) -> None:
        if sub.dialect == Dialect.BLOGGER and sub.comments_feed_url:
            await self._poll_paged_comments(sub, sub.comments_feed_url, summary, validators)
            return
        reached_known = True
        if sub.comments_feed_url:
            try:
                reached_known = await self._poll_paged_comments(
                    sub, sub.comments_feed_url, summary, validators
                )
            except PermanentFeedError as exc:
                # No usable site-wide feed (404, hidden): per-article feeds serve instead.
                log.debug("Site-wide comments feed of %s unusable: %s", sub.feed_url, exc)
                reached_known = False
        if not sub.comments_feed_url or not reached_known:
            await self._poll_article_feeds(sub, summary)

    async def _poll_paged_comments(
        self,
        sub: Subscription,
        url: str,
        summary: PollSummary,
        validators: Mapping[str, HttpValidators | None],
    ) -> bool:
        """Read a newest-first comments feed back to known ground; True if it got there.

        Every page is read before anything is recorded: if a later page fails,
        nothing is stored and the next poll pages back from the start again.
        (Recording page 1 first would make it "known ground" next time, and the
        comments on the failed pages would never be read.)
        """
        first = await self._fetch(
            sub, url, "comments", summary, conditional=True, prefetched=validators
        )
        if first.parsed is None:
            return True
        page = first.parsed
        collected: list[Comment] = []
        stored: dict[str, KnownEntry] = {}
        articles = _KnownArticles()
        oldest_mirrored: list[datetime | None] = []  # read once, and only if needed
        seen_next: set[str] = set()
        pages = 1
        reached = False
        while True:
            collected += page.comments
            # Entries not read again are stored ones: known ground, like any known id.
            ids = [*(c.id for c in page.comments), *page.unchanged]
            # The same query finds which entries the comments name as articles are stored
            # comments (for ``_resolve_threading``) or stored articles (for ``_plan_comments``).
            named = {c.article_id for c in page.comments}
            page_known, page_articles = await self.comments.known_with_articles(
                sub.id, {*ids, *named}, named
            )
            stored.update(page_known)
            articles.found.update(page_articles)
            articles.asked.update(named)
            known = any(entry_id in page_known for entry_id in ids)
            if not known and not oldest_mirrored:
                oldest_mirrored.append(await self._oldest_mirrored(sub))
            if known or self._reached_old_ground(sub, page.comments, oldest_mirrored[0]):
                reached = True
                break
            next_url = page.next_url
            if not next_url or next_url in seen_next:
                reached = not page.comments or next_url is None
                break
            if pages >= self.max_comment_pages:
                summary.warnings.append(
                    f"Stopped paging back through comments after {pages} pages; "
                    "older comments were not checked."
                )
                break
            seen_next.add(next_url)
            summary.requests += 1
            result = await self.fetcher.fetch(next_url)
            if result.body is None:
                break
            page = await self.untrusted.parse_feed(result.body, result.url, kind="comments")
            pages += 1
        plan = await self._plan_comments(sub, _unique(collected), stored, articles)
        newest = max((c.published for c in collected if not c.undated), default=None)
        if newest is not None:
            # A comment dated in the future (a wrong clock, a broken feed) must not push
            # the mark past now, or later polls would stop paging back too early.
            newest = min(newest, self.clock())
        if sub.comments_seen_until is not None and newest is not None:
            newest = newest if newest > sub.comments_seen_until else None
        stored_validators = self._validators_to_store(
            sub, first, plan.recorded.union(first.parsed.unchanged)
        )
        # Validators are stored with everything from this body, in one transaction, so a
        # failure part-way re-reads the same body next time.
        outcome = None
        if stored_validators is not None:
            outcome = FeedOutcome(url, stored_validators, self.clock(), newest)
        await self._write_comments(sub, plan, summary, outcome)
        if outcome is None and newest is not None:
            await self.subscriptions.set_comments_seen_until(sub.id, newest)
        return reached

    def _reached_old_ground(
        self,
        sub: Subscription,
        comments: Sequence[Comment],
        oldest_mirrored: datetime | None,
    ) -> bool:
        dated = [c.published for c in comments if not c.undated]
        if not dated:
            # No dates to judge by: undated comments are new until they are known.
            return not comments
        oldest = min(dated)
        if oldest_mirrored is None or oldest < oldest_mirrored:
            # Comments cannot predate their article: nothing older concerns us.
            return True
        return sub.comments_seen_until is not None and (
            oldest < sub.comments_seen_until - MODERATION_GRACE
        )

    async def _oldest_mirrored(self, sub: Subscription) -> datetime | None:
        return await self.articles.oldest_mirrored_published(sub.id)

    async def _poll_article_feeds(self, sub: Subscription, summary: PollSummary) -> None:
        """Per-article comment feeds of the newest mirrored articles (conditional GETs)."""
        articles = await self.articles.mirrored(sub.id, limit=self.per_article_feeds)
        for article in articles:
            if not article.comments_feed_url:
                continue
            try:
                fetched = await self._fetch(
                    sub,
                    article.comments_feed_url,
                    "comments",
                    summary,
                    conditional=True,
                    article_id=article.entry_id,
                )
            except FeedError as exc:
                summary.warnings.append(f"Comments of “{article.title}”: {exc}")
                continue
            if fetched.parsed is not None:
                plan = await self._plan_comments(sub, fetched.parsed.comments)
                recorded = plan.recorded.union(fetched.parsed.unchanged)
                validators = self._validators_to_store(sub, fetched, recorded)
                outcome = None
                if validators is not None:
                    outcome = FeedOutcome(fetched.url, validators, self.clock())
                await self._write_comments(sub, plan, summary, outcome)

    async def _record_comments(
        self,
        sub: Subscription,
        comments: Sequence[Comment],
        summary: PollSummary,
    ) -> set[str]:
        """Store new comments of mirrored articles, note changes; the ids storage now holds."""
        plan = await self._plan_comments(sub, comments)
        await self._write_comments(sub, plan, summary)
        return plan.recorded

    async def _plan_comments(
        self,
        sub: Subscription,
        comments: Sequence[Comment],
        stored: dict[str, KnownEntry] | None = None,
        asked: _KnownArticles | None = None,
    ) -> _CommentPlan:
        """Which comments are new (of mirrored articles) and which changed; no writes.

        ``stored`` tells which comments are known, among the batch and the entries
        the batch names as articles (a reply may name a comment, see
        ``_resolve_threading``, which may be one not read again this time); one
        query asks when it is not given. ``asked`` holds the articles already asked
        about; only the others are asked.
        """
        if not comments:
            return _CommentPlan([], [], set())
        ids = {c.id for c in comments}
        if stored is None:
            stored = await self.comments.known(sub.id, ids | {c.article_id for c in comments})
        known = {entry_id: entry for entry_id, entry in stored.items() if entry_id in ids}
        now = self.clock()
        comments = [c if c.id in known else _first_seen(c, now) for c in comments]
        comments = await self._resolve_threading(sub, comments, stored)
        article_ids = {c.article_id for c in comments}
        asked = asked or _KnownArticles()
        articles = dict(asked.found)
        if not article_ids <= asked.asked:
            articles.update(await self.articles.known(sub.id, article_ids - asked.asked))
        inserts: list[tuple[int, NewComment, CommentState]] = []
        changed: list[NewComment] = []
        for comment in comments:
            row = new_comment(comment)
            entry = known.get(comment.id)
            if entry is not None:
                if entry.content_hash != row.content_hash and not entry.removed:
                    changed.append(row)
                continue
            article = articles.get(comment.article_id)
            if article is None or article.state == ArticleState.SKIPPED:
                continue
            state = (
                CommentState.SKIPPED
                if article.state == ArticleState.DETACHED
                else CommentState.PENDING
            )
            inserts.append((article.row_id, row, state))
        recorded = set(known).union(row.entry_id for _article, row, _state in inserts)
        return _CommentPlan(inserts, changed, recorded)

    async def _write_comments(
        self,
        sub: Subscription,
        plan: _CommentPlan,
        summary: PollSummary,
        outcome: FeedOutcome | None = None,
    ) -> None:
        """The plan, and the body's outcome if given, in one transaction."""
        summary.new_comments += await self.comments.record(
            sub.id, plan.inserts, plan.changed, now_text=to_db_time(self.clock()), outcome=outcome
        )
        summary.changed_comments += len(plan.changed)

    async def _resolve_threading(
        self, sub: Subscription, comments: Sequence[Comment], known: dict[str, KnownEntry]
    ) -> list[Comment]:
        """Fix RFC 4685 replies whose ``in-reply-to`` names a comment, not the article.

        Without a per-article hint the parser takes ``in-reply-to`` as the
        article; when that id is a comment (in this batch or stored), it is the
        parent, and the article is that comment's article.
        """
        in_batch = {c.id: c.article_id for c in comments}
        suspects = {
            c.article_id for c in comments if c.article_id in in_batch or c.article_id in known
        }
        if not suspects:
            return list(comments)
        article_of = dict(in_batch)
        article_of.update(await self.comments.article_entries(sub.id, suspects))
        resolved: list[Comment] = []
        for comment in comments:
            target = comment.article_id
            if target in article_of:
                root = target
                for _ in range(100):  # walk up to the article; feeds may contain cycles
                    above = article_of.get(root)
                    if above is None or above == root:
                        break
                    root = above
                comment = replace(comment, article_id=root, parent_id=target)
            resolved.append(comment)
        return resolved


def _first_seen(entry: EntryT, now: datetime) -> EntryT:
    """An undated entry, not yet recorded, dated now: the time it was first seen."""
    if not entry.undated:
        return entry
    if isinstance(entry, Article):
        return replace(entry, published=now, updated=now, undated=False)
    return replace(entry, published=now, undated=False)


def _unique(comments: Sequence[Comment]) -> list[Comment]:
    """First sighting of each id: pages can overlap when comments arrive while paging."""
    seen: set[str] = set()
    unique = []
    for comment in comments:
        if comment.id not in seen:
            seen.add(comment.id)
            unique.append(comment)
    return unique


def content_hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def new_article(article: Article) -> NewArticle:
    return NewArticle(
        entry_id=article.id,
        url=article.url,
        title=article.title,
        author=article.author,
        published=article.published,
        updated=article.updated,
        html=article.html,
        image_url=article.image_url,
        labels=article.labels,
        comments_feed_url=article.comments_feed_url,
        content_hash=content_hash(
            article.title, article.url, article.html, article.image_url, article.author
        ),
    )


def new_comment(comment: Comment) -> NewComment:
    return NewComment(
        entry_id=comment.id,
        article_entry_id=comment.article_id,
        parent_entry_id=comment.parent_id,
        author=comment.author,
        author_url=comment.author_url,
        published=comment.published,
        html="" if comment.removed else comment.html,
        permalink=comment.permalink,
        removed=comment.removed,
        content_hash=content_hash(comment.removed, "" if comment.removed else comment.html),
    )

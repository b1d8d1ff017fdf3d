"""``/blog resync article_url``: make one article's thread complete, never duplicating.

The article is looked up among the guild's subscriptions (or found by paging
back through their posts feeds), its own comments feed is read in full, and the
mirror then creates its thread if it has none and posts every comment not yet
mirrored, in order. Running it twice changes nothing the second time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bot.delivery import DeliverySummary, Mirror, Progress
from bot.errors import BlogMirrorError, FeedError
from bot.ingest import Ingestor
from storage import ArticleRepo, CommentRepo, SubscriptionRepo
from storage.records import ArticleRecord, ArticleState, Subscription

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResyncResult:
    subscription: Subscription
    article: ArticleRecord
    new_comments: int
    delivery: DeliverySummary
    comments_error: str | None = None


def url_variants(url: str) -> list[str]:
    """Spellings of one article URL: http/https, with or without Blogger's ``?m=1``."""
    parts = urlsplit(url.strip())
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "m"])
    variants = []
    for scheme in ("https", "http"):
        base = urlunsplit((scheme, parts.netloc.lower(), parts.path, query, ""))
        variants += [base, base.rstrip("/"), base.rstrip("/") + "/"]
    return list(dict.fromkeys(variants))


class Resyncer:
    def __init__(
        self,
        subscriptions: SubscriptionRepo,
        articles: ArticleRepo,
        comments: CommentRepo,
        ingestor: Ingestor,
        mirror: Mirror,
    ) -> None:
        self.subscriptions = subscriptions
        self.articles = articles
        self.comments = comments
        self.ingestor = ingestor
        self.mirror = mirror

    async def locate(self, guild_id: int, article_url: str) -> tuple[Subscription, ArticleRecord]:
        """The guild's subscription and stored article for ``article_url``."""
        if not article_url.lower().startswith(("http://", "https://")):
            raise BlogMirrorError("Give the article's full web address (https://…).")
        subs = await self.subscriptions.list_for_guild(guild_id)
        if not subs:
            raise BlogMirrorError("This server has no subscriptions: `/blog subscribe` first.")
        variants = url_variants(article_url)
        record = await self.articles.find_by_urls([s.id for s in subs], variants)
        if record is not None:
            sub = next(s for s in subs if s.id == record.subscription_id)
            return sub, record
        wanted = set(variants)
        for sub in subs:
            try:
                found = await self.ingestor.find_article(
                    sub, lambda a: bool(set(url_variants(a.url)) & wanted)
                )
            except FeedError as exc:
                log.info("Resync: could not page %s: %s", sub.feed_url, exc)
                continue
            if found is not None:
                await self.ingestor.record_article(sub, found)
                stored = await self.articles.get_by_entry(sub.id, found.id)
                assert stored is not None
                return sub, stored
        raise BlogMirrorError(
            "No subscription of this server has that article: check the link "
            "(it must be an article of a subscribed blog)."
        )

    async def resync(
        self, sub: Subscription, record: ArticleRecord, *, progress: Progress | None = None
    ) -> ResyncResult:
        """Create the thread if missing and post every comment not yet mirrored."""
        new_comments = 0
        comments_error: str | None = None
        delivery = DeliverySummary()
        for _ in range(2):  # a second round when the thread turns out to be gone
            await self._make_deliverable(record)
            fresh = await self.articles.get(record.id)
            assert fresh is not None
            if fresh.comments_feed_url and sub.mirror_comments:
                try:
                    summary = await self.ingestor.fetch_article_comments(sub, fresh)
                    new_comments += summary.new_comments
                except FeedError as exc:
                    # The thread is still made complete with what is known; the
                    # moderator is told the article's own feed could not be read.
                    comments_error = str(exc)
            # Comments recorded while it was not mirrored, and items Discord refused.
            await self.comments.prepare_resync(fresh.id, new_thread=False)
            delivery = await self.mirror.deliver_one(sub, fresh.id, progress=progress)
            record = await self.articles.get(record.id) or record
            if record.state != ArticleState.DETACHED:
                break
        return ResyncResult(sub, record, new_comments, delivery, comments_error)

    async def _make_deliverable(self, record: ArticleRecord) -> None:
        """A thread again for an article without one; items Discord refused are retried."""
        if record.state == ArticleState.DETACHED:
            await self.comments.prepare_resync(record.id, new_thread=True)
        await self.articles.make_deliverable(record.id)

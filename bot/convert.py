"""Stored records back into the dataclasses rendering takes (the one conversion)."""

from __future__ import annotations

from bot.models import Article, Comment
from storage.records import ArticleRecord, CommentRecord


def article_of(record: ArticleRecord) -> Article:
    return Article(
        id=record.entry_id,
        title=record.title,
        url=record.url,
        published=record.published,
        updated=record.updated,
        author=record.author,
        html=record.html,
        image_url=record.image_url,
        labels=record.labels,
        comments_feed_url=record.comments_feed_url,
    )


def comment_of(record: CommentRecord, article_entry_id: str) -> Comment:
    return Comment(
        id=record.entry_id,
        article_id=article_entry_id,
        parent_id=record.parent_entry_id,
        author=record.author,
        published=record.published,
        html=record.html,
        permalink=record.permalink,
        author_url=record.author_url,
        removed=record.removed,
    )

"""Build feeds in Blogger's exact comment-feed format, for scenarios no fixture holds.

The shape (ids, ``thr:in-reply-to``, ``rel="related"`` parent links,
``gd:extendedProperty``) copies ``fixtures/seed/comments.atom.xml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape, quoteattr

BLOG = "4790201928346512375"
POST = "7128854030391125582"
SITE = "https://probationmatters.blogspot.com"
ARTICLE_URL = f"{SITE}/2019/04/great-leadership-but-poor-output.html"


# How the seed's seven comments begin, in publication order (fixtures/seed/README.md).
SEED_COMMENT_STARTS = (
    "Almost a copy and paste",
    "This is easily explained",
    "Yes so true upw",
    "I think we need to think",
    "Thank you 18:08",
    "Carrot and stick",
    "'For the period",
)


def comment_id(number: int | str) -> str:
    return f"tag:blogger.com,1999:blog-{BLOG}.post-{number}"


@dataclass(frozen=True)
class GenComment:
    number: int
    published: datetime
    text: str
    parent: int | None = None
    removed: bool = False
    post: str = POST
    author: str = "Anonymous"


def at(minutes: float) -> datetime:
    """A time ``minutes`` after the seed article was published."""
    return datetime(2019, 4, 3, 8, 23, tzinfo=UTC) + timedelta(minutes=minutes)


def blogger_comments(
    comments: list[GenComment], *, next_url: str | None = None, total: int | None = None
) -> bytes:
    """A blog-wide comments feed page, newest first as Blogger serves it."""
    entries = "".join(_entry(c) for c in sorted(comments, key=lambda c: c.published, reverse=True))
    next_link = (
        f"<link rel='next' type='application/atom+xml' href={quoteattr(next_url)}/>"
        if next_url
        else ""
    )
    return (
        "<?xml version='1.0' encoding='UTF-8'?>"
        "<feed xmlns='http://www.w3.org/2005/Atom' "
        "xmlns:openSearch='http://a9.com/-/spec/opensearchrss/1.0/' "
        "xmlns:gd='http://schemas.google.com/g/2005' "
        "xmlns:thr='http://purl.org/syndication/thread/1.0'>"
        f"<id>tag:blogger.com,1999:blog-{BLOG}.comments</id>"
        "<updated>2019-04-04T07:45:00.000+01:00</updated>"
        "<title type='text'>On Probation</title>"
        f"<link rel='alternate' type='text/html' href='{SITE}/'/>"
        f"{next_link}"
        "<generator version='7.00' uri='http://www.blogger.com'>Blogger</generator>"
        f"<openSearch:totalResults>{total if total is not None else len(comments)}"
        "</openSearch:totalResults>"
        f"{entries}</feed>"
    ).encode()


def _entry(c: GenComment) -> str:
    stamp = c.published.isoformat(timespec="milliseconds")
    epoch_ms = int(c.published.timestamp() * 1000)
    text = "This comment has been removed by the author." if c.removed else c.text
    related = (
        f"<link rel='related' type='application/atom+xml' "
        f"href='https://www.blogger.com/feeds/{BLOG}/{c.post}/comments/default/{c.parent}'/>"
        if c.parent is not None
        else ""
    )
    removed = (
        "<gd:extendedProperty name='blogger.contentRemoved' value='true'/>" if c.removed else ""
    )
    return (
        f"<entry><id>{comment_id(c.number)}</id>"
        f"<published>{stamp}</published><updated>{stamp}</updated>"
        f"<title type='text'>{escape(text[:40])}</title>"
        f"<content type='html'>{escape(text)}</content>"
        f"<link rel='alternate' type='text/html' "
        f"href='{ARTICLE_URL}?showComment={epoch_ms}#c{c.number}' title=''/>"
        f"{related}"
        f"<author><name>{escape(c.author)}</name><email>noreply@blogger.com</email></author>"
        f"<thr:in-reply-to href='{ARTICLE_URL}' ref='{comment_id(c.post)}' "
        f"source='https://www.blogger.com/feeds/{BLOG}/posts/default/{c.post}' type='text/html'/>"
        f"{removed}"
        "<gd:extendedProperty name='blogger.itemClass' value='pid-1'/>"
        f"<gd:extendedProperty name='blogger.displayTime' value='{c.published.date()}'/>"
        "</entry>"
    )


def blogger_post(
    number: str, title: str, published: datetime, *, comments_url: str | None = None
) -> str:
    """One posts-feed entry in Blogger's format (``comments_url``: its replies feed)."""
    stamp = published.isoformat(timespec="milliseconds")
    replies = comments_url or f"{SITE}/feeds/{number}/comments/default"
    return (
        f"<entry><id>{comment_id(number)}</id>"
        f"<published>{stamp}</published><updated>{stamp}</updated>"
        f"<title type='text'>{escape(title)}</title>"
        f"<content type='html'>{escape('<p>Body of ' + title + '</p>')}</content>"
        f"<link rel='replies' type='application/atom+xml' "
        f"href={quoteattr(replies)} title='Post Comments'/>"
        f"<link rel='alternate' type='text/html' href='{SITE}/{number}.html' "
        f"title='{escape(title)}'/>"
        "<author><name>Jim Brown</name></author></entry>"
    )


def blogger_posts(entries: list[str]) -> bytes:
    return (
        "<?xml version='1.0' encoding='UTF-8'?>"
        "<feed xmlns='http://www.w3.org/2005/Atom' xmlns:thr='http://purl.org/syndication/thread/1.0'>"
        f"<id>tag:blogger.com,1999:blog-{BLOG}</id>"
        "<updated>2019-04-04T07:45:00.000+01:00</updated>"
        "<title type='text'>On Probation</title>"
        f"<link rel='alternate' type='text/html' href='{SITE}/'/>"
        "<generator version='7.00' uri='http://www.blogger.com'>Blogger</generator>"
        f"{''.join(entries)}</feed>"
    ).encode()

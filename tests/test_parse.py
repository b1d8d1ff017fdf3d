"""Tests for bot.parse: every real and seed fixture, plus hostile and broken input.

Expected values were read off the fixture XML by hand (see the fixture READMEs).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import feedparser
import pytest

from bot.errors import FeedParseError, NotAFeedError
from bot.models import Article, Comment, Dialect, ParsedFeed
from bot.parse import parse_feed
from bot.rawentries import read_raw_entries
from bot.rawxml import looks_like_feed
from bot.xmlrepair import DECLARATION, repair_document

FIXTURES = Path(__file__).parent / "fixtures"
REAL = FIXTURES / "real"
SEED = FIXTURES / "seed"

SEED_BLOG = "tag:blogger.com,1999:blog-4790201928346512375"
SEED_POST = f"{SEED_BLOG}.post-7128854030391125582"
SEED_URL = "https://probationmatters.blogspot.com/2019/04/great-leadership-but-poor-output.html"
TECHNO_BLOG = "tag:blogger.com,1999:blog-8674748682166248033"
JORGE_BLOG = "tag:blogger.com,1999:blog-1610088654917055211"
WP = "http://www.infokueche.at"
BST = timezone(timedelta(hours=1))
PDT = timezone(timedelta(hours=-7))


def _read(path: Path) -> bytes:
    """Fixture bytes, exactly as saved."""
    return path.read_bytes()


def _parse(
    path: Path,
    url: str | None = None,
    *,
    kind: Literal["posts", "comments"] | None = None,
    article_id: str | None = None,
) -> ParsedFeed:
    """Parse a fixture, by default with its file path as the URL (like ``preview``)."""
    return parse_feed(_read(path), url or str(path), kind=kind, article_id=article_id)


def _by_id(comments: tuple[Comment, ...]) -> dict[str, Comment]:
    """Comments keyed by id."""
    return {comment.id: comment for comment in comments}


def _atom(entries: str, head: str = "") -> bytes:
    """A minimal generic Atom feed around the given entries."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<feed xmlns="http://www.w3.org/2005/Atom" '
        'xmlns:thr="http://purl.org/syndication/thread/1.0">'
        f"<id>urn:test:feed</id><title>Test</title>{head}{entries}</feed>"
    ).encode()


def _rss(items: str) -> bytes:
    """A minimal generic RSS 2.0 feed around the given items."""
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Test</title><link>https://example.org/</link>{items}</channel></rss>"
    ).encode()


# --- seed ----------------------------------------------------------------------------------------


def test_seed_posts_feed_has_the_one_article() -> None:
    """The seed posts feed yields its single article with every field filled in."""
    feed = _parse(SEED / "posts.atom.xml")
    assert (feed.kind, feed.dialect, feed.title) == ("posts", Dialect.BLOGGER, "On Probation")
    assert feed.site_url == "https://probationmatters.blogspot.com/"
    assert feed.next_url is None
    assert feed.comments == ()
    assert feed.comments_feed_url == "https://probationmatters.blogspot.com/feeds/comments/default"
    (article,) = feed.articles
    assert article.id == SEED_POST
    assert article.title == "Great Leadership, But Poor Output?"
    assert article.url == SEED_URL
    assert article.author == "Jim Brown"
    assert article.published == datetime(2019, 4, 3, 8, 23, tzinfo=BST)
    assert article.published.utcoffset() == timedelta(hours=1)
    assert article.updated == datetime(2019, 4, 3, 8, 31, 12, 447000, tzinfo=BST)
    assert article.labels == ("CRC", "HMI Probation")
    assert article.comments_feed_url == (
        "https://probationmatters.blogspot.com/feeds/7128854030391125582/comments/default"
    )
    assert article.image_url is None
    assert '<a href="https://twitter.com/">Twitter</a>' in article.html


def test_seed_posts_feed_on_a_local_server_points_at_local_comments_feed() -> None:
    """The blog-wide comments feed keeps the host the posts feed was fetched from."""
    feed = _parse(SEED / "posts.atom.xml", "http://127.0.0.1:8080/feeds/posts/default")
    assert feed.comments_feed_url == "http://127.0.0.1:8080/feeds/comments/default"


@pytest.mark.parametrize(
    "name", ["comments.atom.xml", "post-7128854030391125582-comments.atom.xml"]
)
def test_seed_comments_thread(name: str) -> None:
    """Seven anonymous comments: four top-level, two replies to the first, one to the third."""
    feed = _parse(SEED / name)
    assert (feed.kind, feed.dialect) == ("comments", Dialect.BLOGGER)
    assert feed.articles == ()
    assert len(feed.comments) == 7
    assert all(c.article_id == SEED_POST for c in feed.comments)
    assert {c.author for c in feed.comments} == {"Anonymous"}
    assert all(c.author_url is None for c in feed.comments)
    assert not any(c.removed for c in feed.comments)
    # Document order is Blogger's: newest first.
    assert [c.published for c in feed.comments] == sorted(
        (c.published for c in feed.comments), reverse=True
    )
    in_order = sorted(feed.comments, key=lambda c: c.published)
    top_level = [c for c in in_order if c.parent_id is None]
    assert [c.html[:30] for c in top_level] == [
        "Almost a copy and paste excers",
        "I think we need to think about",
        "Thank you 18:08 I'm a CM ( PSO",
        "'For the period of case manage",
    ]
    first, _second, third, _fourth = top_level
    replies = {c.html[:20]: c.parent_id for c in in_order if c.parent_id is not None}
    assert replies == {
        "This is easily expla": first.id,
        "Yes so true upw alwa": first.id,
        "Carrot and stick sty": third.id,
    }
    assert first.id == f"{SEED_BLOG}.post-2918836402210955103"
    assert third.id == f"{SEED_BLOG}.post-1047729916604783512"


def test_seed_comment_keeps_its_own_utc_offset() -> None:
    """09:51 +01:00 stays 09:51 +01:00, not 08:51 UTC."""
    feed = _parse(SEED / "comments.atom.xml")
    first = _by_id(feed.comments)[f"{SEED_BLOG}.post-2918836402210955103"]
    assert first.published.hour == 9
    assert first.published.minute == 51
    assert first.published.utcoffset() == timedelta(hours=1)
    assert first.permalink == (f"{SEED_URL}?showComment=1554281460000#c2918836402210955103")


def test_seed_per_post_feed_finds_the_blog_wide_comments_feed() -> None:
    """A per-post comments feed still names the blog-wide comments feed, via the site URL."""
    feed = _parse(SEED / "post-7128854030391125582-comments.atom.xml")
    assert feed.site_url == SEED_URL
    assert feed.comments_feed_url == "https://probationmatters.blogspot.com/feeds/comments/default"


# --- real Blogger --------------------------------------------------------------------------------


def test_blogger_threaded_comments_reply_points_at_parent() -> None:
    """The one reply's related link becomes a full comment id of its parent."""
    feed = _parse(REAL / "blogger_post_comments_threaded.atom.xml")
    assert (feed.kind, feed.dialect) == ("comments", Dialect.BLOGGER)
    post = f"{TECHNO_BLOG}.post-925388997895127564"
    assert [c.id for c in feed.comments] == [
        f"{TECHNO_BLOG}.post-4568989349003774957",
        f"{TECHNO_BLOG}.post-3412105325422878243",
        f"{TECHNO_BLOG}.post-606074407969293918",
        f"{TECHNO_BLOG}.post-5226945339900040673",
    ]
    assert all(c.article_id == post for c in feed.comments)
    parents = {c.id: c.parent_id for c in feed.comments}
    assert parents[f"{TECHNO_BLOG}.post-606074407969293918"] == (
        f"{TECHNO_BLOG}.post-5226945339900040673"
    )
    assert sum(parent is not None for parent in parents.values()) == 1
    reply = feed.comments[2]
    assert reply.html == "This Is First Testing Reply"
    assert reply.author == "Sora Blogging Tips"
    assert reply.author_url == "https://www.blogger.com/profile/16413293425780700748"
    assert reply.published == datetime(2022, 9, 25, 7, 38, 24, 369000, tzinfo=PDT)
    assert reply.permalink == (
        "https://techno-omtemplates.blogspot.com/2016/03/xiaomi-is-going-to-launch-mi-11-ultra"
        ".html?showComment=1664116704369#c606074407969293918"
    )


def test_blogger_deleted_comments_are_marked_removed_despite_feedparser() -> None:
    """contentRemoved is read from the raw XML; feedparser alone keeps only displayTime."""
    body = _read(REAL / "blogger_post_comments_deleted.atom.xml")
    for entry in feedparser.parse(body).entries:
        assert entry.gd_extendedproperty["name"] == "blogger.displayTime"
    feed = parse_feed(body, "deleted.xml")
    assert [c.removed for c in feed.comments] == [True, True]
    author, admin = feed.comments
    assert author.id == "tag:blogger.com,1999:blog-27673885.post-3853324045684480172"
    assert author.article_id == "tag:blogger.com,1999:blog-27673885.post-4028335624252920960"
    assert author.parent_id is None
    assert author.author == "Jacqueline"
    assert author.html == "This comment has been removed by the author."
    assert author.published == datetime(
        2009, 11, 5, 3, 9, 4, 576000, tzinfo=timezone(timedelta(hours=8))
    )
    assert admin.author == "Aloysius"
    assert admin.author_url is None
    assert admin.html == "This comment has been removed by a blog administrator."
    assert feed.comments_feed_url == "http://ridemywash.blogspot.com/feeds/comments/default"


def test_blogger_empty_comments_feed_is_not_an_error() -> None:
    """0 entries, a 1970 date and a blog-wide id: an empty comments feed, not a failure."""
    feed = _parse(
        REAL / "blogger_post_comments_empty.atom.xml",
        "https://www.blogger.com/feeds/4972270896425558817/2884393957468830201/comments/default",
    )
    assert (feed.kind, feed.dialect) == ("comments", Dialect.BLOGGER)
    assert feed.comments == ()
    assert feed.articles == ()
    assert feed.title == "MaKlen"
    assert feed.comments_feed_url == "http://klenovsekboris.blogspot.com/feeds/comments/default"


def test_blogger_hidden_comments_text_is_explained() -> None:
    """Blogger's plain-text notice becomes a NotAFeedError saying comments are hidden."""
    with pytest.raises(NotAFeedError, match="hides its comments"):
        _parse(REAL / "blogger_post_comments_hidden.txt")


def test_blogger_posts_with_thumbnails() -> None:
    """19 posts, labels per post, replies feed and the first image of each post."""
    feed = _parse(REAL / "blogger_posts_thumbnails.atom.xml")
    assert (feed.kind, feed.dialect, feed.title) == ("posts", Dialect.BLOGGER, "Techno")
    assert (len(feed.articles), feed.next_url) == (19, None)
    assert (
        feed.comments_feed_url == "https://techno-omtemplates.blogspot.com/feeds/comments/default"
    )
    article = next(a for a in feed.articles if a.id == f"{TECHNO_BLOG}.post-925388997895127564")
    assert article.title == "Xiaomi is going to launch the Mi 11 Ultra 67W fast charge."
    assert article.labels == ("Business", "Fashion", "People")
    assert article.comments_feed_url == (
        "https://techno-omtemplates.blogspot.com/feeds/925388997895127564/comments/default"
    )
    assert article.image_url == (
        "https://1.bp.blogspot.com/-RP4lY5hxXEk/YPOkmJLoSoI/AAAAAAAAHdY/"
        "XUdVfrrOBocdXSkOScj9JsX9z7JZh-5DwCLcBGAsYHQ/s16000/13%2B%25281%2529.jpg"
    )
    assert article.published == datetime(2016, 3, 17, 0, 57, tzinfo=PDT)
    assert article.updated == datetime(2022, 9, 25, 7, 36, 8, 990000, tzinfo=PDT)
    assert all(a.author == "Sora Blogging Tips" for a in feed.articles)
    # Ordered by published, as in the document, although updated is not.
    assert [a.published for a in feed.articles] == sorted(
        (a.published for a in feed.articles), reverse=True
    )


def test_blogger_posts_paged_atom() -> None:
    """The next link (on www.blogger.com) comes through; empty titles stay empty."""
    feed = _parse(REAL / "blogger_posts_paged.atom.xml")
    assert feed.next_url == (
        "http://www.blogger.com/feeds/1610088654917055211/posts/default?start-index=26&max-results=25"
    )
    assert len(feed.articles) == 25
    assert feed.title == "Jorge El Constructor"
    first, _glass, vacaciones = feed.articles[:3]
    assert first.id == f"{JORGE_BLOG}.post-3000671474187976795"
    assert first.title == ""
    assert first.author == "Jorge el constructor"
    assert first.image_url == "http://covers.openlibrary.org/b/isbn/8424635779-M.jpg"
    assert first.published == datetime(
        2013, 10, 12, 11, 4, 0, 1000, tzinfo=timezone(timedelta(hours=2))
    )
    assert vacaciones.title == "VACACIONES"
    assert vacaciones.image_url == (
        "http://2.bp.blogspot.com/-xMer1N-fMM8/UijXDNW4srI/AAAAAAAAAoA/oyGAcAElleM/s200/DSCN1186.JPG"
    )
    lanzarote = next(a for a in feed.articles if a.title == "lanzarote en navidad")
    assert lanzarote.labels == ("esto es de lanzarote chicos de la web",)


def test_blogger_next_page_url_maps_to_blog_comments_feed() -> None:
    """A www.blogger.com/feeds/BLOGID/posts/default page maps to that blog's comments feed."""
    feed = _parse(
        REAL / "blogger_posts_paged.atom.xml",
        "http://www.blogger.com/feeds/1610088654917055211/posts/default?start-index=26&max-results=25",
    )
    assert (
        feed.comments_feed_url
        == "http://www.blogger.com/feeds/1610088654917055211/comments/default"
    )


def test_blogger_posts_paged_rss_matches_atom() -> None:
    """The ?alt=rss twin has the same posts, the Name from ``noreply@blogger.com (Name)``."""
    atom = _parse(REAL / "blogger_posts_paged.atom.xml")
    rss = _parse(
        REAL / "blogger_posts_paged.rss.xml",
        "http://jorgeelconstructor.blogspot.com/feeds/posts/default?alt=rss",
    )
    assert (rss.kind, rss.dialect, rss.next_url) == ("posts", Dialect.BLOGGER, None)
    assert rss.comments_feed_url == "http://jorgeelconstructor.blogspot.com/feeds/comments/default"
    assert [a.id for a in rss.articles] == [a.id for a in atom.articles]
    assert [a.url for a in rss.articles] == [a.url for a in atom.articles]
    # Same instants; RSS pubDate just drops Atom's milliseconds.
    assert [a.published for a in rss.articles] == [
        a.published.replace(microsecond=0) for a in atom.articles
    ]
    first = rss.articles[0]
    assert first.author == "Jorge el constructor"
    assert first.published.utcoffset() == timedelta(0)  # pubDate says +0000
    assert first.updated == datetime(
        2013, 10, 12, 11, 4, 4, 68000, tzinfo=timezone(timedelta(hours=2))
    )
    assert first.comments_feed_url is None  # the RSS twin has no per-post comments link
    assert rss.articles[2].image_url == atom.articles[2].image_url


def test_blogger_posts_with_comments_disabled() -> None:
    """No replies links: no comments feed; titles are empty."""
    feed = _parse(REAL / "blogger_posts_comments_disabled.atom.xml")
    assert (feed.kind, feed.dialect, len(feed.articles)) == ("posts", Dialect.BLOGGER, 7)
    assert all(a.title == "" for a in feed.articles)
    assert all(a.author == "Unknown" for a in feed.articles)
    assert all(a.comments_feed_url is None for a in feed.articles)
    first = feed.articles[0]
    assert first.id == "tag:blogger.com,1999:blog-4972270896425558817.post-6975795580677568519"
    assert first.url == "https://klenovsekboris.blogspot.com/2024/08/blog-post.html"
    assert first.image_url is not None
    assert first.image_url.endswith("/w640-h253/dualizem.jpg")
    assert feed.articles[1].image_url == "https://i.postimg.cc/dVSQ88F5/Anna.jpg"


# --- real WordPress ------------------------------------------------------------------------------


def test_wordpress_atom_comments_carry_reply_parents() -> None:
    """``ref="...?p=14#comment-3"`` makes a reply to comment 3 on post 14."""
    feed = _parse(REAL / "wp_comments.atom.xml")
    assert (feed.kind, feed.dialect, len(feed.comments)) == ("comments", Dialect.WORDPRESS, 13)
    assert feed.title == "Kommentare für Infoküche"
    assert feed.site_url == WP
    assert feed.comments_feed_url == f"{WP}/comments/feed/atom/"
    comments = _by_id(feed.comments)
    for reply in ("6", "4"):
        comment = comments[f"{WP}/?p=14#comment-{reply}"]
        assert comment.article_id == f"{WP}/?p=14"
        assert comment.parent_id == f"{WP}/?p=14#comment-3"
    top = comments[f"{WP}/?p=125#comment-70"]
    assert (top.article_id, top.parent_id) == (f"{WP}/?p=125", None)
    assert top.author == "Christian Walter"
    assert top.author_url is None
    assert top.published == datetime(2012, 6, 18, 9, 39, 48, tzinfo=UTC)
    assert top.permalink == (
        f"{WP}/podcast/infokuche-6-www-conference-2012-world-wide-web/#comment-70"
    )
    assert comments[f"{WP}/?p=105#comment-49"].author_url == "http://wolfgang.gassler.org"
    assert sum(c.parent_id is not None for c in feed.comments) == 2
    pingback = comments[f"{WP}/?p=14#comment-2"]
    assert pingback.author == "Neuer Podcast zum Thema Datenbanken… | mysqladmin.at"


def test_wordpress_rss_comments_are_flat() -> None:
    """RSS comments have no parent; the article is the guid before ``#comment-``."""
    feed = _parse(REAL / "wp_comments.rss2.xml")
    assert (feed.kind, feed.dialect, len(feed.comments)) == ("comments", Dialect.WORDPRESS, 13)
    assert all(c.parent_id is None for c in feed.comments)
    assert all(c.article_id == c.id.partition("#comment-")[0] for c in feed.comments)
    comments = _by_id(feed.comments)
    assert comments[f"{WP}/?p=82#comment-28"].article_id == f"{WP}/?p=82"
    assert "😀" in comments[f"{WP}/?p=82#comment-28"].html
    # feedparser leaves the CDATA name entity-escaped; the author is plain text.
    assert comments[f"{WP}/?p=14#comment-2"].author == (
        "Neuer Podcast zum Thema Datenbanken… | mysqladmin.at"
    )
    assert comments[f"{WP}/?p=125#comment-70"].html.startswith("<p>Apples erster Versuch")
    assert feed.comments_feed_url == f"{WP}/comments/feed/atom/"


def test_wordpress_per_post_rss_comments() -> None:
    """The per-post comments feed: five flat comments on post 14, hint or not."""
    for hint in (None, f"{WP}/?p=14"):
        feed = _parse(REAL / "wp_post_comments.rss2.xml", article_id=hint)
        assert (feed.kind, feed.dialect) == ("comments", Dialect.WORDPRESS)
        assert [c.id.rpartition("-")[2] for c in feed.comments] == ["6", "5", "4", "3", "2"]
        assert all(c.article_id == f"{WP}/?p=14" for c in feed.comments)
        assert all(c.parent_id is None for c in feed.comments)
        assert feed.comments[0].author == "Jakob"
        assert feed.comments_feed_url is None  # a per-post feed does not reveal the home


def test_wordpress_posts_rss() -> None:
    """Posts: wfw:commentRss, dc:creator, labels without iTunes keywords."""
    feed = _parse(REAL / "wp_posts.rss2.xml")
    assert (feed.kind, feed.dialect, feed.title) == ("posts", Dialect.WORDPRESS, "Infoküche")
    assert feed.comments_feed_url == f"{WP}/comments/feed/atom/"
    assert [a.id for a in feed.articles] == [
        f"{WP}/?p={n}" for n in ("125", "105", "110", "82", "50", "14")
    ]
    first = feed.articles[0]
    assert first.title == "Infoküche 6 – WWW Conference 2012 (World Wide Web)"
    assert first.author == "Wolfgang Gassler"  # dc:creator, not itunes:author
    assert first.labels == ("Podcast", "flickr", "RDF", "rdfa", "tim berners-lee", "twitter", "www")
    assert (
        first.comments_feed_url
        == f"{WP}/podcast/infokuche-6-www-conference-2012-world-wide-web/feed/"
    )
    assert first.published == datetime(2012, 5, 4, 18, 47, 32, tzinfo=UTC)
    assert first.updated == first.published
    assert first.image_url is None
    # The HTML description, not the plain itunes:summary feedparser files as content.
    assert first.html.startswith("Die Infoküche besuchte")
    assert "vorstellt&#8230;" in first.html  # the description's own HTML entity
    assert '<a href="http://www.infokueche.at/podcast/' in first.html
    assert feed.articles[3].author == "Dominic Pacher"
    assert feed.articles[1].labels == ("Podcast", "vds", "vorratsdatenspeicherung")


# --- every fixture -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    sorted(p for p in [*REAL.iterdir(), *SEED.iterdir()] if p.suffix == ".xml"),
    ids=lambda p: p.name,
)
def test_every_fixture_parses_with_aware_dates_and_unique_ids(path: Path) -> None:
    """Each fixture parses without warnings; all dates are aware; ids are unique."""
    feed = _parse(path)
    assert feed.warnings == ()
    entries: list[Article | Comment] = [*feed.articles, *feed.comments]
    assert len({e.id for e in entries}) == len(entries)
    for article in feed.articles:
        assert article.published.tzinfo is not None
        assert article.updated.tzinfo is not None
    for comment in feed.comments:
        assert comment.published.tzinfo is not None
    assert looks_like_feed(_read(path))


@pytest.mark.parametrize(
    "path",
    sorted(p for p in [*REAL.iterdir(), *SEED.iterdir()] if p.suffix == ".xml"),
    ids=lambda p: p.name,
)
def test_every_fixture_cut_in_half_is_refused(path: Path) -> None:
    """A truncated body raises FeedParseError instead of returning fewer entries."""
    body = _read(path)
    with pytest.raises(FeedParseError):
        parse_feed(body[: len(body) // 2], "cut.xml")


def test_body_cut_right_after_an_entry_is_refused() -> None:
    """Even a cut at an entry boundary, where every kept entry is whole, is refused."""
    body = _read(SEED / "comments.atom.xml")
    cut = body.index(b"</entry>") + len(b"</entry>")
    with pytest.raises(FeedParseError):
        parse_feed(body[:cut], "cut.xml")


# --- not feeds -----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"   \r\n\t  ", b"\xef\xbb\xbf\n"])
def test_empty_body_is_not_a_feed(body: bytes) -> None:
    """Empty and whitespace-only bodies say the body was empty."""
    with pytest.raises(NotAFeedError, match="empty body"):
        parse_feed(body, "https://example.org/feed")


@pytest.mark.parametrize(
    "body",
    [
        b"<!DOCTYPE html><html><head><title>Blog</title></head><body>Hi</body></html>",
        b"\n<html lang='en'><body><a href='/feed'>feed</a></body></html>",
        b'<?xml version="1.0"?><!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
        b'"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd"><html xmlns="http://www.w3.org/1999/xhtml"/>',
    ],
)
def test_html_page_is_not_a_feed(body: bytes) -> None:
    """A web page is refused with a message saying so."""
    with pytest.raises(NotAFeedError, match="web page"):
        parse_feed(body, "https://example.org/")


def test_plain_text_is_not_a_feed() -> None:
    """Other plain text is refused as plain text."""
    with pytest.raises(NotAFeedError, match="plain text"):
        parse_feed(b"Service temporarily unavailable", "https://example.org/feed")


def test_other_xml_is_not_a_feed() -> None:
    """An XML error document (say, from a storage bucket) is not a feed."""
    with pytest.raises(NotAFeedError, match="not an RSS or Atom feed"):
        parse_feed(b"<?xml version='1.0'?><Error><Code>NoSuchKey</Code></Error>", "x")


def test_error_messages_are_one_line() -> None:
    """Moderators see one line of plain English."""
    for body in (b"", b"<html/>", b"text", b"<feed xmlns='http://www.w3.org/2005/Atom'><entry>"):
        with pytest.raises((NotAFeedError, FeedParseError)) as info:
            parse_feed(body, "x")
        assert "\n" not in str(info.value)


# --- broken and hostile XML ----------------------------------------------------------------------


def test_malformed_xml_is_a_parse_error() -> None:
    """Mismatched tags raise FeedParseError; nothing is returned."""
    body = _atom("<entry><id>a</id><title>A</title></entry><entry><id>b</entry>")
    with pytest.raises(FeedParseError, match="not well-formed"):
        parse_feed(body, "x")


def test_billion_laughs_is_refused_without_expansion() -> None:
    """An exponential entity bomb is refused at once, before any parser expands it."""
    levels = "".join(f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10))
    body = (
        f'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY lol0 "lol">{levels}]>'
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>&lol9;</title></feed>'
    ).encode()
    started = time.monotonic()
    with pytest.raises(FeedParseError, match="entities"):
        parse_feed(body, "x")
    assert time.monotonic() - started < 1


def test_external_entity_is_refused_without_reading_the_file(tmp_path: Path) -> None:
    """An XXE ``SYSTEM`` entity is refused; the file's content never appears."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER")
    body = (
        f'<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file://{secret}">]>'
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>&xxe;</title></feed>'
    ).encode()
    with pytest.raises(FeedParseError) as info:
        parse_feed(body, "x")
    assert "TOP-SECRET-MARKER" not in str(info.value)
    etc_passwd = body.replace(str(secret).encode(), b"/etc/passwd")
    with pytest.raises(FeedParseError):
        parse_feed(etc_passwd, "x")


def test_entity_declaration_in_utf16_is_refused() -> None:
    """The DTD check also sees through a UTF-16 body."""
    text = (
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE feed [<!ENTITY a "b">]>'
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>&a;</title></feed>'
    )
    with pytest.raises(FeedParseError, match="entities"):
        parse_feed(text.encode("utf-16"), "x")


def test_raw_reader_refuses_entities_on_its_own() -> None:
    """defusedxml backs up the DTD check: the raw reader refuses entity declarations too."""
    body = b'<!DOCTYPE feed [<!ENTITY a "b">]><feed xmlns="http://www.w3.org/2005/Atom"/>'
    with pytest.raises(FeedParseError):
        read_raw_entries(body)


def test_plain_doctype_without_entities_is_accepted() -> None:
    """A DTD that declares no entities (old RSS 0.91 style) is harmless."""
    body = (
        b'<?xml version="1.0"?><!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
        b'"http://my.netscape.com/publish/formats/rss-0.91.dtd"><rss version="0.91"><channel>'
        b"<title>Old</title><link>https://example.org/</link><item><title>One</title>"
        b"<link>https://example.org/1</link></item></channel></rss>"
    )
    feed = parse_feed(body, "https://example.org/rss")
    assert [a.id for a in feed.articles] == ["https://example.org/1"]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("&#55357;&#56832;", "😀"),
        ("&#xD83D;&#xDE00;", "😀"),
        ("&#xd83d;&#56832;", "😀"),
        ("&#55357;", "\ufffd"),
        ("&#56832;", "\ufffd"),
        ("&#56832;&#55357;", "\ufffd\ufffd"),
        ("&#55357; &#56832;", "\ufffd \ufffd"),
        ("&#55357;&#55357;&#56832;", "\ufffd😀"),
    ],
)
def test_surrogate_references_are_repaired(reference: str, expected: str) -> None:
    """Surrogate pairs become the real character; lone halves become U+FFFD."""
    body = _atom(
        "<entry><id>c1</id><title>t</title>"
        '<thr:in-reply-to ref="urn:post:1"/>'
        f"<content type='html'>Smile {reference}!</content></entry>"
    )
    (comment,) = parse_feed(body, "x").comments
    assert comment.html == f"Smile {expected}!"


def test_surrogate_repair_leaves_other_references_alone() -> None:
    """Ordinary references, and escaped ones, pass through untouched."""
    text = "<a>&#8217; &#55000; &#57999; &amp;#55357; &#x1F600;</a>"
    assert repair_document(text, 0) == (DECLARATION + text).encode()


# --- identity ------------------------------------------------------------------------------------


def test_missing_ids_fall_back_to_link_then_stable_hash() -> None:
    """No guid: the link is the id; no link either: a hash stable across parses."""
    body = _rss(
        "<item><title>Linked</title><link>https://example.org/p/1</link></item>"
        "<item><title>Bare</title><description>only text</description></item>"
        "<item><title>Other</title><description>different text</description></item>"
    )
    first = parse_feed(body, "https://example.org/rss")
    again = parse_feed(body, "https://example.org/rss")
    ids = [a.id for a in first.articles]
    assert ids[0] == "https://example.org/p/1"
    assert ids[1].startswith("urn:sha256:")
    assert len(set(ids)) == 3
    assert ids == [a.id for a in again.articles]


def test_missing_atom_id_still_gets_its_raw_facts() -> None:
    """An Atom comment without an id is matched to its raw in-reply-to by position."""
    body = _atom(
        "<entry><title>no id</title><link rel='alternate' href='https://example.org/c/1'/>"
        "<thr:in-reply-to ref='urn:post:9'/><content>x</content></entry>"
    )
    (comment,) = parse_feed(body, "x").comments
    assert comment.id == "https://example.org/c/1"
    assert comment.article_id == "urn:post:9"


def test_duplicate_ids_keep_the_first_with_a_warning() -> None:
    """A repeated id keeps the first entry and says so in warnings."""
    body = _atom(
        "<entry><id>urn:a</id><title>first</title><updated>2024-01-01T00:00:00Z</updated></entry>"
        "<entry><id>urn:b</id><title>other</title><updated>2024-01-01T00:00:00Z</updated></entry>"
        "<entry><id>urn:a</id><title>second</title><updated>2024-01-02T00:00:00Z</updated></entry>"
    )
    feed = parse_feed(body, "x")
    assert [(a.id, a.title) for a in feed.articles] == [("urn:a", "first"), ("urn:b", "other")]
    assert len(feed.warnings) == 1
    assert "urn:a" in feed.warnings[0]


# --- dates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pub_date", "expected"),
    [
        ("Tue, 10 Jun 2003 04:00:00 GMT", datetime(2003, 6, 10, 4, tzinfo=UTC)),
        (
            "Tue, 10 Jun 2003 04:00:00 EST",
            datetime(2003, 6, 10, 4, tzinfo=timezone(timedelta(hours=-5))),
        ),
        ("Tue, 10 Jun 2003 04:00:00 PDT", datetime(2003, 6, 10, 4, tzinfo=PDT)),
        (
            "Tue, 10 Jun 2003 04:00:00 +0530",
            datetime(2003, 6, 10, 4, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ),
        ("Tue, 10 Jun 2003 04:00:00 -0000", datetime(2003, 6, 10, 4, tzinfo=UTC)),
        ("10 Jun 2003 04:00 +0100", datetime(2003, 6, 10, 4, tzinfo=BST)),
        ("Tue, 10 Jun 2003 04:00:00 CEST", datetime(2003, 6, 10, 4, tzinfo=UTC)),
        (
            "2003-06-10T04:00:00+02:00",
            datetime(2003, 6, 10, 4, tzinfo=timezone(timedelta(hours=2))),
        ),
    ],
)
def test_rss_dates_in_odd_zones_are_aware(pub_date: str, expected: datetime) -> None:
    """RFC 822 dates keep their offset; an unknown zone name is read as UTC, never naive."""
    body = _rss(f"<item><guid>g</guid><title>t</title><pubDate>{pub_date}</pubDate></item>")
    (article,) = parse_feed(body, "x").articles
    assert article.published == expected
    assert article.published.utcoffset() == expected.utcoffset()
    assert article.updated == article.published


def test_unparseable_date_falls_back_on_the_other_date() -> None:
    """A garbage published date falls back on updated, and vice versa."""
    body = _atom(
        "<entry><id>a</id><title>t</title><published>soon</published>"
        "<updated>2020-02-02T10:00:00-03:00</updated></entry>"
    )
    (article,) = parse_feed(body, "x").articles
    assert article.published == datetime(2020, 2, 2, 10, tzinfo=timezone(timedelta(hours=-3)))
    assert article.updated == article.published


def test_entry_without_dates_takes_the_feed_date() -> None:
    """An undated entry shows the feed's own date, marked undated for ingestion to replace."""
    body = _atom(
        "<entry><id>a</id><title>t</title></entry>", head="<updated>2021-05-05T05:05:05Z</updated>"
    )
    (article,) = parse_feed(body, "x").articles
    assert article.published == datetime(2021, 5, 5, 5, 5, 5, tzinfo=UTC)
    assert article.undated


# --- generic feeds -------------------------------------------------------------------------------


def test_generic_rfc4685_threading_with_and_without_hint() -> None:
    """With a hint, a ref to another entry is a parent; without one, the ref is the article."""
    body = _atom(
        "<entry><id>urn:c1</id><title>a</title><thr:in-reply-to ref='urn:post'/></entry>"
        "<entry><id>urn:c2</id><title>b</title><thr:in-reply-to ref='urn:c1'/></entry>"
    )
    plain = parse_feed(body, "x")
    assert plain.dialect is Dialect.GENERIC
    assert plain.kind == "comments"
    assert plain.comments_feed_url is None
    assert [(c.article_id, c.parent_id) for c in plain.comments] == [
        ("urn:post", None),
        ("urn:c1", None),
    ]
    hinted = parse_feed(body, "x", article_id="urn:post")
    assert [(c.article_id, c.parent_id) for c in hinted.comments] == [
        ("urn:post", None),
        ("urn:post", "urn:c1"),
    ]


def test_generic_comments_without_threading_have_no_article() -> None:
    """No in-reply-to and no hint: the article id is left empty for the caller."""
    body = _rss("<item><guid>urn:c</guid><title>x</title></item>")
    feed = parse_feed(body, "x", kind="comments")
    assert [(c.article_id, c.parent_id) for c in feed.comments] == [("", None)]
    assert parse_feed(body, "x").kind == "posts"


def test_relative_links_resolve_against_the_feed_url() -> None:
    """Relative next, entry and image links become absolute; feedparser fetches nothing."""
    body = _atom(
        "<entry><id>a</id><title>t</title><link href='/posts/1'/>"
        "<content type='html'>&lt;p&gt;&lt;img src='img/a.png'&gt;&lt;/p&gt;</content></entry>",
        head="<link rel='next' href='?page=2'/><link rel='alternate' href='/'/>",
    )
    feed = parse_feed(body, "https://example.org/blog/feed.xml")
    assert feed.next_url == "https://example.org/blog/feed.xml?page=2"
    assert feed.site_url == "https://example.org/"
    (article,) = feed.articles
    assert article.url == "https://example.org/posts/1"
    assert article.image_url == "https://example.org/blog/img/a.png"


def test_html_titles_become_plain_text() -> None:
    """HTML titles lose tags and entities; text titles keep what they say."""
    body = _atom(
        "<entry><id>a</id>"
        "<title type='html'>Fish &amp;amp; &lt;b&gt;Chips&lt;/b&gt;</title></entry>"
        "<entry><id>b</id><title type='text'>a &lt;b&gt; tag</title></entry>"
    )
    feed = parse_feed(body, "x")
    assert [a.title for a in feed.articles] == ["Fish & Chips", "a <b> tag"]


def test_media_thumbnail_is_upsized_when_the_post_has_no_image() -> None:
    """Blogger's 72px thumbnail crop becomes the full-size image."""
    body = _atom(
        "<entry><id>a</id><title>t</title><content type='html'>no pictures</content>"
        "<media:thumbnail xmlns:media='http://search.yahoo.com/mrss/' "
        "url='//1.bp.blogspot.com/x/s72-c/pic.jpg' width='72' height='72'/></entry>"
    )
    (article,) = parse_feed(body, "x").articles
    assert article.image_url == "https://1.bp.blogspot.com/x/s1600/pic.jpg"


def test_explicit_kind_overrides_detection() -> None:
    """A caller that knows the kind is obeyed."""
    feed = _parse(SEED / "comments.atom.xml", kind="posts")
    assert feed.kind == "posts"
    assert len(feed.articles) == 7
    assert feed.comments == ()


# --- sniffing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\xef\xbb\xbf  \n<?xml version='1.0'?>\n<rss version='2.0'/>", True),
        (b"<!-- generated --><FEED xmlns='http://www.w3.org/2005/Atom'/>", True),
        (b"<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'/>", True),
        ("<?xml version='1.0' encoding='utf-16'?><feed/>".encode("utf-16"), True),
        (b"<!DOCTYPE html><html/>", False),
        (b"Comments are hidden from the blog.", False),
        (b"", False),
        (b"<?xml version='1.0'?><!--" + b" " * 2000 + b"--><rss/>", False),
    ],
)
def test_looks_like_feed(body: bytes, expected: bool) -> None:
    """The sniff accepts rss/feed/RDF roots within the first kilobyte, nothing else."""
    assert looks_like_feed(body) is expected


def test_hidden_comments_fixture_does_not_look_like_a_feed() -> None:
    """Feed discovery does not mistake Blogger's notice for a feed."""
    assert not looks_like_feed(_read(REAL / "blogger_post_comments_hidden.txt"))


# --- encodings ------------------------------------------------------------------------------------


def test_multibyte_legacy_charset_is_read() -> None:
    """A GB2312 feed, which expat cannot read directly, parses with its text intact."""
    body = (
        '<?xml version="1.0" encoding="gb2312"?><rss version="2.0"><channel><title>博客</title>'
        "<item><guid>urn:p1</guid><title>你好</title></item></channel></rss>"
    ).encode("gb2312")
    feed = parse_feed(body, "https://example.cn/rss")
    assert feed.title == "博客"
    assert [(a.id, a.title) for a in feed.articles] == [("urn:p1", "你好")]
    with pytest.raises(FeedParseError):
        parse_feed(body[: len(body) - 20], "https://example.cn/rss")


def test_windows_1252_bytes_in_a_utf8_feed_are_tolerated() -> None:
    """A feed declared UTF-8 holding Windows-1252 bytes parses, as feedparser allows."""
    body = _atom("<entry><id>a</id><title>TITLE</title></entry>").replace(
        b"TITLE", "Café “quoted”".encode("windows-1252")
    )
    (article,) = parse_feed(body, "x").articles
    assert article.title == "Café “quoted”"


def test_long_first_line_with_encoding_words_parses_quickly() -> None:
    """A one-line feed full of ``encoding='a'`` text does not trip feedparser's slow regex."""
    title = "encoding='a' " * 2000
    body = (
        "<?xml version='1.0' encoding='UTF-8'?><feed xmlns='http://www.w3.org/2005/Atom'>"
        f"<title>{title}</title></feed>"
    ).encode()
    # feedparser only ever sees a fresh one-line declaration: its encoding regex
    # would otherwise take many minutes over this first line.
    parsed = parse_feed(body, "https://blog.example/feed")
    assert parsed.title.startswith("encoding='a'")

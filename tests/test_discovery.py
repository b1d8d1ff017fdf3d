"""Tests for bot.discovery: from a pasted URL to the blog's posts feed.

The HTML pages are trimmed copies of what Blogger and WordPress serve (the
parts discovery reads); the feeds are the real fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.discovery import discover_feed
from bot.errors import NotAFeedError, PermanentFeedError
from bot.fetch import Fetcher, create_session
from bot.untrusted import DocumentTooSlowError, TimeLimits, Untrusted, open_pool
from tests.feedserver import FIXTURES, HTML, RSS, TEXT, FeedServer

BLOGGER_POSTS = (FIXTURES / "real" / "blogger_posts_thumbnails.atom.xml").read_bytes()
WP_POSTS = (FIXTURES / "real" / "wp_posts.rss2.xml").read_bytes()
WP_COMMENTS = (FIXTURES / "real" / "wp_comments.rss2.xml").read_bytes()
WP_COMMENTS_ATOM = (FIXTURES / "real" / "wp_comments.atom.xml").read_bytes()

BLOGGER_HOME = """<!DOCTYPE html>
<html class='v2' dir='ltr' lang='en'>
<head>
<meta content='width=1100' name='viewport'/>
<meta content='text/html; charset=UTF-8' http-equiv='Content-Type'/>
<meta content='blogger' name='generator'/>
<link href='{base}/favicon.ico' rel='icon' type='image/x-icon'/>
<link href='{base}/' rel='canonical'/>
<link rel="alternate" type="application/atom+xml" title="On Probation - Atom"
 href="{base}/feeds/posts/default" />
<link rel="alternate" type="application/rss+xml" title="On Probation - RSS"
 href="{base}/feeds/posts/default?alt=rss" />
<link rel="service.post" type="application/atom+xml" title="On Probation - Atom"
 href="https://www.blogger.com/feeds/7170366063133430125/posts/default" />
<title>On Probation</title>
</head>
<body><h1>On Probation</h1></body>
</html>
"""

# Classic Blogger templates are XHTML: an XML declaration, no generator tag, no
# alternate links in this trimmed copy, only the "Subscribe to: Posts (Atom)" footer.
BLOGGER_CLASSIC_XHTML = """<?xml version="1.0" encoding="UTF-8" ?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN"
 "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns='http://www.w3.org/1999/xhtml' xmlns:b='http://www.google.com/2005/gml/b'>
<head><title>Classic</title></head>
<body>
<div class='blog-feeds'>Subscribe to:
<a class='feed-link' href='/feeds/posts/default' target='_blank' type='application/atom+xml'>
Posts (Atom)</a></div>
</body>
</html>
"""

WORDPRESS_HOME = """<!DOCTYPE html>
<html lang="de-DE">
<head>
<meta charset="UTF-8">
<title>Infoküche</title>
<link rel="alternate" type="application/rss+xml" title="Infoküche &raquo; Kommentar-Feed"
 href="{base}/comments/feed/" />
<link rel="alternate" type="application/rss+xml" title="Infoküche &raquo; Feed"
 href="/feed/" />
<link rel='https://api.w.org/' href='{base}/wp-json/' />
<meta name="generator" content="WordPress 4.5.20" />
</head>
<body class="home blog"><a href="https://friend.blogspot.com/feeds/posts/default">A friend</a>
</body>
</html>
"""

NO_FEEDS = """<!doctype html>
<html><head><title>Just a page</title>
<link rel="stylesheet" href="/style.css">
<link rel="alternate" hreflang="de" href="/de/">
</head><body><p>Nothing to subscribe to here.</p></body></html>
"""


pytestmark = pytest.mark.usefixtures("loopback_only")


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    async with create_session(allow_private=True) as session:
        yield Fetcher(session, timeout=5, max_bytes=1_048_576, allow_private=True)


def page(template: str, server: FeedServer) -> str:
    """Fill the page's absolute links in with the test server's address."""
    return template.replace("{base}", server.url("").rstrip("/"))


async def test_feed_url_is_used_directly(
    server: FeedServer, fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """A pasted feed URL is the feed; it is fetched once and handed back."""
    server.route("/feeds/posts/default", BLOGGER_POSTS)

    found = await discover_feed(fetcher, untrusted, server.url("/feeds/posts/default"))

    assert found.feed_url == server.url("/feeds/posts/default")
    assert found.blog_url is None
    assert found.body.body == BLOGGER_POSTS
    assert server.hits("/feeds/posts/default") == 1


async def test_rss_feed_with_stylesheet_is_a_feed(
    server: FeedServer, fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """An XML declaration followed by feed markup (and a BOM) is a feed, not a page."""
    body = (
        b'\xef\xbb\xbf\n<?xml version="1.0"?>\n<?xml-stylesheet href="/feed.xsl"?>\n'
        + (WP_POSTS.split(b"?>", 1)[1])
    )
    server.route("/feed/", body, content_type="text/xml")

    found = await discover_feed(fetcher, untrusted, server.url("/feed/"))

    assert found.feed_url == server.url("/feed/")


async def test_utf16_feed_is_a_feed(
    server: FeedServer, fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """A feed served in UTF-16 (with its byte-order mark) is recognised as pasted."""
    text = WP_POSTS.decode("utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"', 1)
    server.route("/feed/", text.encode("utf-16"), content_type="text/xml")

    found = await discover_feed(fetcher, untrusted, server.url("/feed/"))

    assert (found.feed_url, found.blog_url) == (server.url("/feed/"), None)


async def test_redirected_feed_reports_final_url(
    server: FeedServer, fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """A feed that moved is subscribed at its new address."""
    server.redirect("/rss", "/feed/", status=301)
    server.route("/feed/", WP_POSTS, content_type=RSS)

    found = await discover_feed(fetcher, untrusted, server.url("/rss"))

    assert found.feed_url == server.url("/feed/")


async def test_blogger_homepage(server: FeedServer, fetcher: Fetcher, untrusted: Untrusted) -> None:
    """A Blogger homepage leads to its /feeds/posts/default (Atom, not the ?alt=rss link)."""
    server.route("/", page(BLOGGER_HOME, server), content_type=HTML)
    server.route("/feeds/posts/default", BLOGGER_POSTS)

    found = await discover_feed(fetcher, untrusted, server.url("/"))

    assert found.feed_url == server.url("/feeds/posts/default")
    assert found.blog_url == server.url("/")
    assert found.body.body == BLOGGER_POSTS


async def test_blogger_article_page_leads_to_blog_feed(
    server: FeedServer, fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """Pasting an article's URL subscribes to the whole blog, named by its homepage."""
    server.route("/2024/05/probation.html", page(BLOGGER_HOME, server), content_type=HTML)
    server.route("/feeds/posts/default", BLOGGER_POSTS)

    found = await discover_feed(fetcher, untrusted, server.url("/2024/05/probation.html"))

    assert found.feed_url == server.url("/feeds/posts/default")
    assert found.blog_url == server.url("/")


async def test_classic_blogger_xhtml_page(
    server: FeedServer, fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """An XHTML page starting with <?xml is a page, and its footer link marks it as Blogger."""
    server.route("/", BLOGGER_CLASSIC_XHTML, content_type=HTML)
    server.route("/feeds/posts/default", BLOGGER_POSTS)

    found = await discover_feed(fetcher, untrusted, server.url("/"))

    assert found.feed_url == server.url("/feeds/posts/default")


async def test_blogger_falls_back_to_page_links(
    server: FeedServer, fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """If the fixed Blogger path is not a feed, the page's own feed links are tried."""
    home = page(BLOGGER_HOME, server).replace('type="application/atom+xml" title="On', 'title="On')
    server.route("/", home, content_type=HTML)
    server.route("/feeds/posts/default", "<html>Blog not found</html>", content_type=HTML)
    server.route("/feeds/posts/default?alt=rss", WP_POSTS, content_type=RSS)

    found = await discover_feed(fetcher, untrusted, server.url("/"))

    assert found.feed_url == server.url("/feeds/posts/default?alt=rss")


async def test_wordpress_homepage_picks_posts_over_comments(
    server: FeedServer, fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """The posts feed is chosen even though the comments feed is listed first.

    The page also links to a friend's Blogger feed, which must not make it count
    as a Blogger blog.
    """
    server.route("/", page(WORDPRESS_HOME, server), content_type=HTML)
    server.route("/feed/", WP_POSTS, content_type=RSS)
    server.route("/comments/feed/", WP_COMMENTS, content_type=RSS)

    found = await discover_feed(fetcher, untrusted, server.url("/"))

    assert found.feed_url == server.url("/feed/")
    assert found.blog_url == server.url("/")
    assert found.body.body == WP_POSTS
    assert server.hits("/comments/feed/") == 0


async def test_atom_is_preferred_over_rss(
    server: FeedServer, fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """Atom carries threading and ids better, so it wins over RSS wherever it is listed."""
    home = """<html><head>
    <link rel="alternate" type="application/rss+xml" title="Blog Feed" href="/feed/">
    <link rel="alternate" type="application/atom+xml" title="Blog Comments Feed"
     href="/comments/feed/atom/">
    <link rel="ALTERNATE" type="application/atom+xml; charset=utf-8" title="Blog Atom"
     href="feed/atom/">
    </head></html>"""
    server.route("/", home, content_type=HTML)
    server.route("/feed/atom/", WP_COMMENTS_ATOM)
    server.route("/feed/", WP_POSTS, content_type=RSS)

    found = await discover_feed(fetcher, untrusted, server.url("/"))

    assert found.feed_url == server.url("/feed/atom/")
    assert server.hits("/feed/") == 0


async def test_comment_feed_by_path_is_skipped(
    server: FeedServer, fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """A feed under /comments/ is skipped even when its title does not say so."""
    home = """<html><head>
    <link rel="alternate" type="application/atom+xml" title="Blog" href="/comments/feed/atom/">
    <link rel="alternate" type="application/rss+xml" title="Blog" href="/feed/">
    </head></html>"""
    server.route("/", home, content_type=HTML)
    server.route("/feed/", WP_POSTS, content_type=RSS)

    found = await discover_feed(fetcher, untrusted, server.url("/"))

    assert found.feed_url == server.url("/feed/")


async def test_page_without_feeds(
    server: FeedServer, fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """A page that names no feed gets an error saying what to paste instead."""
    server.route("/", NO_FEEDS, content_type=HTML)

    with pytest.raises(NotAFeedError) as info:
        await discover_feed(fetcher, untrusted, server.url("/"))

    assert str(info.value) == (
        f"No feed found at {server.url('/')}: the page has no "
        '<link rel="alternate"> feed. Paste the feed URL instead.'
    )


async def test_linked_feed_that_is_not_a_feed(
    server: FeedServer, fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """A feed link pointing at another web page is reported, not subscribed to."""
    home = '<html><head><link rel="alternate" type="application/rss+xml" href="/feed/"></head>'
    server.route("/", home, content_type=HTML)
    server.route("/feed/", NO_FEEDS, content_type=HTML)

    with pytest.raises(NotAFeedError, match="is not an Atom or RSS feed"):
        await discover_feed(fetcher, untrusted, server.url("/"))


async def test_linked_feed_that_is_missing(
    server: FeedServer, fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """A dead feed link surfaces the fetch error (here a 404) for the moderator."""
    home = '<html><head><link rel="alternate" type="application/rss+xml" href="/feed/"></head>'
    server.route("/", home, content_type=HTML)

    with pytest.raises(PermanentFeedError, match="404 Not Found") as info:
        await discover_feed(fetcher, untrusted, server.url("/"))

    assert info.value.status == 404


async def test_plain_text_is_not_a_feed(
    server: FeedServer, fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """Blogger's 'Comments are hidden' text body is not mistaken for a feed."""
    server.fixture("/hidden", "real/blogger_post_comments_hidden.txt", content_type=TEXT)

    with pytest.raises(NotAFeedError, match="No feed found"):
        await discover_feed(fetcher, untrusted, server.url("/hidden"))


async def test_empty_body_is_not_a_feed(
    server: FeedServer, fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """An empty answer says so."""
    server.route("/", b"", content_type=HTML)

    with pytest.raises(NotAFeedError, match="empty page"):
        await discover_feed(fetcher, untrusted, server.url("/"))


async def test_homepage_fetch_error_propagates(
    server: FeedServer, fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """A URL that does not answer is the fetcher's error, unchanged."""
    with pytest.raises(PermanentFeedError, match="404"):
        await discover_feed(fetcher, untrusted, server.url("/missing"))


CRAFTED_HOME = b"<html><head><title>x</title>" + b"<a " * 3_400_000  # 10 MB, no </head>


@pytest.fixture
async def big_fetcher() -> AsyncIterator[Fetcher]:
    async with create_session(allow_private=True) as session:
        yield Fetcher(session, timeout=60, max_bytes=11_000_000, allow_private=True)


async def test_a_crafted_10_mb_homepage_is_answered_at_once(
    server: FeedServer, big_fetcher: Fetcher, untrusted: Untrusted
) -> None:
    """A page of ``<a `` repeated (quadratic for html.parser: hours) is read in moments.

    Had the scan run over the page's time limit the error would say it took too
    long; it says the page names no feed.
    """
    server.route("/", CRAFTED_HOME, content_type=HTML)

    with pytest.raises(NotAFeedError, match="No feed found"):
        await discover_feed(big_fetcher, untrusted, server.url("/"))


async def test_a_page_over_its_time_limit_is_refused_clearly(
    server: FeedServer, big_fetcher: Fetcher
) -> None:
    """A page that takes longer than its limit to read says so, with what to do instead."""
    server.route("/", CRAFTED_HOME, content_type=HTML)

    async with open_pool() as pool:
        strict = Untrusted(pool, TimeLimits(page=0.001))
        with pytest.raises(DocumentTooSlowError) as info:
            await discover_feed(big_fetcher, strict, server.url("/"))

    assert str(info.value) == (
        f"The page at {server.url('/')} took too long to read (more than 0.001 s): "
        "paste the feed URL instead."
    )

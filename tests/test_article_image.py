"""The article's picture: the feed's own choice first, never an icon, tracker or spacer.

Small feeds written for these tests, parsed by the bot's own parser.
"""

from __future__ import annotations

from html import escape

import pytest

from bot.parse import parse_feed

MEDIA = "http://search.yahoo.com/mrss/"
BASE = "https://blog.example/feed.xml"


def atom_entry(html: str, extra: str = "") -> bytes:
    """A one-entry Atom posts feed whose content is ``html``."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="{MEDIA}">'
        "<id>urn:test:feed</id><title>Test</title>"
        "<entry><id>urn:test:a</id><title>A post</title>"
        "<link rel='alternate' href='https://blog.example/a.html'/>"
        f"<content type='html'>{escape(html)}</content>{extra}</entry></feed>"
    ).encode()


def rss_item(html: str, extra: str = "") -> bytes:
    """A one-item RSS 2.0 feed whose description is ``html``."""
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0" xmlns:media="{MEDIA}">'
        "<channel><title>Test</title><link>https://blog.example/</link>"
        "<item><title>A post</title><link>https://blog.example/a.html</link><guid>a</guid>"
        f"<description>{escape(html)}</description>{extra}</item></channel></rss>"
    ).encode()


def image_of(body: bytes) -> str | None:
    (article,) = parse_feed(body, BASE).articles
    return article.image_url


REAL = "<img src='https://blog.example/photos/harbour.jpg' width='640' height='480'>"


@pytest.mark.parametrize(
    "small",
    [
        "<img src='/stats/count.png' width='1' height='1'>",
        "<img src='/a/divider.png' width='600' height='4'>",
        "<img src='/a/badge.png' width='40px' height='120'>",
        "<img height=16 src=/a/b.png>",
    ],
)
def test_images_declared_smaller_than_50px_are_skipped(small: str) -> None:
    """A width or height attribute under 50 px means decoration or a tracker, not a picture."""
    assert image_of(atom_entry(f"<p>{small}Text {REAL}</p>")) == (
        "https://blog.example/photos/harbour.jpg"
    )


@pytest.mark.parametrize(
    "src",
    [
        "https://feeds.feedburner.com/~r/Blog/~4/abc",
        "http://feeds.feedburner.com/~ff/Blog?d=yIl2AUoC8zA",
        "https://s.w.org/images/core/emoji/14.0.0/72x72/1f642.png",
        "https://blog.example/wp-includes/images/smilies/icon_smile.gif",
        "https://blog.example/themes/x/icons/rss.png",
        "https://blog.example/favicon.ico",
        "https://secure.gravatar.com/avatar/0a1b2c?s=96",
        "https://blog.example/uploads/avatar-jim.jpg",
        "https://pixel.wp.com/b.gif?v=noscript",
        "https://blog.example/img/spacer.gif",
        "https://blog.example/img/blank.gif",
        "https://blog.example/track/1x1.png",
        "data:image/gif;base64,R0lGODlhAQABAAAAACw=",
    ],
)
def test_icons_trackers_and_spacers_are_skipped(src: str) -> None:
    """Feed trackers, emoji, icons, avatars, pixels and spacer GIFs are never the picture."""
    assert image_of(atom_entry(f"<img src='{src}'><p>Text</p>{REAL}")) == (
        "https://blog.example/photos/harbour.jpg"
    )


def test_only_decorative_images_means_no_picture() -> None:
    """A post whose only images are decoration has no picture at all."""
    html = (
        "<img src='https://s.w.org/images/core/emoji/14.0.0/72x72/1f642.png'>"
        "<img src='https://blog.example/x.png' width='1' height='1'>"
    )
    assert image_of(atom_entry(html)) is None


def test_wordpress_media_content_is_preferred_and_its_gravatar_skipped() -> None:
    """WordPress.com lists the author's gravatar as media:content first: the photo is chosen."""
    extra = (
        "<media:content url='https://0.gravatar.com/avatar/abc?s=96' medium='image'>"
        "<media:title type='html'>jim</media:title></media:content>"
        "<media:content url='https://blog.example/uploads/featured.jpg' medium='image'/>"
    )
    assert image_of(rss_item(REAL, extra)) == "https://blog.example/uploads/featured.jpg"


def test_image_enclosure_is_preferred_and_audio_ignored() -> None:
    """An image enclosure is the feed's picture; a podcast's audio enclosure is not."""
    extra = (
        "<enclosure url='https://blog.example/ep1.mp3' type='audio/mpeg' length='1'/>"
        "<enclosure url='https://blog.example/cover.png' type='image/png' length='1'/>"
    )
    assert image_of(rss_item(REAL, extra)) == "https://blog.example/cover.png"
    audio_only = "<enclosure url='https://blog.example/ep1.mp3' type='audio/mpeg' length='1'/>"
    assert image_of(rss_item(REAL, audio_only)) == "https://blog.example/photos/harbour.jpg"


def test_media_thumbnail_is_preferred_unless_tiny_or_a_blogger_crop() -> None:
    """A feed's thumbnail beats the body's first image; a tiny one or Blogger's 72px crop not."""
    thumbnail = "<media:thumbnail url='https://blog.example/featured-640.jpg' width='640'/>"
    assert image_of(atom_entry(REAL, thumbnail)) == "https://blog.example/featured-640.jpg"
    tiny = "<media:thumbnail url='https://blog.example/t.jpg' width='16' height='16'/>"
    assert image_of(atom_entry(REAL, tiny)) == "https://blog.example/photos/harbour.jpg"
    assert image_of(atom_entry("no picture", tiny)) is None
    crop = (
        "<media:thumbnail url='https://1.bp.blogspot.com/x/s72-c/pic.jpg' width='72' height='72'/>"
    )
    assert image_of(atom_entry(REAL, crop)) == "https://blog.example/photos/harbour.jpg"


def test_only_declared_pixel_sizes_count() -> None:
    """A size in pixels decides; "100%" or no size at all keeps the image."""
    html = "<img src='/a/dot.png' width='1'><img src='/photos/wide.jpg' width='100%'>"
    assert image_of(atom_entry(html)) == "https://blog.example/photos/wide.jpg"
    assert image_of(atom_entry("<img src='/photos/other.jpg'>")) == (
        "https://blog.example/photos/other.jpg"
    )

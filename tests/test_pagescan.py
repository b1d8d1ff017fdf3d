"""Reading a pasted page for its feeds: the browser's rules where they matter, in linear time.

The feeds it leads to are tested through discovery (``tests/test_discovery.py``);
these tests are about the tokenizer itself and about hostile pages.
"""

from __future__ import annotations

import time

import pytest

from bot.pagescan import SCAN_BYTES, AlternateLink, scan_page

PAGE = "https://blog.example/2024/05/post.html"
ATOM = "application/atom+xml"


def alternates(html: str | bytes, content_type: str | None = "text/html") -> list[str]:
    body = html.encode() if isinstance(html, str) else html
    return [link.href for link in scan_page(body, content_type, PAGE).alternates]


def test_feed_links_and_generator_are_read() -> None:
    """Alternate Atom/RSS links (resolved, titles decoded), the generator, the Blogger link."""
    info = scan_page(
        b"""<!DOCTYPE html><HTML><Head>
        <META NAME="Generator" content='Blogger'>
        <link rel="alternate stylesheet" type="text/css" href="/x.css">
        <link REL=alternate TYPE="application/atom+xml; charset=utf-8" href=/feeds/posts/default
         title="Blog &raquo; Feed">
        <link rel='alternate' type='application/rss+xml' href='?alt=rss&amp;v=2' title=''>
        </head><body><a href="https://blog.example/feeds/posts/default/">Posts</a>""",
        "text/html; charset=utf-8",
        PAGE,
    )
    assert info.generator == "Blogger"
    assert info.links_blogger_feed
    assert info.alternates == [
        AlternateLink(ATOM, "https://blog.example/feeds/posts/default", "Blog » Feed"),
        AlternateLink(
            "application/rss+xml", "https://blog.example/2024/05/post.html?alt=rss&v=2", ""
        ),
    ]


def test_base_href_resolves_later_links() -> None:
    """``<base href>`` changes where relative feed links point."""
    html = f'<base href="https://cdn.example/blog/"><link rel=alternate type={ATOM} href=feed.xml>'
    assert alternates(html) == ["https://cdn.example/blog/feed.xml"]


@pytest.mark.parametrize(
    "html",
    [
        f'<!-- <link rel=alternate type={ATOM} href="/commented"> -->',
        f'<script>document.write("<link rel=alternate type={ATOM} href=/scripted>")</script>',
        f"<STYLE>/* <link rel=alternate type={ATOM} href=/styled> */</STYLE>",
        f"<title>How to write <link rel=alternate type={ATOM} href=/titled></title>",
        f'<link rel=alternate type={ATOM} href="/never-closed"',
        f"<link rel=alternate type={ATOM} href=javascript:alert(1)>",
    ],
)
def test_what_is_not_a_feed_link(html: str) -> None:
    """Markup in comments, scripts, styles and titles, an unclosed tag, a non-http link."""
    assert alternates(html) == []


def test_a_quoted_angle_bracket_does_not_end_the_tag() -> None:
    """``>`` inside a quoted value is text, as in a browser."""
    html = f'<link title="a > b" rel=alternate type={ATOM} href="/feed?a>b">'
    assert alternates(html) == ["https://blog.example/feed?a%3Eb"]


def test_only_the_start_of_the_page_is_read() -> None:
    """A feed link past ``SCAN_BYTES`` is not seen (real pages announce feeds early)."""
    link = f"<link rel=alternate type={ATOM} href=/late>".encode()
    assert alternates(b"<html><head>" + b" " * SCAN_BYTES + link) == []
    assert alternates(b"<html><head>" + b" " * (SCAN_BYTES - 100) + link) == [
        "https://blog.example/late"
    ]


def test_the_charset_of_the_content_type_is_used() -> None:
    """A Latin-1 page's title reads right; an unknown charset falls back on UTF-8."""
    html = f'<link rel=alternate type={ATOM} href=/f title="Caf\xe9">'.encode("latin-1")
    [link] = scan_page(html, "text/html; charset=ISO-8859-1", PAGE).alternates
    assert link.title == "Café"
    [link] = scan_page(html, "text/html; charset=klingon", PAGE).alternates
    assert link.title == "Caf\ufffd"


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("<a  repeated, no </head>", b"<html><head>" + b"<a " * 3_400_000),
        ("<a repeated", b"<a" * 5_000_000),
        ("<! repeated", b"<!" * 5_000_000),
        ("attributes without values", b"<a " + b"x= " * 3_400_000),
        ("empty quoted values", b"<a " + b'x="" ' * 2_000_000),
        ("unclosed comments", b"<!--" * 2_500_000),
        ("unclosed scripts", b"<script>" * 1_250_000),
        ("references in a value", b'<a href="' + b"&amp;" * 2_000_000 + b'">'),
        ("feed links", f"<link rel=alternate type={ATOM} href=/f>".encode() * 250_000),
    ],
)
def test_a_crafted_10_mb_page_is_read_within_a_second(name: str, body: bytes) -> None:
    """Pages built to make a tokenizer quadratic cost well under a second of CPU.

    ``html.parser`` took 4 s for 24 KB of ``<a `` repeated, and would take hours
    for 10 MB; here each costs a few tens of milliseconds.
    """
    assert len(body) >= 10_000_000
    started = time.process_time()
    scan_page(body, "text/html", PAGE)
    assert time.process_time() - started < 1.0, name

"""Hostile feed shapes stay cheap: one ``parse_feed`` call of each takes under a second of CPU.

These are the shapes that make regex-based feed readers backtrack or go
quadratic. Before the prolog was replaced and feedparser's HTML sanitizer
switched off, the long processing instruction took 13 s at 21 KB (cubic in
feedparser's encoding regex) and unclosed HTML comments 24 s at 700 KB
(quadratic in the sanitizer); here they are parsed at sizes up to 2 MB, where
they now take milliseconds. Shapes whose cost is linear in feedparser
(per element, per entity) are sized to stay far below the bound.

This is the one timed assertion in the suite; it measures CPU time
(``time.process_time``), not wall time, so a busy machine does not fail it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import FeedError
from bot.parse import parse_feed

URL = "https://hostile.example/feed"
BOUND_SECONDS = 1.0
KB, MB = 1024, 1024 * 1024

FEED = b"<feed xmlns='http://www.w3.org/2005/Atom'><id>urn:hostile</id><title>Hostile</title>"
DECLARATION = b"<?xml version='1.0' encoding='utf-8'?>"


def _repeat(unit: bytes, size: int) -> bytes:
    return unit * max(1, size // len(unit))


def _content(inner: bytes, *, prolog: bytes = DECLARATION) -> bytes:
    """A one-entry Atom feed whose HTML content is ``inner``."""
    return (
        prolog + FEED + b"<entry><id>urn:hostile:1</id><title>t</title>"
        b"<content type='html'>" + inner + b"</content></entry></feed>"
    )


def _long_pi(size: int) -> bytes:
    # A PI longer than the old 1 KB guard, then one long line full of encoding='.
    return b"<?x-pi " + b"a" * 1100 + b"?>" + FEED + _title(b"encoding='", size)


def _long_declaration(size: int) -> bytes:
    # The same, with the XML declaration itself padded past 1 KB.
    declaration = b"<?xml version='1.0' encoding='utf-8'" + b" " * 1100 + b"?>"
    return declaration + FEED + _title(b"encoding='", size)


def _title(unit: bytes, size: int) -> bytes:
    return b"<subtitle>" + _repeat(unit, size) + b"</subtitle></feed>"


def _nested_elements(levels: int) -> bytes:
    return (
        DECLARATION
        + FEED
        + b"<entry><id>urn:hostile:1</id>"
        + b"<x:n xmlns:x='urn:x'>" * levels
        + b"</x:n>" * levels
        + b"</entry></feed>"
    )


# name -> (body builder, smallest size, largest size); sizes in bytes unless said.
SHAPES: dict[str, tuple[Callable[[int], bytes], int, int]] = {
    "long PI + encoding=' repeated": (_long_pi, 1 * MB, 2 * MB),
    "long declaration + encoding=' repeated": (_long_declaration, 1 * MB, 2 * MB),
    "<!-- repeated in CDATA HTML": (
        lambda n: _content(b"<![CDATA[" + _repeat(b"<!--", n) + b"]]>"),
        1 * MB,
        2 * MB,
    ),
    "<!-- repeated in escaped HTML": (
        lambda n: _content(_repeat(b"&lt;!--", n)),
        500 * KB,
        600 * KB,
    ),
    "<![ repeated in CDATA HTML": (
        lambda n: _content(b"<![CDATA[" + _repeat(b"<![", n) + b"]]>"),
        1 * MB,
        2 * MB,
    ),
    "<![ repeated in escaped HTML": (lambda n: _content(_repeat(b"&lt;![", n)), 400 * KB, 500 * KB),
    "<a repeated in CDATA HTML": (
        lambda n: _content(b"<![CDATA[" + _repeat(b"<a ", n) + b"]]>"),
        1 * MB,
        2 * MB,
    ),
    "<a repeated in escaped HTML": (lambda n: _content(_repeat(b"&lt;a ", n)), 400 * KB, 500 * KB),
    "<a repeated as XML": (lambda n: DECLARATION + FEED + _repeat(b"<a ", n), 1 * MB, 2 * MB),
    "deeply nested HTML": (
        lambda n: _content(_repeat(b"&lt;div&gt;", n // 2) + _repeat(b"&lt;/div&gt;", n // 2)),
        400 * KB,
        500 * KB,
    ),
    "deeply nested XML elements (levels)": (_nested_elements, 4_000, 5_000),
    "undeclared HTML entities (count)": (
        lambda n: _content(_repeat(b"&nbsp;", 6 * n)),
        10_000,
        12_000,
    ),
    "surrogate references (count)": (
        lambda n: _content(_repeat(b"&#55357;", 8 * n)),
        10_000,
        12_000,
    ),
    "comments before the root": (
        lambda n: _repeat(b"<!-- c -->", n) + FEED + b"</feed>",
        MB,
        2 * MB,
    ),
    "PIs before the root": (lambda n: _repeat(b"<?p x?>", n) + FEED + b"</feed>", MB, 2 * MB),
    "<!-- repeated before the root": (lambda n: b"<!--" + _repeat(b"<!--", n), MB, 2 * MB),
    "<![ repeated before the root": (lambda n: _repeat(b"<![", n) + FEED + b"</feed>", MB, 2 * MB),
    "unclosed DOCTYPE subsets": (lambda n: _repeat(b"<!DOCTYPE feed [\n", n), MB, 2 * MB),
    "digits in a character reference": (lambda n: _content(b"&#" + b"0" * n + b"65;"), MB, 2 * MB),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_shapes_parse_in_bounded_cpu_time(shape: str, data: st.DataObject) -> None:
    """One parse (or clean refusal) of each shape costs under a second of CPU."""
    build, smallest, largest = SHAPES[shape]
    body = build(data.draw(st.integers(smallest, largest), label="size"))
    started = time.process_time()
    with contextlib.suppress(FeedError):  # refusing in words is as good, if it is quick
        parse_feed(body, URL)
    spent = time.process_time() - started
    assert spent < BOUND_SECONDS, f"{shape}: {len(body)} bytes took {spent:.2f} s of CPU"

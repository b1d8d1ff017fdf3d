"""What feed discovery reads from a web page: its feed links, its generator, a Blogger feed link.

The page is whatever a moderator pasted, so it is read the cheap way. Only its
first ``SCAN_BYTES`` are looked at: a page announces its feeds in its head, and
even a classic Blogger template's "Subscribe to: Posts (Atom)" footer comes long
before that. And they are read by a small tokenizer that looks at each character
a bounded number of times, never by ``html.parser``: markup such as ``<a `` repeated
makes that one quadratic (24 KB cost 4 s, 1 MB would cost hours), and a thread
running it could not be stopped.

The tokenizer follows the browser's rules where they matter here: a tag runs to
the first ``>`` outside a quoted attribute value, comments and ``<!…>``/``<?…>``
declarations are skipped, the text of ``script``, ``style``, ``title`` and
``textarea`` is not markup, and a tag the page never closes is ignored. Tag and
attribute names are case-insensitive; the last of two same-named attributes wins
(as ``html.parser`` had it); character references in values are decoded.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Final

from yarl import URL

from bot.charset import python_codec

SCAN_BYTES: Final = 256 * 1024
BLOGGER_POSTS_PATH: Final = "/feeds/posts/default"
FEED_TYPES: Final = {
    "application/atom+xml": 0,
    "application/rss+xml": 1,
    "application/feed+json": 2,
}
# Comment feeds are announced with localised titles: "Comments Feed", "Kommentar-Feed",
# "Flux des commentaires", "Feed de comentarios".
_COMMENT_WORDS: Final = ("comment", "kommentar", "coment")

# A "<" that opens something: a comment, a declaration, a start or an end tag.
_MARKUP: Final = re.compile(r"<(!--|[!?]|/?[A-Za-z])")
_TAG_NAME: Final = re.compile(r"[^\s/>]*")
# One attribute, after any whitespace and stray slashes; no name (group 1 None) means
# the tag ends here (at ">" or at the end of the text). An unclosed quote runs to the end.
_ATTRIBUTE: Final = re.compile(
    r"""[\s/]*(?:([^\s/>][^\s/>=]*)(?:\s*=\s*(?:"([^"]*)"?|'([^']*)'?|([^\s>]*)))?)?"""
)
_RAW_TEXT: Final = {
    name: re.compile(rf"</{name}", re.IGNORECASE)
    for name in ("script", "style", "title", "textarea")
}
_WANTED: Final = frozenset({"a", "base", "link", "meta"})


@dataclass(frozen=True, slots=True)
class AlternateLink:
    """A ``<link rel="alternate">`` to an Atom or RSS feed."""

    type: str
    href: str
    title: str

    @property
    def is_comments(self) -> bool:
        title = self.title.lower()
        return any(word in title for word in _COMMENT_WORDS) or "/comments/" in self.href.lower()


@dataclass(slots=True)
class PageInfo:
    """What discovery needs from an HTML page."""

    generator: str = ""
    links_blogger_feed: bool = False
    alternates: list[AlternateLink] = field(default_factory=list)


def scan_page(body: bytes, content_type: str | None, page_url: str) -> PageInfo:
    """The feed links, generator and Blogger feed link in the first ``SCAN_BYTES`` of a page.

    Runs in time linear in ``SCAN_BYTES`` whatever the page holds.
    """
    text = body[:SCAN_BYTES].decode(_charset(content_type), errors="replace")
    collector = _Collector(URL(page_url))
    for name, attrs in _start_tags(text):
        collector.start_tag(name, attrs)
    return collector.info


def _start_tags(text: str) -> list[tuple[str, dict[str, str]]]:
    """The start tags discovery looks at (``a``, ``base``, ``link``, ``meta``), in order.

    Each step of the loop consumes what its regular expression read, and none of the
    expressions can backtrack further than the whitespace before an attribute's ``=``.
    """
    tags: list[tuple[str, dict[str, str]]] = []
    pos, end = 0, len(text)
    while (opened := _MARKUP.search(text, pos)) is not None:
        kind = opened.group(1)
        if kind == "!--":
            close = text.find("-->", opened.end())
            if close < 0:
                break
            pos = close + 3
            continue
        if kind in ("!", "?"):
            close = text.find(">", opened.end())
            if close < 0:
                break
            pos = close + 1
            continue
        closing = kind == "/"
        name_match = _TAG_NAME.match(text, opened.start() + (2 if closing else 1))
        assert name_match is not None  # the pattern matches the empty string
        name = name_match.group().lower()
        wanted = not closing and name in _WANTED
        attrs: dict[str, str] = {}
        pos = name_match.end()
        while True:
            attribute = _ATTRIBUTE.match(text, pos)
            assert attribute is not None  # every part of the pattern is optional
            pos = attribute.end()
            attr_name = attribute.group(1)
            if attr_name is None:
                break
            if wanted:
                value = attribute.group(2, 3, 4)
                raw = next((v for v in value if v is not None), "")
                attrs[attr_name.lower()] = html.unescape(raw) if "&" in raw else raw
        if pos >= end:
            break  # the page ends inside this tag: ignore it, as a browser would
        pos += 1  # the ">"
        if closing:
            continue
        if wanted:
            tags.append((name, attrs))
        raw_text = _RAW_TEXT.get(name)
        if raw_text is not None:
            close_tag = raw_text.search(text, pos)
            if close_tag is None:
                break
            pos = close_tag.start()
    return tags


class _Collector:
    """Collects feed links and the generator from a page's start tags."""

    def __init__(self, page_url: URL) -> None:
        self.base = page_url
        self.host = page_url.host
        self.info = PageInfo()

    def start_tag(self, tag: str, attr: dict[str, str]) -> None:
        href = attr.get("href", "").strip()
        if tag == "base" and href:
            self.base = self._resolve(href) or self.base
        elif tag == "meta" and attr.get("name", "").lower() == "generator":
            self.info.generator = attr.get("content", "")
        elif tag in ("link", "a") and href:
            resolved = self._resolve(href)
            if resolved is None:
                return
            # Only the site's own feed counts: a blogroll may link to other Blogger blogs.
            if resolved.host == self.host and resolved.path.rstrip("/") == BLOGGER_POSTS_PATH:
                self.info.links_blogger_feed = True
            rels = attr.get("rel", "").lower().split()
            kind = attr.get("type", "").split(";")[0].strip().lower()
            if tag == "link" and "alternate" in rels and kind in FEED_TYPES:
                self.info.alternates.append(
                    AlternateLink(type=kind, href=str(resolved), title=attr.get("title", ""))
                )

    def _resolve(self, href: str) -> URL | None:
        try:
            resolved = self.base.join(URL(href))
        except (ValueError, TypeError):
            return None
        return resolved if resolved.scheme in ("http", "https") else None


def _charset(content_type: str | None) -> str:
    """The charset named in Content-Type if it is a usable text codec, else UTF-8.

    A name Python knows but that cannot decode a page ("charset=idna") counts as none.
    """
    for param in (content_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return python_codec(value.strip().strip("\"'")) or "utf-8"
    return "utf-8"

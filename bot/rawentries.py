"""Each entry's raw facts, byte span and digest, read in one strict streaming pass.

feedparser keeps only the last ``gd:extendedProperty`` of an entry, so
``blogger.contentRemoved`` is read here, from the raw XML, with
``thr:in-reply-to`` and ``link rel="related"``; ids and references are
resolved against ``xml:base`` exactly as feedparser resolves them, so the two
readings of an entry match. Any XML error fails the whole document, so a
truncated body never yields fewer entries.

The same pass notes where each entry element starts and ends in the
document's bytes, and a digest of those bytes together with everything outside
them that could change how they read: the salt the caller gives (the document's
URL, what kind of feed it is), the elements around the entry with their
attributes and namespace declarations, and the base URI in scope.
``bot.selective`` uses the digests to hand feedparser only the entries that are
new or changed.

It is a streaming pass over expat's events, building no tree, with
defusedxml's parser refusing entity declarations and external references:
about a tenth of what feedparser takes for the same document, so skipping
entries pays.
"""

from __future__ import annotations

import collections
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final
from xml.etree.ElementTree import ParseError

import defusedxml
from defusedxml.ElementTree import DefusedXMLParser

# feedparser's own URL joining, so an id resolves here exactly as feedparser resolves it.
from feedparser.urls import _urljoin, make_safe_absolute_uri

from bot.errors import FeedParseError
from bot.rawxml import ATOM_NS, GD_NS, THR_NS

__all__ = ["DIGEST_SIZE", "Mark", "RawEntry", "read_marked", "read_raw_entries"]

DIGEST_SIZE: Final = 16

# Names as expat reports them with namespace processing on: "uri}local".
_ENTRY_NAMES: Final = frozenset(
    {
        f"{ATOM_NS}}}entry",
        "item",  # RSS 0.9x / 2.0
        "http://purl.org/rss/1.0/}item",
        "http://my.netscape.com/rdf/simple/0.9/}item",
    }
)
_ID: Final = f"{ATOM_NS}}}id"
_GUID: Final = "guid"
_LINK: Final = f"{ATOM_NS}}}link"
_IN_REPLY_TO: Final = f"{THR_NS}}}in-reply-to"
_EXTENDED_PROPERTY: Final = f"{GD_NS}}}extendedProperty"
_XML_BASE: Final = "http://www.w3.org/XML/1998/namespace}base"
_CHILD_NAMES: Final = frozenset({_ID, _GUID, _LINK, _IN_REPLY_TO})
_CONTENT_REMOVED: Final = "blogger.contentRemoved"
_CHUNK: Final = 64 * 1024
# Character data nobody reads goes here: a C-level callable, so expat calls no Python for it.
_DISCARD: Final[Callable[[str], None]] = collections.deque[str](maxlen=0).append


@dataclass(frozen=True, slots=True)
class RawEntry:
    """The per-entry facts feedparser loses or mangles, and where the entry lies."""

    id: str | None = None
    removed: bool = False
    in_reply_to_ref: str | None = None
    in_reply_to_href: str | None = None
    related_href: str | None = None
    span: tuple[int, int] | None = None
    """Byte offsets of the entry element, start tag to end tag; None when not certain
    (an empty-element tag, or any entry nested in another)."""
    digest: bytes | None = None
    """Digest of those bytes in their context (see the module docstring); None without a span."""
    context: bytes | None = None
    """What went into the digest before the entry's bytes (salt, elements around, base URI)."""


@dataclass(frozen=True, slots=True)
class Mark:
    """A placeholder processing instruction the pass was asked to note, and where it was."""

    data: str
    context: bytes | None
    """What an entry starting there would have in its digest before its bytes; None when the
    mark is inside an entry (an entry there would nest)."""


def read_raw_entries(
    body: bytes, base_url: str | None = None, *, salt: bytes = b""
) -> tuple[RawEntry, ...]:
    """Parse the whole (repaired, UTF-8) document strictly; each entry's raw facts, in order.

    ``base_url`` is the document's own URL, the base feedparser starts from;
    ``salt`` goes into every digest. Raises FeedParseError on any XML error (a
    truncated body included) and on any entity declaration, so nothing from a
    bad body is ever used.
    """
    return read_marked(body, base_url, salt=salt)[0]


def read_marked(
    body: bytes, base_url: str | None = None, *, salt: bytes = b"", mark: str | None = None
) -> tuple[tuple[RawEntry, ...], tuple[Mark, ...]]:
    """``read_raw_entries``, also noting each processing instruction whose target is ``mark``.

    ``bot.selective`` puts such a mark where it cut out an entry it knows, and
    checks from the marks that each cut was an entry's place in the same context. When
    entries nest no mark is returned: nothing may be cut.
    """
    try:
        scanner = _Scanner(body, base_url or "", salt, mark)
        entries = scanner.run()
        return entries, () if scanner.nested else tuple(scanner.marks)
    except defusedxml.DefusedXmlException as exc:
        raise FeedParseError(
            "The feed uses XML entity or DTD features that are refused for safety."
        ) from exc
    except (ParseError, ValueError, LookupError) as exc:  # LookupError: unknown encoding
        raise FeedParseError(
            f"The feed is not well-formed XML ({exc}); it may be truncated or broken."
        ) from exc


class _NoTree:
    """The parser's target: the scanner sets expat's handlers itself.

    ``data`` is there so that an undefined entity is still an error (the
    parser's default handler looks for it before raising).
    """

    def data(self, text: str) -> None:
        return None

    def close(self) -> None:
        return None


class _Open:
    """An entry element being read, and what has been read of it so far.

    Each fact comes from the first child of its kind, as ``Element.find``
    would pick it; ``removed`` from any descendant.
    """

    __slots__ = (
        "atom_id",
        "children",
        "depth",
        "guid",
        "prefix",
        "related",
        "related_href",
        "removed",
        "reply",
        "reply_href",
        "reply_ref",
        "start",
    )

    def __init__(self, depth: int, start: int, prefix: bytes) -> None:
        self.depth = depth
        self.start = start
        self.prefix = prefix
        self.children = 0
        self.atom_id: tuple[str, str, str] | None = None  # (text, base, isPermaLink)
        self.guid: tuple[str, str, str] | None = None
        self.reply = False
        self.reply_ref: str | None = None
        self.reply_href: str | None = None
        self.related = False
        self.related_href: str | None = None
        self.removed = False


class _Scanner:
    """One document's pass: expat's start and end events, and the text of id elements only.

    The base URI is tracked the way feedparser's ``unknown_starttag`` and
    ``unknown_endtag`` track it (with its quirks: it also honours a bare
    ``base`` attribute, and keeps a child's base when the parent's is empty).
    The handlers are closures over local state: they run for every element of
    every feed, and a closure's variables are quicker to reach than attributes.
    """

    def __init__(self, document: bytes, base_url: str, salt: bytes, mark: str | None) -> None:
        self.document = document
        self.base_url = base_url
        self.found: list[RawEntry] = []
        self.marks: list[Mark] = []
        self.mark = mark
        self.nested = False
        self.xml = DefusedXMLParser(target=_NoTree())
        self.expat = self.xml.parser
        self._install(hashlib.blake2b(salt, digest_size=DIGEST_SIZE).digest())

    def run(self) -> tuple[RawEntry, ...]:
        document = self.document
        try:
            for offset in range(0, len(document), _CHUNK):
                self.xml.feed(document[offset : offset + _CHUNK])
            self.xml.close()
        finally:
            # The handlers and the parser refer to each other: let both go now, not when
            # the cycle collector comes by.
            expat = self.expat
            expat.StartElementHandler = expat.EndElementHandler = None
            expat.StartNamespaceDeclHandler = expat.CharacterDataHandler = None
            expat.ProcessingInstructionHandler = None
        if self.nested:  # spans inside spans: cutting one out is not safe
            return tuple(
                replace(entry, span=None, digest=None, context=None) for entry in self.found
            )
        return tuple(self.found)

    def _install(self, salted: bytes) -> None:
        expat, found = self.expat, self.found
        current = self.base_url
        bases: list[str] = []  # each open element's base; its length is the depth
        joined: dict[tuple[str, str], str] = {}
        last_current, last_joined = "\0", ""  # the last join of a base with itself
        open_entries: list[_Open] = []  # innermost last
        # A digest of the elements around the entries, one per level open outside them.
        outer = [salted]
        declared: list[tuple[str, str]] = []  # namespaces of the element about to start
        text: list[str] | None = None  # an id element's text, while it is read
        text_depth = 0
        text_of = ("", "", "")  # (tag, base, isPermaLink)

        def join(current: str, given: str) -> str:
            key = (current, given)
            result = joined.get(key)
            if result is None:
                if current:
                    result = make_safe_absolute_uri(current, given) or current
                else:
                    result = _urljoin(current, given)
                joined[key] = result
            return result

        def end_text() -> None:
            nonlocal text
            assert text is not None
            value = "".join(text)
            text = None
            expat.CharacterDataHandler = _DISCARD
            name, base, permalink = text_of
            if name == _ID:
                open_entries[-1].atom_id = (value, base, permalink)
            else:
                open_entries[-1].guid = (value, base, permalink)

        def declare(prefix: str | None, uri: str | None) -> None:
            declared.append((prefix or "", uri or ""))

        def start(name: str, attrs: list[str]) -> None:
            nonlocal current, last_current, last_joined, text, text_depth, text_of
            parent_base = current
            given = _base_attribute(attrs) if attrs else None
            if given:
                base = join(current, given)
            elif current is last_current:  # the common case: the parent's base, again
                base = last_joined
            else:
                base = last_joined = join(current, current)
                last_current = current
            current = base
            bases.append(base)
            if text is not None:  # an id element has a child: its text ends here
                end_text()
            if name in _ENTRY_NAMES:
                if open_entries:
                    self.nested = True
                    open_entries[-1].children += 1
                prefix = outer[-1] + parent_base.encode("utf-8", "surrogatepass")
                open_entries.append(_Open(len(bases), expat.CurrentByteIndex, prefix))
                declared.clear()  # declared on the entry: part of its bytes
                return
            if not open_entries:
                context = repr((name, attrs, declared)).encode("utf-8", "surrogatepass")
                outer.append(hashlib.blake2b(outer[-1] + context, digest_size=DIGEST_SIZE).digest())
                declared.clear()
                return
            if declared:
                declared.clear()
            entry = open_entries[-1]
            entry.children += 1
            if name in _CHILD_NAMES:
                if len(bases) != entry.depth + 1:
                    return
                if name in (_ID, _GUID):
                    if (entry.atom_id if name == _ID else entry.guid) is None:
                        text = []
                        text_depth = len(bases)
                        text_of = (name, base, _permalink(attrs))
                        expat.CharacterDataHandler = text.append
                elif name == _IN_REPLY_TO:
                    if not entry.reply:
                        entry.reply = True
                        entry.reply_ref = _resolved(base, _attribute(attrs, "ref"))
                        entry.reply_href = _resolved(base, _attribute(attrs, "href"))
                elif not entry.related:  # a link
                    href = _attribute(attrs, "href")
                    if href and _attribute(attrs, "rel") == "related":
                        entry.related = True
                        entry.related_href = _resolved(base, href)
            elif name == _EXTENDED_PROPERTY and not entry.removed:
                entry.removed = (
                    _attribute(attrs, "name") == _CONTENT_REMOVED
                    and (_attribute(attrs, "value") or "").lower() == "true"
                )

        def end(name: str) -> None:
            nonlocal current
            depth = len(bases)
            if text is not None and depth == text_depth:
                end_text()
            bases.pop()
            if bases and bases[-1]:
                current = bases[-1]
            if not open_entries:
                outer.pop()
            elif open_entries[-1].depth == depth:
                found.append(self._finish(open_entries.pop()))

        def instruction(target: str, data: str) -> None:
            if target == mark:
                context = (
                    None if open_entries else outer[-1] + current.encode("utf-8", "surrogatepass")
                )
                marks.append(Mark(data, context))

        mark, marks = self.mark, self.marks
        if mark is not None:
            expat.ProcessingInstructionHandler = instruction
        expat.StartElementHandler = start
        expat.EndElementHandler = end
        expat.StartNamespaceDeclHandler = declare
        expat.CharacterDataHandler = _DISCARD

    def _finish(self, entry: _Open) -> RawEntry:
        """The entry's facts, and its span and digest when its end tag is certain.

        At an end tag expat's byte index is where ``</`` starts; at an
        empty-element tag it is past the tag. An entry with no child element
        whose bytes end in ``/>`` is taken for the latter (text ending in
        ``/>`` too: it only loses the span).
        """
        document, at = self.document, self.expat.CurrentByteIndex
        span = digest = None
        if (entry.children or document[at - 2 : at] != b"/>") and document.startswith(b"</", at):
            close = document.find(b">", at)
            if close > 0:
                span = (entry.start, close + 1)
                hashed = hashlib.blake2b(entry.prefix, digest_size=DIGEST_SIZE)
                hashed.update(memoryview(document)[entry.start : close + 1])
                digest = hashed.digest()
        return RawEntry(
            id=_entry_id(entry),
            removed=entry.removed,
            in_reply_to_ref=entry.reply_ref,
            in_reply_to_href=entry.reply_href,
            related_href=entry.related_href,
            span=span,
            digest=digest,
            context=entry.prefix if digest is not None else None,
        )


def _entry_id(entry: _Open) -> str | None:
    """The entry's own id (Atom ``id`` or RSS ``guid``), as feedparser reports it.

    feedparser strips it and resolves it against the element's base, except
    an RSS guid marked ``isPermaLink="false"``.
    """
    for found in (entry.atom_id, entry.guid):
        if found is None or not found[0].strip():
            continue
        text, base, permalink = found
        text = text.strip()
        return _urljoin(base or "", text) if permalink == "true" else text
    return None


def _permalink(attrs: list[str]) -> str:
    """``isPermaLink`` (any case), else ``"true"``."""
    for i in range(0, len(attrs), 2):
        if attrs[i].lower() == "ispermalink":
            return attrs[i + 1]
    return "true"


def _base_attribute(attrs: list[str]) -> str | None:
    """``xml:base``, else any attribute named ``base`` (feedparser lower-cases names)."""
    names = attrs[::2]
    if _XML_BASE in names:
        return attrs[2 * names.index(_XML_BASE) + 1]
    for index, name in enumerate(names):
        if name[-1:] in "eE" and name.rpartition("}")[2].lower() == "base":
            return attrs[2 * index + 1]
    return None


def _attribute(attrs: list[str], name: str) -> str | None:
    """The value of the (un-namespaced) attribute ``name``, from expat's flat list."""
    for i in range(0, len(attrs), 2):
        if attrs[i] == name:
            return attrs[i + 1]
    return None


@functools.lru_cache(maxsize=1024)  # in-reply-to names the same few posts again and again
def _resolved(base: str, value: str | None) -> str | None:
    """A stripped, non-empty attribute value resolved against the element's base, or None.

    feedparser resolves ids and link hrefs this way, so a reference resolved here
    matches the id of the entry it names.
    """
    value = (value or "").strip()
    return _urljoin(base or "", value) or None if value else None

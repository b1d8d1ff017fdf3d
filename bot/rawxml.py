"""Everything done to a feed body before, and beside, feedparser.

feedparser is forgiving by design: it recovers from broken XML, parses web
pages, and flattens extension elements into one value per name. Those habits
are wrong for us in a few places, so this module works on the raw bytes:

* it sniffs the body and refuses empty bodies, plain text and web pages with
  a message a moderator understands;
* it refuses DTDs that declare entities (billion laughs, external entities)
  before any parser could expand them;
* it rewrites surrogate character references, which feedparser chokes on;
* it reads ``blogger.contentRemoved``, ``thr:in-reply-to`` and
  ``link rel="related"`` per entry with a namespace-aware, entity-safe parser,
  because feedparser keeps only the last ``gd:extendedProperty`` of an entry;
* it fails on any XML error, so a truncated body never yields fewer entries.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree

from bot.errors import FeedParseError, NotAFeedError

ATOM_NS = "http://www.w3.org/2005/Atom"
THR_NS = "http://purl.org/syndication/thread/1.0"
GD_NS = "http://schemas.google.com/g/2005"

_ENTRY_TAGS = frozenset(
    {
        f"{{{ATOM_NS}}}entry",
        "item",  # RSS 0.9x / 2.0
        "{http://purl.org/rss/1.0/}item",
        "{http://my.netscape.com/rdf/simple/0.9/}item",
    }
)
_ID_TAGS = (f"{{{ATOM_NS}}}id", "guid")
_CONTENT_REMOVED = "blogger.contentRemoved"
_FEED_ROOTS = frozenset({"rss", "feed", "rdf"})
_PAGE_ROOTS = frozenset({"html", "head", "body"})
_HIDDEN_COMMENTS = b"Comments are hidden from the blog."
_SNIFF_BYTES = 1024

_WHITESPACE = b" \t\r\n"
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_ELEMENT_NAME = re.compile(rb"<([A-Za-z_][\w.:-]*)")
_DOCTYPE_NAME = re.compile(rb"<!DOCTYPE\s+([\w.:-]+)", re.IGNORECASE)
_DECLARED_ENCODING = re.compile(rb"""\s*<\?xml[^>]*?encoding\s*=\s*["']([\w.:-]+)""")
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")

# Numeric references in the UTF-16 surrogate range (U+D800-U+DFFF). The decimal
# branch is a superset (55000-57999); the exact range is checked in code.
_SURROGATE_REF = re.compile(rb"&#(?:[xX]0*([dD][89a-fA-F][0-9a-fA-F]{2})|0*(5[5-7]\d{3}));")
_HIGH = range(0xD800, 0xDC00)
_LOW = range(0xDC00, 0xE000)


@dataclass(frozen=True, slots=True)
class _Prolog:
    """What precedes the root element: enough to tell a feed from a page."""

    root: str | None  # qualified name of the first element, if one was reached
    doctype: str | None  # name given in <!DOCTYPE name ...>
    end: int  # offset where the root element starts (or where scanning stopped)


@dataclass(frozen=True, slots=True)
class RawEntry:
    """The per-entry facts feedparser loses or mangles, read from the raw XML."""

    id: str | None = None
    removed: bool = False
    in_reply_to_ref: str | None = None
    in_reply_to_href: str | None = None
    related_href: str | None = None


def looks_like_feed(body: bytes) -> bool:
    """Cheap sniff for feed discovery: is the first element (within 1 KB) rss, feed or RDF?"""
    head = _normalise_head(body[: _SNIFF_BYTES * 2])[:_SNIFF_BYTES]
    root = _read_prolog(head).root
    return root is not None and _local_name(root).lower() in _FEED_ROOTS


def check_document(body: bytes) -> None:
    """Refuse, with a message a moderator can act on, any body that is not a safe feed.

    Empty bodies, plain text (Blogger's "Comments are hidden" notice included),
    web pages and other XML raise NotAFeedError; a DTD declaring entities raises
    FeedParseError. Anything else goes on to the XML parsers.
    """
    head = _normalise_head(body)
    if not head.strip(b"\x00"):
        raise NotAFeedError("The feed URL returned an empty body.")
    if len(head) < 2 * len(_HIDDEN_COMMENTS) and head.rstrip() == _HIDDEN_COMMENTS:
        raise NotAFeedError("The blog hides its comments, so its comments feed cannot be read.")
    if not head.startswith(b"<"):
        raise NotAFeedError("The URL returned plain text, not an RSS or Atom feed.")
    prolog = _read_prolog(head)
    root = _local_name(prolog.root).lower() if prolog.root else None
    if root in _PAGE_ROOTS or (prolog.doctype or "").lower() == "html":
        raise NotAFeedError(
            "The URL returned a web page, not a feed; use the blog's feed URL or its homepage."
        )
    if root is not None and root not in _FEED_ROOTS:
        raise NotAFeedError(f"The URL returned an XML document <{root}>, not an RSS or Atom feed.")
    _refuse_entity_declarations(head, prolog)


def _normalise_head(body: bytes) -> bytes:
    """The body without its byte-order mark and leading whitespace.

    A UTF-16 body is transcoded to UTF-8 so the byte-level sniffing below can
    treat every document alike.
    """
    if body.startswith(_UTF16_BOMS):
        body = body.decode("utf-16", errors="replace").encode("utf-8")
    return body.removeprefix(_UTF8_BOM).lstrip(_WHITESPACE)


def _read_prolog(head: bytes) -> _Prolog:
    """Skip the XML declaration, comments, PIs and DOCTYPE; name the root element.

    ``head`` must already be normalised. Scanning stops early on anything
    unexpected; the XML parser proper reports real syntax errors later.
    """
    pos, doctype = 0, None
    while True:
        pos = _skip_whitespace(head, pos)
        if head.startswith(b"<?", pos):
            pos = _after(head, b"?>", pos)
        elif head.startswith(b"<!--", pos):
            pos = _after(head, b"-->", pos)
        elif head[pos : pos + 9].upper() == b"<!DOCTYPE":
            match = _DOCTYPE_NAME.match(head, pos)
            doctype = match.group(1).decode("ascii", "replace") if match else ""
            pos = _doctype_end(head, pos)
        else:
            break
    match = _ELEMENT_NAME.match(head, pos)
    root = match.group(1).decode("ascii", "replace") if match else None
    return _Prolog(root=root, doctype=doctype, end=pos)


def _refuse_entity_declarations(head: bytes, prolog: _Prolog) -> None:
    """Refuse a DTD that declares entities, before anything can expand them.

    Feeds have no business declaring entities; the ones that do are attacks
    (exponential expansion, or ``SYSTEM`` entities reading local files).
    defusedxml would refuse them too, later; this check gives a clearer message.
    """
    if b"<!ENTITY" in head[: prolog.end]:
        raise FeedParseError(
            "The feed declares XML entities in a DTD, which is refused for safety "
            "(it could expand without limit or read local files)."
        )


def fix_surrogate_references(body: bytes) -> bytes:
    """Rewrite numeric references to UTF-16 surrogates as valid ones.

    Some blogs encode emoji as two references (``&#55357;&#56832;``), which is
    invalid XML and makes feedparser raise UnicodeEncodeError. A high+low pair
    becomes the reference of the real code point; a lone half becomes U+FFFD.
    """
    if b"&#" not in body:
        return body
    refs = [(m, value) for m in _SURROGATE_REF.finditer(body) if (value := _ref_value(m))]
    out: list[bytes] = []
    last, index = 0, 0
    while index < len(refs):
        match, value = refs[index]
        out.append(body[last : match.start()])
        following = refs[index + 1] if index + 1 < len(refs) else None
        if (
            value in _HIGH
            and following is not None
            and following[0].start() == match.end()
            and following[1] in _LOW
        ):
            code = 0x10000 + ((value - 0xD800) << 10) + (following[1] - 0xDC00)
            out.append(b"&#x%X;" % code)
            last, index = following[0].end(), index + 2
        else:
            out.append(b"&#xFFFD;")
            last, index = match.end(), index + 1
    out.append(body[last:])
    return b"".join(out)


def read_raw_entries(body: bytes) -> tuple[RawEntry, ...]:
    """Parse the whole document strictly and return each entry's raw facts, in order.

    Raises FeedParseError on any XML error (a truncated body included) and on
    any entity declaration, so nothing from a bad body is ever used.
    """
    try:
        return _read_any_encoding(body)
    except defusedxml.DefusedXmlException as exc:
        raise FeedParseError(
            "The feed uses XML entity or DTD features that are refused for safety."
        ) from exc
    except (ParseError, ValueError, LookupError) as exc:  # LookupError: unknown encoding
        raise FeedParseError(
            f"The feed is not well-formed XML ({exc}); it may be truncated or broken."
        ) from exc


def _read_any_encoding(body: bytes) -> tuple[RawEntry, ...]:
    """Read the entries, transcoding to UTF-8 when expat cannot take the bytes as they are.

    expat reads no multi-byte legacy charset (GB2312, Shift_JIS, Big5) and
    rejects a body declared UTF-8 that holds Windows-1252 bytes; feedparser
    accepts both (the second with a benign CharacterEncodingOverride). A
    syntax error survives transcoding, so a broken body still fails.
    """
    try:
        return _read_entries(body)
    except defusedxml.DefusedXmlException:
        raise
    except (ParseError, ValueError, LookupError):
        transcoded = _transcode_to_utf8(body)
        if transcoded is None:
            raise
        return _read_entries(transcoded)


def _read_entries(body: bytes) -> tuple[RawEntry, ...]:
    """One strict pass over the document."""
    return tuple(_raw_entry(element) for element in _entry_elements(body))


def _transcode_to_utf8(body: bytes) -> bytes | None:
    """The body as UTF-8 without its XML declaration, or None when that changes nothing.

    The declared charset is tried first (GB2312/GBK as their superset GB18030,
    as feedparser does), then UTF-8, Windows-1252 and Latin-1, feedparser's
    fallbacks (UTF-8 matters when the declared name is unknown: ``TTF-8``).
    """
    if body.startswith(_UTF16_BOMS):
        return None
    body = body.removeprefix(_UTF8_BOM)
    match = _DECLARED_ENCODING.match(body)
    declared = match.group(1).decode("ascii").lower() if match else "utf-8"
    declared = "gb18030" if declared in ("gb2312", "gbk") else declared
    for codec in (declared, "utf-8", "windows-1252", "latin-1"):
        try:
            text = body.decode(codec)
        except (LookupError, UnicodeDecodeError):
            continue
        if codec in ("utf-8", "utf8") and declared in ("utf-8", "utf8"):
            return None  # valid UTF-8 as declared: the error was not about the charset
        return _XML_DECLARATION.sub("", text, count=1).encode("utf-8")
    return None


def _entry_elements(body: bytes) -> Iterator[Element]:
    """Yield each completed entry/item element, freeing it after use."""
    events = defusedxml.ElementTree.iterparse(io.BytesIO(body), events=("end",))
    for _event, element in events:
        if element.tag in _ENTRY_TAGS:
            yield element
            element.clear()


def _raw_entry(element: Element) -> RawEntry:
    """Pick the facts we need out of one entry element."""
    reply = element.find(f"{{{THR_NS}}}in-reply-to")
    return RawEntry(
        id=_entry_id(element),
        removed=_is_removed(element),
        in_reply_to_ref=_attr(reply, "ref"),
        in_reply_to_href=_attr(reply, "href"),
        related_href=_related_href(element),
    )


def _entry_id(element: Element) -> str | None:
    """The entry's own id (Atom ``id`` or RSS ``guid``), stripped like feedparser does."""
    for tag in _ID_TAGS:
        child = element.find(tag)
        if child is not None and child.text and child.text.strip():
            return child.text.strip()
    return None


def _is_removed(element: Element) -> bool:
    """True when Blogger marks the entry with ``blogger.contentRemoved = true``."""
    return any(
        prop.get("name") == _CONTENT_REMOVED and (prop.get("value") or "").lower() == "true"
        for prop in element.iter(f"{{{GD_NS}}}extendedProperty")
    )


def _related_href(element: Element) -> str | None:
    """The ``href`` of the entry's ``link rel="related"`` (Blogger: the parent comment)."""
    for link in element.findall(f"{{{ATOM_NS}}}link"):
        if link.get("rel") == "related" and link.get("href"):
            return link.get("href")
    return None


def _attr(element: Element | None, name: str) -> str | None:
    """A stripped, non-empty attribute value, or None."""
    if element is None:
        return None
    value = (element.get(name) or "").strip()
    return value or None


def _ref_value(match: re.Match[bytes]) -> int | None:
    """The code point of a candidate surrogate reference, or None if outside the range."""
    hex_digits, decimal = match.groups()
    value = int(hex_digits, 16) if hex_digits else int(decimal)
    return value if value in _HIGH or value in _LOW else None


def _skip_whitespace(data: bytes, pos: int) -> int:
    """The first offset at or after ``pos`` that is not XML whitespace."""
    while pos < len(data) and data[pos] in _WHITESPACE:
        pos += 1
    return pos


def _after(data: bytes, terminator: bytes, pos: int) -> int:
    """The offset just past ``terminator``, or the end of data when it is missing."""
    found = data.find(terminator, pos)
    return len(data) if found < 0 else found + len(terminator)


def _doctype_end(data: bytes, pos: int) -> int:
    """The offset just past a DOCTYPE declaration, internal subset included."""
    close = data.find(b">", pos)
    subset = data.find(b"[", pos)
    if subset < 0 or (0 <= close < subset):
        return len(data) if close < 0 else close + 1
    subset_end = data.find(b"]", subset)
    if subset_end < 0:
        return len(data)
    return _after(data, b">", subset_end)


def _local_name(qualified: str) -> str:
    """``rdf:RDF`` -> ``RDF``."""
    return qualified.rpartition(":")[2]

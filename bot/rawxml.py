"""Everything done to a feed body before, and beside, feedparser.

feedparser is forgiving by design: it recovers from broken XML, parses web
pages, and flattens extension elements into one value per name. Those habits
are wrong for us in a few places, so this module works on the raw bytes:

* it sniffs the decoded text and refuses empty bodies, plain text and web
  pages with a message a moderator understands (a DOCTYPE, even XHTML's, does
  not make a page of a document whose root is ``<rss>`` or ``<feed>``);
* it refuses DTDs that declare entities (billion laughs, external entities)
  before any parser could expand them;
* ``bot.rawentries`` then reads each entry's raw facts (``blogger.contentRemoved``,
  ``thr:in-reply-to``, ``link rel="related"``) with a namespace-aware,
  entity-safe parser, and fails on any XML error, so a truncated body never
  yields fewer entries.

Repairs of sloppy text (undeclared HTML entities, invalid characters) happen
before, in ``bot.xmlrepair``; decoding, in ``bot.charset``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.charset import decode_document
from bot.errors import FeedParseError, NotAFeedError

ATOM_NS = "http://www.w3.org/2005/Atom"
THR_NS = "http://purl.org/syndication/thread/1.0"
GD_NS = "http://schemas.google.com/g/2005"

_FEED_ROOTS = frozenset({"rss", "feed", "rdf"})
_PAGE_ROOTS = frozenset({"html", "head", "body"})
_HIDDEN_COMMENTS = "Comments are hidden from the blog."
_SNIFF_CHARS = 1024

_WHITESPACE = " \t\r\n"
_ELEMENT_NAME = re.compile(r"<([A-Za-z_][\w.:-]*)")
_ELEMENT_START = re.compile(r"<[A-Za-z_]")
_DOCTYPE_NAME = re.compile(r"<!DOCTYPE\s+([\w.:-]+)", re.IGNORECASE)
_JSON_FEED = re.compile(r'\{.*"version"\s*:\s*"https://jsonfeed\.org/version/', re.DOTALL)


@dataclass(frozen=True, slots=True)
class Prolog:
    """What precedes the root element: enough to tell a feed from a page."""

    root: str | None  # qualified name of the first element, if one was reached
    doctype: str | None  # name given in <!DOCTYPE name ...>
    end: int  # offset where the root element starts (or where scanning stopped)


def looks_like_feed(body: bytes) -> bool:
    """Cheap sniff for feed discovery: an rss/feed/RDF root, or a JSON Feed, in the first KB.

    A JSON Feed is a JSON object whose ``version`` is a jsonfeed.org URL.
    """
    head = decode_document(body[: _SNIFF_CHARS * 4]).lstrip(_WHITESPACE)[:_SNIFF_CHARS]
    if head.startswith("{"):
        return _JSON_FEED.match(head) is not None
    root = read_prolog(head).root
    return root is not None and _local_name(root).lower() in _FEED_ROOTS


def check_document(text: str) -> Prolog:
    """Refuse, with a message a moderator can act on, any document that is not a safe feed.

    ``text`` is the decoded body. Empty bodies, plain text (Blogger's "Comments
    are hidden" notice included), web pages and other XML raise NotAFeedError;
    a DTD declaring entities raises FeedParseError. Returns the prolog of what
    goes on to the XML parsers.
    """
    head = text.lstrip(_WHITESPACE)
    if not head.strip("\x00" + _WHITESPACE):
        raise NotAFeedError("The feed URL returned an empty body.")
    if len(head) < 2 * len(_HIDDEN_COMMENTS) and head.rstrip() == _HIDDEN_COMMENTS:
        raise NotAFeedError("The blog hides its comments, so its comments feed cannot be read.")
    if not head.startswith("<"):
        raise NotAFeedError("The URL returned plain text, not an RSS or Atom feed.")
    prolog = read_prolog(text)
    root = _local_name(prolog.root).lower() if prolog.root else None
    # The root decides: an XHTML DOCTYPE on <rss> is sloppy, not a page.
    if root in _PAGE_ROOTS or (
        (prolog.doctype or "").lower() == "html" and root not in _FEED_ROOTS
    ):
        raise NotAFeedError(
            "The URL returned a web page, not a feed; use the blog's feed URL or its homepage."
        )
    if root is not None and root not in _FEED_ROOTS:
        raise NotAFeedError(f"The URL returned an XML document <{root}>, not an RSS or Atom feed.")
    _refuse_entity_declarations(text, prolog)
    return prolog


def read_prolog(text: str) -> Prolog:
    """Skip the XML declaration, comments, PIs and DOCTYPE; name the root element.

    Scanning stops early on anything unexpected; the XML parser proper reports
    real syntax errors later. Every step moves forward with ``str.find``, so
    the scan is linear however the prolog is built.
    """
    pos, doctype = 0, None
    while True:
        pos = _skip_whitespace(text, pos)
        if text.startswith("<?", pos):
            pos = _after(text, "?>", pos)
        elif text.startswith("<!--", pos):
            pos = _after(text, "-->", pos)
        elif text[pos : pos + 9].upper() == "<!DOCTYPE":
            match = _DOCTYPE_NAME.match(text, pos)
            doctype = match.group(1) if match else ""
            pos = _doctype_end(text, pos)
        else:
            break
    match = _ELEMENT_NAME.match(text, pos)
    root = match.group(1) if match else None
    return Prolog(root=root, doctype=doctype, end=pos)


def _refuse_entity_declarations(text: str, prolog: Prolog) -> None:
    """Refuse a DTD that declares entities, before anything can expand them.

    Feeds have no business declaring entities; the ones that do are attacks
    (exponential expansion, or ``SYSTEM`` entities reading local files).
    This check matters: ``bot.xmlrepair`` drops the prolog it covers, and would
    turn the references to a dropped entity into text. Whatever follows the
    prolog stays in the document, where defusedxml refuses any DTD feature.
    """
    end = prolog.end
    if prolog.root is None:  # the scan stopped early (a "]" in a comment): look on
        match = _ELEMENT_START.search(text, end)
        end = match.start() if match else len(text)
    if "<!ENTITY" in text[:end]:
        raise FeedParseError(
            "The feed declares XML entities in a DTD, which is refused for safety "
            "(it could expand without limit or read local files)."
        )


def _skip_whitespace(data: str, pos: int) -> int:
    """The first offset at or after ``pos`` that is not XML whitespace."""
    while pos < len(data) and data[pos] in _WHITESPACE:
        pos += 1
    return pos


def _after(data: str, terminator: str, pos: int) -> int:
    """The offset just past ``terminator``, or the end of data when it is missing."""
    found = data.find(terminator, pos)
    return len(data) if found < 0 else found + len(terminator)


def _doctype_end(data: str, pos: int) -> int:
    """The offset just past a DOCTYPE declaration, internal subset included."""
    close = data.find(">", pos)
    subset = data.find("[", pos)
    if subset < 0 or (0 <= close < subset):
        return len(data) if close < 0 else close + 1
    subset_end = data.find("]", subset)
    if subset_end < 0:
        return len(data)
    return _after(data, ">", subset_end)


def _local_name(qualified: str) -> str:
    """``rdf:RDF`` -> ``RDF``."""
    return qualified.rpartition(":")[2]

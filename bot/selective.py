"""A changed page costs what changed: feedparser reads only the entries that are new or changed.

A Blogger comments page holds the 25 newest comments; when one is added, 24
are entries the bot has already recorded, byte for byte. feedparser (about a
millisecond or two per entry) stays the normaliser of every entry the bot
uses, but it no longer reads those 24 again:

1. The strict raw pass (``bot.rawentries``) already reads every entry. It also
   notes each entry element's byte span and a 16-byte digest of its bytes in
   their context (the URL, the kind of feed, the elements around the entry
   with their namespaces, the base URI in scope).
2. After a body's entries are recorded, the ingestion service stores, beside
   that URL's HTTP validators, the feed's dialect and the digests of the
   entries it recorded (:class:`KnownEntries`, about 16 bytes an entry, one
   row per URL: nothing stays in memory between polls). An entry it did not
   record (a comment of an article that is not mirrored) is not remembered,
   so it is read again, and recorded, once its article is.
3. The next changed body of that URL is parsed with those digests
   (:func:`select`): entries whose digest is known are cut out of the
   document, and feedparser reads the feed head (title, links, ``rel=next``,
   hub), everything between the entries and the new or changed entries only.
   The result lists the ids of the entries cut out as ``unchanged``: present,
   already recorded, with nothing new to say. They are known ground for
   paging, and never taken for entries that are gone.

Everything that could change how an entry reads is in its digest, and an
edited comment, a comment marked ``blogger.contentRemoved`` or a changed
article changes its bytes, so it is read again. The cut is not trusted, and
the whole document is parsed as before, when an entry lacks an id of its own
or two share one (feedparser's choice of id and of the first duplicate could
differ from the cut's), when entries nest or one is an empty-element tag, when
feedparser's reading of the cut document disagrees with the raw pass (another
number of entries, an id of a cut entry, another dialect), and on the first
poll of a subscription (its backfill ranks every article). JSON Feeds are
always read whole: they cost little.

The raw pass itself need not read the known entries either
(:func:`select_before_reading`): with the ids stored beside the digests, and the
context the entries shared, known entries are found by their tags and cut
before the strict pass, each leaving a placeholder the pass must meet in that
context, outside any entry; if any check fails, the whole document goes through
the raw pass and :func:`select` as before.

Costs: the raw pass reads the head and the new or changed entries (the whole
document when the early cut is refused: about a tenth of feedparser's time),
cutting is a byte join, and a stored entry is its 16-byte digest and its id.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from bot.errors import FeedParseError
from bot.models import Dialect, ParsedFeed
from bot.rawentries import DIGEST_SIZE, RawEntry, read_marked

__all__ = [
    "KnownEntries",
    "Selection",
    "agrees",
    "entry_salt",
    "remember",
    "select",
    "select_before_reading",
]

_FORMAT: Final = 2  # 1 held digests only
_LENGTH: Final = struct.Struct("!H")
# Where an entry element may start: an Atom entry or an RSS item, with or without a prefix.
_ENTRY_START: Final = re.compile(rb"<((?:[A-Za-z_][\w.-]*:)?(?:entry|item))[\s>]")
_END_TAG_REST: Final = re.compile(rb"\s*>")
_LENGTH_LIMIT: Final = 0xFFFF
_MAX_ID: Final = _LENGTH_LIMIT // 4  # characters: at most 4 bytes each in UTF-8


@dataclass(frozen=True, slots=True)
class KnownEntries:
    """What the last recorded body of one URL held: its dialect, its entries' digests and ids.

    ``context`` is what every one of those digests holds before the entry's bytes, when
    they all share it (the usual case: entries side by side in one feed element); with it
    the next body's entries can be found and checked before the strict pass reads it.
    """

    dialect: Dialect
    ids: Mapping[bytes, str]  # digest -> entry id
    context: bytes | None = None

    def encode(self) -> bytes:
        """Format byte, dialect and context (each with its length), then digest, id length, id."""
        name = self.dialect.value.encode("ascii")
        context = self.context or b""
        parts = [bytes((_FORMAT, len(name))), name, _LENGTH.pack(len(context)), context]
        for digest, entry_id in sorted(self.ids.items()):
            encoded = entry_id.encode("utf-8", "surrogatepass")
            parts += (digest, _LENGTH.pack(len(encoded)), encoded)
        return b"".join(parts)

    @classmethod
    def decode(cls, blob: bytes | None) -> KnownEntries | None:
        """The stored value read back; None for nothing, another format or a damaged value."""
        if not blob or len(blob) < 2 or blob[0] != _FORMAT:
            return None
        end = 2 + blob[1]
        try:
            dialect = Dialect(blob[2:end].decode("ascii"))
            (size,) = _LENGTH.unpack_from(blob, end)
            position = end + _LENGTH.size + size
            context = blob[end + _LENGTH.size : position] or None
            ids: dict[bytes, str] = {}
            while position < len(blob):
                digest = blob[position : position + DIGEST_SIZE]
                (size,) = _LENGTH.unpack_from(blob, position + DIGEST_SIZE)
                start = position + DIGEST_SIZE + _LENGTH.size
                position = start + size
                if len(digest) != DIGEST_SIZE or position > len(blob):
                    return None
                ids[digest] = blob[start:position].decode("utf-8", "surrogatepass")
        except (UnicodeDecodeError, ValueError, struct.error):
            return None
        return cls(dialect, ids, context)


def entry_salt(url: str, kind: str | None, article_id: str | None) -> bytes:
    """What goes into every entry digest of one document besides its bytes.

    The same bytes read from another URL (relative links), as another kind of
    feed or for another article (a per-post comments feed) make other entries.
    """
    return "\0".join((url, kind or "", article_id or "")).encode("utf-8", "surrogatepass")


@dataclass(frozen=True, slots=True)
class Selection:
    """A document with its known, unchanged entries cut out."""

    document: bytes
    kept: tuple[RawEntry, ...]  # the entries still in it, in order
    left_out: tuple[RawEntry, ...]  # each with an id and a digest


def select(
    document: bytes, raw_entries: Sequence[RawEntry], known: KnownEntries
) -> Selection | None:
    """Cut the entries whose digest is known out of ``document``; None when not worth it or trusted.

    ``raw_entries`` is the raw pass over ``document``, in document order.
    """
    ids = [raw.id for raw in raw_entries]
    if None in ids or len(set(ids)) != len(ids):
        return None  # feedparser decides these entries' identity: read them all
    left_out = tuple(raw for raw in raw_entries if raw.digest in known.ids)
    if not left_out:
        return None
    pieces: list[bytes] = []
    position = 0
    for raw in left_out:
        assert raw.span is not None  # a digest comes with a span
        start, end = raw.span
        if start < position:
            return None  # out of order or overlapping: never for entries that do not nest
        pieces.append(document[position:start])
        position = end
    pieces.append(document[position:])
    kept = tuple(raw for raw in raw_entries if raw.digest not in known.ids)
    return Selection(b"".join(pieces), kept, left_out)


def select_before_reading(
    document: bytes, known: KnownEntries, base_url: str | None, salt: bytes
) -> tuple[Selection, int] | None:
    """Cut the known entries out of ``document`` before the strict pass reads it.

    The strict pass costs a few microseconds an element, most of them in entries
    that come again. Here the entries are found by their tags alone and an entry
    is cut when its bytes, digested in the context the last body's entries shared,
    are known. Finding by tags is not trusted: each cut leaves a processing
    instruction with an unguessable target, and the strict pass over what is left
    must meet every one, in order, outside any entry and in that very context (not
    in a comment, a CDATA section or another entry). So a cut is exactly a known
    entry element, byte for byte in the same context: recorded before, well-formed.
    Returns the selection and how many entries the document holds; None when
    nothing could be cut or any check fails (the caller reads the whole document).
    """
    context = known.context
    if context is None:
        return None
    target = f"blogmirror-cut-{secrets.token_hex(8)}"
    plain: list[bytes] = []
    marked: list[bytes] = []
    left_out: list[RawEntry] = []
    position = search_from = 0
    while (start_tag := _ENTRY_START.search(document, search_from)) is not None:
        name = start_tag.group(1)
        close = document.find(b"</" + name, start_tag.end())
        if close < 0:
            break
        rest = _END_TAG_REST.match(document, close + 2 + len(name))
        if rest is None:
            search_from = start_tag.end()
            continue
        start, end = start_tag.start(), rest.end()
        search_from = end
        hashed = hashlib.blake2b(context, digest_size=DIGEST_SIZE)
        hashed.update(memoryview(document)[start:end])
        digest = hashed.digest()
        entry_id = known.ids.get(digest)
        if entry_id is None:
            continue
        piece = document[position:start]
        plain.append(piece)
        marked += (piece, f"<?{target} {len(left_out)}?>".encode("ascii"))
        left_out.append(RawEntry(id=entry_id, digest=digest, context=context))
        position = end
    if not left_out:
        return None
    plain.append(document[position:])
    marked.append(document[position:])
    try:
        kept, marks = read_marked(b"".join(marked), base_url, salt=salt, mark=target)
    except FeedParseError:
        return None  # the whole document says what is wrong
    if [(m.data, m.context) for m in marks] != [(str(i), context) for i in range(len(left_out))]:
        return None
    ids = [raw.id for raw in kept] + [raw.id for raw in left_out]
    if None in ids or len(set(ids)) != len(ids):
        return None  # feedparser decides these entries' identity: read them all
    return Selection(b"".join(plain), kept, tuple(left_out)), len(ids)


def agrees(feed: ParsedFeed, selection: Selection, known: KnownEntries) -> bool:
    """Whether feedparser's reading of the cut document matches the raw pass and the last body."""
    left_out = {raw.id for raw in selection.left_out}
    ids = [article.id for article in feed.articles] + [comment.id for comment in feed.comments]
    return (
        feed.dialect is known.dialect
        and feed.normalised == len(selection.kept)
        and not any(entry_id in left_out for entry_id in ids)
    )


def remember(feed: ParsedFeed, recorded: Collection[str]) -> bytes | None:
    """What to store for the next body of this URL: the digests of the entries ``recorded``.

    ``recorded`` names the entries of ``feed`` that storage now holds as this
    body gave them (and the unchanged ones, which it held already).
    """
    ids = {d: entry_id for entry_id, d in feed.digests.items() if entry_id in recorded}
    ids = {d: entry_id for d, entry_id in ids.items() if len(entry_id) <= _MAX_ID}
    if not ids:
        return None
    context = feed.digest_context
    if context is not None and len(context) > _LENGTH_LIMIT:
        context = None
    return KnownEntries(feed.dialect, ids, context).encode()

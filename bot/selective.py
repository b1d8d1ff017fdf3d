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

Costs: the raw pass reads the whole document (about a tenth of feedparser's
time), cutting is a byte join, and a stored digest is 16 bytes.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

from bot.models import Dialect, ParsedFeed
from bot.rawentries import DIGEST_SIZE, RawEntry

__all__ = ["KnownEntries", "Selection", "agrees", "entry_salt", "remember", "select"]

_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class KnownEntries:
    """What the last recorded body of one URL held: its dialect and the digests of its entries."""

    dialect: Dialect
    digests: frozenset[bytes]

    def encode(self) -> bytes:
        """Format byte, dialect (length and name), then the digests end to end."""
        name = self.dialect.value.encode("ascii")
        return bytes((_FORMAT, len(name))) + name + b"".join(sorted(self.digests))

    @classmethod
    def decode(cls, blob: bytes | None) -> KnownEntries | None:
        """The stored value read back; None for nothing, another format or a damaged value."""
        if not blob or len(blob) < 2 or blob[0] != _FORMAT:
            return None
        end = 2 + blob[1]
        try:
            dialect = Dialect(blob[2:end].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
        body = blob[end:]
        if len(body) % DIGEST_SIZE:
            return None
        digests = frozenset(body[i : i + DIGEST_SIZE] for i in range(0, len(body), DIGEST_SIZE))
        return cls(dialect, digests)


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
    left_out = tuple(raw for raw in raw_entries if raw.digest in known.digests)
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
    kept = tuple(raw for raw in raw_entries if raw.digest not in known.digests)
    return Selection(b"".join(pieces), kept, left_out)


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
    digests = frozenset(d for entry_id, d in feed.digests.items() if entry_id in recorded)
    if not digests:
        return None
    return KnownEntries(feed.dialect, digests).encode()

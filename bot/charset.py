"""Bytes to text, for feeds and pages that say their encoding wrongly or not at all.

A feed is read the way a browser would read it: a byte-order mark wins; UTF-16
and UTF-32 are recognised by the zero bytes around the first ``<`` even without
one; then the declared charset, unless the body is valid UTF-8 (the commonest
lie is a template's ``iso-8859-1`` or ``windows-1252`` over UTF-8 text); then
UTF-8; and a body that is none of these is handed to charset-normalizer.

Charset names from the document or a header are looked up among the encodings
charset-normalizer supports, so a name that is not a text encoding (``idna``,
``rot13``, ``base64``, ``x-nonsense``) is ignored rather than raising, and a
name that is a security hazard (UTF-7) is ignored too. Decoding never raises.
"""

from __future__ import annotations

import codecs
import re

import charset_normalizer
from charset_normalizer.constant import IANA_SUPPORTED

__all__ = ["decode_document", "python_codec"]

_BOMS = (  # UTF-32 first: its little-endian BOM begins with UTF-16's
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
)
# Without a BOM, the first "<" (after any whitespace) in each wide encoding (XML 1.0, app. F).
_WIDE = (
    (re.compile(rb"(?:\x00\x00\x00[ \t\r\n])*\x00\x00\x00<"), "utf-32-be"),
    (re.compile(rb"(?:[ \t\r\n]\x00\x00\x00)*<\x00\x00\x00"), "utf-32-le"),
    (re.compile(rb"(?:\x00[ \t\r\n])*\x00<\x00[^\x00]"), "utf-16-be"),
    (re.compile(rb"(?:[ \t\r\n]\x00)*<\x00[^\x00]\x00"), "utf-16-le"),
)
_WIDE_SNIFF = 64
_DECLARATION = re.compile(
    rb"""[ \t\r\n]*<\?xml[ \t\r\n][^>]{0,200}?encoding[ \t\r\n]*=[ \t\r\n]*["']([^"'>]{1,40})["']"""
)
_SUPPORTED = frozenset(IANA_SUPPORTED) - {"utf_7"}  # UTF-7 smuggles markup past filters
# A superset read by its superset, as feedparser and browsers do.
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "latin_1": "cp1252", "ascii": "cp1252"}
# What the detector sees: the non-ASCII bytes with a little context, not the markup.
_NON_ASCII = re.compile(rb"[\x80-\xff]+")
_CONTEXT_BYTES = 40
_SAMPLE_BYTES = 64 * 1024
_FALLBACK = "cp1252"


def decode_document(body: bytes) -> str:
    """The feed's text, without its byte-order mark; never raises."""
    for bom, codec in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(codec, errors="replace")
    head = body[:_WIDE_SNIFF]
    for pattern, codec in _WIDE:
        if pattern.match(head):
            return body.decode(codec, errors="replace")
    return _decode_ascii_compatible(body, _declared_charset(body))


def _declared_charset(body: bytes) -> str | None:
    """The Python codec for the XML declaration's ``encoding``, if it names a usable one."""
    match = _DECLARATION.match(body)
    return python_codec(match.group(1).decode("latin-1")) if match else None


def python_codec(label: str) -> str | None:
    """The codec for a charset label, or None when Python lacks it or it is not text."""
    try:
        name = codecs.lookup(label.strip()).name.replace("-", "_")
    except (LookupError, ValueError):  # ValueError: a label holding a NUL
        return None
    name = {"iso8859_1": "latin_1", "us_ascii": "ascii"}.get(name, name)
    name = _SUPERSETS.get(name, name)
    return name if name in _SUPPORTED else None


def _decode_ascii_compatible(body: bytes, declared: str | None) -> str:
    """Declared charset, UTF-8, then detection; the first that reads the whole body."""
    if declared is not None and not _ascii_compatible(declared):
        declared = None  # "UTF-16" declared in single bytes: the declaration is wrong
    if body.isascii():
        # Any ASCII-compatible charset reads this alike; 7-bit ones (ISO-2022-JP) differ.
        return _strict(body, declared) or body.decode("ascii")
    utf8 = _strict(body, "utf_8")
    if utf8 is not None:
        return utf8
    if declared is not None and declared != "utf_8":
        text = _strict(body, declared)
        if text is not None:
            return text
    if _mostly_utf8(body):
        return body.decode("utf-8", errors="replace")
    return body.decode(_detect(body), errors="replace")


def _ascii_compatible(codec: str) -> bool:
    """True when the codec writes markup as ASCII does (not UTF-16, UTF-32, EBCDIC)."""
    try:
        return "<?xml a='1'?>".encode(codec) == b"<?xml a='1'?>"
    except (UnicodeError, LookupError):
        return False


def _strict(body: bytes, codec: str | None) -> str | None:
    """``body`` decoded, or None if ``codec`` is missing or does not fit the bytes.

    Windows-1252 leaves five bytes undefined; a body using them is read as
    Latin-1, the charset it usually stands in for.
    """
    for name in (codec, "latin_1") if codec == "cp1252" else (codec,):
        if name is None:
            return None
        try:
            return body.decode(name)
        except (UnicodeError, LookupError):
            continue
    return None


def _mostly_utf8(body: bytes) -> bool:
    """UTF-8 with a few broken sequences: more good multi-byte characters than bad bytes.

    A browser shows such a page as UTF-8 with a few U+FFFD; guessing a legacy
    charset for the whole of it would garble every good character instead.
    """
    text = body.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - body.count("\ufffd".encode())
    non_ascii = len(text) - len(text.encode("ascii", errors="ignore"))
    return non_ascii - bad > bad


def _detect(body: bytes) -> str:
    """charset-normalizer's reading of the document's non-ASCII text.

    The detector sees the text runs that hold non-ASCII bytes (markup tells it
    nothing). Where it rates Windows-1252, the web's default legacy charset and
    feedparser's own fallback, as clean as its first pick, Windows-1252 wins the tie.
    """
    pieces: list[bytes] = []
    size, end = 0, 0
    for match in _NON_ASCII.finditer(body):
        start = max(end, match.start() - _CONTEXT_BYTES)
        end = match.end() + _CONTEXT_BYTES
        pieces.append(body[start:end])
        size += end - start
        if size >= _SAMPLE_BYTES:
            break
    matches = charset_normalizer.from_bytes(b"".join(pieces)[:_SAMPLE_BYTES])
    best = matches.best()
    if best is None:
        return _FALLBACK
    if any(_FALLBACK in m.could_be_from_charset and m.chaos <= best.chaos for m in matches):
        return _FALLBACK
    return str(best.encoding)

"""Sloppy feed text made into clean UTF-8 XML that both parsers read alike.

Browsers read feeds that XML parsers refuse, and blogs publish them: HTML named
entities the XML never declares (``&nbsp;``, ``&eacute;``), control characters
and references to them (``&#1;``), references to UTF-16 surrogates
(``&#55357;&#56832;`` for one emoji), ``&#X41;`` with a capital X. Each is
rewritten to what a browser shows, so the strict reader (``bot.rawxml``) and
feedparser see one well-formed document and agree on it.

The prolog (declaration, comments, processing instructions, DOCTYPE) is
replaced by a plain UTF-8 declaration and a line break: the text has been
decoded already, a DOCTYPE that declares entities has been refused already,
and feedparser's encoding regex backtracks in cubic time over a long first
line, so it must only ever see this short one.

Every pass here is linear: sections are skipped with ``str.find`` and every
pattern matches without backtracking over unbounded input.
"""

from __future__ import annotations

import re
from html.entities import html5

__all__ = ["repair_document"]

DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'

# Characters XML 1.0 forbids, raw (lone surrogates included).
_INVALID_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]+")
# The same control characters as UTF-8 bytes (each is one byte, never part of another).
_CONTROL_BYTES = bytes(c for c in range(0x20) if c not in (0x9, 0xA, 0xD))
# Sections whose text is not markup: no reference is read inside them.
_SECTION = re.compile(r"<!\[CDATA\[|<!--|<\?")
_SECTION_END = {"<![CDATA[": "]]>", "<!--": "-->", "<?": "?>"}
# Named references other than the five XML predefines.
_NAMED_REF = re.compile(r"&(?!(?:amp|lt|gt|quot|apos);)([A-Za-z][A-Za-z0-9]*);")
_NUMERIC_REF = re.compile(r"&#(?:[xX]([0-9a-fA-F]+)|([0-9]+));")
_HIGH = range(0xD800, 0xDC00)
_LOW = range(0xDC00, 0xE000)
_MAX_DIGITS = 8  # beyond U+10FFFF in any base; longer runs are not parsed as numbers


def repair_document(text: str, root_offset: int) -> bytes:
    """The document from its root element on, repaired, as UTF-8 with a fresh declaration.

    ``root_offset`` is where the prolog ends (``rawxml.Prolog.end``).
    """
    body = _drop_invalid_characters(text[root_offset:])
    body = _numeric_references(_named_references(body))
    return (DECLARATION + body).encode("utf-8")


def _drop_invalid_characters(text: str) -> str:
    """``text`` without the characters XML 1.0 forbids.

    The regular expression costs about 15 ns a character; most documents hold no
    such character, which their UTF-8 bytes show some ten times faster: no
    control byte, and no lead bytes of the surrogates or of U+FFFE/U+FFFF (a
    Hangul syllable or a half-width form shares them and takes the slow path).
    """
    raw = text.encode("utf-8", "surrogatepass")
    if (
        len(raw.translate(None, _CONTROL_BYTES)) == len(raw)
        and b"\xed" not in raw
        and b"\xef\xbf" not in raw
    ):
        return text
    return _INVALID_CHARS.sub("", text)


def _named_references(text: str) -> str:
    """``&nbsp;`` and every other HTML5 entity become character references.

    A name HTML does not know either is kept as the text it is (``&amp;name;``),
    which is what a browser shows. CDATA sections, comments and processing
    instructions are copied as they are.
    """
    if "&" not in text:
        return text
    out: list[str] = []
    pos = 0
    while pos < len(text):
        match = _SECTION.search(text, pos)
        start = match.start() if match else len(text)
        out.append(_NAMED_REF.sub(_named_reference, text[pos:start]))
        if match is None:
            break
        close = text.find(_SECTION_END[match.group()], match.end())
        end = len(text) if close < 0 else close + len(_SECTION_END[match.group()])
        out.append(text[start:end])
        pos = end
    return "".join(out)


def _named_reference(match: re.Match[str]) -> str:
    name = match.group(1)
    characters = html5.get(f"{name};")
    if characters is None:
        return f"&amp;{name};"
    return "".join(f"&#{ord(c)};" for c in characters)


def _numeric_references(text: str) -> str:
    """Drop references to characters XML forbids; join surrogate pairs.

    A high and a low surrogate written as two references (``&#55357;&#56832;``)
    become the one character they encode; a lone half becomes U+FFFD, so the
    reader still sees that something was there. Valid references are left as
    written.
    """
    if "&#" not in text:
        return text
    out: list[str] = []
    last = 0
    high: tuple[re.Match[str], int] | None = None  # a high surrogate awaiting its low half
    for match in _NUMERIC_REF.finditer(text):
        value = _code_point(match)
        if high is not None:
            high_match, high_value = high
            high = None
            out.append(text[last : high_match.start()])
            if value in _LOW and high_match.end() == match.start():
                out.append(_reference(0x10000 + ((high_value - 0xD800) << 10) + value - 0xDC00))
                last = match.end()
                continue
            out.append(_reference(0xFFFD))
            last = high_match.end()
        if value in _HIGH:
            high = (match, value)
        elif value in _LOW or not _is_xml_char(value) or match.group().startswith("&#X"):
            out.append(text[last : match.start()])
            out.append(_reference(0xFFFD if value in _LOW else value))
            last = match.end()
    if high is not None:
        out.append(text[last : high[0].start()])
        out.append(_reference(0xFFFD))
        last = high[0].end()
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def _reference(value: int) -> str:
    """A character reference, or nothing for a character XML forbids."""
    return f"&#x{value:X};" if _is_xml_char(value) else ""


def _code_point(match: re.Match[str]) -> int:
    """The referenced code point; -1 for a number too long to be one."""
    hex_digits, decimal = match.groups()
    digits = (hex_digits or decimal).lstrip("0") or "0"
    if len(digits) > _MAX_DIGITS:
        return -1
    return int(digits, 16) if hex_digits else int(digits)


def _is_xml_char(value: int) -> bool:
    """XML 1.0's Char production."""
    return (
        value in (0x9, 0xA, 0xD)
        or 0x20 <= value <= 0xD7FF
        or 0xE000 <= value <= 0xFFFD
        or 0x10000 <= value <= 0x10FFFF
    )

"""Blog HTML and plain text turned into Discord Markdown that says only what it shows.

Everything here treats its input as hostile: a commenter controls the HTML of a
comment, so the output must never carry a live mention, markdown the commenter
typed as text, control characters that reorder what a reader sees, or links to
anything but http(s). Formatting the blog itself applied (``<b>``, ``<a>``,
lists, quotes) is kept.

Conversion uses markdownify, with a converter subclass for the places where
Discord differs from CommonMark (no images, no headings, no tables, its own
escaping rules) and where the input cannot be trusted (links, ``<pre>``).
"""

from __future__ import annotations

import html as _html_module
import ipaddress
import logging
import re
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from bs4 import BeautifulSoup
from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction, Tag
from markdownify import MarkdownConverter

__all__ = [
    "FENCE_LINE",
    "clean_text",
    "convert_html",
    "defuse_mentions",
    "escape_text",
    "html_to_markdown",
    "one_line",
    "safe_url",
]

log = logging.getLogger(__name__)

# Beyond this, input is ignored: no sensible number of Discord messages can show it,
# and parsing megabytes of HTML would stall the event loop.
MAX_HTML_CHARS = 100_000

# Deeper HTML is shown as text: markdownify recurses once per level.
MAX_NESTING = 150

ZWSP = "\u200b"

# C0 controls except \t and \n (\r is turned into \n first), DEL, C1 controls, the
# noncharacters U+FFFE/U+FFFF, bidi embeddings/overrides/isolates, lone surrogates.
_UNWANTED = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffe\uffff\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NEWLINES = re.compile("\r\n?|[\u2028\u2029]")
_NBSPS = re.compile("[\u00a0\u202f]")

# Mentions Discord resolves from message text. A zero-width space after "@" or "<"
# leaves the text readable and the mention dead.
_EVERYONE = re.compile(r"@(?=everyone|here)", re.IGNORECASE)
_ANGLE_MENTION = re.compile(r"<(?=[@#/]|[at]?:|id:)")

# Discord's own autolink pattern: text it will turn into a link as written.
_BARE_URL = re.compile(r"https?://[^\s<]+[^<.,:;\"')\]\s]")
_INLINE_SPECIAL = re.compile(r"([\\*_~`|\[\]])")
_LINE_START_SPECIAL = re.compile(r"(?m)^([ \t]*)(>|#|-(?=[ \t#]|$)|\+(?=[ \t]|$))")
_LINE_START_NUMBER = re.compile(r"(?m)^([ \t]*\d{1,9})([.)])(?=[ \t]|$)")
# In a URL, markdown characters are percent-encoded rather than backslash-escaped:
# Discord would make the backslash part of the link.
_URL_UNSAFE_CHARS = re.compile(r"[\\*`|\[\]]")

# A line that opens or closes a code block.
FENCE_LINE = re.compile(r"(?m)^([ \t>]*)```(.*)$")
_LIST_ITEM = re.compile(r"[ \t]*(?:-|\d+\.)[ \t]")
_SPACES = re.compile(r"[ \t]+")
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_MANY_NEWLINES = re.compile(r"\n{3,}")
_WHITESPACE = re.compile(r"\s+")
_LINE_BREAK = re.compile(r"\s*\n\s*")
_BACKTICK_PAIR = re.compile(r"`(?=`)")
_LOOKS_LIKE_URL = re.compile(r"(?i)^(?:https?://|www\.)\S+$")
_TAG = re.compile(r"<[^>]*>")
_TAG_TOKEN = re.compile(r"<(/?)([a-zA-Z][^\s/>]*)[^>]*?(/?)>")
_VOID_TAGS = frozenset(
    {
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
        "source", "track", "wbr",
    }
)  # fmt: skip
# A host name Discord takes in a link or an embed, modelled on Django's URLValidator (see
# _valid_host): labels of letters (any script in the BMP), digits and inner hyphens, and a
# top-level label of letters (or punycode).
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9\u00a1-\uffff-]{1,63}(?<!-)")
_TOP_LABEL = re.compile(r"(?!-)(?:[a-z\u00a1-\uffff-]{2,63}|xn--[a-z0-9]{1,59})(?<!-)")
_MAX_HOST_CHARS = 253

# Characters left as they are in the path, query and fragment of a link; the rest are
# percent-encoded. Parentheses, brackets, "*", "|" and "`" are out: they would end a
# masked link or be read as formatting.
_URL_SAFE = "/:;=?&#%@!$',+-._~"

# Tags whose content is never shown to a reader of the blog either.
_DROPPED_TAGS = frozenset(
    {
        "script", "style", "iframe", "noscript", "template", "object", "embed", "svg", "math",
        "head", "title", "meta", "link", "button", "input", "select", "textarea",
    }
)  # fmt: skip
_CELL_END = "\x1f"  # marks the end of a table cell; control characters are gone from the text

# Inline emphasis by family. A tag inside another of its family adds no markers (the
# outer one marks its text already), so nesting can never unbalance them; headings
# are bold. Discord does not carry emphasis across a line break reliably, so each
# line is marked on its own, after its quote or list lead.
_ITALIC_TAGS = frozenset({"i", "em"})
_UNDERLINE_TAGS = frozenset({"u", "ins"})
_STRIKE_TAGS = frozenset({"s", "del", "strike"})
_EMPHASIS_TAGS = frozenset({"b", "strong"}) | _ITALIC_TAGS | _UNDERLINE_TAGS | _STRIKE_TAGS
_BOLD_TAGS = frozenset({"b", "strong", "h1", "h2", "h3", "h4", "h5", "h6"})
# Tags after which the next text starts on a new line.
_LINE_BREAKING_TAGS = frozenset(
    {
        "br", "hr", "p", "div", "blockquote", "pre", "ul", "ol", "li", "table", "tr",
        "h1", "h2", "h3", "h4", "h5", "h6",
    }
)  # fmt: skip
_LINE_LEAD = re.compile(r"(?:[ \t]*(?:>|-|\d{1,9}\.)[ \t]+)*[ \t]*")


def clean_text(text: str) -> str:
    """Remove what a reader cannot see but Discord would act on.

    Control characters, bidi overrides (which make text read differently from how it
    is stored) and lone surrogates (which Discord's JSON rejects) are dropped; line
    and paragraph separators become newlines so line-start escaping sees them; no-break
    spaces become spaces so whitespace handling treats them as spaces.
    """
    text = _NEWLINES.sub("\n", text)
    text = _UNWANTED.sub("", text)
    return _NBSPS.sub(" ", text)


def defuse_mentions(text: str) -> str:
    """Make every mention in ``text`` inert by putting a zero-width space inside it."""
    text = _EVERYONE.sub("@" + ZWSP, text)
    return _ANGLE_MENTION.sub("<" + ZWSP, text)


def _escape_markdown(text: str) -> str:
    """Backslash-escape whatever Discord would read as formatting, URLs excepted."""
    pieces: list[str] = []
    last = 0
    for match in _BARE_URL.finditer(text):
        pieces.append(_INLINE_SPECIAL.sub(r"\\\1", text[last : match.start()]))
        pieces.append(_URL_UNSAFE_CHARS.sub(lambda m: f"%{ord(m.group()):02X}", match.group()))
        last = match.end()
    pieces.append(_INLINE_SPECIAL.sub(r"\\\1", text[last:]))
    escaped = "".join(pieces)
    escaped = _LINE_START_SPECIAL.sub(r"\1\\\2", escaped)
    return _LINE_START_NUMBER.sub(r"\1\\\2", escaped)


def escape_text(text: str) -> str:
    """Plain text (a name, a title) as Markdown that Discord shows exactly as written."""
    return defuse_mentions(_escape_markdown(clean_text(text)))


def one_line(text: str) -> str:
    """``text`` cleaned, with every run of whitespace (newlines too) made one space."""
    return _WHITESPACE.sub(" ", clean_text(text)).strip()


def safe_url(href: str | None, base_url: str | None = None) -> str | None:
    """An absolute http(s) URL safe to put in a message, or None when there is none.

    Relative URLs are resolved against ``base_url``. User info (``user@``) is dropped:
    it only serves to make ``https://bank.example@evil.example`` look like a bank.
    Characters that could end a masked link or start formatting are percent-encoded,
    and ``@everyone``/``@here`` cannot survive in it.
    """
    if not href:
        return None
    href = one_line(href)
    try:
        if base_url:
            href = urljoin(base_url, href)
        parts = urlsplit(href)
        port = parts.port
    except ValueError:  # malformed IPv6 host or port
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    bracketed = "[" in parts.netloc.rpartition("@")[2]
    if scheme not in ("http", "https") or not host or not _valid_host(host, bracketed=bracketed):
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    path, query, fragment = (
        quote(p, safe=_URL_SAFE) for p in (parts.path, parts.query, parts.fragment)
    )
    url = urlunsplit((scheme, netloc, path, query, fragment))
    return _EVERYONE.sub("%40", url)


def _valid_host(host: str, *, bracketed: bool) -> bool:
    """Whether Discord takes this (lower-cased) host in a link or embed URL.

    Discord answers a URL it dislikes with 50035 "Not a well formed URL", and a
    message it refuses is never delivered, so a host it might refuse is treated
    as no URL at all. Discord does not document its rule. An assumption: its
    errors read like a Python validator, and what operators report matches
    Django's URLValidator: IP addresses pass (IPv6 in brackets, IPv4 only as a
    plain dotted quad), a name without a dot is refused (``http://myserver:3000``)
    and so is an underscore (``llama_punkz.mypinata.cloud``, discord.js issue
    7438). So a name is labels of letters, digits and inner hyphens, each 1-63
    long, at most 253 characters in its IDNA (``xn--``) form, ending in a label of
    letters (or punycode), with one trailing dot allowed. Stricter than Django:
    ``localhost`` (no reader could open it), IPv6 zone ids and IPvFuture hosts.
    """
    if bracketed:
        return "%" not in host and _parses(ipaddress.IPv6Address, host)
    if _parses(ipaddress.IPv4Address, host):
        return True
    name = host.removesuffix(".")
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:  # an empty or over-long label, a character IDNA forbids
        return False
    labels = name.split(".")
    return (
        len(ascii_name) <= _MAX_HOST_CHARS
        and len(labels) >= 2
        and all(_HOST_LABEL.fullmatch(label) for label in labels)
        and _TOP_LABEL.fullmatch(labels[-1]) is not None
    )


def _parses(kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address], text: str) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


class _DiscordConverter(MarkdownConverter):
    """markdownify, taught Discord's dialect and distrust of its input."""

    def __init__(self, *, base_url: str | None, images: bool) -> None:
        super().__init__(
            heading_style="atx",
            bullets="-",
            escape_asterisks=False,
            escape_underscores=False,
            escape_misc=False,
            autolinks=False,
            # Whitespace in HTML source, newlines included, is one space, as in a
            # browser; line breaks come from <br> and block tags.
            wrap=True,
            wrap_width=None,
        )
        self._base_url = base_url
        self._images = images
        self._numbers: dict[int, int] = {}

    def escape(self, text: str, parent_tags: set[str]) -> str:
        return _escape_markdown(text)

    def convert_a(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        if "_noformat" in parent_tags:
            return text
        if el.find(["a", "img"]) is not None:
            return text  # a link can't hold a link; the image link inside is kept
        url = safe_url(_attr(el, "href"), self._base_url)
        if url is None:
            return text
        prefix, suffix, inner = _chomp(text)
        if not inner:
            return ""
        if _LOOKS_LIKE_URL.match(one_line(el.get_text())):
            # Text that is (or looks like) a URL shows the real destination: Discord
            # refuses to render such masked links, and they are a phishing trick.
            # Text right after it would become part of the link: <> ends it there.
            glued = not suffix and _followed_by_text(el)
            return f"{prefix}<{url}>" if glued else f"{prefix}{url}{suffix}"
        return f"{prefix}[{_WHITESPACE.sub(' ', inner)}]({url}){suffix}"

    def convert_img(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        if not self._images:
            return ""
        alt = escape_text(one_line(_attr(el, "alt") or "")[:100])
        if "_noformat" in parent_tags:
            return alt
        url = safe_url(_attr(el, "src"), self._base_url)
        label = f"image: {alt}" if alt else "image"
        if url is None:
            return f"\\[{label}\\]" if alt else ""
        return f"[{label}]({url})"

    def _convert_media(self, el: Tag, text: str, label: str) -> str:
        source = el.find("source", src=True)
        src = _attr(el, "src") or (_attr(source, "src") if isinstance(source, Tag) else None)
        url = safe_url(src, self._base_url)
        return f"[{label}]({url})" if url else text

    def convert_video(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        return self._convert_media(el, text, "video")

    def convert_audio(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        return self._convert_media(el, text, "audio")

    def convert_hN(self, n: int, el: Tag, text: str, parent_tags: set[str]) -> str:
        # Discord's "#" headings are huge and a commenter's <h1> is not an announcement:
        # a heading is a bold line (bold already when inside bold).
        text = _WHITESPACE.sub(" ", text).strip()
        if not text or "_noformat" in parent_tags:
            return text
        if not _BOLD_TAGS & parent_tags:
            text = f"**{text}**"
        return text if "_inline" in parent_tags else f"\n\n{text}\n\n"

    def _emphasis(
        self, el: Tag, text: str, parent_tags: set[str], marker: str, family: frozenset[str]
    ) -> str:
        if "_noformat" in parent_tags or family & parent_tags:
            return text
        inner = text.strip()
        if not inner:
            return text  # no empty markers; the space or line break stays
        marked = _mark_lines(inner, marker)
        following = el.next_sibling
        if isinstance(following, Tag) and following.name in _EMPHASIS_TAGS:
            # "**a****b**" is not two bold words to Discord; a zero-width space parts them.
            marked += ZWSP
        return text[: len(text) - len(text.lstrip())] + marked + text[len(text.rstrip()) :]

    def convert_b(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        return self._emphasis(el, text, parent_tags, "**", _BOLD_TAGS)

    convert_strong = convert_b

    def convert_i(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        return self._emphasis(el, text, parent_tags, "*", _ITALIC_TAGS)

    convert_em = convert_i

    def convert_div(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        # A div is a line, not a paragraph: Blogger posts wrap every line in one, and
        # mark blank lines with <div><br /></div>.
        text = text.strip()
        if "_inline" in parent_tags:
            return f" {text} "
        return f"\n{text}\n" if text else "\n"

    def convert_blockquote(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        if "_inline" in parent_tags:
            return f" {text.strip()} "
        # Discord quotes need "> " on each line; a bare ">" line would end the quote.
        lines = [line for line in text.strip().split("\n") if line.strip()]
        return "\n\n" + "\n".join(f"> {line}" for line in lines) + "\n\n" if lines else ""

    def convert_code(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        if "_noformat" in parent_tags:
            return text
        prefix, suffix, inner = _chomp(text)
        if not inner:
            return ""
        # Inline code is one line: a span broken over lines could not be bold per line.
        inner = _LINE_BREAK.sub(" ", inner)
        if "`" in inner:  # no delimiter Discord reliably honours; show it as text
            return prefix + _escape_markdown(inner) + suffix
        return f"{prefix}`{inner}`{suffix}"

    convert_kbd = convert_code
    convert_samp = convert_code

    def convert_pre(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        if "_inline" in parent_tags:  # a heading or table cell is one line: inline code
            return f" {self.convert_code(el, text, parent_tags)} "
        text = text.strip("\n")
        if not text.strip():
            return ""
        # A backtick run inside would close the fence and free the rest of the text.
        text = _BACKTICK_PAIR.sub("`" + ZWSP, text)
        return f"\n\n```\n{text}\n```\n\n"

    def convert_li(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        text = text.strip()
        if not text:
            return "\n"
        parent = el.parent
        if isinstance(parent, Tag) and parent.name == "ol":
            bullet = f"{self._next_number(parent)}. "
        else:
            bullet = "- "
        indent = " " * len(bullet)
        lines = text.split("\n")
        body = "\n".join([lines[0], *(indent + line if line else "" for line in lines[1:])])
        return f"{bullet}{body}\n"

    def _next_number(self, ol: Tag) -> int:
        """The number of the next item of ``ol``.

        Items are converted in order, so a counter per list replaces markdownify's
        rescan of all earlier siblings, which is quadratic on long lists.
        """
        number = self._numbers.get(id(ol))
        if number is None:
            start = _attr(ol, "start") or ""
            number = int(start) if start.isdigit() and len(start) < 10 else 1
        self._numbers[id(ol)] = number + 1
        return number

    def convert_table(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        return f"\n\n{text.strip()}\n\n"

    def convert_tr(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        cells = [cell.strip() for cell in text.split(_CELL_END)]
        return "\n" + " | ".join(cell for cell in cells if cell) + "\n"

    def convert_td(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        return _WHITESPACE.sub(" ", text).strip() + _CELL_END

    convert_th = convert_td

    def convert_u(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        return self._emphasis(el, text, parent_tags, "__", _UNDERLINE_TAGS)

    convert_ins = convert_u

    def convert_s(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        return self._emphasis(el, text, parent_tags, "~~", _STRIKE_TAGS)

    convert_del = convert_s
    convert_strike = convert_s


def _attr(el: Tag, name: str) -> str | None:
    """A tag attribute as one string (bs4 gives lists for multi-valued ones)."""
    value = el.get(name)
    if isinstance(value, list):
        return " ".join(value)
    return value


def _followed_by_text(el: Tag) -> bool:
    """Whether something shown on the same line follows ``el`` with no space between."""
    following = el.next_sibling
    if isinstance(following, Tag):
        return following.name not in _LINE_BREAKING_TAGS
    start = str(following)[:1] if following is not None else ""
    return start != "" and not start.isspace()


def _mark_lines(text: str, marker: str) -> str:
    """``marker`` around each line of ``text`` that has words, after its quote or list lead.

    Code block lines are left alone: markers there would be shown as typed.
    """
    lines = text.split("\n")
    in_code = False
    for i, line in enumerate(lines):
        lead = _LINE_LEAD.match(line)
        start = lead.end() if lead else 0
        words = line[start:].rstrip()
        if words.startswith("```"):  # a fence, also after a list bullet
            in_code = not in_code
        elif words and not in_code:
            end = start + len(words)
            lines[i] = f"{line[:start]}{marker}{words}{marker}{line[end:]}"
    return "\n".join(lines)


def _chomp(text: str) -> tuple[str, str, str]:
    """Move the spaces at either end of inline markup outside it (``** a**`` is not bold)."""
    prefix = " " if text[:1].isspace() else ""
    suffix = " " if text[-1:].isspace() else ""
    return prefix, suffix, text.strip()


def html_to_markdown(html: str, *, base_url: str | None = None) -> str:
    """Blog HTML as Discord Markdown: the blog's formatting kept, the commenter's defused.

    Relative links and images resolve against ``base_url``; without it they become
    plain text. Never raises: HTML too odd to convert is shown as its escaped text.
    """
    return convert_html(html, base_url=base_url, images=True)


def convert_html(html: str, *, base_url: str | None, images: bool) -> str:
    """:func:`html_to_markdown`, optionally without images.

    An article excerpt leaves images out: the article's image is shown as an embed.
    """
    html = clean_text(html[:MAX_HTML_CHARS])
    if not html.strip():
        return ""
    try:
        if _nested_deeper_than(html, MAX_NESTING):
            # Both BeautifulSoup (quadratic) and markdownify (recursive) choke on deep
            # nesting, and no real post nests this deep.
            log.warning("HTML nested too deeply for Markdown; showing its text only")
            markdown = _plain_text(html)
        else:
            soup = BeautifulSoup(html, "html.parser")
            _prepare(soup)
            markdown = _DiscordConverter(base_url=base_url, images=images).convert_soup(soup)
    except Exception:  # a parser bug must not stop a poll; the text is still worth showing
        log.warning("could not convert HTML; showing its text only", exc_info=True)
        markdown = _plain_text(html)
    return _tidy(markdown)


def _prepare(soup: BeautifulSoup) -> None:
    """Drop the invisible parts of the tree and clean every text node.

    Text is cleaned again after parsing because character references (``&#x202e;``,
    ``&#1;``) only turn into the characters they name here.
    """
    for tag in soup.find_all(list(_DROPPED_TAGS)):
        tag.decompose()
    for node in list(soup.find_all(string=True)):
        if isinstance(node, (Comment, Declaration, Doctype, ProcessingInstruction)):
            node.extract()
            continue
        cleaned = clean_text(str(node))
        if cleaned != node:
            node.replace_with(type(node)(cleaned))


def _nested_deeper_than(html: str, limit: int) -> bool:
    """Whether the tree html.parser would build from ``html`` gets deeper than ``limit``.

    Follows the parser's rules closely enough: void and self-closed tags add no level,
    an end tag closes the latest open tag of its name and everything opened after it,
    and an end tag for no open tag is ignored.
    """
    stack: list[str] = []
    open_names: dict[str, int] = {}
    for match in _TAG_TOKEN.finditer(html):
        closing, name, self_closing = match.group(1), match.group(2).lower(), match.group(3)
        if not closing:
            if self_closing or name in _VOID_TAGS:
                continue
            stack.append(name)
            open_names[name] = open_names.get(name, 0) + 1
            if len(stack) > limit:
                return True
        elif open_names.get(name):
            while True:
                popped = stack.pop()
                open_names[popped] -= 1
                if popped == name:
                    break
    return False


def _plain_text(html: str) -> str:
    """The text of ``html`` without any of its markup, as a last resort."""
    text = _html_module.unescape(_TAG.sub(" ", html))
    return _escape_markdown(_SPACES.sub(" ", clean_text(text)))


def _tidy(markdown: str) -> str:
    """The final pass: no stray controls, trailing spaces, blank-line runs or mentions."""
    lines = clean_text(markdown).split("\n")
    in_code = in_list = False
    for i, line in enumerate(lines):
        if FENCE_LINE.match(line):
            in_code = not in_code
        elif not in_code:
            in_list = bool(_LIST_ITEM.match(line)) or (in_list and line[:1] in (" ", "\t"))
            if not in_list:
                # Indentation left over from source whitespace (" &nbsp; text" after a
                # <br>) means nothing outside lists and code.
                lines[i] = line.lstrip()
    text = _TRAILING_SPACE.sub("", "\n".join(lines))
    text = _MANY_NEWLINES.sub("\n\n", text)
    return defuse_mentions(text.strip())

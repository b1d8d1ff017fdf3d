"""What blogmirror posts in Discord: thread names, article messages, comment messages.

Pure functions from the feed's dataclasses to text. Every piece of feed text goes
through :mod:`bot.markdown`, which makes it safe; the markup added here (bold names,
timestamps, links) is the only live formatting in a message. Long text is split into
messages here too, where Discord's 2,000-character limit is known.

A comment's first message starts with a fixed header line that carries its permalink,
and every message of a comment ends with a small key line (``-# ref k3f9a2b71c``, or
``… · part 2``) naming that one comment: :func:`key_in` reads it back, which is how
an unfinished send is settled after a crash. The key is derived from the
subscription and the comment's entry id, so two comments sharing a permalink (or
having none) are still told apart.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from urllib.parse import quote, unquote

from bot.markdown import FENCE_LINE, convert_html, escape_text, html_to_markdown, one_line, safe_url
from bot.models import Article, Comment

__all__ = [
    "MESSAGE_LIMIT",
    "RenderedArticle",
    "comment_key",
    "discord_timestamp",
    "escape_text",
    "html_to_markdown",
    "key_in",
    "key_line",
    "permalink_in",
    "render_article",
    "render_comment",
    "split_message",
    "thread_name",
]

MESSAGE_LIMIT = 2000
THREAD_NAME_LIMIT = 100
EXCERPT_CHARS = 700
# Blogger caps comments at 4,096 characters, so a real comment needs three messages
# at most; a feed that claims more gets this many and a pointer to the blog.
MAX_COMMENT_PARTS = 10
NAME_CHARS = 80
TITLE_CHARS = 200
MAX_URL_CHARS = 512
MAX_PERMALINK_CHARS = 1000

REMOVED_NOTE = "*This comment was removed on the blog.*"
ORPHAN_NOTE = "*↪ In reply to a comment that is no longer available.*"
EMPTY_NOTE = "*(empty comment)*"
TRUNCATED_NOTE = "*… This comment is too long to show in full here; read it on the blog.*"

_TIMESTAMP_STYLES = frozenset("tTdDfFR")
# A cut text ending in a bare URL: Discord would make an "…" right after it part of the link.
_ENDS_WITH_URL = re.compile(r"(?i)https?://\S*$")
_CUT_PUNCTUATION = " ,;:-–—"

# A permalink is shown as written when Discord will show it as written; anything
# else (spaces, markup, mentions, invisible characters, another scheme) is
# percent-encoded and labelled so, which keeps it readable back exactly.
_PLAIN_PERMALINK = re.compile(r"https?://[^\s<>\"`|\\^{}()\[\]*]+")
_MENTION_WORD = re.compile(r"@(?:everyone|here)", re.IGNORECASE)
_PLAIN_LABEL = "permalink"
_ESCAPED_LABEL = "permalink (escaped)"
_ESCAPED_SAFE = "/:?#=&;,+!$'~-._"
_KEY_LINE = re.compile(r"-# ref (?P<key>[a-z2-7]{10})(?: · part (?P<part>[1-9][0-9]?))?")
KEY_LINE_CHARS = len("\n-# ref 0123456789 · part 10")
# The local time was added to the header later: messages without it are read too.
_HEADER = re.compile(
    r"\*\*(?:\\.|[^\\*\n])+\*\* · (?:\d\d:\d\d · )?<t:-?\d+:f> · "
    r"\[(?P<label>permalink(?: \(escaped\))?)\]\(<(?P<url>[^<>\n]*)>\)"
)


@dataclass(frozen=True, slots=True)
class RenderedArticle:
    """An article's Discord message; the sender shows ``image_url`` as an embed image."""

    content: str
    image_url: str | None
    url: str
    title: str


def discord_timestamp(dt: datetime, style: str = "f") -> str:
    """``<t:EPOCH:style>``: Discord shows it in each reader's own time zone.

    A naive datetime is taken as UTC, which is what feed timestamps without a zone mean.
    """
    if style not in _TIMESTAMP_STYLES:
        raise ValueError(f"unknown Discord timestamp style {style!r}")
    return f"<t:{math.floor(_as_utc(dt).timestamp())}:{style}>"


def thread_name(title: str, published: datetime) -> str:
    """The thread's name: the title on one line, cut to Discord's 100 characters.

    Discord shows thread names as plain text, so nothing is escaped; an untitled
    article is named by its UTC publication date, which is the same for every reader.
    """
    name = one_line(title)
    return _shorten(name, THREAD_NAME_LIMIT) if name else _untitled(published)


def render_article(article: Article, *, blog_title: str, reserve: int = 0) -> RenderedArticle:
    """The message that opens an article's thread: title, byline, excerpt and link.

    The URL is wrapped in ``<>`` so Discord adds no link preview: the article's own
    image is the embed. ``blog_title`` names the author when the feed names nobody.
    ``reserve`` characters are left free for a line the sender adds in front (a
    role mention); the last line, which settling reads, is the same either way.
    """
    title = one_line(article.title) or _untitled(article.published)
    url = safe_url(article.url)
    if url is not None and len(url) > MAX_URL_CHARS:
        url = None
    shown_title = escape_text(_shorten(title, TITLE_CHARS))
    lines = [f"**[{shown_title}](<{url}>)**" if url else f"**{shown_title}**"]
    author = one_line(article.author) or one_line(blog_title)
    when = discord_timestamp(article.published)
    lines.append(f"by {escape_text(_shorten(author, NAME_CHARS))} · {when}" if author else when)
    footer = [f"Read the article: <{url}>"] if url else []
    room = MESSAGE_LIMIT - reserve - sum(len(line) + 1 for line in [*lines, *footer])
    excerpt = _excerpt(article.html, base_url=url, room=min(EXCERPT_CHARS, room))
    content = "\n".join([*lines, *([excerpt] if excerpt else []), *footer])
    image = safe_url(article.image_url)
    return RenderedArticle(
        content=content,
        image_url=image if image and len(image) <= MESSAGE_LIMIT else None,
        url=article.url,
        title=title,
    )


def render_comment(
    comment: Comment, *, key: str | None = None, parent_missing: bool = False
) -> list[str]:
    """A comment's messages; the first carries the header and is the one replies point at.

    With ``key`` (:func:`comment_key`) each message ends with its key line. A
    removed comment shows the header and a note only, so editing its message
    takes the removed text out of Discord too.
    """
    header = _comment_header(comment)
    if comment.removed:
        return _keyed([f"{header}\n{REMOVED_NOTE}"], key)
    lead = f"{header}\n{ORPHAN_NOTE}\n" if parent_missing else f"{header}\n"
    body = html_to_markdown(comment.html, base_url=safe_url(comment.permalink))
    if not body:
        return _keyed([lead + EMPTY_NOTE], key)
    room = MESSAGE_LIMIT - (KEY_LINE_CHARS if key else 0)

    def budget_of(index: int) -> int:
        budget = room - len(lead) if index == 0 else room
        if index == MAX_COMMENT_PARTS - 1:
            budget -= len(TRUNCATED_NOTE) + 1
        return budget

    parts = list(islice(iter_parts(body, budget_of), MAX_COMMENT_PARTS + 1))
    if len(parts) > MAX_COMMENT_PARTS:
        parts = parts[:MAX_COMMENT_PARTS]
        parts[-1] += "\n" + TRUNCATED_NOTE
    parts[0] = lead + parts[0]
    return _keyed(parts, key)


def comment_key(subscription_id: int, entry_id: str) -> str:
    """Ten characters naming one comment of one subscription (50 bits of a hash).

    Derived, not stored: settling after a crash computes the key of each open
    intent's comment and looks for it in the thread.
    """
    name = f"{subscription_id}\n{entry_id}".encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(name, digest_size=8, person=b"blogmirror").digest()
    return base64.b32encode(digest).decode("ascii").lower()[:10]


def key_line(key: str, part: int) -> str:
    """The small last line of a comment's message ``part`` (0-based)."""
    return f"-# ref {key}" if part == 0 else f"-# ref {key} · part {part + 1}"


def key_in(content: str) -> tuple[str, int] | None:
    """``(key, part)`` from a message :func:`render_comment` made with a key, else None."""
    last = content.rstrip("\n").rsplit("\n", 1)[-1]
    match = _KEY_LINE.fullmatch(last)
    if match is None:
        return None
    return match["key"], int(match["part"] or 1) - 1


def _keyed(parts: list[str], key: str | None) -> list[str]:
    if key is None:
        return parts
    return [f"{text}\n{key_line(key, index)}" for index, text in enumerate(parts)]


def permalink_in(content: str) -> str | None:
    """The permalink in the header of a message :func:`render_comment` made, else None.

    Only the first line is read, and only when it has the exact header shape; the
    caller must still check that the bot wrote the message, since a member can copy it.
    """
    match = _HEADER.fullmatch(content.split("\n", 1)[0])
    if match is None:
        return None
    if match["label"] == _PLAIN_LABEL:
        return match["url"]
    return unquote(match["url"], errors="surrogatepass")


# --- splitting ----------------------------------------------------------------------

MIN_SPLIT_LIMIT = 64  # room for a reopened code fence, its closing line and some text

# Break levels, best first: (pattern, whether the break is at the match's end).
_BREAKS: tuple[tuple[re.Pattern[str], bool], ...] = (
    (re.compile(r"\n[ \t]*\n"), False),  # paragraph
    (re.compile(r"\n"), False),  # line
    (re.compile(r"[.!?…]+[\"'”’»)\]*_~]*(?=\s)"), True),  # sentence
    (re.compile(r"(?<=\S)\s"), False),  # word
)
# Spans a break would ruin: masked links and inline code.
_ATOMIC = re.compile(r"\[(?:[^\[\]\n\\]|\\.)*\]\([^()\s]*\)|`[^`\n]+`")
_CLOSING_FENCE = re.compile(r"[ \t>]*```[ \t]*(?:\n|$)")
_MAX_FENCE_INDENT = 16
_FENCE_RESERVE = len("\n```") + _MAX_FENCE_INDENT
# Emphasis open at a cut inside a line is closed there and reopened in the next part
# (bot.markdown closes it at every line end). Escapes, inline code, link targets and
# URLs are read past: their "*", "_" and "~" are not markers.
_EMPHASIS_TOKEN = re.compile(
    r"\\.|`[^`\n]*`|\]\([^()\s]*\)|<https?://[^<>\s]*>"
    r"|https?://[^\s<*]*?(?=[_~]*(?:[\s<*]|$))|\*+|_{2,}|~{2,}"
)
_EMPHASIS_RESERVE = len("***__~~")
_SKIP_SPACE = re.compile(r"\s+")
_SKIP_SPACE_IN_CODE = re.compile(r"[ \t]*\n|[ \t]+")
_TRAILING_BACKSLASHES = re.compile(r"\\+$")


def split_message(text: str, limit: int = 2000) -> list[str]:
    """``text`` in parts of at most ``limit`` characters, cut where a reader would pause.

    Breaks at a paragraph, else a line, else a sentence, else a word, and cuts a word
    only when it alone is longer than a part. Each part is at least half full when
    such a break exists, so a long text does not become many short messages. A masked
    link or inline code span that fits in a part is not broken, and a code block
    that must be cut is closed at the end of one part and reopened in the next.
    No word is lost or reordered; no part is empty.
    """
    if limit < MIN_SPLIT_LIMIT:
        raise ValueError(f"limit must be at least {MIN_SPLIT_LIMIT}, not {limit}")
    return list(iter_parts(text, lambda _index: limit))


class _Fence:
    """An open code fence at a cut: where it starts and how to close and reopen it."""

    __slots__ = ("close", "content_start", "reopen", "start")

    def __init__(self, match: re.Match[str]) -> None:
        # The opener's language is not repeated: it would be a word the text lacks.
        indent = match.group(1) if len(match.group(1)) <= _MAX_FENCE_INDENT else ""
        self.start = match.start()
        self.content_start = match.end()
        self.reopen = f"{indent}```\n"
        self.close = f"\n{indent}```"


def iter_parts(text: str, budget_of: Callable[[int], int]) -> Iterator[str]:
    """Parts of ``text``, part ``i`` at most ``budget_of(i)`` characters long.

    Lazy, so a caller that wants only the first part (an excerpt) or a bounded number
    of parts does not pay for splitting the whole text.
    """
    text = text.strip()
    pos, end, index, reopen = 0, len(text), 0, ""
    while pos < end:
        budget = budget_of(index)
        if len(reopen) + end - pos <= budget:
            yield reopen + text[pos:]
            return
        window = reopen + text[pos : pos + 2 * budget]
        line_end = text.find("\n", pos + 2 * budget)
        line_rest = text[pos + 2 * budget : line_end if line_end >= 0 else end]
        cut, fence, emphasis = _cut(window, budget, len(reopen), line_rest)
        part = window[:cut].rstrip()
        yield part + fence.close if fence else part + "".join(reversed(emphasis))
        index += 1
        pos += cut - len(reopen)
        if fence is None:
            reopen = "".join(emphasis)
            skip = _SKIP_SPACE.match(text, pos)
            pos = skip.end() if skip else pos
            continue
        reopen = fence.reopen
        skip = _SKIP_SPACE_IN_CODE.match(text, pos)
        if skip is not None:
            pos = skip.end()
            closing = _CLOSING_FENCE.match(text, pos) if skip.group().endswith("\n") else None
            if closing is not None:
                # The block ends right here: the fence just added closed it already.
                reopen = ""
                skip = _SKIP_SPACE.match(text, closing.end())
                pos = skip.end() if skip else closing.end()


def _cut(
    window: str, budget: int, floor: int, line_rest: str = ""
) -> tuple[int, _Fence | None, list[str]]:
    """Where to end the part that ``window`` starts, and the code fence or emphasis open there.

    ``line_rest`` is the rest of the text's line beyond ``window``: emphasis open at
    the cut counts only where that line closes it.
    """
    atoms = [
        (m.start(), m.end()) for m in _ATOMIC.finditer(window) if m.end() - m.start() <= budget
    ]
    cut = _best_break(window, budget, floor, atoms)
    fence = _open_fence(window, cut)
    if fence is None:
        if not _open_emphasis(window, cut, line_rest):
            return cut, None, []
        cut = _best_break(window, budget - _EMPHASIS_RESERVE, floor, atoms)
        fence = _open_fence(window, cut)
        if fence is None:
            return cut, None, _open_emphasis(window, cut, line_rest)
    cut = _best_break(window, budget - _FENCE_RESERVE, floor, atoms)
    fence = _open_fence(window, cut)
    if fence is not None and fence.start > floor and not window[fence.content_start : cut].strip():
        return fence.start, None, []  # don't end a part with an empty code block
    return cut, fence, []


def _open_emphasis(window: str, cut: int, line_rest: str) -> list[str]:
    """The emphasis open at ``cut`` and closed later in its line, outermost first.

    A marker the line never closes is not emphasis to Discord: it is left alone.
    """
    line_start = window.rfind("\n", 0, cut) + 1
    stack: list[str] = []
    for units in _emphasis_units(window, line_start, cut):
        for unit in units if not (stack and stack[-1] == "*") else units[::-1]:
            if unit in stack:
                del stack[len(stack) - 1 - stack[::-1].index(unit)]
            else:
                stack.append(unit)
    if not stack:
        return []
    line_end = window.find("\n", cut)
    after = window[cut:] + line_rest if line_end < 0 else window[cut:line_end]
    later = {unit for units in _emphasis_units(after, 0, len(after)) for unit in units}
    return [unit for unit in stack if unit in later]


def _emphasis_units(text: str, start: int, end: int) -> Iterator[list[str]]:
    """Each emphasis marker run in ``text[start:end]`` as its units (``***``: ``**``, ``*``)."""
    for match in _EMPHASIS_TOKEN.finditer(text, start, end):
        token = match.group()
        if token[0] == "*":
            yield ["**"] * (len(token) // 2) + ["*"] * (len(token) % 2)
        elif token[0] in "_~" and token[1:2] == token[0]:
            yield [token[:2]] * (len(token) // 2)


def _best_break(window: str, room: int, floor: int, atoms: list[tuple[int, int]]) -> int:
    """The best position in ``(floor, room]`` at which ``window`` can be cut."""
    starts = [start for start, _ in atoms]

    def inside_atom(position: int) -> int | None:
        i = bisect_right(starts, position - 1) - 1
        if i >= 0 and atoms[i][0] < position < atoms[i][1]:
            return atoms[i][0]
        return None

    head = window[: room + 1]
    fallback: int | None = None
    in_atom: int | None = None
    for pattern, at_end in _BREAKS:
        best: int | None = None
        for match in pattern.finditer(head):
            position = match.end() if at_end else match.start()
            if not floor < position <= room:
                continue
            if inside_atom(position) is None:
                best = position
            else:
                in_atom = position
        if best is not None:
            if best >= room // 2:
                return best
            fallback = best if fallback is None else fallback
    if fallback is not None:
        return fallback
    if in_atom is not None:
        return in_atom  # breaking a link's text beats cutting a word in two
    # One word longer than the room: cut it, but not inside an atom that would fit
    # in the next part, and not between a backslash and the character it escapes.
    cut = room
    atom_start = inside_atom(cut)
    if atom_start is not None and atom_start > floor:
        cut = atom_start
    backslashes = _TRAILING_BACKSLASHES.search(window, floor, cut)
    if backslashes is not None and len(backslashes.group()) % 2 and cut - 1 > floor:
        cut -= 1
    return cut


def _open_fence(window: str, cut: int) -> _Fence | None:
    """The code fence still open at ``cut`` in ``window``, if any."""
    opener: re.Match[str] | None = None
    for match in FENCE_LINE.finditer(window, 0, cut):
        opener = None if opener else match
    return _Fence(opener) if opener else None


# --- helpers ------------------------------------------------------------------------


def _comment_header(comment: Comment) -> str:
    """``**Name** · 18:08 · <t:…:f> · [permalink](<url>)``: the line that identifies a comment.

    ``18:08`` is the time as the blog shows it, in the feed's own UTC offset:
    commenters answer each other by it ("Thank you 18:08"), and the Discord
    timestamp beside it shows each reader's own zone. The time alone is enough
    (the timestamp carries the date) and keeps the line short.
    """
    name = escape_text(_shorten(one_line(comment.author), NAME_CHARS)) or "Anonymous"
    local = comment.published if comment.published.tzinfo else _as_utc(comment.published)
    header = f"**{name}** · {local:%H:%M} · {discord_timestamp(comment.published)}"
    link = _permalink_link(comment.permalink)
    return f"{header} · {link}" if link else header


def _permalink_link(permalink: str) -> str | None:
    """The permalink as a masked link with no preview, written so it reads back exactly."""
    if not permalink:
        return None
    if (
        _PLAIN_PERMALINK.fullmatch(permalink)
        and permalink.isprintable()
        and not _MENTION_WORD.search(permalink)
    ):
        label, target = _PLAIN_LABEL, permalink
    else:
        label, target = _ESCAPED_LABEL, quote(permalink, safe=_ESCAPED_SAFE, errors="surrogatepass")
    if len(target) > MAX_PERMALINK_CHARS:
        return None  # no real permalink is this long; the header must leave room for text
    return f"[{label}](<{target}>)"


def _excerpt(html: str, *, base_url: str | None, room: int) -> str:
    """The article's start as Markdown in at most ``room`` characters, cut at a pause."""
    if room < 80:
        return ""
    markdown = convert_html(html, base_url=base_url, images=False)
    parts = iter_parts(markdown, lambda _index: room - 2)
    first = next(parts, "")
    if next(parts, None) is None:
        return first
    if first.endswith("```"):
        return first + "\n…"
    return first + (" …" if first[-1] in ".!?" or _ENDS_WITH_URL.search(first) else "…")


def _shorten(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, cut after a word when one ends late enough."""
    if len(text) <= limit:
        return text
    space = text.rfind(" ", 0, limit)
    cut = text[:space] if space >= limit * 0.6 else text[: limit - 1]
    cut = cut.rstrip(_CUT_PUNCTUATION) or cut
    if _ENDS_WITH_URL.search(cut):
        return cut[: limit - 2] + " …"  # not glued to the link Discord makes of it
    return cut + "…"


def _untitled(published: datetime) -> str:
    return f"Untitled post ({_as_utc(published):%Y-%m-%d})"


def _as_utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)

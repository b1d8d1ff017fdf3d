"""Tests for bot.render and bot.markdown: what a blog post or comment looks like in Discord.

Example tests pin the output for real-world HTML (Blogger's ``<br />`` runs, WordPress
paragraphs) and for each hostile trick; property tests check the promises that must
hold for any input: no part over the limit, no word lost, no live mention.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta, timezone
from html import escape

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.markdown import ZWSP, clean_text, safe_url
from bot.models import Article, Comment
from bot.render import (
    EMPTY_NOTE,
    MAX_COMMENT_PARTS,
    ORPHAN_NOTE,
    REMOVED_NOTE,
    TRUNCATED_NOTE,
    RenderedArticle,
    discord_timestamp,
    escape_text,
    html_to_markdown,
    permalink_in,
    render_article,
    render_comment,
    split_message,
    thread_name,
)

BST = timezone(timedelta(hours=1))
POST_URL = "https://probationmatters.blogspot.com/2019/04/great-leadership-but-poor-output.html"
PERMALINK = f"{POST_URL}?showComment=1554281460000#c123"
WHEN = datetime(2019, 4, 3, 9, 51, tzinfo=BST)  # 1554281460
HEADER = f"**Anonymous** · 09:51 · <t:1554281460:f> · [permalink](<{PERMALINK}>)"
# What comment messages said before they showed the blog's own time: still read back.
OLD_HEADER = f"**Anonymous** · <t:1554281460:f> · [permalink](<{PERMALINK}>)"

LIVE_MENTION = re.compile(r"@everyone|@here|<@!?\d+>|<@&\d+>|<#\d+>|</[\w -]+:\d+>")
MENTIONS = ["@everyone", "@here", "<@123>", "<@!123>", "<@&123>", "<#123>", "</cmd:123>"]

props = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def comment(**changes: object) -> Comment:
    """A Blogger comment like the seed post's, with ``changes`` applied."""
    base = Comment(
        id="123",
        article_id="7128854030391125582",
        parent_id=None,
        author="Anonymous",
        published=WHEN,
        html="Hello",
        permalink=PERMALINK,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def article(**changes: object) -> Article:
    """A Blogger article like the seed post, with ``changes`` applied."""
    base = Article(
        id="7128854030391125582",
        title="Great Leadership, But Poor Output?",
        url=POST_URL,
        published=WHEN,
        updated=WHEN,
        author="Jim Brown",
        html="<p>The inspection report is out.</p>",
        image_url="https://blogger.googleusercontent.com/img/a/report.png",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def shown(markdown: str) -> str:
    """What Discord displays for ``markdown`` that has no formatting: escapes undone."""
    return re.sub(r"\\([^0-9A-Za-z\s])", r"\1", markdown.replace(ZWSP, ""))


# --- HTML to Markdown -------------------------------------------------------------


def test_blogger_comment_br_runs_and_entities() -> None:
    """Blogger's <br /> runs become a paragraph break or a line break; &#39; decodes."""
    html = (
        "&#39;For the period&#39; (page 15, paragraph 4)<br /><br />Is that right?"
        "<br />Odd then.<br /><br /><br /><br />Curious."
    )
    assert html_to_markdown(html) == (
        "'For the period' (page 15, paragraph 4)\n\nIs that right?\nOdd then.\n\nCurious."
    )


def test_blogger_comment_link_whose_text_is_its_url_is_bare() -> None:
    """Blogger autolinks URLs in comments; they come out as bare URLs, underscores intact."""
    html = 'See <a href="https://example.com/a_b" rel="nofollow">https://example.com/a_b</a> now'
    assert html_to_markdown(html) == "See https://example.com/a_b now"


def test_link_text_that_looks_like_another_url_shows_the_real_destination() -> None:
    """A link dressed up as a different URL is shown as the URL it really opens."""
    html = '<a href="http://evil.example/">https://bank.example/</a>'
    assert html_to_markdown(html) == "http://evil.example/"


def test_link_becomes_masked_link() -> None:
    """An ordinary link keeps its text and its http(s) target."""
    assert html_to_markdown('<a href="https://x.example/p?q=1">the report</a>') == (
        "[the report](https://x.example/p?q=1)"
    )


def test_wordpress_paragraphs() -> None:
    """WordPress <p> blocks become paragraphs; <br />+newline is one line break."""
    html = "<p>Erster Absatz &#8211; gut.</p>\n<p>Zweiter<br />\nZeile &#038; mehr</p>\n"
    assert html_to_markdown(html) == "Erster Absatz – gut.\n\nZweiter\nZeile & mehr"


def test_nested_lists() -> None:
    """Nested lists keep their nesting and numbering."""
    html = "<ul><li>one<ul><li>inner<ol><li>a</li><li>b</li></ol></li></ul></li><li>two</li></ul>"
    assert html_to_markdown(html) == "- one\n  - inner\n    1. a\n    2. b\n- two"


def test_ordered_list_start() -> None:
    """An <ol start> numbers from its start."""
    assert html_to_markdown('<ol start="3"><li>c</li><li>d</li></ol>') == "3. c\n4. d"


def test_blockquote() -> None:
    """A blockquote becomes "> " lines with no bare ">" line between paragraphs."""
    html = "<blockquote><p>quoted one</p><p>quoted two</p></blockquote><p>reply</p>"
    assert html_to_markdown(html) == "> quoted one\n> quoted two\n\nreply"


def test_relative_link_resolved_against_base_url() -> None:
    """A relative link resolves against the page it came from."""
    html = '<a href="/2019/04/other.html">earlier post</a>'
    assert html_to_markdown(html, base_url=POST_URL) == (
        "[earlier post](https://probationmatters.blogspot.com/2019/04/other.html)"
    )


def test_relative_link_without_base_url_keeps_only_text() -> None:
    """Without a base URL a relative link cannot be followed, so only its text remains."""
    assert html_to_markdown('<a href="other.html">earlier post</a>') == "earlier post"


@pytest.mark.parametrize(
    "href", ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,x", "mailto:a@b.c"]
)
def test_non_http_link_dropped_text_kept(href: str) -> None:
    """Links to anything but http(s) lose the link and keep the text."""
    assert html_to_markdown(f'<a href="{href}">click me</a>') == "click me"


def test_image_becomes_link() -> None:
    """Images become "[image: alt](src)" links, resolved like links."""
    html = '<img src="/pic.png" alt="A *cat*"> <img src="https://x.example/b.jpg">'
    assert html_to_markdown(html, base_url=POST_URL) == (
        "[image: A \\*cat\\*](https://probationmatters.blogspot.com/pic.png) "
        "[image](https://x.example/b.jpg)"
    )


def test_image_inside_link_is_not_nested() -> None:
    """Blogger wraps post images in a link to the full size; one link comes out, not two."""
    html = '<a href="https://x.example/big.jpg"><img src="https://x.example/small.jpg"></a>'
    assert html_to_markdown(html) == "[image](https://x.example/small.jpg)"


def test_inline_formatting() -> None:
    """Bold, italic, strike and underline map to Discord's markers."""
    html = "<b>b</b> <strong>s</strong> <i>i</i> <em>e</em> <s>x</s> <strike>y</strike> <u>u</u>"
    assert html_to_markdown(html) == "**b** **s** *i* *e* ~~x~~ ~~y~~ __u__"


def test_headings_become_bold_lines() -> None:
    """Headings are bold lines, not Discord's huge "#" headings."""
    html = "<h1>Title</h1><h3><b>Already bold</b></h3><p>text</p>"
    assert html_to_markdown(html) == "**Title**\n\n**Already bold**\n\ntext"


def test_table_flattened_to_lines() -> None:
    """Each table row becomes one line of its non-empty cells."""
    html = "<table><tr><th>A</th><th>B</th></tr><tr><td>1</td><td></td><td>3</td></tr></table>"
    assert html_to_markdown(html) == "A | B\n1 | 3"


def test_scripts_styles_iframes_dropped() -> None:
    """Content no reader of the blog sees is not shown in Discord either."""
    html = (
        "<script>alert(1)</script><style>p{}</style><iframe src='x'>frame</iframe>"
        "<!-- note --><noscript>ns</noscript>visible"
    )
    assert html_to_markdown(html) == "visible"


def test_nbsp_and_narrow_nbsp_become_spaces() -> None:
    """&nbsp;, U+00A0 and U+202F are ordinary spaces; leftover indentation goes."""
    html = "a&nbsp;b\u00a0c\u202fd<br />&nbsp; &nbsp; e"
    assert html_to_markdown(html) == "a b c d\ne"


def test_blogger_div_lines() -> None:
    """Blogger post divs are lines, and <div><br /></div> a blank line."""
    html = "<div>one</div><div><br /></div><div>two</div><div>three</div>"
    assert html_to_markdown(html) == "one\n\ntwo\nthree"


def test_pre_and_code() -> None:
    """<pre> becomes a fenced block, <code> inline code; neither is escaped inside."""
    html = "<p>Run <code>a_b*c</code>:</p><pre>x = 1\n  y_z = 2</pre>"
    assert html_to_markdown(html) == "Run `a_b*c`:\n\n```\nx = 1\n  y_z = 2\n```"


def test_pre_cannot_close_its_fence_early() -> None:
    """Backticks inside <pre> cannot end the code block and free the text after them."""
    markdown = html_to_markdown("<pre>```\n**bold** @everyone</pre>")
    assert markdown.count("```") == 2
    assert markdown.startswith("```\n") and markdown.endswith("\n```")
    assert not LIVE_MENTION.search(markdown)


def test_inline_code_with_backticks_is_escaped_text() -> None:
    """Inline code containing backticks is shown as escaped text rather than guessed."""
    assert html_to_markdown("<code>a`b</code>") == "a\\`b"


def test_markup_only_is_empty() -> None:
    """HTML with no visible text converts to an empty string."""
    assert html_to_markdown("<p> </p><br /><div>&nbsp;</div>") == ""


def test_deep_nesting_shows_text() -> None:
    """Absurdly nested HTML is shown as its text instead of crashing the converter."""
    markdown = html_to_markdown("<b>x" * 5000)
    assert markdown.split() == ["x"] * 5000


# --- hostile text -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "escaped"),
    [
        ("**bold**", "\\*\\*bold\\*\\*"),
        ("||spoiler||", "\\|\\|spoiler\\|\\|"),
        ("[click](http://evil)", "\\[click\\](http://evil)"),
        ("__under__ ~~gone~~", "\\_\\_under\\_\\_ \\~\\~gone\\~\\~"),
        ("`code`", "\\`code\\`"),
        ("# Heading", "\\# Heading"),
        ("-# small", "\\-# small"),
        ("- item", "\\- item"),
        ("> quote", "\\> quote"),
        (">>> quote", "\\>>> quote"),
        ("1. first", "1\\. first"),
        ("a\\*b", "a\\\\\\*b"),
    ],
)
def test_markdown_typed_by_a_commenter_stays_literal(typed: str, escaped: str) -> None:
    """Markdown a commenter types as text is escaped, so Discord shows it as typed."""
    markdown = html_to_markdown(f"<p>{typed}</p>")
    assert markdown == escaped
    assert shown(markdown) == typed


def test_markdown_at_line_start_after_br_is_escaped() -> None:
    """Line-start syntax is escaped after a <br />, where it starts a line in Discord."""
    markdown = html_to_markdown("a<br /># h<br />- l<br />&gt; q<br />2. n")
    assert markdown == "a\n\\# h\n\\- l\n\\> q\n2\\. n"


def test_bare_url_typed_as_text_keeps_underscores() -> None:
    """A URL typed as text stays a working link: escaping its "_" would break it."""
    markdown = html_to_markdown("see https://en.wikipedia.org/wiki/Foo_bar_(baz) and _this_")
    assert markdown == "see https://en.wikipedia.org/wiki/Foo_bar_(baz) and \\_this\\_"


@pytest.mark.parametrize("mention", MENTIONS)
def test_each_mention_form_is_neutralised(mention: str) -> None:
    """Every mention form is dead in converted HTML and in escaped text, yet reads the same."""
    for markdown in (html_to_markdown(f"<p>hi {escape(mention)}</p>"), escape_text(mention)):
        assert not LIVE_MENTION.search(markdown)
        assert shown(markdown).endswith(mention)


def test_mention_assembled_from_pieces_is_neutralised() -> None:
    """A mention split across tags or hidden behind a bidi override is still dead."""
    for html in (
        "@every<b></b>one",
        "@every<span>one</span>",
        "@\u202eeveryone",
        "&lt;@&#x31;2&gt;",
    ):
        assert not LIVE_MENTION.search(html_to_markdown(html)), html


def test_mention_in_link_target_is_neutralised() -> None:
    """A link target cannot carry a mention either."""
    markdown = html_to_markdown('<a href="https://x.example/@everyone">t</a>')
    assert markdown == "[t](https://x.example/%40everyone)"


def test_link_user_info_dropped() -> None:
    """ "https://bank@evil" tricks lose the user info that makes them look like the bank."""
    assert safe_url("https://bank.example@evil.example/x") == "https://evil.example/x"


LONGEST_LABEL = "a" * 63
LONGEST_HOST = ".".join(["b" * 63] * 3 + ["b" * 58, "cd"])  # 253 characters


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/x.png", "https://example.com/x.png"),
        ("https://EXAMPLE.Com/x", "https://example.com/x"),
        ("http://a-b.c-d.example:8080/x", "http://a-b.c-d.example:8080/x"),
        ("https://1password.com/x", "https://1password.com/x"),
        ("https://123.example/x", "https://123.example/x"),
        ("https://example.com./x", "https://example.com./x"),
        ("https://xn--bcher-kva.de/x", "https://xn--bcher-kva.de/x"),
        ("https://bücher.de/x", "https://bücher.de/x"),
        ("https://127.0.0.1:8080/x", "https://127.0.0.1:8080/x"),
        ("https://8.8.8.8/x", "https://8.8.8.8/x"),
        ("https://[2001:db8::1]:8443/x", "https://[2001:db8::1]:8443/x"),
        ("https://[::ffff:1.2.3.4]/x", "https://[::ffff:1.2.3.4]/x"),
        (f"https://{LONGEST_LABEL}.example/x", f"https://{LONGEST_LABEL}.example/x"),
        (f"https://{LONGEST_HOST}/x", f"https://{LONGEST_HOST}/x"),
    ],
)
def test_safe_url_accepts_hosts_discord_takes(url: str, expected: str) -> None:
    """DNS names with a top-level label of letters, and IP addresses, are kept."""
    assert safe_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://-/x.png",
        "https://-a.example/x",
        "https://a-.example/x",
        "https://example.-com/x",
        "https://a_b.example/x",
        "https://example_.com/x",
        "https://localhost/x",
        "https://blog/x",
        "https://example.c/x",
        "https://example.123/x",
        "https://example.c0m/x",
        "https://1.2.3/x",
        "https://1.2.3.4.5/x",
        "https://256.1.1.1/x",
        "https://01.2.3.4/x",
        "https://0x7f.0.0.1/x",
        "https://a..example/x",
        "https://.example.com/x",
        "https://example.com../x",
        "https://./x",
        f"https://{'a' * 64}.example/x",
        f"https://c{LONGEST_HOST}/x",
        "https:///x",
        "https://:443/x",
        "https://user@/x",
        "https://ex%41mple.com/x",
        "https://exa mple.com/x",
        "https://exa*mple.com/x",
        "https://\U0001f600.example/x",
        "https://[v1.fe]/x",
        "https://[fe80::1%25eth0]/x",
        "https://[1.2.3.4]/x",
    ],
)
def test_safe_url_refuses_hosts_discord_would_refuse(url: str) -> None:
    """A host Discord answers with 50035 "Not a well formed URL" gives no URL at all."""
    assert safe_url(url) is None


def test_relative_link_on_a_page_with_a_refused_host_is_dropped() -> None:
    """A relative URL resolved against a base with a refused host gives no URL either."""
    assert safe_url("/x.png", "https://a_b.example/post.html") is None
    assert safe_url("/x.png", "https://ok.example/post.html") == "https://ok.example/x.png"


def test_control_characters_and_bidi_overrides_removed() -> None:
    """C0/C1 controls, U+FFFE/U+FFFF and bidi overrides go, as characters or references."""
    raw = "a\x01b\x1bc\x85d\ufffee\uffff f\u202eg\u2066h\u2069i\tj"
    assert html_to_markdown(raw) == "abcde fghi j"
    refs = "a&#1;b&#x1b;c&#x202E;d&#8238;e&#x2067;f"
    assert html_to_markdown(refs) == "abcdef"
    assert escape_text("Bob\u202e\x07") == "Bob"


def test_lone_surrogates_removed() -> None:
    """Lone surrogates, which Discord's JSON refuses, are removed."""
    assert clean_text("a\ud800b\udfffc") == "abc"
    assert html_to_markdown("a\ud800b&#xD800;c").replace("\ufffd", "") == "abc"
    assert escape_text("x\udc00y") == "xy"


def test_huge_html_is_bounded() -> None:
    """A megabyte of comment does not stall a poll: the converter reads a bounded prefix."""
    markdown = html_to_markdown("<p>word word</p>" * 100_000)
    assert 0 < len(markdown) < 100_000


# --- thread names and timestamps -------------------------------------------------------


def test_thread_name_short_title_unchanged() -> None:
    """A title that fits is the thread name, whitespace collapsed, controls removed."""
    assert thread_name("  Great\n Leadership,\x07 But\u202e Poor Output?  ", WHEN) == (
        "Great Leadership, But Poor Output?"
    )


def test_thread_name_cut_at_word_boundary_with_ellipsis() -> None:
    """A long title is cut after a word and ends with "…", 100 characters at most."""
    title = "Probation " * 20
    name = thread_name(title, WHEN)
    assert len(name) <= 100
    assert name.endswith("Probation…")
    assert name[:-1].split() == ["Probation"] * len(name[:-1].split())


def test_thread_name_long_word_cut_hard() -> None:
    """A title with no space to cut at is cut at 99 characters plus "…"."""
    name = thread_name("x" * 300, WHEN)
    assert name == "x" * 99 + "…"


def test_thread_name_exactly_100_characters_is_not_cut() -> None:
    """A 100-character title is used whole."""
    assert thread_name("y" * 100, WHEN) == "y" * 100


@pytest.mark.parametrize("title", ["", "   ", "\n\t", "\u202e\x00"])
def test_untitled_thread_name_uses_utc_date(title: str) -> None:
    """An untitled article is named by its UTC publication date, not the blog's local one."""
    published = datetime(2019, 4, 3, 0, 30, tzinfo=BST)  # 2019-04-02 23:30 UTC
    assert thread_name(title, published) == "Untitled post (2019-04-02)"


def test_discord_timestamp() -> None:
    """Timestamps are Discord's <t:EPOCH:style> from an aware datetime."""
    assert discord_timestamp(WHEN) == "<t:1554281460:f>"
    assert discord_timestamp(WHEN.astimezone(UTC), "R") == "<t:1554281460:R>"
    with pytest.raises(ValueError, match="style"):
        discord_timestamp(WHEN, "x")


# --- comments -------------------------------------------------------------------------


def test_comment_header_and_body() -> None:
    """A comment is its header line (name, time, permalink without preview), then its text."""
    parts = render_comment(comment(html="Is that right?<br /><br />Odd &#39;then&#39;."))
    assert parts == [f"{HEADER}\nIs that right?\n\nOdd 'then'."]


@pytest.mark.parametrize(
    ("published", "shown"),
    [
        (datetime(2019, 4, 3, 18, 8, tzinfo=BST), "18:08"),
        (datetime(2019, 4, 3, 12, 8, tzinfo=timezone(-timedelta(hours=5))), "12:08"),
        (datetime(2019, 4, 3, 17, 8, tzinfo=UTC), "17:08"),
        (datetime(2019, 4, 3, 22, 38, tzinfo=timezone(timedelta(hours=5, minutes=30))), "22:38"),
    ],
)
def test_comment_header_shows_the_blogs_own_time(published: datetime, shown: str) -> None:
    """The header shows the time as the blog does (its own offset), then a Discord timestamp.

    The seed blog's commenters answer each other by it ("Thank you 18:08"), while a
    Discord timestamp shows each reader's own zone; every case here is 17:08 UTC.
    """
    first = render_comment(comment(published=published))[0]
    assert first.startswith(f"**Anonymous** · {shown} · <t:1554311280:f> · [permalink](<")
    assert permalink_in(first) == PERMALINK


def test_permalink_in_reads_headers_with_and_without_local_time() -> None:
    """Headers with the blog's time are read, and so are those already in Discord without it."""
    assert permalink_in(f"{HEADER}\nHello") == PERMALINK
    assert permalink_in(f"{OLD_HEADER}\nHello") == PERMALINK
    assert permalink_in(OLD_HEADER.replace("**Anonymous**", "**A \\*b\\***")) == PERMALINK


def test_comment_author_name_escaped() -> None:
    """A commenter's name cannot bring formatting or a mention into the header."""
    header = render_comment(comment(author="**Admin** @everyone\nline"))[0].split("\n")[0]
    assert header.startswith("**\\*\\*Admin\\*\\* @\u200beveryone line** · ")
    assert not LIVE_MENTION.search(header)


def test_comment_without_name_is_anonymous() -> None:
    """A comment whose author has no name is shown as Anonymous."""
    assert render_comment(comment(author=" \u202e "))[0].startswith("**Anonymous** · ")


def test_removed_comment_shows_no_old_text() -> None:
    """A removed comment is the header and a note, none of its old text."""
    removed = comment(html="my secret rant", removed=True)
    assert render_comment(removed) == [f"{HEADER}\n{REMOVED_NOTE}"]
    assert render_comment(removed, parent_missing=True) == [f"{HEADER}\n{REMOVED_NOTE}"]


def test_orphan_reply_says_its_parent_is_missing() -> None:
    """A reply whose parent is not mirrored says so before its text."""
    assert render_comment(comment(html="Agreed."), parent_missing=True) == [
        f"{HEADER}\n{ORPHAN_NOTE}\nAgreed."
    ]


def test_empty_comment() -> None:
    """A comment with no visible text says it is empty."""
    assert render_comment(comment(html="<p>&nbsp;</p>")) == [f"{HEADER}\n{EMPTY_NOTE}"]


def test_long_comment_header_only_in_first_part() -> None:
    """A long comment splits at paragraphs; only the first part has the header."""
    paragraphs = [f"Paragraph {n}. " + "Some more words here. " * 30 for n in range(12)]
    parts = render_comment(comment(html="".join(f"<p>{p}</p>" for p in paragraphs)))
    assert len(parts) > 1
    assert all(len(part) <= 2000 for part in parts)
    assert parts[0].startswith(HEADER + "\n")
    assert all("permalink" not in part for part in parts[1:])
    assert permalink_in(parts[0]) == PERMALINK
    assert all(permalink_in(part) is None for part in parts[1:])
    body = "\n\n".join(parts)[len(HEADER) :]
    assert body.split() == " ".join(paragraphs).split()


def test_giant_comment_is_capped() -> None:
    """A flood of text becomes a bounded number of messages that point to the blog."""
    parts = render_comment(comment(html="<p>" + "blah " * 50_000 + "</p>"))
    assert len(parts) == MAX_COMMENT_PARTS
    assert all(len(part) <= 2000 for part in parts)
    assert parts[-1].endswith(TRUNCATED_NOTE)


@pytest.mark.parametrize(
    "permalink",
    [
        "http://x.example/a b",
        "javascript:alert(1)",
        "https://x.example/@everyone",
        "https://x.example/\u202egnp.exe",
        "https://x.example/(a)>)<@123>",
        "x\ud800y",
    ],
)
def test_odd_permalink_round_trips_and_is_inert(permalink: str) -> None:
    """A permalink Discord would mangle is shown escaped, and still read back exactly."""
    first = render_comment(comment(permalink=permalink))[0]
    assert "[permalink (escaped)](<" in first
    assert permalink_in(first) == permalink
    assert not LIVE_MENTION.search(first)
    assert "\u202e" not in first


def test_percent_escapes_in_a_permalink_are_kept_as_written() -> None:
    """An ordinary permalink with %-escapes is shown as it is, not escaped again."""
    permalink = "https://x.example/caf%C3%A9/%2541#comment-3"
    first = render_comment(comment(permalink=permalink))[0]
    assert f"[permalink](<{permalink}>)" in first
    assert permalink_in(first) == permalink


@pytest.mark.parametrize(
    "content",
    [
        "",
        "hello",
        f"quoting: {HEADER}",
        f"> {HEADER}",
        f"**Anonymous** · <t:1554281460:f> · {PERMALINK}",
        f"**Anonymous** · <t:1554281460:R> · [permalink](<{PERMALINK}>)",
        f"**Any*one** · <t:1554281460:f> · [permalink](<{PERMALINK}>)",
        f"**Anonymous** · 9:51 · <t:1554281460:f> · [permalink](<{PERMALINK}>)",
        f"**Anonymous** · 09:51 · 09:51 · <t:1554281460:f> · [permalink](<{PERMALINK}>)",
    ],
)
def test_permalink_in_ignores_other_text(content: str) -> None:
    """Text that is not a comment header this module wrote has no permalink."""
    assert permalink_in(content) is None


def test_permalink_in_reads_edited_removed_message() -> None:
    """A comment's message still names it after being edited to the removed note."""
    assert permalink_in(render_comment(comment(removed=True))[0]) == PERMALINK


# --- articles -----------------------------------------------------------------------


def test_article_message() -> None:
    """The article message: linked title, byline with time, excerpt, link to read it."""
    rendered = render_article(article(), blog_title="On Probation")
    assert rendered == RenderedArticle(
        content=(
            f"**[Great Leadership, But Poor Output?](<{POST_URL}>)**\n"
            "by Jim Brown · <t:1554281460:f>\n"
            "The inspection report is out.\n"
            f"Read the article: <{POST_URL}>"
        ),
        image_url="https://blogger.googleusercontent.com/img/a/report.png",
        url=POST_URL,
        title="Great Leadership, But Poor Output?",
    )


def test_article_excerpt_cut_with_ellipsis() -> None:
    """A long article is cut to about 700 characters at a sentence and ends with "…"."""
    html = "<p>" + "This sentence is part of a long post. " * 100 + "</p><img src='a.png'>"
    content = render_article(article(html=html), blog_title="").content
    excerpt = content.split("\n")[2]
    assert 350 <= len(excerpt) <= 700
    assert excerpt.endswith("post. …")
    assert "image" not in content  # the article's image is the embed
    assert len(content) <= 2000


def test_article_excerpt_cut_after_a_url_leaves_the_url_alone() -> None:
    """An excerpt cut right after a bare URL puts a space before "…": Discord would link it."""
    html = "<p>" + "word " * 134 + "https://example.com/abc wordy more words here and there</p>"
    excerpt = render_article(article(html=html), blog_title="").content.split("\n")[2]
    assert excerpt.endswith(" https://example.com/abc …")


def test_name_cut_inside_a_url_leaves_the_url_alone() -> None:
    """A long name ending in a URL is cut with a space before "…", outside the link."""
    header = render_comment(comment(author="Visit https://spam.example/" + "a" * 100))[0]
    assert re.match(r"\*\*Visit https://spam\.example/a+ …\*\* · 09:51 · ", header), header


@pytest.mark.parametrize(
    ("html", "markdown"),
    [
        (f"<a href='{POST_URL}'>{POST_URL}</a>text", f"<{POST_URL}>text"),
        (f"<a href='{POST_URL}'>{POST_URL}</a><b>bold</b>", f"<{POST_URL}>**bold**"),
        (f"<a href='{POST_URL}'>{POST_URL}</a>, then", f"<{POST_URL}>, then"),
        (f"<a href='{POST_URL}'>{POST_URL}</a> text", f"{POST_URL} text"),
        (f"<a href='{POST_URL}'>{POST_URL}</a><br />next", f"{POST_URL}\nnext"),
        (f"<p><a href='{POST_URL}'>{POST_URL}</a></p><p>next</p>", f"{POST_URL}\n\nnext"),
    ],
)
def test_text_right_after_a_linked_url_is_not_glued_to_it(html: str, markdown: str) -> None:
    """A link shown as its URL, with text right after it, is closed off with <>."""
    assert html_to_markdown(html) == markdown


def test_untitled_article_and_blog_title_as_author() -> None:
    """An untitled article gets the dated placeholder; the blog names a nameless author."""
    published = datetime(2019, 4, 3, 0, 30, tzinfo=BST)
    rendered = render_article(article(title=" ", author="", published=published), blog_title="OP")
    assert rendered.title == "Untitled post (2019-04-02)"
    assert rendered.content.startswith(
        f"**[Untitled post (2019-04-02)](<{POST_URL}>)**\nby OP · <t:1554247800:f>\n"
    )


def test_hostile_article_is_inert_and_fits() -> None:
    """A hostile title, author, URL and image stay inert, and the message fits in 2000."""
    rendered = render_article(
        article(
            title="**@everyone** [x](http://evil) " * 20,
            author="<@123> " * 50,
            url="https://x.example/" + "a" * 5000,
            html="<p>@here " + "word " * 2000 + "</p>",
            image_url="javascript:alert(1)",
        ),
        blog_title="",
    )
    assert len(rendered.content) <= 2000
    assert not LIVE_MENTION.search(rendered.content)
    assert "**@" not in rendered.content
    assert rendered.image_url is None


def test_article_with_a_refused_host_has_no_image_and_no_link() -> None:
    """An image or article URL with a host Discord refuses is dropped; the title stays plain."""
    rendered = render_article(
        article(url="https://-/post.html", image_url="https://-/x.png"), blog_title=""
    )
    assert rendered.image_url is None
    assert rendered.content == (
        "**Great Leadership, But Poor Output?**\n"
        "by Jim Brown · <t:1554281460:f>\n"
        "The inspection report is out."
    )


def test_comment_links_to_refused_hosts_are_shown_plainly() -> None:
    """In a comment, links and images to hosts Discord refuses keep their text, not the URL."""
    html = (
        '<a href="https://a_b.example/p">the post</a> and <img src="https://-/x.png" alt="cat">'
        '<img src="https://localhost/y.png">'
    )
    [message] = render_comment(comment(html=html))
    assert message.split("\n", 1)[1] == "the post and \\[image: cat\\]"


# --- emphasis -----------------------------------------------------------------------

# What Discord never reads as emphasis: escapes, inline code, link targets, <…> links.
_NOT_EMPHASIS = re.compile(r"\\.|`[^`\n]*`|\]\([^()\s]*\)|<[^<>\n]*>")
_FENCE = re.compile(r"^[ \t>]*(?:(?:-|\d+\.)[ \t]+)*```")


def emphasis_balanced(markdown: str) -> bool:
    """Whether every line opens as many ``**``, ``*``, ``__`` and ``~~`` as it closes.

    Per line, because Discord does not carry emphasis across a line break reliably;
    a run of three asterisks is ``**`` and ``*`` together. Code blocks are skipped.
    """
    in_code = False
    for line in markdown.split("\n"):
        if _FENCE.match(line):
            in_code = not in_code
            continue
        if in_code:
            continue
        bare = _NOT_EMPHASIS.sub("x", line)
        stars = [len(run) for run in re.findall(r"\*+", bare)]
        if sum(n // 2 for n in stars) % 2 or sum(n % 2 for n in stars) % 2:
            return False
        for mark in "_~":
            if sum(len(run) // 2 for run in re.findall(f"{mark}+", bare)) % 2:
                return False
    return True


@pytest.mark.parametrize(
    ("html", "markdown"),
    [
        ("<b><b>Title</b><br/>text</b>", "**Title**\n**text**"),
        ("<strong><b>x</b> y</strong>", "**x y**"),
        ("<b>a <strong>b <b>c</b></strong> d</b>", "**a b c d**"),
        ("<em><i>x</i> y</em>", "*x y*"),
        ("<i>a <em>b</em></i> c", "*a b* c"),
        ("<u><ins>x</ins> y</u>", "__x y__"),
        ("<s><del>x</del> <strike>y</strike></s>", "~~x y~~"),
        ("<b>a<i>b<br/>c</i>d</b>", "**a*b***\n***c*d**"),
        ("<i>one<br />two<br /><br />three</i>", "*one*\n*two*\n\n*three*"),
        ("<b><p>one</p><p>two</p></b>", "**one**\n\n**two**"),
        ("<b><ul><li>a</li><li>b</li></ul></b>", "- **a**\n- **b**"),
        ("<b><blockquote>q<br>r</blockquote></b>", "> **q**\n> **r**"),
        ("<b><pre>code\nmore</pre>after</b>", "```\ncode\nmore\n```\n\n**after**"),
        ("<h2><b>Bold</b> heading</h2>", "**Bold heading**"),
        ("<b><h2>Heading</h2>text</b>", "**Heading**\n\n**text**"),
        ("<b>x</b><b>y</b>", f"**x**{ZWSP}**y**"),
        ("<b>x</b><i>y</i>", f"**x**{ZWSP}*y*"),
        ("a<b></b>b<i> </i>c<u><b> </b></u>d", "ab c d"),
        ("<b>run <code>a<br>b</code></b>", "**run `a b`**"),
        ("<b><ul><li><pre>x</pre></li></ul></b>", "- ```\n  x\n  ```"),
        ("<h3><i>a<pre>b\nc</pre></i></h3>", "***a `b c`***"),
    ],
)
def test_nested_emphasis_is_balanced(html: str, markdown: str) -> None:
    """Nested same emphasis is marked once; each line is closed and reopened; empty ones go."""
    assert html_to_markdown(html) == markdown
    assert emphasis_balanced(markdown)


def test_split_closes_and_reopens_emphasis_cut_inside_a_line() -> None:
    """A bold line longer than a part is closed at the cut and reopened in the next part."""
    markdown = html_to_markdown(
        "<p><b>" + "bold words here " * 30 + "</b> and <i>" + "it " * 40 + "</i></p>"
    )
    assert "\n" not in markdown
    parts = split_message(markdown, limit=100)
    assert len(parts) > 5
    assert all(len(part) <= 100 for part in parts)
    assert all(emphasis_balanced(part) for part in parts), parts
    assert parts[1].startswith("**") and parts[1].endswith("**")
    shown = " ".join(parts).replace("*", "").split()
    assert shown == markdown.replace("*", "").split()


def test_long_bold_comment_parts_are_each_balanced() -> None:
    """A comment that is one long bold, struck, underlined line splits into balanced parts."""
    html = "<b><u><s>" + "shouting at length " * 400 + "</s></u></b>"
    parts = render_comment(comment(html=html))
    assert len(parts) > 2
    assert all(len(part) <= 2000 for part in parts)
    assert all(emphasis_balanced(part) for part in parts)
    assert parts[1].startswith("**__~~") and parts[1].endswith("~~__**")


# --- splitting ----------------------------------------------------------------------


def test_split_short_text_is_one_part() -> None:
    """Text that fits is one part, stripped; blank text is no part at all."""
    assert split_message("  hello  ") == ["hello"]
    assert split_message(" \n ") == []


def test_split_prefers_paragraphs() -> None:
    """A paragraph boundary is the cut when it leaves the part at least half full."""
    first, second = "a " * 40, "b " * 40
    assert split_message(f"{first}\n\n{second}", limit=100) == [first.strip(), second.strip()]


def test_split_falls_back_to_sentences_then_words() -> None:
    """Without paragraph or line breaks, a sentence end is used, then a word boundary."""
    text = "One two three. " + "four " * 30
    parts = split_message(text, limit=80)
    assert parts[0] == "One two three. " + ("four " * 13).strip()  # words beat a tiny part
    sentences = "Short one here. Another one there. " * 5
    assert split_message(sentences, limit=80)[0].endswith("there.")


def test_split_cuts_an_overlong_word() -> None:
    """A single word longer than the limit is cut hard, and nothing is lost."""
    parts = split_message("x" * 250, limit=100)
    assert parts == ["x" * 100, "x" * 100, "x" * 50]


def test_split_does_not_break_a_masked_link() -> None:
    """A masked link that fits in a part is kept whole."""
    link = "[a link with several words](https://x.example/page)"
    text = "w " * 30 + link + " tail"
    parts = split_message(text, limit=80)
    assert any(link in part for part in parts)


def test_split_reopens_a_cut_code_block() -> None:
    """A code block cut between parts is closed at the end of one and reopened in the next."""
    text = "Intro.\n\n```py\n" + "\n".join(f"line {n}" for n in range(40)) + "\n```\nOutro."
    parts = split_message(text, limit=100)
    assert all(len(part) <= 100 for part in parts)
    for part in parts:
        assert part.count("```") % 2 == 0, part
    assert parts[1].startswith("```\n")
    assert "".join(parts).count("line ") == 40


def test_split_limit_too_small() -> None:
    """A limit too small for a reopened code fence is refused."""
    with pytest.raises(ValueError, match="limit"):
        split_message("text", limit=10)


# --- properties -------------------------------------------------------------------------

WORDY = st.lists(
    st.sampled_from([*"abcdefghij .,!?\n\t*_[]()|>#-:/@é", "\n\n", "https://", "[a b](http://c/)"])
    | st.text(alphabet="xyz", min_size=40, max_size=500),
    max_size=300,
).map("".join)
HTML_TOKENS = st.sampled_from(
    [
        "<p>", "</p>", "<br />", "<b>", "</b>", "<i>", "</i>", "<a href='http://x.example/'>",
        "<a href='javascript:x'>", "</a>", "<ul><li>", "</li></ul>", "<blockquote>",
        "</blockquote>", "<pre>", "</pre>", "<code>", "</code>", "<img src='/i.png' alt='@here'>",
        "<table><tr><td>", "</td></tr></table>", "<h2>", "</h2>", "<script>", "</script>",
        "&lt;", "&gt;", "&amp;", "&#64;", "&#x202e;", "&#0;", "&#xD800;", "&nbsp;", "@", "<@", "<#",
        "</", "everyone", "here", "123", "!", "&", ">", "*", "`", "```", "||", "[", "](", ")", "\n",
        " ", "\u202e", "\x00",
    ]
)  # fmt: skip
HTMLISH = st.lists(HTML_TOKENS | st.text(max_size=8), max_size=60).map("".join)


@props
@given(text=WORDY, limit=st.integers(min_value=64, max_value=400))
def test_split_property_parts_fit_and_no_word_is_lost(text: str, limit: int) -> None:
    """For any text, parts fit, none is empty, and the words come out in order.

    Emphasis cut inside a line is closed and reopened, so markers may be added.
    """
    parts = split_message(text, limit)
    assert all(0 < len(part) <= limit for part in parts)
    assert all(part == part.strip() for part in parts)
    fits = all(len(word) <= limit for word in text.split())
    joined, text = unmarked(" ".join(parts)), unmarked(text)
    if fits:
        assert joined.split() == text.split()
    assert "".join(joined.split()) == "".join(text.split())


def unmarked(text: str) -> str:
    return re.sub(r"[*_~]", "", text)


@props
@given(
    words=st.lists(st.text(alphabet="abc`\n ", min_size=1, max_size=30), max_size=80),
    limit=st.integers(min_value=64, max_value=300),
)
def test_split_property_with_code_fences(words: list[str], limit: int) -> None:
    """With code fences about, parts still fit, are never empty, and keep every letter."""
    text = "\n".join(words)
    parts = split_message(text, limit)
    assert all(0 < len(part) <= limit for part in parts)
    letters = re.compile(r"[`\s]")
    assert "".join(letters.sub("", part) for part in parts) == letters.sub("", text)


@props
@given(html=HTMLISH)
def test_html_to_markdown_property_never_raises_nor_mentions(html: str) -> None:
    """For any HTML-ish input, conversion succeeds and contains no live mention."""
    markdown = html_to_markdown(html, base_url="https://blog.example/post.html")
    assert not LIVE_MENTION.search(markdown)
    assert not re.search("[\x00-\x08\x0b-\x1f\u202a-\u202e\u2066-\u2069\ud800-\udfff]", markdown)


@props
@given(html=st.text(max_size=300))
def test_html_to_markdown_property_arbitrary_text(html: str) -> None:
    """Arbitrary Unicode text never crashes the converter or yields a live mention."""
    assert not LIVE_MENTION.search(html_to_markdown(html))


@props
@given(text=st.text(alphabet=st.characters(exclude_characters="\u200b"), max_size=200))
def test_escape_text_property_shows_text_as_written(text: str) -> None:
    """Escaped text displays as the cleaned input, with no live mention or markup."""
    escaped = escape_text(text)
    assert not LIVE_MENTION.search(escaped)
    if "http" not in text:  # URLs are percent-encoded, not backslash-escaped
        assert shown(escaped) == clean_text(text)
    unescaped_markup = re.compile(r"(?<!\\)(?:\\\\)*[*_~`|\[\]]")
    assert not unescaped_markup.search(re.sub(r"https?://\S+", "", escaped))


@props
@given(
    permalink=st.text(min_size=1, max_size=120)
    | st.from_regex(r"https?://[a-z.]+/\S{0,80}", fullmatch=True)
)
def test_permalink_property_round_trips(permalink: str) -> None:
    """Any permalink reads back exactly from the first message of its comment."""
    first = render_comment(comment(permalink=permalink))[0]
    assert permalink_in(first) == permalink
    assert not LIVE_MENTION.search(first)


EMPHASIS_TOKENS = st.sampled_from(
    [
        "<b>", "</b>", "<strong>", "</strong>", "<i>", "</i>", "<em>", "</em>", "<u>", "</u>",
        "<s>", "</s>", "<del>", "</del>", "<br />", "<p>", "</p>", "<div>", "</div>", "<h3>",
        "</h3>", "<ul><li>", "</li></ul>", "<blockquote>", "</blockquote>", "<pre>", "</pre>",
        "<code>", "</code>", "<a href='http://x.example/a__b'>", "</a>", " ", "word", "*", "_",
        "~", "\n",
    ]
)  # fmt: skip


@props
@given(
    html=st.lists(EMPHASIS_TOKENS, max_size=80).map("".join),
    limit=st.integers(min_value=64, max_value=300),
)
@example(html="<b><b>word</b><br />" + "word " * 30 + "</b>", limit=64)
@example(html="<b><pre>word", limit=64)
def test_emphasis_property_every_part_balanced(html: str, limit: int) -> None:
    """However emphasis is nested, every line of every part opens what it closes."""
    markdown = html_to_markdown(html)
    assert emphasis_balanced(markdown), markdown
    assert all(emphasis_balanced(part) for part in split_message(markdown, limit))


@props
@given(html=HTMLISH, author=st.text(max_size=120), missing=st.booleans())
def test_render_comment_property_parts_fit(html: str, author: str, missing: bool) -> None:
    """Any comment renders to non-empty parts of at most 2000 characters, header first."""
    parts = render_comment(comment(html=html, author=author), parent_missing=missing)
    assert parts and all(0 < len(part) <= 2000 for part in parts)
    assert permalink_in(parts[0]) == PERMALINK
    assert not any(LIVE_MENTION.search(part) for part in parts)

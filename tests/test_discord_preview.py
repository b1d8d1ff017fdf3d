"""How the /blog preview answer is laid out: always within Discord's message and embed limits."""

from __future__ import annotations

from bot.discord_preview import PreviewComment, ThreadPreview, preview_messages
from bot.render import RenderedArticle


def long_preview(text_length: int) -> ThreadPreview:
    article = RenderedArticle("A" * text_length, "https://b.example/i.png", "u", "T")
    comments = [
        PreviewComment(1, None, ["x" * text_length, "more"]),
        PreviewComment(2, 1, ["y" * text_length]),
        PreviewComment(3, None, ["z" * text_length]),
    ]
    return ThreadPreview(
        blog_title="B" * 3000,
        blog_url="https://b.example/",
        feed_url="https://b.example/feed",
        dialect="atom",
        articles=9,
        thread_name="T",
        article=article,
        comments=comments,
        total_comments=40,
        unread=None,
    )


def test_full_length_messages_are_spread_over_messages_within_the_limits() -> None:
    """An article and three comments of 2,000 characters each: every embed is kept whole,
    in order, no message carries over 6,000 characters of embeds or 2,000 of content."""
    messages = preview_messages(long_preview(2000))
    embeds = [embed for _content, group in messages for embed in group]
    assert [e.title for e in embeds] == [
        "Article message",
        "Comment 1",
        "Comment 2 · ↳ Discord reply to comment 1",
        "Comment 3",
    ]
    assert [len(e.description or "") for e in embeds] == [2000] * 4
    assert embeds[1].footer.text == "…continued in 1 more message(s)"
    assert embeds[0].image.url == "https://b.example/i.png"
    assert len(messages) >= 2
    for content, group in messages:
        assert len(content) <= 2000
        assert 1 <= len(group) <= 10 or (content and not group)
        assert sum(len(e) for e in group) <= 6000


def test_short_messages_share_one_message() -> None:
    """Short article and comments come as one message: the summary and four embeds."""
    [(content, embeds)] = preview_messages(long_preview(300))
    assert "the first 3 of its 40 comment(s)" in content
    assert len(embeds) == 4

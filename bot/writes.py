"""What each kind of Discord write sends: forum posts, article messages and their
threads, comment parts, edits.

The mirror (``bot/delivery.py``) decides what to send and in what order; these
methods say how one item is sent, each through ``send_once`` (``bot/outbox.py``),
and return the outbox effect its intent is completed with.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import Any

import discord

from bot.convert import article_of, comment_of
from bot.discord_rest import DiscordRest
from bot.outbox import Courier, DeliveryError, Gone, Refusal, SendPolicy, send_once
from bot.render import comment_key, thread_name
from bot.threads import Channel, DiscordReader, forum_tags, image_embed
from bot.untrusted import Untrusted
from storage.outbox import (
    Abandoned,
    ArticleEdited,
    ArticleMessagePosted,
    CommentEdited,
    Effect,
    MessageGone,
    NewIntent,
    Refused,
    ThreadMade,
)
from storage.records import (
    ArticleRecord,
    CommentRecord,
    IntentKind,
    Subscription,
)

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()


@dataclass(frozen=True, slots=True)
class Planned:
    """A comment about to be sent: its messages and what its first one replies to."""

    comment: CommentRecord
    parts: list[str]
    reference: int | None

    def intent(self, sub: Subscription, thread_id: int, part: int) -> NewIntent:
        return NewIntent(
            subscription_id=sub.id,
            kind=IntentKind.COMMENT_PART,
            target_id=self.comment.id,
            channel_id=thread_id,
            part=part,
            total=len(self.parts),
        )


class Writer:
    """Sends one item at a time; every write completes (or leaves open) its intent."""

    def __init__(
        self,
        client: discord.Client,
        rest: DiscordRest,
        reader: DiscordReader,
        courier: Courier,
        policy: SendPolicy,
        untrusted: Untrusted,
    ) -> None:
        self.client = client
        self.rest = rest
        self.reader = reader
        self.courier = courier
        self.policy = policy
        self.untrusted = untrusted

    async def forum_post(
        self, sub: Subscription, forum: discord.ForumChannel, record: ArticleRecord
    ) -> Effect:
        article = article_of(record)
        rendered = await self.untrusted.render_article(
            article, blog_title=sub.blog_title, reserve=mention_reserve(sub.mention_role_id)
        )
        embed = image_embed(rendered.image_url)
        content, allowed = with_mention(rendered.content, sub.mention_role_id)
        payload: dict[str, Any] = {
            "name": thread_name(record.title, record.published),
            "applied_tags": [str(tag.id) for tag in forum_tags(forum, record.labels)],
            "message": {
                "content": content,
                "allowed_mentions": allowed.to_dict(),
                "embeds": [embed.to_dict()] if embed else [],
            },
        }
        [intent] = await self.courier.open([article_intent(sub, record, IntentKind.FORUM_POST)])
        made = await send_once(
            self.policy,
            lambda: self.rest.create_forum_post(forum.id, payload),
            what=f"creating the forum post for {record.url}",
            look=lambda: self.reader.find_forum_post(forum, record, sub.blog_title),
        )
        effect: Effect = Refused(made.reason) if isinstance(made, Refusal) else ThreadMade(*made)
        await self.courier.complete(intent, effect)
        return effect

    async def text_thread(
        self, sub: Subscription, channel: discord.TextChannel, record: ArticleRecord
    ) -> Effect:
        """The article message (with a nonce), then the thread made from it."""
        starter = record.starter_message_id
        if starter is None:
            rendered = await self.untrusted.render_article(
                article_of(record),
                blog_title=sub.blog_title,
                reserve=mention_reserve(sub.mention_role_id),
            )
            embed = image_embed(rendered.image_url) or discord.utils.MISSING
            content, allowed = with_mention(rendered.content, sub.mention_role_id)
            [intent] = await self.courier.open(
                [article_intent(sub, record, IntentKind.ARTICLE_MESSAGE)]
            )
            sent = await send_once(
                self.policy,
                lambda: channel.send(
                    content, embed=embed, nonce=intent.nonce, allowed_mentions=allowed
                ),
                what=f"posting the article message of {record.url}",
            )
            if isinstance(sent, Refusal):
                await self.courier.complete(intent, Refused(sent.reason))
                return Refused(sent.reason)
            await self.courier.complete(intent, ArticleMessagePosted(sent.id))
            starter = sent.id
        message_id = starter
        [intent] = await self.courier.open(
            [article_intent(sub, record, IntentKind.THREAD_FROM_MESSAGE)]
        )
        name = thread_name(record.title, record.published)
        made = await send_once(
            self.policy,
            lambda: self._thread_from(channel, message_id, name),
            what=f"creating the thread of {record.url}",
            look=lambda: self.reader.thread_of(message_id),
        )
        effect: Effect = (
            Refused(made.reason) if isinstance(made, Refusal) else ThreadMade(made, message_id)
        )
        await self.courier.complete(intent, effect)
        return effect

    async def _thread_from(self, channel: discord.TextChannel, message_id: int, name: str) -> int:
        try:
            thread = await channel.get_partial_message(message_id).create_thread(name=name)
        except discord.HTTPException as exc:
            if exc.code != 160004:  # "a thread has already been created for this message"
                raise
            found = await self.reader.thread_of(message_id)
            if found is None:
                raise
            return found
        return thread.id

    async def send_part(
        self, thread: discord.Thread, planned: Planned, part: int, nonce: str
    ) -> discord.Message:
        first_sent = part == planned.comment.parts_sent
        reference = planned.reference if first_sent else None
        if reference is None:
            return await thread.send(
                planned.parts[part],
                nonce=nonce,
                allowed_mentions=NO_MENTIONS,
                suppress_embeds=True,
            )
        return await thread.send(
            planned.parts[part],
            nonce=nonce,
            reference=discord.MessageReference(
                message_id=reference, channel_id=thread.id, fail_if_not_exists=False
            ),
            allowed_mentions=NO_MENTIONS,
            suppress_embeds=True,
            mention_author=False,
        )

    async def edit_comment(
        self,
        sub: Subscription,
        record: ArticleRecord,
        thread: discord.Thread,
        comment: CommentRecord,
    ) -> Effect:
        assert comment.message_id is not None
        parts = await self.untrusted.render_comment(
            comment_of(comment, record.entry_id),
            key=comment_key(sub.id, comment.entry_id) if comment.keyed else None,
        )
        ids = [comment.message_id, *comment.extra_message_ids]
        for index, message_id in enumerate(ids[: len(parts)]):
            try:
                edited = await send_once(
                    self.policy,
                    functools.partial(
                        thread.get_partial_message(message_id).edit,
                        content=parts[index],
                        allowed_mentions=NO_MENTIONS,
                    ),
                    what=f"editing comment {comment.entry_id}",
                )
            except Gone:
                if index == 0:
                    return MessageGone()  # a moderator deleted it: never mirrored again
                continue
            if isinstance(edited, Refusal):
                return Refused(edited.reason)
        for message_id in ids[len(parts) :]:
            with contextlib.suppress(Gone):  # already deleted
                await send_once(
                    self.policy,
                    thread.get_partial_message(message_id).delete,
                    what=f"removing a surplus part of comment {comment.entry_id}",
                )
        kept = min(len(ids), len(parts))
        return CommentEdited(
            content_hash=comment.content_hash,
            parts_sent=kept,
            extra_message_ids=tuple(ids[1:kept]),
            more_to_send=len(parts) > len(ids),
        )

    async def edit_article(
        self,
        sub: Subscription,
        channel: Channel,
        record: ArticleRecord,
        thread: discord.Thread | None,
    ) -> Effect:
        """Edit the article's message to its new content (``thread``: its forum post)."""
        assert record.starter_message_id is not None and record.thread_id is not None
        article = article_of(record)
        rendered = await self.untrusted.render_article(article, blog_title=sub.blog_title)
        host_id = record.thread_id if isinstance(channel, discord.ForumChannel) else channel.id
        message = self.client.get_partial_messageable(host_id).get_partial_message(
            record.starter_message_id
        )
        [intent] = await self.courier.open(
            [article_intent(sub, record, IntentKind.ARTICLE_EDIT, channel_id=host_id)]
        )
        effect: Effect = ArticleEdited(record.content_hash)
        try:
            if thread is not None and thread.archived and not thread.locked:
                # Discord refuses edits in an archived post (50083): reopen it first.
                await send_once(
                    self.policy,
                    functools.partial(thread.edit, archived=False),
                    what=f"reopening the post of {record.url}",
                )
            edited = await send_once(
                self.policy,
                functools.partial(
                    message.edit,
                    content=rendered.content,
                    embed=image_embed(rendered.image_url),
                    allowed_mentions=NO_MENTIONS,
                ),
                what=f"editing the article message of {record.url}",
            )
            if isinstance(edited, Refusal):
                effect = Refused(edited.reason)
        except Gone:
            log.info("Article message of %s is gone; not edited", record.url)
        except DeliveryError as exc:
            # One article that cannot be edited (a locked post) must not stop the rest.
            log.warning("Could not edit the article message of %s: %s", record.url, exc)
            effect = Abandoned()  # still flagged: tried again next poll
        await self.courier.complete(intent, effect)
        return effect


def mention_reserve(role_id: int | None) -> int:
    """Room the article message leaves for its mention line: a role id is at most 20 digits."""
    return len("<@&>\n") + 20 if role_id is not None else 0


def with_mention(content: str, role_id: int | None) -> tuple[str, discord.AllowedMentions]:
    """A new article message's content and allowed mentions: the moderator's role
    (``/blog edit … mention``) on a first line of its own, allowed alone, or nothing.

    Decided once per send, so every retry of it sends the same. Settling finds an
    article message by its last line (``bot/threads.py``), which this leaves alone;
    an edit re-renders the message without the line (edits never ping).
    """
    if role_id is None:
        return content, NO_MENTIONS
    allowed = discord.AllowedMentions(
        everyone=False, users=False, roles=[discord.Object(id=role_id)], replied_user=False
    )
    return f"<@&{role_id}>\n{content}", allowed


def article_intent(
    sub: Subscription, record: ArticleRecord, kind: IntentKind, *, channel_id: int | None = None
) -> NewIntent:
    return NewIntent(
        subscription_id=sub.id,
        kind=kind,
        target_id=record.id,
        channel_id=sub.channel_id if channel_id is None else channel_id,
    )

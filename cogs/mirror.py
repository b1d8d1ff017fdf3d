"""Discord-side lifecycle: what moderators do to mirrored messages and threads.

A deleted comment message is never mirrored again; a deleted thread detaches
its article (only ``/blog resync`` makes a new one).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

if TYPE_CHECKING:
    from bot.client import BlogMirrorBot

log = logging.getLogger(__name__)


class MirrorCog(commands.Cog):
    def __init__(self, bot: BlogMirrorBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        try:
            if await self.bot.comments.mark_message_deleted(payload.message_id):
                log.info(
                    "Mirrored message %s deleted in Discord: not re-posted", payload.message_id
                )
        except Exception:
            log.exception("Could not record deletion of message %s", payload.message_id)

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        for message_id in payload.message_ids:
            try:
                await self.bot.comments.mark_message_deleted(message_id)
            except Exception:
                log.exception("Could not record deletion of message %s", message_id)

    @commands.Cog.listener()
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        try:
            article = await self.bot.articles.detach_thread(payload.thread_id)
            if article is not None:
                log.info(
                    "Thread %s of %s deleted in Discord: detached", payload.thread_id, article.url
                )
        except Exception:
            log.exception("Could not record deletion of thread %s", payload.thread_id)


async def setup(bot: BlogMirrorBot) -> None:
    await bot.add_cog(MirrorCog(bot))

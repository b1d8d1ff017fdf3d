"""The ``/blog`` command group: thin wiring from interactions to ``BlogService``.

Guild-only, default member permission Manage Server (set on the group: Discord
ignores it on subcommands). Every reply is ephemeral. Expected failures are
``BlogMirrorError``s whose text is the reply; anything else is logged with its
traceback and answered with a short apology by the tree's error handler.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.delivery import DeliverySummary
from bot.discord_preview import preview_messages
from bot.errors import BlogMirrorError
from bot.render import escape_text
from bot.service import MAX_BACKFILL, MAX_INTERVAL_MINUTES, describe_error, describe_interval
from storage.records import Subscription, SubscriptionState

if TYPE_CHECKING:
    from bot.client import BlogMirrorBot

log = logging.getLogger(__name__)

NEEDED = {
    "view_channel": "View Channel",
    "send_messages": "Send Messages",
    "send_messages_in_threads": "Send Messages in Threads",
    "create_public_threads": "Create Public Threads",
    "embed_links": "Embed Links",
    "read_message_history": "Read Message History",
}
FAILING_AFTER = 3


def when(moment: datetime | None, style: str = "R") -> str:
    return f"<t:{int(moment.timestamp())}:{style}>" if moment else "never"


def state_of(sub: Subscription) -> str:
    if sub.state == SubscriptionState.ACTIVE and sub.consecutive_failures >= FAILING_AFTER:
        return "failing"
    return sub.state.value


def missing_permissions(
    channel: discord.TextChannel | discord.ForumChannel, me: discord.Member
) -> list[str]:
    granted = channel.permissions_for(me)
    needed = dict(NEEDED)
    if isinstance(channel, discord.ForumChannel):
        needed.pop("create_public_threads")  # forum posts need Send Messages only
    return [label for name, label in needed.items() if not getattr(granted, name)]


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class BlogCommands(
    commands.GroupCog, group_name="blog", group_description="Mirror a blog's comments"
):
    def __init__(self, bot: BlogMirrorBot) -> None:
        self.bot = bot
        super().__init__()

    async def cog_load(self) -> None:
        self._previous_on_error = self.bot.tree.on_error
        self.bot.tree.on_error = self.on_tree_error  # type: ignore[method-assign]

    async def cog_unload(self) -> None:
        self.bot.tree.on_error = self._previous_on_error  # type: ignore[method-assign]

    async def on_tree_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if isinstance(original, BlogMirrorError):
            text = str(original)
        elif isinstance(original, app_commands.CheckFailure):
            text = "You need the Manage Server permission to use /blog."
        else:
            log.error(
                "Command %s failed",
                interaction.command and interaction.command.qualified_name,
                exc_info=original,
            )
            text = "Sorry, something went wrong on our side; the details are in the bot's log."
        await reply(interaction, f"❌ {text}")

    # --- autocomplete ---------------------------------------------------------------

    async def feed_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        if interaction.guild_id is None:
            return []
        needle = current.casefold()
        subs = await self.bot.subscriptions.list_for_guild(interaction.guild_id)
        per_url = Counter(sub.feed_url for sub in subs)
        choices = []
        for sub in subs:
            label = f"{sub.display_name} ({sub.feed_url})"
            if per_url[sub.feed_url] > 1:
                channel = (
                    interaction.guild.get_channel(sub.channel_id) if interaction.guild else None
                )
                label = f"{sub.display_name} in #{channel.name if channel else sub.channel_id}"
            if needle and needle not in label.casefold():
                continue
            # Choice values are at most 100 characters, and one feed may be mirrored in
            # two channels: then the subscription's number is filled in instead of the
            # URL (every `feed` option accepts it).
            unique = per_url[sub.feed_url] == 1 and len(sub.feed_url) <= 100
            value = sub.feed_url if unique else str(sub.id)
            choices.append(app_commands.Choice(name=_clip(label, 100), value=value))
        return choices[:25]

    # --- commands -------------------------------------------------------------------

    @app_commands.command(name="subscribe", description="Mirror a blog's articles and comments")
    @app_commands.describe(
        url="Blog homepage or feed URL",
        channel="Forum or text channel for the article threads",
        comments="Mirror comments too (default: yes)",
        backfill=f"How many of the newest articles get threads now (0-{MAX_BACKFILL}, default 1)",
    )
    async def subscribe(
        self,
        interaction: discord.Interaction,
        url: str,
        channel: discord.ForumChannel | discord.TextChannel,
        comments: bool = True,
        backfill: app_commands.Range[int, 0, MAX_BACKFILL] = 1,
    ) -> None:
        guild = _guild(interaction)
        resolved = guild.get_channel(channel.id)
        if not isinstance(resolved, discord.TextChannel | discord.ForumChannel):
            raise BlogMirrorError("Pick a text channel or a forum channel.")
        missing = missing_permissions(resolved, guild.me)
        if missing:
            raise BlogMirrorError(
                f"I am missing permissions in {resolved.mention}: {', '.join(missing)}. "
                "Grant them and try again."
            )
        await interaction.response.defer(ephemeral=True, thinking=True)
        done = await self.bot.service.subscribe(
            guild_id=guild.id,
            channel_id=resolved.id,
            url=url,
            comments=comments,
            backfill=backfill,
        )
        sub = done.subscription
        counts = await self.bot.subscriptions.counts(sub.id)
        summary = done.outcome.summary
        skipped = summary.skipped_articles if summary else 0
        lines = [
            f"✅ Subscribed **{escape_text(sub.display_name)}** in {resolved.mention}.",
            f"Feed: <{sub.feed_url}> ({sub.dialect})",
            f"Posting the {counts.pending_articles} newest article(s) now"
            + (f" with {counts.pending_comments} comment(s)" if comments else "")
            + (
                f"; {skipped} older article(s) are recorded and won't be posted."
                if skipped > 0
                else "."
            ),
            f"New articles{' and comments' if comments else ''} are checked every "
            f"{describe_interval(sub.interval_seconds)}.",
        ]
        if done.outcome.error:
            lines.append(f"⚠️ The first poll failed: {done.outcome.error}")
        await interaction.followup.send("\n".join(lines), ephemeral=True)

        async def progress(posted: int, total: int) -> None:
            log.info("Backfill of %s: mirrored %d/%d comments", sub.feed_url, posted, total)
            await edit_quietly(
                interaction, "\n".join([*lines, f"⏳ Mirrored {posted}/{total} comments…"])
            )

        result = await self.bot.cycle(sub.id, progress=progress, poll=False)
        final = (
            "✅ Done."
            if result.error is None
            else f"⚠️ {describe_error(BlogMirrorError(result.error))}"
        )
        if result.delivery is not None and result.delivery.set_aside:
            final += (
                f"\n⚠️ Discord refused {result.delivery.set_aside} item(s); they are set "
                "aside (see `/blog status`)."
            )
        await interaction.edit_original_response(content="\n".join([*lines, final]))

    @app_commands.command(name="unsubscribe", description="Stop mirroring a blog (threads stay)")
    @app_commands.describe(feed="The subscription's feed or blog URL")
    @app_commands.autocomplete(feed=feed_choices)
    async def unsubscribe(self, interaction: discord.Interaction, feed: str) -> None:
        sub = await self.bot.service.resolve(_guild(interaction).id, feed)
        # A poll in progress holds the lock for a while: answer within Discord's 3 s.
        await interaction.response.defer(ephemeral=True, thinking=True)
        async with self.bot.subscription_lock(sub.id):
            await self.bot.service.unsubscribe(sub)
        self.bot.forget(sub.id)
        await reply(
            interaction,
            f"✅ Stopped mirroring **{escape_text(sub.display_name)}**. Existing threads stay.",
        )

    @app_commands.command(name="list", description="This server's subscriptions")
    async def list_(self, interaction: discord.Interaction) -> None:
        subs = await self.bot.subscriptions.list_for_guild(_guild(interaction).id)
        if not subs:
            await reply(interaction, "No subscriptions yet: add one with `/blog subscribe`.")
            return
        embed = discord.Embed(title="Blog subscriptions", colour=discord.Colour.blurple())
        for sub in subs[:25]:
            counts = await self.bot.subscriptions.counts(sub.id)
            embed.add_field(
                name=_clip(sub.display_name, 256),
                value=(
                    f"<#{sub.channel_id}> · **{state_of(sub)}** · last success "
                    f"{when(sub.last_success_at)} · polled {_interval(sub)}"
                    + (f" · pings <@&{sub.mention_role_id}>" if sub.mention_role_id else "")
                    + "\n"
                    f"{counts.articles_mirrored} articles, {counts.comments_mirrored} comments "
                    f"mirrored · <{sub.feed_url}>"
                ),
                inline=False,
            )
        await reply(interaction, embed=embed)

    @app_commands.command(name="status", description="Health of one subscription, or all")
    @app_commands.describe(feed="The subscription's feed or blog URL (all when empty)")
    @app_commands.autocomplete(feed=feed_choices)
    async def status(self, interaction: discord.Interaction, feed: str | None = None) -> None:
        guild_id = _guild(interaction).id
        if feed is None:
            subs = await self.bot.subscriptions.list_for_guild(guild_id)
            if not subs:
                await reply(interaction, "No subscriptions yet: add one with `/blog subscribe`.")
                return
            lines = []
            for s in subs:
                counts = await self.bot.subscriptions.counts(s.id)
                lines.append(
                    f"• **{escape_text(s.display_name)}**: {state_of(s)}, last poll "
                    f"{when(s.last_poll_at)}, next {_next_poll(s)}, polled {_interval(s)}"
                    + (f", {s.consecutive_failures} failure(s)" if s.consecutive_failures else "")
                    + (f", {counts.set_aside} item(s) Discord refused" if counts.set_aside else "")
                )
            await reply(interaction, _clip("\n".join(lines), 2000))
            return
        sub = await self.bot.service.resolve(guild_id, feed)
        counts = await self.bot.subscriptions.counts(sub.id)
        embed = discord.Embed(
            title=_clip(sub.display_name, 256), url=sub.blog_url or None, colour=_colour(sub)
        )
        embed.add_field(name="State", value=state_of(sub))
        embed.add_field(name="Channel", value=f"<#{sub.channel_id}>")
        embed.add_field(name="Feed", value=f"<{sub.feed_url}>", inline=False)
        embed.add_field(name="Last poll", value=when(sub.last_poll_at))
        embed.add_field(name="Last success", value=when(sub.last_success_at))
        embed.add_field(name="Next poll", value=_next_poll(sub))
        embed.add_field(name="Interval", value=_interval(sub))
        embed.add_field(
            name="Comments", value="mirrored" if sub.mirror_comments else "not mirrored"
        )
        embed.add_field(
            name="Mention",
            value=f"<@&{sub.mention_role_id}>" if sub.mention_role_id else "nobody",
        )
        embed.add_field(
            name="Mirrored",
            value=f"{counts.articles_mirrored} articles, {counts.comments_mirrored} comments",
        )
        embed.add_field(
            name="Pending",
            value=f"{counts.pending_articles} articles, {counts.pending_comments} comments",
        )
        embed.add_field(name="Consecutive failures", value=str(sub.consecutive_failures))
        if self.bot.websub is not None:
            push = await self.bot.websub.status_line(sub.id)
            embed.add_field(name="Push", value=_clip(push.removeprefix("push: "), 1024))
        if counts.set_aside:
            embed.add_field(
                name="Set aside",
                value=_clip(
                    f"{counts.set_aside} item(s) Discord refused; latest: "
                    f"{escape_text(counts.latest_refusal or 'no reason given')}. "
                    "`/blog resync` of the article tries again.",
                    1024,
                ),
                inline=False,
            )
        if sub.last_error:
            status = f" (HTTP {sub.last_error_status})" if sub.last_error_status else ""
            embed.add_field(
                name=f"Last error{status}",
                value=_clip(f"{sub.last_error} — {when(sub.last_error_at)}", 1024),
                inline=False,
            )
        await reply(interaction, embed=embed)

    @app_commands.command(name="poll", description="Check one blog (or all) for news now")
    @app_commands.describe(feed="The subscription's feed or blog URL (all when empty)")
    @app_commands.autocomplete(feed=feed_choices)
    async def poll(self, interaction: discord.Interaction, feed: str | None = None) -> None:
        guild_id = _guild(interaction).id
        if feed is None:
            subs = await self.bot.subscriptions.list_for_guild(guild_id)
        else:
            subs = [await self.bot.service.resolve(guild_id, feed)]
        subs = [s for s in subs if s.state == SubscriptionState.ACTIVE]
        if not subs:
            raise BlogMirrorError("Nothing to poll: no active subscription matches.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        lines = []
        for sub in subs:
            result = await self.bot.cycle(sub.id)
            if result.error:
                lines.append(f"❌ **{escape_text(sub.display_name)}**: {result.error}")
            else:
                summary = result.outcome.summary if result.outcome else None
                posted = result.delivery.comments_posted if result.delivery else 0
                threads = result.delivery.threads_created if result.delivery else 0
                news = (
                    f"{summary.new_articles} new article(s), {summary.new_comments} new comment(s)"
                    if summary
                    else "no news"
                )
                line = (
                    f"✅ **{escape_text(sub.display_name)}**: {news}; posted {threads} thread(s), "
                    f"{posted} comment(s)"
                )
                if result.delivery is not None:
                    line += _delivery_notes(result.delivery)
                lines.append(line + ".")
        await interaction.followup.send(_clip("\n".join(lines), 2000), ephemeral=True)

    @app_commands.command(name="pause", description="Stop polling a blog for now")
    @app_commands.describe(feed="The subscription's feed or blog URL")
    @app_commands.autocomplete(feed=feed_choices)
    async def pause(self, interaction: discord.Interaction, feed: str) -> None:
        sub = await self.bot.service.resolve(_guild(interaction).id, feed)
        if sub.state == SubscriptionState.PAUSED:
            raise BlogMirrorError(
                f"{sub.display_name} is already paused; `/blog resume` restarts it."
            )
        await self.bot.service.set_paused(sub, True)
        self.bot.changed(sub.id)
        await reply(
            interaction,
            f"⏸️ Paused **{escape_text(sub.display_name)}**. `/blog resume` restarts it.",
        )

    @app_commands.command(
        name="resume", description="Restart polling (also re-enables a disabled feed)"
    )
    @app_commands.describe(feed="The subscription's feed or blog URL")
    @app_commands.autocomplete(feed=feed_choices)
    async def resume(self, interaction: discord.Interaction, feed: str) -> None:
        sub = await self.bot.service.resolve(_guild(interaction).id, feed)
        if sub.state == SubscriptionState.ACTIVE:
            raise BlogMirrorError(f"{sub.display_name} is already active.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        sub = await self.bot.service.set_paused(sub, False)
        result = await self.bot.cycle(sub.id)
        verdict = (
            "polled just now: all good."
            if result.error is None
            else f"but the poll failed: {result.error}"
        )
        await interaction.followup.send(
            f"▶️ Resumed **{escape_text(sub.display_name)}**, {verdict}", ephemeral=True
        )

    @app_commands.command(name="resync", description="Make one article's thread complete")
    @app_commands.describe(article_url="The article's web address")
    async def resync(self, interaction: discord.Interaction, article_url: str) -> None:
        guild = _guild(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        sub, article = await self.bot.resyncer.locate(guild.id, article_url)
        title = escape_text(article.title or article.url)

        async def progress(posted: int, total: int) -> None:
            log.info("Resync of %s: mirrored %d/%d comments", article.url, posted, total)
            await edit_quietly(
                interaction, f"⏳ Resyncing **{title}**: mirrored {posted}/{total} comments…"
            )

        async with self.bot.subscription_lock(sub.id):
            result = await self.bot.resyncer.resync(sub, article, progress=progress)
        delivery = result.delivery
        thread = result.article.thread_id
        made = "created its thread" if delivery.threads_created else "its thread was there"
        where = f" (<#{thread}>)" if thread else ""
        fresh = f" ({result.new_comments} new from the blog)" if result.new_comments else ""
        await interaction.edit_original_response(
            content=(
                f"✅ **{title}**: {made}{where}; posted {delivery.comments_posted} "
                f"comment(s) that were missing{fresh}."
                + (
                    f"\n⚠️ Its comments feed could not be read: {result.comments_error}"
                    if result.comments_error
                    else ""
                )
            )
        )

    @app_commands.command(name="preview", description="What subscribing would post, privately")
    @app_commands.describe(url="Blog homepage or feed URL")
    async def preview(self, interaction: discord.Interaction, url: str) -> None:
        _guild(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        found = await self.bot.service.preview(url)
        for content, embeds in preview_messages(found):
            await interaction.followup.send(
                content or discord.utils.MISSING,
                embeds=embeds,
                ephemeral=True,
                allowed_mentions=discord.AllowedMentions.none(),
            )

    @app_commands.command(name="edit", description="Change a subscription's settings")
    @app_commands.describe(
        feed="The subscription's feed or blog URL",
        comments="Mirror comments (on/off)",
        mention="A role to ping in each new article message",
        no_mention="Stop pinging a role for new articles",
        interval=f"Minutes between polls (1-{MAX_INTERVAL_MINUTES}; 0: the bot's default)",
    )
    @app_commands.autocomplete(feed=feed_choices)
    async def edit(
        self,
        interaction: discord.Interaction,
        feed: str,
        comments: bool | None = None,
        mention: discord.Role | None = None,
        no_mention: bool = False,
        interval: app_commands.Range[int, 0, MAX_INTERVAL_MINUTES] | None = None,
    ) -> None:
        guild = _guild(interaction)
        sub = await self.bot.service.resolve(guild.id, feed)
        edited = await self.bot.service.edit(
            sub,
            comments=comments,
            mention_role_id=mention.id if mention else None,
            no_mention=no_mention,
            interval_minutes=interval,
        )
        self.bot.changed(sub.id)
        name = escape_text(sub.display_name)
        if not edited.changes:
            await reply(interaction, f"Nothing changed for **{name}**: no option differed.")
            return
        lines = [f"✅ **{name}**: " + "; ".join(edited.changes) + "."]
        if mention is not None and not (
            mention.mentionable or guild.me.guild_permissions.mention_everyone
        ):
            lines.append(
                f"⚠️ {mention.mention} is not mentionable and I lack Mention All Roles: "
                "Discord will show it without pinging anyone. Make the role mentionable."
            )
        await reply(interaction, "\n".join(lines))

    @app_commands.command(
        name="logchannel", description="Where feed failures and recoveries are reported"
    )
    @app_commands.describe(channel="Text channel for the reports")
    async def logchannel(
        self, interaction: discord.Interaction, channel: discord.TextChannel
    ) -> None:
        guild = _guild(interaction)
        resolved = guild.get_channel(channel.id)
        if not isinstance(resolved, discord.TextChannel):
            raise BlogMirrorError("Pick a text channel.")
        granted = resolved.permissions_for(guild.me)
        if not (granted.view_channel and granted.send_messages):
            raise BlogMirrorError(
                f"I cannot post in {resolved.mention}: "
                "grant me View Channel and Send Messages there."
            )
        await self.bot.subscriptions.set_log_channel(guild.id, resolved.id)
        await reply(
            interaction,
            "✅ Feed failures, recoveries and disablements will be reported in "
            f"{resolved.mention}.",
        )


async def reply(
    interaction: discord.Interaction,
    content: str | None = None,
    *,
    embed: discord.Embed | None = None,
) -> None:
    """Answer ephemerally, as a follow-up when the interaction is already answered."""
    embed_arg = embed if embed is not None else discord.utils.MISSING
    none = discord.AllowedMentions.none()
    try:
        if interaction.response.is_done():
            await interaction.followup.send(
                content or "", embed=embed_arg, ephemeral=True, allowed_mentions=none
            )
        else:
            await interaction.response.send_message(
                content, embed=embed_arg, ephemeral=True, allowed_mentions=none
            )
    except discord.HTTPException as exc:
        log.warning("Could not answer interaction %s: %s", interaction.id, exc)


async def edit_quietly(interaction: discord.Interaction, content: str) -> None:
    """Progress is a courtesy: a failed edit (an expired token after 15 minutes, a
    5xx) is logged and must never stop the work it reports on."""
    try:
        await interaction.edit_original_response(content=content)
    except discord.HTTPException as exc:
        log.info("Could not show progress on interaction %s: %s", interaction.id, exc)


def _delivery_notes(delivery: DeliverySummary) -> str:
    """What else a delivery did or could not do, for the ``/blog poll`` answer."""
    notes = []
    if delivery.edits:
        notes.append(f"updated {delivery.edits} message(s)")
    if delivery.set_aside:
        notes.append(f"{delivery.set_aside} item(s) refused by Discord and set aside")
    if delivery.skipped_locked:
        notes.append(f"comments wait in {delivery.skipped_locked} locked thread(s)")
    return "".join(f"; {note}" for note in notes)


def _guild(interaction: discord.Interaction) -> discord.Guild:
    if interaction.guild is None:
        raise BlogMirrorError("Use /blog inside a server.")
    return interaction.guild


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _interval(sub: Subscription) -> str:
    """How often the feed is polled, and whether a moderator chose it."""
    return f"every {describe_interval(sub.interval_seconds)}" + (
        "" if sub.interval_custom else " (default)"
    )


def _next_poll(sub: Subscription) -> str:
    return when(sub.next_poll_at) if sub.state == SubscriptionState.ACTIVE else "not scheduled"


def _colour(sub: Subscription) -> discord.Colour:
    state = state_of(sub)
    if state == "active":
        return discord.Colour.green()
    if state == "paused":
        return discord.Colour.light_grey()
    return discord.Colour.red()


async def setup(bot: BlogMirrorBot) -> None:
    await bot.add_cog(BlogCommands(bot))

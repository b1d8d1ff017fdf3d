"""Entry point: ``python -m bot`` / ``blogmirror`` runs the bot; ``preview URL`` shows a blog.

Everything long-lived (settings, database, HTTP session, the Bot) is created
here, at start, and injected; nothing is built at import time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bot import __version__
from bot.errors import BlogMirrorError
from bot.settings import Settings, SettingsError, configure_logging, load_settings

log = logging.getLogger("bot")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blogmirror",
        description="Mirror a blog's articles and comments into Discord threads.",
        epilog=(
            "Without a command it runs the bot. Running needs the bot token in "
            "DISCORD_TOKEN. Settings come from the environment, then from .env in the "
            "working directory; .env.example lists every one with its default."
        ),
    )
    parser.add_argument("--version", action="version", version=f"blogmirror {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "run",
        help="run the bot (the default)",
        description=(
            "Run the bot until SIGTERM or Ctrl-C: connects to Discord as the bot "
            "(DISCORD_TOKEN), polls every subscribed feed, opens a thread per new article "
            "and mirrors new comments into it, and answers the /blog commands. Settings "
            "come from the environment, then from .env in the working directory (the "
            "environment wins); .env.example lists them all."
        ),
    )
    preview = commands.add_parser(
        "preview",
        help="print what the bot would post for a blog, without Discord or the database",
        description=(
            "Fetch a blog (homepage or feed URL), or read a saved feed file or a folder of "
            "them, and print each thread as the bot would post it."
        ),
    )
    preview.add_argument("url", help="blog or feed URL, feed file, or folder of feed files")
    preview.add_argument(
        "--articles",
        type=int,
        default=5,
        metavar="N",
        help="how many of the newest articles to show (default 5)",
    )
    backup = commands.add_parser(
        "backup",
        help="write a consistent copy of the SQLite database, also while the bot runs",
        description=(
            "Copy the SQLite database at DATABASE_PATH to PATH with SQLite's online backup, "
            "also while the bot runs. PATH must not exist yet. To restore, stop the bot and "
            "copy the file back to DATABASE_PATH."
        ),
    )
    backup.add_argument("path", metavar="PATH", type=Path, help="the new file to write")
    migrate = commands.add_parser(
        "migrate-to-postgres",
        help="copy the SQLite database into an empty PostgreSQL database",
        description=(
            "Copy every table of the SQLite database at DATABASE_PATH into an empty PostgreSQL "
            "database, ids and values unchanged. Stop the bot first; then start it with "
            "DATABASE_URL set to the same URL."
        ),
    )
    migrate.add_argument("database_url", metavar="DATABASE_URL", help="postgresql://… URL")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    is_preview = args.command == "preview"
    # Only running the bot talks to Discord; the other commands need no token.
    runs_bot = args.command in (None, "run")
    try:
        settings = load_settings(os.environ, dotenv_path=Path(".env"), require_token=runs_bot)
    except SettingsError as exc:
        print(exc.render(), file=sys.stderr)
        raise SystemExit(2) from None
    if is_preview:
        raise SystemExit(_preview(settings, args.url, args.articles))
    if args.command == "backup":
        from bot.dbcommands import backup

        raise SystemExit(backup(settings, args.path, sys.stdout, sys.stderr))
    if args.command == "migrate-to-postgres":
        from bot.dbcommands import migrate_to_postgres

        configure_logging("WARNING")
        raise SystemExit(migrate_to_postgres(settings, args.database_url, sys.stdout, sys.stderr))
    configure_logging(settings.log_level)
    for warning in settings.warnings:
        log.warning("%s", warning)
    from bot.app import run_bot  # imports discord.py only when actually running

    try:
        asyncio.run(run_bot(settings))
    except KeyboardInterrupt:
        pass
    except BlogMirrorError as exc:
        print(f"blogmirror: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_status) from None


def _preview(settings: Settings, url: str, articles: int) -> int:
    from bot.preview import run_preview

    configure_logging("WARNING")
    if articles < 1:
        print("blogmirror preview: --articles must be at least 1", file=sys.stderr)
        return 2
    try:
        asyncio.run(run_preview(url, settings, sys.stdout, articles=articles))
    except BlogMirrorError as exc:
        print(f"blogmirror preview: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    main()

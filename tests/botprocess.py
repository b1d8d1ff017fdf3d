"""Run the real bot in its own process against a Discord double of the test process.

``python -m tests.botprocess`` does what ``python -m bot`` does, after pointing
discord.py at the double named by ``DOUBLE_URL``. Tests use it to kill the bot
with SIGKILL at any instant and start it again on the same database.
``TEST_START_RETRY_SECONDS`` (optional) sets the first delay between start-up
attempts while the double cannot be reached (``bot.startup.RETRY``; the cap is
four times it), so those tests take fractions of a second, not minutes.
"""

from __future__ import annotations

import os
from datetime import timedelta

if __name__ == "__main__":
    # Imported here: the bot's worker processes import this module again (as
    # "__mp_main__"), and need none of it.
    import discord
    import yarl

    import storage.leases
    from bot import startup
    from bot.__main__ import main

    if "BLOGMIRROR_TEST_LEASE_SECONDS" in os.environ:
        # Tests that kill a process wait one lease time for its subscriptions: keep it short.
        storage.leases.LEASE_TIME = timedelta(
            seconds=float(os.environ["BLOGMIRROR_TEST_LEASE_SECONDS"])
        )
    base = os.environ["DOUBLE_URL"]
    discord.http.Route.BASE = f"{base}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(base.replace("http", "ws") + "/ws")
    if "TEST_START_RETRY_SECONDS" in os.environ:
        first = float(os.environ["TEST_START_RETRY_SECONDS"])
        startup.RETRY = startup.Backoff(first=first, cap=4 * first)
    main(["run"])

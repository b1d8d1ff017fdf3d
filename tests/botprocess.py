"""Run the real bot in its own process against a Discord double of the test process.

``python -m tests.botprocess`` does what ``python -m bot`` does, after pointing
discord.py at the double named by ``DOUBLE_URL``. Tests use it to kill the bot
with SIGKILL at any instant and start it again on the same database.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # Imported here: the bot's worker processes import this module again (as
    # "__mp_main__"), and need none of it.
    import discord
    import yarl

    from bot.__main__ import main

    base = os.environ["DOUBLE_URL"]
    discord.http.Route.BASE = f"{base}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(base.replace("http", "ws") + "/ws")
    main(["run"])

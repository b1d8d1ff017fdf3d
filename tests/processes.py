"""The environment of a real bot process (``python -m tests.botprocess``) in tests.

Crash, start-up, single-instance and two-process tests each run the bot as a
process against the Discord double of the test process; this is what they all
hand it, the test's own settings on top.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_TOKEN = "discord-double-token-0123456789"


def bot_environment(double_url: str, **settings: str) -> dict[str, str]:
    """This process's environment without any real ``DISCORD*`` value, then the bot's
    settings for the double at ``double_url`` (an hourly poll, INFO logs), then ``settings``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DISCORD")}
    environment.update(
        {
            "PYTHONPATH": str(ROOT),
            "DOUBLE_URL": double_url,
            "DISCORD_TOKEN": TEST_TOKEN,
            "POLL_INTERVAL_SECONDS": "3600",
            "LOG_LEVEL": "INFO",
            **settings,
        }
    )
    return environment

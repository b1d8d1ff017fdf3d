"""Settings: one frozen, typed object built once in ``main()``.

Values come from the process environment first, then from ``.env`` in the
working directory (python-dotenv; the real environment wins). Every problem is
collected and reported together, so an operator fixes their configuration in
one go. The token is never part of any message or ``repr``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

DEFAULTS: Mapping[str, str] = {
    "DATABASE_PATH": "data/blogmirror.db",
    "POLL_INTERVAL_SECONDS": "300",
    "POLL_CONCURRENCY": "20",
    "ALLOW_PRIVATE_ADDRESSES": "false",
    "DEV_GUILD_ID": "",
    "LOG_LEVEL": "INFO",
    "FEED_TIMEOUT_SECONDS": "30",
    "MAX_FEED_BYTES": "10485760",
    "DATABASE_URL": "",
    "SHARD_COUNT": "",
    "SHARD_IDS": "",
    "WEB_PORT": "",
    "WEB_HOST": "127.0.0.1",
    "PUBLIC_URL": "",
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(Exception):
    """One or more settings are missing or invalid; ``problems`` lists them all."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = ["blogmirror cannot start: the configuration has problems:"]
        lines += [f"  - {problem}" for problem in self.problems]
        lines.append("Set them in the environment or in .env (see .env.example).")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated configuration. ``discord_token`` is hidden from ``repr``."""

    discord_token: str = field(repr=False)
    database_path: Path
    poll_interval_seconds: int
    poll_concurrency: int
    allow_private_addresses: bool
    dev_guild_id: int | None
    log_level: str
    feed_timeout_seconds: float
    max_feed_bytes: int
    warnings: tuple[str, ...] = ()
    # May carry a password: never shown.
    database_url: str | None = field(default=None, repr=False)
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None
    web_port: int | None = None
    """The health/metrics server's port; None: no server; 0: any free port (logged)."""
    web_host: str = "127.0.0.1"
    # https base URL of the bot's web server as the internet reaches it (WebSub callbacks).
    public_url: str | None = None


def read_environment(environ: Mapping[str, str], dotenv_path: Path | None) -> dict[str, str]:
    """Merge ``.env`` under the real environment: the environment wins."""
    merged: dict[str, str] = {}
    if dotenv_path is not None and dotenv_path.is_file():
        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    merged.update(environ)
    return merged


def load_settings(
    environ: Mapping[str, str], *, dotenv_path: Path | None = None, require_token: bool = True
) -> Settings:
    """Build and validate settings; raise ``SettingsError`` listing every problem.

    ``require_token`` is false for commands that never talk to Discord
    (``preview``), so they work without a bot token.
    """
    values = dict(DEFAULTS)
    values.update({k: v for k, v in read_environment(environ, dotenv_path).items() if k in _KNOWN})
    problems: list[str] = []
    warnings: list[str] = []

    token = values.get("DISCORD_TOKEN", "").strip()
    if require_token and not token:
        problems.append("DISCORD_TOKEN is missing: create a bot in the Discord developer portal.")
    elif token and (any(c.isspace() for c in token) or len(token) < 20):
        # Never echo the value, not even a prefix.
        problems.append("DISCORD_TOKEN does not look like a bot token (check for a typo).")

    database_path = values["DATABASE_PATH"].strip()
    if not database_path:
        problems.append("DATABASE_PATH is empty: give a file path such as data/blogmirror.db.")

    interval = _integer(values, "POLL_INTERVAL_SECONDS", problems, minimum=1)
    if interval is not None and interval < 60:
        warnings.append(
            f"POLL_INTERVAL_SECONDS={interval} is below 60: blogs may throttle frequent polls."
        )
    concurrency = _integer(values, "POLL_CONCURRENCY", problems, minimum=1, maximum=100)
    allow_private = _boolean(values, "ALLOW_PRIVATE_ADDRESSES", problems)
    dev_guild = values["DEV_GUILD_ID"].strip()
    dev_guild_id = None
    if dev_guild:
        dev_guild_id = _integer(values, "DEV_GUILD_ID", problems, minimum=1)

    log_level = values["LOG_LEVEL"].strip().upper()
    if log_level not in _LOG_LEVELS:
        problems.append(f"LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)} (got {log_level!r}).")

    timeout = _number(values, "FEED_TIMEOUT_SECONDS", problems)
    max_bytes = _integer(values, "MAX_FEED_BYTES", problems, minimum=1024)

    database_url = values["DATABASE_URL"].strip() or None
    if database_url is not None and not database_url.startswith(("postgresql://", "postgres://")):
        # Never echo the value: it may hold a password.
        problems.append("DATABASE_URL must be a PostgreSQL URL (postgresql://user@host/db).")
    shard_count = None
    if values["SHARD_COUNT"].strip():
        shard_count = _integer(values, "SHARD_COUNT", problems, minimum=1, maximum=100_000)
    shard_ids = _shard_ids(values["SHARD_IDS"], shard_count, database_url, problems)
    web_port = None
    if values["WEB_PORT"].strip():
        # 0 asks the system for a free port (tests, several bots on one machine).
        web_port = _integer(values, "WEB_PORT", problems, minimum=0, maximum=65535)
    web_host = _host(values["WEB_HOST"], problems)
    public_url = _public_url(values["PUBLIC_URL"], problems)
    if public_url is not None and web_port is None:
        problems.append(
            "PUBLIC_URL needs WEB_PORT: hubs deliver to the bot's own web server, "
            "so set WEB_PORT to the port that PUBLIC_URL reaches."
        )

    if problems:
        raise SettingsError(problems)
    assert interval is not None and concurrency is not None and allow_private is not None
    assert timeout is not None and max_bytes is not None
    return Settings(
        discord_token=token,
        database_path=Path(database_path),
        poll_interval_seconds=interval,
        poll_concurrency=concurrency,
        allow_private_addresses=allow_private,
        dev_guild_id=dev_guild_id,
        log_level=log_level,
        feed_timeout_seconds=timeout,
        max_feed_bytes=max_bytes,
        warnings=tuple(warnings),
        database_url=database_url,
        shard_count=shard_count,
        shard_ids=shard_ids,
        web_port=web_port,
        web_host=web_host,
        public_url=public_url,
    )


_KNOWN = frozenset({"DISCORD_TOKEN", *DEFAULTS})


def _integer(
    values: Mapping[str, str],
    name: str,
    problems: list[str],
    *,
    minimum: int,
    maximum: int | None = None,
) -> int | None:
    raw = values[name].strip()
    try:
        number = int(raw)
    except ValueError:
        problems.append(f"{name} must be a whole number (got {raw!r}).")
        return None
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"≥ {minimum}"
        problems.append(f"{name} must be {bounds} (got {number}).")
        return None
    return number


def _shard_ids(
    raw: str, count: int | None, database_url: str | None, problems: list[str]
) -> tuple[int, ...] | None:
    """``SHARD_IDS``: distinct shards below ``SHARD_COUNT``; some of them only with PostgreSQL."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        ids = tuple(sorted({int(part) for part in raw.split(",") if part.strip()}))
    except ValueError:
        problems.append(f"SHARD_IDS must be shard numbers separated by commas (got {raw!r}).")
        return None
    if count is None:
        problems.append("SHARD_IDS needs SHARD_COUNT: the total number of shards.")
        return None
    if not ids or any(not 0 <= shard < count for shard in ids):
        problems.append(f"SHARD_IDS must be between 0 and {count - 1} (got {raw!r}).")
        return None
    if database_url is None and len(ids) < count:
        problems.append(
            "SHARD_IDS naming only some shards needs DATABASE_URL: with SQLite one process "
            "runs every shard."
        )
        return None
    return ids


def _host(raw: str, problems: list[str]) -> str:
    """``WEB_HOST``: an IP address (``0.0.0.0``, ``::``) or a host name to bind."""
    host = raw.strip()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if len(host) > 253 or not _HOST_NAME.fullmatch(host):
            problems.append(
                f"WEB_HOST must be an IP address or a host name such as 127.0.0.1 (got {raw!r})."
            )
    return host


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def _public_url(raw: str, problems: list[str]) -> str | None:
    """``PUBLIC_URL``: an https base URL (http only for a loopback host, as in tests).

    Hubs send the callback its secret and signed notifications: plain http on
    the internet would hand both to anyone on the path.
    """
    raw = raw.strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    try:
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises on an invalid port
    except ValueError:
        host = ""
    shape_ok = bool(host) and not (parts.query or parts.fragment or parts.username)
    loopback = host == "localhost" or _is_loopback(host)
    if not shape_ok or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        # A value with user:password@ in it is not echoed.
        got = "" if parts.username or parts.password or "@" in raw else f" (got {raw!r})"
        problems.append(
            f"PUBLIC_URL must be an https:// base URL such as https://bot.example.org{got}."
        )
        return None
    return raw.rstrip("/")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _number(values: Mapping[str, str], name: str, problems: list[str]) -> float | None:
    raw = values[name].strip()
    try:
        number = float(raw)
    except ValueError:
        problems.append(f"{name} must be a number of seconds (got {raw!r}).")
        return None
    if not 0 < number <= 3600:
        problems.append(f"{name} must be more than 0 and at most 3600 (got {raw}).")
        return None
    return number


def _boolean(values: Mapping[str, str], name: str, problems: list[str]) -> bool | None:
    raw = values[name].strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    problems.append(f"{name} must be true or false (got {raw!r}).")
    return None


def configure_logging(level: str) -> None:
    """Set up handlers once, in ``main()``; keep discord.py's HTTP chatter quiet."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-8s %(name)s: %(message)s",
    )
    logging.getLogger("discord.http").setLevel(logging.WARNING)
    logging.getLogger("discord.gateway").setLevel(logging.WARNING)
    # Its only INFO line, "logging in using static token", would double each retried
    # start-up attempt's own line (bot.startup).
    discord_client = logging.getLogger("discord.client")
    discord_client.setLevel(logging.WARNING)
    # The bot never joins a voice channel: discord.py's warnings that PyNaCl or davey
    # is missing ("voice will NOT be supported") would only send operators looking for
    # a problem there is not. Its other warnings stay.
    discord_client.addFilter(_not_about_voice)


def _not_about_voice(record: logging.LogRecord) -> bool:
    """False for discord.py's "<library> is not installed, voice will NOT be supported"."""
    return not (isinstance(record.msg, str) and record.msg.endswith("voice will NOT be supported"))

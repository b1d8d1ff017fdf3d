"""Settings: defaults, validation that reports every problem, and a token that never shows."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.settings import Settings, SettingsError, load_settings

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.secret-token-value-0123456789"


def test_defaults_apply_when_only_the_token_is_set() -> None:
    """Every setting but the token has the default SPEC §2 gives it."""
    settings = load_settings({"DISCORD_TOKEN": TOKEN})
    assert settings.database_path == Path("data/blogmirror.db")
    assert settings.poll_interval_seconds == 300
    assert settings.poll_concurrency == 20
    assert settings.allow_private_addresses is False
    assert settings.dev_guild_id is None
    assert settings.log_level == "INFO"
    assert settings.feed_timeout_seconds == 30
    assert settings.max_feed_bytes == 10_485_760
    assert settings.warnings == ()


def test_every_problem_is_reported_together() -> None:
    """One error lists the missing token and each invalid value."""
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {
                "POLL_INTERVAL_SECONDS": "0",
                "POLL_CONCURRENCY": "101",
                "ALLOW_PRIVATE_ADDRESSES": "maybe",
                "DEV_GUILD_ID": "abc",
                "LOG_LEVEL": "LOUD",
                "FEED_TIMEOUT_SECONDS": "-1",
                "MAX_FEED_BYTES": "lots",
            }
        )
    names = [problem.split(" ")[0] for problem in caught.value.problems]
    assert names == [
        "DISCORD_TOKEN",
        "POLL_INTERVAL_SECONDS",
        "POLL_CONCURRENCY",
        "ALLOW_PRIVATE_ADDRESSES",
        "DEV_GUILD_ID",
        "LOG_LEVEL",
        "FEED_TIMEOUT_SECONDS",
        "MAX_FEED_BYTES",
    ]
    assert "cannot start" in caught.value.render()


def test_short_interval_is_allowed_with_a_warning() -> None:
    """An interval under 60 s works but warns the operator."""
    settings = load_settings({"DISCORD_TOKEN": TOKEN, "POLL_INTERVAL_SECONDS": "5"})
    assert settings.poll_interval_seconds == 5
    assert any("below 60" in warning for warning in settings.warnings)


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    """A value in the real environment overrides the same key in .env."""
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"DISCORD_TOKEN={TOKEN}\nPOLL_CONCURRENCY=7\nLOG_LEVEL=debug\n")
    settings = load_settings({"POLL_CONCURRENCY": "9"}, dotenv_path=dotenv)
    assert settings.discord_token == TOKEN
    assert settings.poll_concurrency == 9
    assert settings.log_level == "DEBUG"


def test_preview_needs_no_token() -> None:
    """Commands that never reach Discord load settings without a token."""
    settings = load_settings({}, require_token=False)
    assert settings.discord_token == ""


def test_token_never_appears_in_repr_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    """Neither the settings repr nor a validation error shows any part of the token."""
    settings = load_settings({"DISCORD_TOKEN": TOKEN})
    assert TOKEN not in repr(settings)
    bad = "has whitespace " + TOKEN
    with pytest.raises(SettingsError) as caught:
        load_settings({"DISCORD_TOKEN": bad, "LOG_LEVEL": "nope"})
    message = caught.value.render()
    for fragment in (TOKEN[:8], TOKEN[-8:], "secret"):
        assert fragment not in message
    logging.getLogger("test").info("%r", settings)
    assert TOKEN not in caplog.text


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after start."""
    settings = load_settings({"DISCORD_TOKEN": TOKEN})
    with pytest.raises(AttributeError):
        settings.poll_concurrency = 3  # type: ignore[misc]
    assert isinstance(settings, Settings)


def test_web_server_settings_default_to_no_server_on_loopback() -> None:
    """WEB_PORT unset means no server; WEB_HOST defaults to 127.0.0.1."""
    settings = load_settings({"DISCORD_TOKEN": TOKEN})
    assert settings.web_port is None
    assert settings.web_host == "127.0.0.1"


@pytest.mark.parametrize(
    ("port", "host"), [("0", "::"), ("8080", "0.0.0.0"), ("65535", "localhost")]
)
def test_web_port_and_host_accept_ports_addresses_and_names(port: str, host: str) -> None:
    """A port 0-65535 (0: any free one) and an IP address or host name are taken as given."""
    settings = load_settings({"DISCORD_TOKEN": TOKEN, "WEB_PORT": port, "WEB_HOST": host})
    assert (settings.web_port, settings.web_host) == (int(port), host)


@pytest.mark.parametrize("port", ["-1", "65536", "http", "80.5"])
def test_an_invalid_web_port_is_a_settings_problem(port: str) -> None:
    """A WEB_PORT that is no port number is reported, naming the setting."""
    with pytest.raises(SettingsError) as caught:
        load_settings({"DISCORD_TOKEN": TOKEN, "WEB_PORT": port})
    [problem] = caught.value.problems
    assert problem.startswith("WEB_PORT must be")


@pytest.mark.parametrize("host", ["", "local host", "under_score.example", "http://127.0.0.1"])
def test_an_invalid_web_host_is_a_settings_problem(host: str) -> None:
    """A WEB_HOST that is neither an IP address nor a host name is reported."""
    with pytest.raises(SettingsError) as caught:
        load_settings({"DISCORD_TOKEN": TOKEN, "WEB_HOST": host})
    [problem] = caught.value.problems
    assert problem.startswith("WEB_HOST must be an IP address or a host name")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", None),
        ("https://bot.example.org/", "https://bot.example.org"),
        ("https://bot.example.org/blogmirror", "https://bot.example.org/blogmirror"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:8080/", "http://localhost:8080"),
    ],
)
def test_public_url_is_an_https_base(value: str, expected: str | None) -> None:
    """PUBLIC_URL is an https base URL (plain http only for loopback), kept without its slash."""
    settings = load_settings({"DISCORD_TOKEN": TOKEN, "PUBLIC_URL": value, "WEB_PORT": "8080"})
    assert settings.public_url == expected


def test_public_url_needs_the_web_server() -> None:
    """PUBLIC_URL without WEB_PORT is a problem: the hubs' callbacks would reach nothing."""
    with pytest.raises(SettingsError) as caught:
        load_settings({"DISCORD_TOKEN": TOKEN, "PUBLIC_URL": "https://bot.example.org"})
    [problem] = caught.value.problems
    assert problem.startswith("PUBLIC_URL needs WEB_PORT")


@pytest.mark.parametrize(
    "value",
    [
        "http://bot.example.org",
        "http://10.0.0.5",
        "ftp://bot.example.org",
        "bot.example.org",
        "https://",
        "https://bot.example.org/?x=1",
        "https://user:pw@bot.example.org",
        "https://bot.example.org:99999",
    ],
)
def test_public_url_refuses_anything_else(value: str) -> None:
    """Plain http on the internet, other schemes, queries and credentials are refused."""
    with pytest.raises(SettingsError) as caught:
        load_settings({"DISCORD_TOKEN": TOKEN, "PUBLIC_URL": value})
    assert any(problem.startswith("PUBLIC_URL must be") for problem in caught.value.problems)
    assert "pw" not in caught.value.render()

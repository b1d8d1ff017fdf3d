"""The deployment files (Dockerfile, compose.yaml, the systemd unit) against the code.

What can be checked without Docker or systemd: every setting they name exists (in
``bot/settings.py`` and ``.env.example``) and validates, the entry point is the console
script, the container's health check really probes ``/healthz`` (it is run here against
a local server), and the unit keeps SQLite's folder writable under its hardening.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from bot.errors import CannotStartError
from bot.settings import DEFAULTS, load_settings
from tests.feedserver import free_port
from tests.processes import TEST_TOKEN

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = frozenset({"DISCORD_TOKEN", *DEFAULTS})
IMAGE = "blogmirror"


# --- reading the files -------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of each instruction, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def instruction(name: str) -> str:
    """The arguments of the final stage's last ``name`` instruction."""
    found = [arguments for keyword, arguments in dockerfile() if keyword == name]
    assert found, f"the Dockerfile has no {name}"
    return found[-1]


def dockerfile_env() -> dict[str, str]:
    """Variables set by ``ENV NAME=value ...`` instructions."""
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile():
        if keyword == "ENV":
            for pair in arguments.split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def read_compose(text: str) -> dict[str, Any]:
    """The block-style YAML subset compose.yaml is written in: nested mappings, lists of
    scalars, ``[a, b]`` and quoted scalars. Anything else fails loudly, never silently."""
    root: dict[str, Any] = {}
    # (indent of the keys in it, the mapping) from the outermost in.
    stack: list[tuple[int, dict[str, Any]]] = [(0, root)]
    last_key: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        body = line.strip()
        if re.search(r"[&*|>]|(?<!\$)\{| #", body):
            raise ValueError(f"compose.yaml:{number}: construct this reader does not know")
        while indent < stack[-1][0]:
            stack.pop()
        mapping = stack[-1][1]
        if body.startswith("- "):
            assert last_key is not None, f"compose.yaml:{number}: list without a key"
            if not isinstance(mapping[last_key], list):
                mapping[last_key] = []
            mapping[last_key].append(scalar(body[2:]))
            continue
        key, colon, value = body.partition(":")
        if not colon or (value and not value.startswith(" ")):
            raise ValueError(f"compose.yaml:{number}: not a 'key: value' line")
        if indent > stack[-1][0]:
            assert last_key is not None and mapping[last_key] == {}, f"compose.yaml:{number}"
            stack.append((indent, mapping[last_key]))
            mapping = mapping[last_key]
        elif indent != stack[-1][0]:
            raise ValueError(f"compose.yaml:{number}: unexpected indentation")
        mapping[key] = scalar(value.strip()) if value.strip() else {}
        last_key = key
    return root


def scalar(text: str) -> Any:
    if text.startswith("[") and text.endswith("]"):
        return [scalar(item.strip()) for item in text[1:-1].split(",")]
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def compose() -> dict[str, Any]:
    return read_compose((ROOT / "compose.yaml").read_text())


def interpolated(value: str) -> str:
    """``${NAME:-default}`` as compose fills it in with NAME unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def bot_services() -> dict[str, dict[str, Any]]:
    services = compose()["services"]
    return {name: s for name, s in services.items() if s.get("image") == IMAGE}


def env_example_names() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))


def unit_text() -> str:
    return (ROOT / "deploy" / "blogmirror.service").read_text()


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit_text())
    return parser


# --- the tests ---------------------------------------------------------------------------


def test_the_compose_reader_sees_every_service() -> None:
    """The reader above parses compose.yaml whole: four services, their settings nested."""
    services = compose()["services"]
    assert sorted(services) == ["bot", "bot-shard-0", "bot-shard-1", "postgres"]
    assert services["bot-shard-1"]["environment"]["SHARD_IDS"] == "1"
    assert services["postgres"]["healthcheck"]["test"][0] == "CMD-SHELL"
    with pytest.raises(ValueError, match="construct"):
        read_compose("x: &anchor\n")


def test_the_image_runs_the_console_script() -> None:
    """ENTRYPOINT is the ``blogmirror`` console script the package installs."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(instruction("ENTRYPOINT")) == ["blogmirror"]
    assert scripts["blogmirror"] == "bot.__main__:main"
    assert instruction("USER") not in {"root", "0"}


def test_settings_named_in_deploy_files_exist() -> None:
    """Every bot setting the Dockerfile, compose.yaml or the unit sets is one the bot
    reads and .env.example documents: a misspelt name would be silently ignored."""
    named = {name for name in dockerfile_env() if not name.startswith("PYTHON")}
    for service in bot_services().values():
        named |= set(service.get("environment", {}))
    named |= set(re.findall(r"^Environment=([A-Z_]+)=", unit_text(), re.MULTILINE))
    assert named >= {"DATABASE_PATH", "DATABASE_URL", "SHARD_COUNT", "SHARD_IDS"}
    assert named - SETTINGS == set()
    assert named - env_example_names() == set()


def test_the_image_keeps_the_database_in_its_volume() -> None:
    """DATABASE_PATH is inside the VOLUME, which is the working directory (a relative
    DATABASE_PATH from an --env-file .env lands there too), owned by the image's user."""
    volume = PurePosixPath(json.loads(instruction("VOLUME"))[0])
    assert PurePosixPath(dockerfile_env()["DATABASE_PATH"]).parent == volume
    assert PurePosixPath(instruction("WORKDIR")) == volume
    assert f"chown {instruction('USER')}:" in instruction("RUN")
    [sqlite_bot] = [s for s in bot_services().values() if "volumes" in s]
    mount = next(v for v in sqlite_bot["volumes"] if v.endswith(f":{volume}"))
    assert mount.split(":")[0] in compose()["volumes"]  # a named volume
    assert PurePosixPath(sqlite_bot["environment"]["DATABASE_PATH"]).parent == volume


def test_the_build_context_holds_what_the_image_copies_and_no_secrets() -> None:
    """.dockerignore lets in every COPY source, and never .env or data/."""
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        source
        for keyword, arguments in dockerfile()
        if keyword == "COPY" and not arguments.startswith("--from")
        for source in arguments.split()[:-1]
    }
    assert copied == allowed
    assert not {".env", "data", ".venv"} & allowed


@pytest.mark.parametrize("name", ["bot", "bot-shard-0", "bot-shard-1"])
def test_each_bot_service_has_valid_settings(name: str) -> None:
    """Each bot process reads .env and, with its own overrides, passes the bot's own
    validation (with the .env.example values and a token)."""
    service = bot_services()[name]
    assert service["env_file"] == ".env"
    environment = {k: interpolated(v) for k, v in service.get("environment", {}).items()}
    settings = load_settings(
        {**environment, "DISCORD_TOKEN": TEST_TOKEN}, dotenv_path=ROOT / ".env.example"
    )
    assert (settings.database_url is None) == (name == "bot")


def test_the_postgres_profile_runs_shards_0_and_1_of_2_on_postgresql_15() -> None:
    """Two processes, shards 0 and 1 of 2, on the healthy PostgreSQL 15 service named in
    their DATABASE_URL, whose data is in a named volume; the SQLite bot is not in it."""
    services = compose()["services"]
    shards = {n: s for n, s in bot_services().items() if "postgres" in s.get("profiles", [])}
    assert "postgres" not in services["bot"].get("profiles", [])
    settings = [
        load_settings({**s["environment"], "DISCORD_TOKEN": TEST_TOKEN}) for s in shards.values()
    ]
    assert sorted(s.shard_ids or () for s in settings) == [(0,), (1,)]
    assert {s.shard_count for s in settings} == {2}
    for shard in shards.values():
        host = re.match(r"postgresql://[^@]+@([^:/]+)", shard["environment"]["DATABASE_URL"])
        assert host is not None
        database = services[host.group(1)]
        assert database["image"] == "postgres:15"
        assert database["profiles"] == ["postgres"]
        assert shard["depends_on"] == {host.group(1): {"condition": "service_healthy"}}
        assert "pg_isready" in " ".join(database["healthcheck"]["test"])
        assert database["volumes"][0].split(":")[0] in compose()["volumes"]


class _Health(BaseHTTPRequestHandler):
    status = 200
    paths: list[str]

    def do_GET(self) -> None:
        self.paths.append(self.path)
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving(status: int) -> Iterator[tuple[int, list[str]]]:
    """A local server answering every GET with ``status``; yields its port and the paths asked."""
    paths: list[str] = []
    handler = type("Handler", (_Health,), {"status": status, "paths": paths})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], paths
    finally:
        server.shutdown()
        server.server_close()


def run_healthcheck(web_port: str | None) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK command as the image runs it, from this checkout."""
    command = json.loads(instruction("HEALTHCHECK").split("CMD", 1)[1])
    installed = command[1]
    [copied] = [
        arguments.split()[0]
        for keyword, arguments in dockerfile()
        if keyword == "COPY" and arguments.split()[-1] == installed
    ]
    assert command[0] == "python"
    env = {"WEB_PORT": web_port} if web_port is not None else {}
    return subprocess.run(
        [sys.executable, str(ROOT / copied)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_health_check_passes_without_web_port() -> None:
    """No WEB_PORT, no server: the check passes without asking anyone."""
    result = run_healthcheck(None)
    assert result.returncode == 0, result.stderr
    assert run_healthcheck("  ").returncode == 0


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_the_health_check_asks_healthz_on_web_port(status: int, healthy: bool) -> None:
    """With WEB_PORT set it asks 127.0.0.1:WEB_PORT/healthz; a 503 is unhealthy."""
    with serving(status) as (port, paths):
        result = run_healthcheck(str(port))
        assert paths == ["/healthz"]
        assert (result.returncode == 0) is healthy, result.stderr
        if not healthy:
            assert result.stderr.startswith(f"unhealthy: http://127.0.0.1:{port}/healthz: ")


def test_the_health_check_fails_when_nothing_listens() -> None:
    """WEB_PORT set but no server answering: unhealthy, one line."""
    result = run_healthcheck(str(free_port()))
    assert result.returncode == 1
    assert "Connection refused" in result.stderr and len(result.stderr.splitlines()) == 1


def test_the_systemd_unit_runs_the_bot_unprivileged_where_sqlite_can_write() -> None:
    """A dedicated user, settings from an EnvironmentFile, restarts on failure but not
    on exit status 2, and the working directory (data/ resolves there) stays writable
    under ProtectSystem=strict."""
    service = unit()["Service"]
    assert service["User"] not in {"", "root"}
    assert service["EnvironmentFile"].startswith("/etc/")
    assert service["ExecStart"].split()[0].endswith("/bin/blogmirror")
    assert service["ExecStart"].split()[1:] == ["run"]
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == str(CannotStartError.exit_status)
    assert service["ProtectSystem"] == "strict"
    writable = [f"/var/lib/{d}" for d in service.get("StateDirectory", "").split()]
    writable += service.get("ReadWritePaths", "").split()
    workdir = PurePosixPath(service["WorkingDirectory"])
    assert any(workdir.is_relative_to(path) for path in writable), writable
    assert "ProtectHome" in service and "NoNewPrivileges" in service


def test_the_readme_invite_url_asks_for_what_subscribe_checks() -> None:
    """The invite URL's permissions integer is exactly the set ``/blog subscribe`` checks."""
    import discord

    from cogs.commands import NEEDED

    readme = (ROOT / "README.md").read_text()
    [url] = re.findall(r"https://discord\.com/oauth2/authorize\?\S+", readme)
    assert "scope=bot+applications.commands" in url
    [granted] = re.findall(r"[?&]permissions=(\d+)", url)
    assert int(granted) == discord.Permissions(**dict.fromkeys(NEEDED, True)).value
    table = re.findall(r"^\| [A-Z][\w ]+ \| (\d+) \| (\d+) \|", readme, re.MULTILINE)
    assert sum(int(value) for _, value in table) == int(granted)
    assert all(int(value) == 1 << int(bit) for bit, value in table)

"""The web server as ``python -m bot`` runs it: started before the log-in, bound as set,
absent without ``WEB_PORT``, and a clear exit when it cannot be served."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from pathlib import Path

import aiohttp

from tests.conftest import TEST_TOKEN
from tests.discord_double import DiscordDouble
from tests.feedserver import free_port
from tests.test_cli import run
from tests.test_deploy import run_healthcheck
from tests.test_startup import BotProcess, assert_clean

SERVING = re.compile(r"Serving /healthz and /metrics on (http://\S+)$")


def listening_ports(pid: int) -> set[int]:
    """The TCP ports the process ``pid`` itself listens on (its sockets in /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def served_at(bot: BotProcess) -> str | None:
    return next((m.group(1) for line in bot.lines if (m := SERVING.search(line))), None)


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_a_bot_process_answers_503_until_discord_is_up_then_200(tmp_path: Path) -> None:
    """WEB_PORT=0: the server is up (its port logged) while Discord cannot be reached, and
    says 503 "gateway not connected"; once the double starts and READY arrives, 200. The
    image's HEALTHCHECK script agrees each time."""
    double = DiscordDouble(token=TEST_TOKEN, port=free_port())
    double.add_guild("Readers")
    bot = await BotProcess.start(tmp_path, double.url, WEB_PORT="0")
    try:
        await bot.wait_until(lambda: served_at(bot) is not None, "the server's address")
        url = served_at(bot)
        assert url is not None and url.startswith("http://127.0.0.1:")
        assert listening_ports(bot.process.pid) == {int(url.rsplit(":", 1)[1])}
        await bot.wait_until(lambda: len(bot.retries()) >= 1, "a failed log-in")
        status, body = await get(f"{url}/healthz")
        assert (status, body.splitlines()[0]) == (503, "unhealthy: gateway not connected")
        port = url.rsplit(":", 1)[1]
        check = await asyncio.to_thread(run_healthcheck, port)  # the image's HEALTHCHECK
        assert check.returncode == 1 and "503" in check.stderr, check.stderr
        await double.start()
        await bot.wait_until(lambda: "Connected as" in bot.text, "the bot to connect")
        status, body = await get(f"{url}/healthz")
        assert (status, body.splitlines()[0]) == (200, "ok"), body
        assert (await asyncio.to_thread(run_healthcheck, port)).returncode == 0
        status, body = await get(f"{url}/metrics")
        assert status == 200 and 'blogmirror_polls_total{outcome="changed"} 0.0' in body
        assert await bot.terminate() < 5
    finally:
        if bot.process.returncode is None:
            bot.process.kill()
            await bot.process.wait()
        await double.stop()
    assert bot.process.returncode == 0, bot.text
    assert_clean(bot)


async def test_without_web_port_the_bot_process_listens_nowhere(tmp_path: Path) -> None:
    """WEB_PORT unset: a connected bot has no listening socket at all."""
    async with DiscordDouble(token=TEST_TOKEN) as double:
        double.add_guild("Readers")
        bot = await BotProcess.start(tmp_path, double.url)
        try:
            await bot.wait_until(lambda: "Connected as" in bot.text, "the bot to connect")
            assert listening_ports(bot.process.pid) == set()
            assert served_at(bot) is None
            assert await bot.terminate() < 5
        finally:
            if bot.process.returncode is None:
                bot.process.kill()
                await bot.process.wait()
    assert bot.process.returncode == 0, bot.text


async def test_a_web_port_in_use_stops_the_bot_with_one_line_and_exit_2(tmp_path: Path) -> None:
    """Another program on WEB_PORT: one line naming the port, exit 2, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        bot = await BotProcess.start(
            tmp_path, f"http://127.0.0.1:{free_port()}", WEB_PORT=str(port)
        )
        assert await bot.finish() == 2
    assert f"cannot serve /healthz and /metrics on 127.0.0.1 port {port}" in bot.text
    assert "Traceback" not in bot.text


def test_an_invalid_web_port_or_host_exits_2_naming_both(tmp_path: Path) -> None:
    """WEB_PORT out of range and a WEB_HOST that is no address: both listed, exit 2."""
    result = run(
        cwd=tmp_path,
        env={"DISCORD_TOKEN": TEST_TOKEN, "WEB_PORT": "70000", "WEB_HOST": "local host"},
    )
    assert result.returncode == 2
    assert "WEB_PORT must be between 0 and 65535 (got 70000)" in result.stderr
    assert "WEB_HOST must be an IP address or a host name" in result.stderr
    assert "Traceback" not in result.stderr

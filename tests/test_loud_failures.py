"""A bot that cannot start all its services stops at once, with one line naming the setting and a
non-zero exit status: never a half-started bot that accepts requests and never answers."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, Bot, bot_env, spawn_bot, wait_for

pytestmark = pytest.mark.timeout(300)  # processes that import everything, on a loaded machine


def taken_port() -> socket.socket:
    """A loopback port held (listening) by this test for as long as it keeps the socket."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def error_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("chatops:")]


@pytest.mark.parametrize("setting, env", [
    ("PORT", lambda port: {"PORT": str(port)}),
    ("CHATOPS_SMTP_PORT", lambda port: {"CHATOPS_SMTP_PORT": str(port), "PORT": "0"}),
])
async def test_a_port_in_use_stops_run_with_one_line_naming_it(make_settings, setting, env):
    with taken_port() as held:
        port = held.getsockname()[1]
        bot = spawn_bot(make_settings(), "run", **env(port))
        out = await asyncio.to_thread(bot.output, 180)
    assert bot.returncode != 0, out
    [line] = error_lines(out)
    assert line.startswith(f"chatops: {setting}: cannot listen on 127.0.0.1:{port}"), out
    assert "in use" in line and "Traceback" not in out


async def test_a_cli_verb_against_a_dead_redis_prints_one_line(make_settings):
    with socket.socket() as dead:  # bound, never listening: refuses connections
        dead.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{dead.getsockname()[1]}/0"
        bot = spawn_bot(make_settings(redis_url=url), "threads", "list")
        out = await asyncio.to_thread(bot.output, 180)
    assert bot.returncode != 0
    assert out.strip().splitlines() == error_lines(out), out  # nothing but the one line
    [line] = error_lines(out)
    assert line.startswith("chatops: Redis: ") and "connecting to 127.0.0.1" in line


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


async def test_the_procfiles_web_and_smtp_run_side_by_side(make_settings):
    """On one host, the `web` process must not bind the SMTP port that the `smtp` process has."""
    settings = make_settings()
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    processes = procfile()
    smtp = spawn_bot(settings, "smtp", CHATOPS_SMTP_PORT="0")  # `chatops smtp`, as in the Procfile
    assert processes["smtp"] == "chatops smtp"
    web = None
    try:
        smtp_port = await smtp.port("SMTP server")
        web = spawn_procfile_line(settings, processes["web"], PATH=path, PORT="0", CHATOPS_SMTP_PORT=str(smtp_port))
        base = f"http://127.0.0.1:{await web.port('HTTP API')}"

        async def healthy():
            async with httpx.AsyncClient() as client:
                return (await client.get(base + "/healthz")).status_code == 200
        await wait_for(healthy, 60, "web to answer")
        assert web.poll() is None and smtp.poll() is None
    finally:
        for proc in filter(None, (web, smtp)):
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 60)


def spawn_procfile_line(settings, command: str, **env: str) -> Bot:
    """A Procfile line as a process manager runs it: leading VAR=value words set the environment."""
    words = shlex.split(command)
    while "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    path = settings.data_dir / f"bot-{uuid.uuid4().hex[:6]}.log"
    with open(path, "wb") as log:
        proc = Bot(words, env=bot_env(settings, **env), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                   stderr=subprocess.STDOUT)
    proc.log_path = path
    return proc

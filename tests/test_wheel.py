"""The package installs: a wheel built from the tree, installed (not editable) into a fresh venv,
runs `chatops run` from another folder and finds its prompt and its example runbooks.

Offline: the wheel is built with this venv's setuptools (no build isolation) and installed with
--no-deps --no-index; the dependencies come from this venv's site-packages on PYTHONPATH (which
does not process its .pth files, so the editable install of the tree is not seen)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, bot_env, wait_for
from tests.messages_api import text, tool_use

pytestmark = pytest.mark.wheel


def _run(*argv: str, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The venv's python, with the wheel of this tree installed."""
    where = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(where / "dist"), str(ROOT))
    [wheel] = (where / "dist").glob("chatops_bot-*.whl")
    _run(sys.executable, "-m", "venv", "--without-pip", str(where / "venv"))
    python = where / "venv" / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(wheel))
    return python


def _env(python: Path, base: dict[str, str]) -> dict[str, str]:
    env = {**base, "PYTHONPATH": sysconfig.get_paths()["purelib"]}  # the dependencies, not the tree
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_wheel_carries_prompts_and_runbooks(installed, tmp_path):
    probe = (
        "import bot, agents.deploy as d, bot.prompts as p\n"
        "print(bot.__file__)\n"
        "print(p.prompts_dir() / 'deploy.md')\n"
        "print(d.runbook('deploy.sh'))\n"
        "print(p.render('deploy', agent='deploy', commands='X')[:40])\n"
    )
    done = _run(str(installed), "-c", probe, cwd=tmp_path, env=_env(installed, dict(os.environ)))
    module, prompts, runbook, prompt = done.stdout.splitlines()
    venv = str(installed.parent.parent)
    assert module.startswith(venv) and not module.startswith(str(ROOT))  # the installed copy
    assert prompts.startswith(venv) and runbook.startswith(venv)
    assert os.access(runbook, os.X_OK)
    assert prompt.startswith("You are the deploy agent")


async def test_chatops_run_from_another_folder(installed, tmp_path, make_settings, messages_api):
    settings = make_settings(anthropic_api_key="k", anthropic_base_url=messages_api.url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(installed, bot_env(settings, PORT=str(port), CHATOPS_API_TOKEN="tok"))
    messages_api.add(tool_use("service_status", {"service": "api", "environment": "dev"}),
                     text("api is healthy in dev."))
    log = open(tmp_path / "run.log", "wb")
    bot = subprocess.Popen([str(installed.parent / "chatops"), "run"], cwd=tmp_path, env=env,
                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": "Bearer tok"}) as c:
            async def up():
                try:
                    return (await c.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return bot.poll() is not None  # it died: stop waiting, the asserts say why

            await wait_for(up, 60, "the installed chatops run to answer")
            assert bot.poll() is None, (tmp_path / "run.log").read_text()
            thread_id = (await c.post("/v1/threads", json={"text": "how is api in dev?", "user": "u"})).json()["id"]

            async def answered():
                events = (await c.get(f"/v1/threads/{thread_id}")).json()["events"]
                return events if events[-1]["type"] == "agent_reply" else None

            events = await wait_for(answered, 60, "the answer")
    finally:
        bot.send_signal(signal.SIGTERM)
        await asyncio.to_thread(bot.wait, 30)
        log.close()
    # the prompt came from the installed package data, the runbook ran from it
    assert messages_api.requests[0]["system"][0]["text"].startswith("You are the deploy agent")
    [result] = [e for e in events if e["type"] == "tool_result"]
    assert result["status"] == "ok" and "healthy" in result["output"], result
    assert "example" in result["output"]


def test_chatops_prompts_dir_overrides_the_packaged_prompts(installed, tmp_path):
    (tmp_path / "deploy.md").write_text("Our own prompt for $agent.")
    env = _env(installed, {**os.environ, "CHATOPS_PROMPTS_DIR": str(tmp_path)})
    done = _run(str(installed), "-c", "from bot.prompts import render; print(render('deploy', agent='deploy'))",
                cwd=tmp_path, env=env)
    assert done.stdout.strip() == "Our own prompt for deploy."


def test_the_wheel_carries_every_package_of_the_tree(installed, tmp_path):
    """A new channels/<name>/ (or any package under bot/, channels/, agents/) ships without a line
    in the packaging: the packages are found, not listed."""
    tree = {str(p.parent.relative_to(ROOT)).replace(os.sep, ".")
            for top in ("bot", "channels", "agents") for p in (ROOT / top).rglob("__init__.py")}
    probe = ("import pkgutil, bot, channels, agents\n"
             "for top in (bot, channels, agents):\n"
             "    print(top.__name__)\n"
             "    for m in pkgutil.walk_packages(top.__path__, top.__name__ + '.'):\n"
             "        print(m.name) if m.ispkg else None\n")
    done = _run(str(installed), "-c", probe, cwd=tmp_path, env=_env(installed, dict(os.environ)))
    assert tree and tree <= set(done.stdout.split())

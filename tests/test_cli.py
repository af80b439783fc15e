"""The `chatops` command as users run it: subprocesses, real Redis, real HTTP."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pty
import re
import signal
import smtplib
import subprocess
import sys
from email.message import EmailMessage

import httpx
import pytest

from tests.conftest import ROOT, bot_env, settled, spawn_bot, wait_for
from tests.helpers import runbook_lines


async def chatops(settings, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess:
    """Run `chatops` off the event loop, so that the in-process worker keeps working."""
    return await asyncio.to_thread(subprocess.run,
        [sys.executable, "-m", "bot", *args], input=stdin, capture_output=True, text=True,
        env=bot_env(settings, **env), cwd=ROOT, timeout=180)


async def test_console_and_cli_round_trip(make_settings, start_bot):
    settings = make_settings()
    rt = await start_bot(settings)

    said = await chatops(settings, "console", "--as", "bob", stdin="/rollback api prod\n")
    assert said.returncode == 0, said.stderr
    match = re.search(r"approve (\S+)", said.stdout)
    assert match, said.stdout
    approval_id = match.group(1)
    assert "approval needed" in said.stdout and "rollback(service=api, environment=prod)" in said.stdout

    listed = await chatops(settings, "threads", "list", "--state", "awaiting_approval", "--json")
    [row] = json.loads(listed.stdout)
    decided = await chatops(settings, "approve", approval_id, "--as", "alice")
    assert decided.returncode == 0 and "approved by alice via cli" in decided.stdout
    again = await chatops(settings, "reject", approval_id, "--reason", "late", "--as", "carol")
    assert again.returncode == 1 and "Already decided" in again.stdout

    await settled(rt, row["id"])
    shown = await chatops(settings, "threads", "show", row["id"])
    assert "approval_decided" in shown.stdout and "Rolled back api in prod" in shown.stdout
    assert runbook_lines(settings) == ["rollback api prod"]

    # the console answers an approval too, and shows the outcome
    said = await chatops(settings, "console", "--as", "bob", stdin="/rollback web prod\n")
    approval_id = re.search(r"approve (\S+)", said.stdout).group(1)
    answered = await chatops(settings, "console", "--as", "alice", stdin=f"approve {approval_id}\n")
    assert "bot> approved by alice via console" in answered.stdout
    assert "Rolled back web in prod" in answered.stdout


async def test_invalid_configuration_names_the_setting(make_settings, tmp_path):
    settings = make_settings()
    bad = await chatops(settings, "threads", "list", PORT="http")
    assert bad.returncode != 0 and "PORT" in bad.stderr
    # a channel's setting too, by the name the README documents
    bad = await chatops(settings, "threads", "list", SLACK_EMAIL_TTL="-1")
    assert bad.returncode != 0 and "invalid setting SLACK_EMAIL_TTL" in bad.stderr
    # a channel's verb, when a channel cannot be built: the setting, not "invalid choice"
    bad = await chatops(settings, "smtp", CHATOPS_EMAIL_RATE_LIMIT="-1")
    assert bad.returncode != 0 and "invalid setting CHATOPS_EMAIL_RATE_LIMIT" in bad.stderr, bad.stderr
    doctor = await chatops(settings, "doctor", SMTP_URL="http://relay.example.com")
    assert doctor.returncode == 1 and "error: setting SMTP_URL: Value error, must start with smtp://" in doctor.stdout
    policy = tmp_path / "bad.toml"
    policy.write_text("[tools.deploy]\napprover = ['x']\n")
    bad = await chatops(settings, "threads", "list", CHATOPS_POLICY=str(policy))
    assert bad.returncode != 0 and "tools.deploy.approver" in bad.stderr
    doctor = await chatops(settings, "doctor", CHATOPS_POLICY=str(policy))
    assert doctor.returncode == 1 and "tools.deploy.approver" in doctor.stdout


async def test_doctor_warns_about_open_approvals(make_settings):
    settings = make_settings()
    out = await chatops(settings, "doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok: Redis reachable" in out.stdout
    assert "approvers are anyone" in out.stdout
    assert "service_status: no approvers" not in out.stdout  # never gated: nothing to warn about
    assert "exact commands only" in out.stdout


async def test_the_readme_policy_example_passes_doctor(make_settings, tmp_path):
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"The policy file \(TOML\).*?```toml\n(.*?)```", readme, re.S).group(1)
    assert "[people]" in example and "quorum" in example and "require_approval" in example
    policy = tmp_path / "example.toml"
    policy.write_text(example)
    out = await chatops(make_settings(), "doctor", CHATOPS_POLICY=str(policy))
    assert out.returncode == 0, out.stdout + out.stderr


async def test_run_with_embedded_redis_keeps_threads_across_restarts(make_settings):
    settings = make_settings(redis_url=None)
    env = dict(PORT="0", CHATOPS_API_TOKEN="tok", REDIS_URL="")
    auth = {"Authorization": "Bearer tok"}

    async def healthy():
        try:
            async with httpx.AsyncClient() as c:
                return (await c.get(base + "/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    bot = spawn_bot(settings, "run", **env)
    try:
        base = f"http://127.0.0.1:{await bot.port('HTTP API')}"
        await wait_for(healthy, 60, "chatops run to answer")
        async with httpx.AsyncClient(base_url=base, headers=auth) as c:
            thread_id = (await c.post("/v1/threads", json={"text": "/service_status api dev", "user": "u"})).json()["id"]

            async def replied():
                events = (await c.get(f"/v1/threads/{thread_id}")).json()["events"]
                return events[-1]["type"] == "agent_reply"

            await wait_for(replied, 60, "the reply")
        bot.send_signal(signal.SIGTERM)
        assert bot.wait(20) == 0
        assert not (settings.data_dir / "redis.url").exists()  # our redis-server was stopped

        bot = spawn_bot(settings, "run", **env)
        base = f"http://127.0.0.1:{await bot.port('HTTP API')}"
        await wait_for(healthy, 60, "chatops run to come back")
        async with httpx.AsyncClient(base_url=base, headers=auth) as c:
            body = (await c.get(f"/v1/threads/{thread_id}")).json()
        assert body["state"] == "idle" and "healthy" in body["events"][-1]["text"]
    finally:
        bot.send_signal(signal.SIGTERM)
        bot.wait(20)


async def test_startup_problems_are_one_line_naming_the_setting(make_settings, tmp_path):
    settings = make_settings()
    bad_level = await chatops(settings, "threads", "list", CHATOPS_LOG_LEVEL="chatty")
    assert bad_level.returncode != 0 and "CHATOPS_LOG_LEVEL" in bad_level.stderr
    assert "Traceback" not in bad_level.stderr
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    no_dir = await chatops(settings, "threads", "list", REDIS_URL="", CHATOPS_DATA_DIR=str(not_a_dir))
    assert no_dir.returncode != 0 and "CHATOPS_DATA_DIR: cannot write" in no_dir.stderr
    assert "Traceback" not in no_dir.stderr


async def test_run_attaches_the_console_only_to_a_terminal(make_settings):
    settings = make_settings()
    master, terminal = pty.openpty()
    log_path = settings.data_dir / "tty.log"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        bot = subprocess.Popen([sys.executable, "-m", "bot", "run"], env=bot_env(settings, PORT="0"), cwd=ROOT,
                               stdin=terminal, stdout=log, stderr=subprocess.STDOUT)
    os.close(terminal)
    try:
        async def prompted():
            return "you> " in log_path.read_text()

        await wait_for(prompted, 30, "the console prompt")
        os.write(master, b"/help\n")

        async def answered():
            return "bot> Commands of the deploy agent" in log_path.read_text()

        await wait_for(answered, 60, "the console to answer")
    finally:
        bot.send_signal(signal.SIGTERM)
        bot.wait(20)
        os.close(master)
    headless = spawn_bot(settings, "run", PORT="0")  # stdin is /dev/null here
    try:
        async def up():
            return "worker" in headless.log_path.read_text() and "started" in headless.log_path.read_text()

        await wait_for(up, 30, "the headless bot to start")
    finally:
        headless.send_signal(signal.SIGTERM)
        assert "chatops console" not in headless.output(20) and "you> " not in headless.output()


async def test_with_no_configuration_run_receives_mail_on_loopback(make_settings):
    settings = make_settings()
    env = dict(CHATOPS_SMTP_PORT="0", PORT="0", CHATOPS_API_TOKEN="tok",
               CHATOPS_SIGNING_KEY="")  # nothing about email configured
    bot = spawn_bot(settings, "run", **env)
    try:
        smtp_port, api_port = await bot.port("SMTP server"), await bot.port("HTTP API")
        async def listening():
            try:
                return await asyncio.to_thread(_smtp_ehlo, smtp_port)
            except OSError:
                return False

        await wait_for(listening, 60, "the SMTP listener")
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = "dev@example.com", "deploy@localhost", "status"
        mail.set_content("/service_status api dev")
        refused = await asyncio.to_thread(_send, smtp_port, mail, ["bot+0123456789abcdef-1-00@localhost"])
        assert refused == {"bot+0123456789abcdef-1-00@localhost": (550, ANY_REPLY)}
        assert await asyncio.to_thread(_send, smtp_port, mail, ["deploy@localhost"]) == {}

        async def answered():
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}",
                                         headers={"Authorization": "Bearer tok"}) as c:
                rows = (await c.get("/v1/threads")).json()["threads"]
                if not rows:
                    return None
                events = (await c.get(f"/v1/threads/{rows[0]['id']}")).json()["events"]
                return events if events[-1]["type"] == "agent_reply" else None

        events = await wait_for(answered, 60, "the mailed request to be answered")
        assert events[0]["source"]["user"] == "dev@example.com" and "healthy" in events[-1]["text"]
    finally:
        bot.send_signal(signal.SIGTERM)
        bot.wait(20)
    doctor = await chatops(settings, "doctor", CHATOPS_SIGNING_KEY="")
    assert "email: local only" in doctor.stdout


class _AnyReply:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, bytes)


ANY_REPLY = _AnyReply()


def _smtp_ehlo(port: int) -> bool:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
        return smtp.ehlo()[0] == 250


def _send(port: int, mail: EmailMessage, rcpts: list[str]) -> dict:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
        try:
            return smtp.send_message(mail, to_addrs=rcpts)
        except smtplib.SMTPRecipientsRefused as exc:
            return exc.recipients


def test_a_channels_verbs_come_with_its_channel_in_the_wiring():
    from bot.cli import build_parser
    from bot.wiring import default_wiring
    from channels.console import ConsoleChannel
    from channels.email.channel import EmailChannel
    from channels.email.settings import EmailSettings
    from channels.schedule import ScheduleChannel

    def verbs(wiring):
        [sub] = [a for a in build_parser(wiring)._actions if isinstance(a, argparse._SubParsersAction)]
        return set(sub.choices)

    core = {"run", "worker", "doctor", "tools", "threads", "approve", "reject"}
    assert verbs(default_wiring([ConsoleChannel()])) == core | {"console"}
    assert verbs(default_wiring([ScheduleChannel(), EmailChannel(EmailSettings(_env_file=None))])) == \
        core | {"clock", "schedules", "smtp"}
    with pytest.raises(SystemExit):  # not wired: argparse says it is no verb
        build_parser(default_wiring([ConsoleChannel()])).parse_args(["smtp"])

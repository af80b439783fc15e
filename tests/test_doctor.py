"""`chatops doctor` against real services on loopback: the local Slack Web API, the Messages API,
an aiosmtpd relay with AUTH, a redis-server of the test's own. Each finding says ok / warning /
error, and warnings and errors say how to fix them."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path

import pytest
import redis as sync_redis
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from channels.slack.doctor import MANIFEST_SCOPES
from tests.conftest import ROOT
from tests.redis_process import RedisProcess
from tests.slack_api import SlackAPI
from tests.test_cli import chatops


def lines_of(out: str, level: str) -> list[str]:
    return [line[len(level) + 2:] for line in out.splitlines() if line.startswith(level + ": ")]


def fix_after(out: str, message: str) -> str:
    """The fix printed under the finding that contains `message`."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if message in line:
            assert lines[i + 1].startswith("  fix: "), lines[i:i + 2]
            return lines[i + 1][len("  fix: "):]
    raise AssertionError(f"{message!r} not in {out}")


@pytest.fixture
async def slack_api():
    api = await SlackAPI().start()
    yield api
    await api.close()


async def test_slack_tokens_scopes_and_socket_are_checked_for_real(make_settings, slack_api):
    settings = make_settings()
    env = dict(SLACK_BOT_TOKEN="xoxb-test", SLACK_APP_TOKEN="xapp-test", SLACK_API_URL=slack_api.url)
    out = await chatops(settings, "doctor", **env)
    assert "ok: Slack: signed in as chatops in Test" in out.stdout, out.stdout
    assert "ok: Slack: the bot token has every scope of the manifest" in out.stdout
    assert "ok: Slack: the app token opens a Socket Mode connection" in out.stdout
    [auth] = slack_api.to("auth.test")
    assert auth.headers["Authorization"] == "Bearer xoxb-test"
    [opened] = slack_api.to("apps.connections.open")
    assert opened.headers["Authorization"] == "Bearer xapp-test"
    assert out.returncode == 0, out.stdout

    slack_api.scopes = [s for s in slack_api.scopes if s != "reactions:write"]
    out = await chatops(settings, "doctor", **env)
    assert out.returncode == 1
    assert "error: Slack: the bot token lacks the scopes reactions:write" in out.stdout
    assert "reinstall" in fix_after(out.stdout, "lacks the scopes")

    slack_api.fail("apps.connections.open", status=200, error="invalid_auth", retry_after=None)
    out = await chatops(settings, "doctor", **env)
    assert "error: Slack: apps.connections.open refused SLACK_APP_TOKEN (invalid_auth)" in out.stdout
    assert "connections:write" in fix_after(out.stdout, "apps.connections.open refused")

    slack_api.fail("auth.test", status=200, error="invalid_auth", retry_after=None)
    out = await chatops(settings, "doctor", **env)
    assert out.returncode == 1
    assert "error: Slack: auth.test refused SLACK_BOT_TOKEN (invalid_auth)" in out.stdout
    assert "xoxb-test" not in out.stdout + out.stderr  # never a secret in the output


def test_the_scopes_checked_are_the_manifests():
    text = (ROOT / "manifest.yml").read_text()
    bot = text.split("    bot:\n", 1)[1].split("settings:", 1)[0]
    assert tuple(re.findall(r"^\s+- ([a-z_:.]+)", bot, re.MULTILINE)) == MANIFEST_SCOPES


async def test_model_key_is_checked_with_a_token_count(make_settings, messages_api):
    messages_api.api_key = "right-key"
    settings = make_settings()
    env = dict(ANTHROPIC_API_KEY="right-key", ANTHROPIC_BASE_URL=messages_api.url)
    out = await chatops(settings, "doctor", **env)
    assert re.search(r"^ok: model: claude-\S+ at http://127\.0\.0\.1:\d+ answers \(counted \d+ tokens\)$",
                     out.stdout, re.MULTILINE), out.stdout
    assert len(messages_api.counted) == 1 and messages_api.requests == []  # no model ran

    out = await chatops(settings, "doctor", **{**env, "ANTHROPIC_API_KEY": "wrong-key"})
    assert out.returncode == 1
    assert "refused ANTHROPIC_API_KEY" in "\n".join(lines_of(out.stdout, "error"))
    assert "wrong-key" not in out.stdout + out.stderr


class Relay:
    """An SMTP relay on loopback that wants AUTH (user `bot`, password `secret`)."""

    def __init__(self) -> None:
        self.logins: list[str] = []
        self.server: asyncio.Server | None = None

    def authenticate(self, _server, _session, _envelope, mechanism, data) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == b"bot" and data.password == b"secret"
        self.logins.append(f"{mechanism}:{data.login.decode()}:{ok}")
        return AuthResult(success=ok, handled=False)

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SMTP(self, authenticator=self.authenticate, auth_require_tls=False,
                         auth_required=True, loop=loop), "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def handle_DATA(self, *_args) -> str:  # the doctor sends no mail
        raise AssertionError("the doctor sent a mail")

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_the_outbound_relay_is_connected_to_and_logged_in(make_settings):
    relay = Relay()
    port = await relay.start()
    settings = make_settings()
    env = dict(CHATOPS_EMAIL_DOMAIN="ops.example.com", CHATOPS_SMTP_PORT="0")
    try:
        out = await chatops(settings, "doctor", SMTP_URL=f"smtp://bot:secret@127.0.0.1:{port}", **env)
        assert f"ok: email: the relay 127.0.0.1:{port} answers: connected, EHLO, AUTH as bot" in out.stdout, \
            out.stdout
        assert relay.logins[-1].endswith(":bot:True")

        out = await chatops(settings, "doctor", SMTP_URL=f"smtp://bot:wrong@127.0.0.1:{port}", **env)
        assert out.returncode == 1
        assert f"error: email: the relay 127.0.0.1:{port} refused the user and password of SMTP_URL" \
            in out.stdout
        assert "wrong" not in out.stdout + out.stderr

        out = await chatops(settings, "doctor", SMTP_URL=f"smtp://bot:secret@127.0.0.1:{port}?starttls=require",
                            **env)
        assert "does not offer STARTTLS, which SMTP_URL requires" in out.stdout
    finally:
        await relay.stop()
    with socket.socket() as taken:  # nothing listens: refused at once
        taken.bind(("127.0.0.1", 0))
        out = await chatops(settings, "doctor", SMTP_URL=f"smtp://127.0.0.1:{taken.getsockname()[1]}", **env)
    assert re.search(r"^error: email: the relay 127\.0\.0\.1:\d+: .*\(after: connected\)$|"
                     r"^error: email: the relay 127\.0\.0\.1:\d+: SMTPConnect", out.stdout, re.MULTILINE), out.stdout


async def test_redis_persistence_and_eviction(make_settings, tmp_path: Path):
    server = RedisProcess(tmp_path / "redis")
    url = server.start()
    try:
        client = sync_redis.Redis.from_url(url)
        client.config_set("maxmemory-policy", "allkeys-lru")
        settings = make_settings(redis_url=url)
        out = await chatops(settings, "doctor")
        assert out.returncode == 1
        assert "warning: Redis persistence: none; a restart loses every thread and approval" in out.stdout
        assert "error: Redis maxmemory-policy is 'allkeys-lru'" in out.stdout
        assert "noeviction" in fix_after(out.stdout, "maxmemory-policy is")

        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("appendonly", "yes")
        out = await chatops(settings, "doctor")
        assert "ok: Redis persistence: append-only file on" in out.stdout
        assert "ok: Redis maxmemory-policy: noeviction" in out.stdout
        client.close()
    finally:
        server.stop()
    out = await chatops(settings, "doctor")  # gone: said in one line, with the fix
    assert "error: Redis at REDIS_URL does not answer" in out.stdout and out.returncode == 1


async def test_ports_schedules_and_runbooks(make_settings, policy_file):
    policy = policy_file("""
[tools.rollback]
command = ["/nonexistent/rollback", "{service}", "{environment}"]

[[schedules]]
name = "nightly"
cron = "0 3 * * *"
agent = "deploy"
message = "/service_status api prod"
to = { slack = ["C0123456789"], email = ["oncall@example.com"] }
""")
    settings = make_settings(policy_file=policy)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = await chatops(settings, "doctor", PORT=str(port))
    assert out.returncode == 1
    errors = lines_of(out.stdout, "error")
    assert f"PORT: 127.0.0.1:{port} is taken (Address already in use)" in errors
    assert "schedule nightly: results go to Slack C0123456789, but Slack is not configured" in errors
    assert "schedule nightly: results go to oncall@example.com, but SMTP_URL is not set, so no mail is sent" \
        in errors
    assert "tools.rollback.command: /nonexistent/rollback is not an executable" in errors
    assert "chmod +x" in fix_after(out.stdout, "/nonexistent/rollback is not an executable")
    assert re.search(r"^ok: tools\.deploy\.command: \S+/deploy\.sh$", out.stdout, re.MULTILINE)


async def test_a_service_that_never_answers_is_named_and_does_not_hold_up_the_rest(make_settings):
    silent = socket.socket()  # accepts connections (the backlog) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/api/"
        settings = make_settings()
        started = time.monotonic()
        out = await chatops(settings, "doctor", SLACK_BOT_TOKEN="xoxb-test", SLACK_APP_TOKEN="xapp-test",
                            SLACK_API_URL=url, ANTHROPIC_API_KEY="k",
                            ANTHROPIC_BASE_URL=f"http://127.0.0.1:{silent.getsockname()[1]}",
                            CHATOPS_DOCTOR_TIMEOUT="2.5")
        took = time.monotonic() - started
    finally:
        silent.close()
    assert out.returncode == 1
    errors = lines_of(out.stdout, "error")
    assert "Slack: no answer within 2.5 s, so it was not checked" in errors, out.stdout
    assert "model: no answer within 2.5 s, so it was not checked" in errors
    assert "ok: Redis reachable at REDIS_URL" in out.stdout  # the others were checked meanwhile
    assert took < 60  # a bound on the whole, not a benchmark: the checks ran side by side

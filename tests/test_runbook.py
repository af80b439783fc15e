"""The runbook tool kind: argv without a shell, a timeout, failures as errors."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from bot.policy import Policy, ToolPolicy
from bot.runbook import OUTPUT_LIMIT, runbook_tool
from bot.tools import ToolContext, ToolError
from tests.conftest import make_wiring, settled
from tests.helpers import say


class Args(BaseModel):
    name: str


def ctx(tmp_path, secret_env: frozenset[str] = frozenset()) -> ToolContext:
    return ToolContext(thread_id="t", call_id="c", data_dir=tmp_path, secret_env=secret_env)


async def test_arguments_never_reach_a_shell(tmp_path):
    tool = runbook_tool("echo", "", Args, ["/bin/echo", "hello {name}"], policy=Policy())
    out = await tool.handler(Args(name="x; touch pwned $(id)"), ctx(tmp_path))
    assert out == "hello x; touch pwned $(id)"
    assert not (tmp_path / "pwned").exists()


async def test_non_zero_exit_is_an_error_with_the_output(tmp_path):
    tool = runbook_tool("fail", "", Args, ["/bin/sh", "-c", "echo broken {name}; exit 3"], policy=Policy())
    with pytest.raises(ToolError, match="exit status 3: broken db"):
        await tool.handler(Args(name="db"), ctx(tmp_path))


async def test_timeout_kills_the_command(tmp_path):
    policy = Policy(tools={"slow": ToolPolicy(timeout=0.2)})
    tool = runbook_tool("slow", "", Args, ["/bin/sleep", "30"], policy=policy)
    with pytest.raises(ToolError, match="timed out after 0.2s"):
        await tool.handler(Args(name="x"), ctx(tmp_path))


async def test_policy_replaces_the_command_and_a_missing_program_is_an_error(tmp_path):
    policy = Policy(tools={"t": ToolPolicy(command=["/nonexistent/deploy", "{name}"])})
    tool = runbook_tool("t", "", Args, ["/bin/echo", "{name}"], policy=policy)
    with pytest.raises(ToolError, match="could not start /nonexistent/deploy"):
        await tool.handler(Args(name="x"), ctx(tmp_path))


SECRETS = dict(SLACK_BOT_TOKEN="xoxb-hidden-1", ANTHROPIC_API_KEY="sk-hidden-2",
               REDIS_URL="redis://:hidden-3@10.0.0.5:6379/0", SMTP_URL="smtp://bot:hidden-4@relay:587",
               CHATOPS_SMTP_AUTH_PASSWORD="hidden-5", SLACK_SIGNING_SECRET="hidden-6")


async def test_the_bots_secrets_never_reach_a_command(tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DEPLOY_REGION", "eu-west-1")  # the operator's own settings still pass
    tool = runbook_tool("env", "", Args, ["/usr/bin/env"], policy=Policy())
    # the channels' secrets are those of their settings models, as the runtime collects them
    out = await tool.handler(Args(name="x"), ctx(tmp_path, make_wiring().secret_env()))
    assert "DEPLOY_REGION=eu-west-1" in out and "CHATOPS_THREAD=t" in out
    assert not [value for value in SECRETS.values() if value in out], out


async def test_a_runbook_a_worker_runs_sees_no_channel_secret(make_settings, start_bot, policy_file, monkeypatch):
    settings = make_settings(policy_file=policy_file('[tools.service_status]\ncommand = ["/usr/bin/env"]\n'))
    rt = await start_bot(settings)
    for name, value in SECRETS.items():  # after the start: the settings read none of them
        monkeypatch.setenv(name, value)
    thread = await settled(rt, await say(rt, "/service_status api prod"))
    [result] = [e for e in thread.events if e.type == "tool_result"]
    assert "CHATOPS_THREAD=" in result.output
    assert not [value for value in SECRETS.values() if value in result.output], result.output


async def test_timeout_kills_what_the_command_started(tmp_path):
    policy = Policy(tools={"slow": ToolPolicy(timeout=0.3)})
    marker = tmp_path / "child-ran"
    script = f"(sleep 1; touch {marker}) & wait"
    tool = runbook_tool("slow", "", Args, ["/bin/sh", "-c", script], policy=policy)
    with pytest.raises(ToolError, match="timed out"):
        await tool.handler(Args(name="x"), ctx(tmp_path))
    await asyncio.sleep(1.2)
    assert not marker.exists()


async def test_a_runaway_output_keeps_its_head_and_tail(tmp_path):
    script = "echo first; head -c 3000000 /dev/zero | tr '\\0' x; echo; echo last"
    tool = runbook_tool("noisy", "", Args, ["/bin/sh", "-c", script], policy=Policy())
    out = await tool.handler(Args(name="x"), ctx(tmp_path))
    assert out.startswith("first") and out.endswith("last")
    assert len(out) < OUTPUT_LIMIT + 100 and "bytes of output not kept" in out

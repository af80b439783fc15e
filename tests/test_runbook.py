"""The runbook tool kind: argv without a shell, a timeout, failures as errors."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from bot.policy import Policy, ToolPolicy
from bot.runbook import runbook_tool
from bot.tools import ToolContext, ToolError


class Args(BaseModel):
    name: str


def ctx(tmp_path) -> ToolContext:
    return ToolContext(thread_id="t", call_id="c", data_dir=tmp_path)


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

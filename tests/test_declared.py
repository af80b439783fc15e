"""Agents and runbooks declared in the policy file; policy checks of [mcp.*]; model-facing names."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bot.mcp_names import model_name
from bot.policy import ConfigError, load_policy
from tests.conftest import make_wiring, settled
from tests.helpers import say
from tests.messages_api import text, tool_use
from tests.test_mcp import repo  # noqa: F401 (fixture)

BIN = Path(sys.executable).parent
RESTART = """#!/bin/sh
mkdir -p "$CHATOPS_DATA_DIR"
for arg in "$@"; do printf '[%s]' "$arg" >> "$CHATOPS_DATA_DIR/restart.log"; done
echo >> "$CHATOPS_DATA_DIR/restart.log"
echo "restarted $1"
"""


def write_policy(tmp_path: Path, body: str) -> Path:
    (tmp_path / "prompts").mkdir(exist_ok=True)
    (tmp_path / "prompts" / "ops.md").write_text("You restart services.\n")
    script = tmp_path / "restart.sh"
    script.write_text(RESTART)
    script.chmod(0o755)
    path = tmp_path / "chatops.toml"
    path.write_text(body.replace("SCRIPT", str(script)))
    return path


RUNBOOKS = """
approvers = ["alice"]
[runbooks.restart]
description = "Restart a service."
command = ["SCRIPT", "{service}"]
args = { service = { pattern = "^[a-z0-9-]+$", description = "The service." } }
needs_approval = true

[runbooks.logs]
command = ["SCRIPT", "--logs", "{service}", "{flag}"]
args = { service = { pattern = "^[a-z0-9-]+$" }, flag = { pattern = "^--(tail|head)$", allow_dash = true } }
needs_approval = false

[agents.ops]
description = "Restarts services."
prompt_file = "prompts/ops.md"
tools = ["runbook:restart", "runbook:logs"]
"""


def restarts(settings) -> list[str]:
    log = settings.data_dir / "restart.log"
    return log.read_text().splitlines() if log.exists() else []


async def test_option_injection_through_a_declared_runbook_is_refused(model_settings, start_bot, messages_api,
                                                                      tmp_path):
    settings = model_settings(policy_file=write_policy(tmp_path, RUNBOOKS), error_budget=10)
    rt = await start_bot(settings)
    messages_api.add(
        tool_use("restart", {"service": "--force"}),
        tool_use("restart", {"service": "-rf"}),
        tool_use("restart", {"service": "api --force"}),
        tool_use("logs", {"service": "api", "flag": "--tail"}),  # this argument allows a dash
        tool_use("restart", {"service": "api"}),
        text("restarted"),
    )
    thread_id = await say(rt, "restart api", agent="ops")
    thread = await settled(rt, thread_id, timeout=30)
    dash, short, space, logs = list(thread.results.values())
    for refused in (dash, short):
        assert refused.status == "error" and "must not start with '-'" in refused.output
    assert space.status == "error" and "must match" in space.output
    assert logs.status == "ok" and restarts(settings) == ["[--logs][api][--tail]"]
    [request] = thread.pending_approvals()
    assert request.tool == "restart" and request.args == {"service": "api"}
    assert (await rt.approvals.decide(request.approval_id, True, "alice", "api")).status == "decided"
    thread = await settled(rt, thread_id, timeout=30)
    assert restarts(settings) == ["[--logs][api][--tail]", "[api]"]
    assert thread.events[-1].text == "restarted"


async def test_mcp_server_time_safe_tool(model_settings, start_bot, messages_api, tmp_path):
    policy = write_policy(tmp_path, f"""
[mcp.time]
command = ["{BIN / 'mcp-server-time'}", "--local-timezone", "UTC"]
safe = ["get_current_time"]
[agents.clock]
prompt_file = "prompts/ops.md"
tools = ["mcp:time/get_current_time"]
""")
    rt = await start_bot(model_settings(policy_file=policy))
    messages_api.add(tool_use("time__get_current_time", {"timezone": "Europe/Paris"}), text("it is late"))
    thread = await settled(rt, await say(rt, "time?", agent="clock"), timeout=60)
    [result] = thread.results.values()
    assert result.status == "ok" and "Europe/Paris" in result.output and not thread.approvals
    # only the tool the agent was given: not convert_time
    assert [t["name"] for t in messages_api.requests[0]["tools"]] == ["time__get_current_time", "read_event", "ask_human"]


@pytest.mark.parametrize("body, why", [
    ('[mcp.a]\ncommand = ["x"]\nurl = "http://h/mcp"\n', "either command"),
    ('[mcp.a]\n', "either command"),
    ('[mcp.a_b]\ncommand = ["x"]\n', "letters, digits"),
    ('[mcp.a]\nurl = "http://h/mcp"\nenv = { A = "1" }\n', "env is for stdio"),
    ('[runbooks.r]\ncommand = ["SCRIPT", "{who}"]\n', "args does not declare"),
    ('[runbooks.r]\ncommand = ["SCRIPT"]\nargs = { a = { pattern = "(" } }\n', "not a regular expression"),
    ('[agents.x]\nprompt_file = "prompts/ops.md"\ntools = ["shell:rm"]\n', "a tool is"),
    ('[agents.x]\nprompt_file = "prompts/ops.md"\ntools = ["mcp:nope"]\n', "no [mcp.nope]"),
    ('[agents.x]\nprompt_file = "prompts/ops.md"\ntools = ["runbook:nope"]\n', "no [runbooks.nope]"),
    ('[agents.x]\nprompt_file = "prompts/missing.md"\n', "no such file"),
    ('[agents.deploy]\nprompt_file = "prompts/ops.md"\n', "already an agent"),
    ('[mcp.a]\ncommand = ["x"]\napprovers = ["group:nope"]\n', "which [groups] does not define"),
])
def test_policy_mistakes_are_refused(tmp_path, body, why):
    with pytest.raises(ConfigError, match=why.replace("[", r"\[").replace("(", r"\(")):
        make_wiring().load_agents(load_policy(write_policy(tmp_path, body)))


def test_env_references_come_from_the_environment_only(tmp_path, monkeypatch):
    from bot.mcp_client import McpConnection

    policy = load_policy(write_policy(tmp_path, '[mcp.a]\nurl = "http://h/mcp"\n'
                                                'headers = { Authorization = "Bearer ${TEST_MCP_TOKEN}" }\n'
                                                '[mcp.b]\ncommand = ["x"]\nenv = { T = "${TEST_MCP_TOKEN}" }\n'))
    conn = McpConnection("b", policy.mcp["b"])
    with pytest.raises(ConfigError, match="TEST_MCP_TOKEN is not set"):
        conn.server_env()
    monkeypatch.setenv("TEST_MCP_TOKEN", "s3cret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "the-bot-key")
    env = conn.server_env()
    assert env["T"] == "s3cret" and "ANTHROPIC_API_KEY" not in env and "PATH" in env


def test_model_facing_names_are_valid_deterministic_and_distinct():
    assert model_name("git", "git_status") == "git__git_status"
    long = model_name("github", "x" * 100)
    assert len(long) == 64 and long == model_name("github", "x" * 100)
    assert model_name("github", "x" * 100) != model_name("github", "x" * 99 + "y")
    odd = model_name("k8s", "pods.list/ünï")
    assert odd.startswith("k8s__pods_list_") and all(c.isalnum() or c in "_-" for c in odd)
    assert model_name("k8s", "a.b") != model_name("k8s", "a/b")


def test_chatops_tools_and_doctor_list_each_servers_state_and_tools(make_settings, tmp_path, repo):
    from tests.conftest import spawn_bot

    policy = write_policy(tmp_path, f"""
approvers = ["alice"]
[mcp.git]
command = ["{BIN / 'mcp-server-git'}", "--repository", "{repo}"]
safe = ["git_status", "git_diff*"]
[mcp.gone]
url = "http://127.0.0.1:9/mcp"
[tools."git.git_commit"]
approvers = ["bob"]
[tools."git.git_comit"]
approvers = ["bob"]
[runbooks.restart]
command = ["SCRIPT", "{{service}}"]
args = {{ service = {{ pattern = "^[a-z]+$" }} }}
[agents.git]
prompt_file = "prompts/ops.md"
tools = ["mcp:git", "runbook:restart"]
[agents.both]
prompt_file = "prompts/ops.md"
tools = ["mcp:git/git_status", "mcp:gone"]
""")
    settings = make_settings(policy_file=policy)
    tools = spawn_bot(settings, "tools", "git")
    out = tools.output(60)
    assert tools.returncode == 0, out
    assert "git__git_status                          safe" in out
    assert "git__git_commit                          gated  approvers: bob" in out
    assert "git__git_show                            gated  approvers: alice" in out  # readOnlyHint: no matter
    assert "restart                                  gated" in out and "mcp server git: up" in out
    both = spawn_bot(settings, "tools", "both")
    out = both.output(60)
    assert both.returncode == 1 and "mcp server gone: down" in out and "git__git_commit" not in out
    doctor = spawn_bot(settings, "doctor")
    out = doctor.output(60)
    assert doctor.returncode == 1
    assert "ok: mcp.git: up; tools: git_add (gated)" in out and "git_status (safe)" in out
    assert "error: mcp.gone: down" in out
    assert "warning: tools.\"git.git_comit\": MCP server git offers no tool 'git_comit'" in out


def test_the_readme_example_is_a_valid_policy_and_its_rules_apply(tmp_path):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Connecting tools", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "platform.md").write_text("You look after the cluster.\n")
    path = tmp_path / "chatops.toml"
    path.write_text(example)
    policy = load_policy(path)
    agents = make_wiring().load_agents(policy)
    assert [t.name for t in agents["platform"].tools] == ["restart"] and agents["platform"].tools[0].gated
    assert policy.approvers_for("k8s__pods_delete") == ["group:sre"]
    assert policy.tool("k8s__pods_delete").two_person is True
    assert policy.approvers_for("github__merge_pull_request") == ["group:release"]
    assert policy.approvers_for("github__create_pull_request") == ["group:platform"]  # the server's
    assert policy.approvers_for("k8s__pods_exec") == ["group:oncall"]  # the policy's default

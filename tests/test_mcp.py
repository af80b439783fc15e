"""MCP servers under our approval policy: the reference `mcp-server-git` over stdio on a temporary
repository, `mcp-server-time`, and our own failure server over streamable HTTP; the real worker,
the real anthropic client against the local Messages API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import settled
from tests.helpers import say
from tests.messages_api import text, tool_use

BIN = Path(sys.executable).parent


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "ops-repo"
    path.mkdir()
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    (path / "README").write_text("ops\n")
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    return path


def git_policy(tmp_path: Path, repo: Path, extra: str = "") -> Path:
    (tmp_path / "prompts").mkdir(exist_ok=True)
    (tmp_path / "prompts" / "git.md").write_text("You change the ops repository with your tools.\n")
    path = tmp_path / "chatops.toml"
    path.write_text(f"""
[mcp.git]
command = ["{BIN / 'mcp-server-git'}", "--repository", "{repo}"]
safe = ["git_status", "git_log", "git_diff*"]
timeout = 30

[agents.git]
description = "Reads and changes the ops repository."
prompt_file = "prompts/git.md"
tools = ["mcp:git"]
{extra}
""")
    return path


def commits(repo: Path) -> list[str]:
    out = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True, check=True)
    return out.stdout.split("\n")[:-1]


async def test_safe_tool_runs_at_once(model_settings, start_bot, messages_api, tmp_path, repo):
    settings = model_settings(policy_file=git_policy(tmp_path, repo))
    rt = await start_bot(settings)
    messages_api.add(tool_use("git__git_status", {"repo_path": str(repo)}), text("clean"))
    thread = await settled(rt, await say(rt, "status?", agent="git"), timeout=60)
    assert thread.state == "idle" and not thread.approvals
    [result] = thread.results.values()
    assert result.status == "ok" and "working tree clean" in result.output
    # the model saw the server's tools under their model-facing names, with the server's schema
    tools = {t["name"]: t for t in messages_api.requests[0]["tools"]}
    assert "git__git_commit" in tools and "ask_human" in tools
    assert tools["git__git_status"]["input_schema"]["required"] == ["repo_path"]
    last = messages_api.requests[1]["messages"][-1]["content"][0]
    assert last["type"] == "tool_result" and "working tree clean" in last["content"]

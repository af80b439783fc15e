"""A gated tool of a real MCP server (`mcp-server-git` over stdio) waits for an approval by a
Slack button, an email reply or the HTTP API; it then runs once and its result reaches the model.
The approver sees the server, the tool, its description and annotations, and the arguments."""

from __future__ import annotations

import json
import subprocess

import httpx

from bot.api import create_app
from tests.conftest import settled
from tests.mail import gmail, new_mail, reply_to, text_of
from tests.messages_api import text, tool_use
from tests.slack_api import block_action, mention, new_ts
from tests.test_email import ALICE, BOB, email_bot, mails_to, sink  # noqa: F401 (fixtures)
from tests.test_email import h as header
from tests.test_mcp import BIN, repo  # noqa: F401 (fixture)
from tests.test_slack import CHANNEL, button_values, slack_api, slack_bot  # noqa: F401

PROMPT = "You change the ops repository with your tools.\n"


def policy(tmp_path, repo, approvers: str) -> str:
    (tmp_path / "prompts").mkdir(exist_ok=True)
    (tmp_path / "prompts" / "git.md").write_text(PROMPT)
    return f"""
approvers = {approvers}
[mcp.git]
command = ["{BIN / 'mcp-server-git'}", "--repository", "{repo}"]
safe = ["git_status", "git_log", "git_diff*"]

[agents.git]
prompt_file = "prompts/git.md"
tools = ["mcp:git"]

[routes]
{CHANNEL} = "git"
"""


def branches(repo) -> list[str]:
    out = subprocess.run(["git", "-C", str(repo), "branch", "--format=%(refname:short)"],
                         capture_output=True, text=True, check=True)
    return sorted(out.stdout.split())


def create_branch(repo) -> dict:
    return tool_use("git__git_create_branch", {"repo_path": str(repo), "branch_name": "fix-äü"})


def assert_result_reached_the_model(messages_api) -> None:
    [result] = [b for b in messages_api.requests[1]["messages"][-1]["content"] if b["type"] == "tool_result"]
    assert "Created branch 'fix-äü'" in result["content"]


async def test_slack_button(slack_bot, messages_api, tmp_path, repo):
    bot = await slack_bot(policy(tmp_path, repo, '["U0BOB001"]'))
    messages_api.add(create_branch(repo), text("branch made"))
    ts = new_ts()
    assert (await bot.send.event(mention("make a branch", ts=ts))).status_code == 200
    thread = await settled(bot.rt, bot.thread_id(ts), timeout=60)
    assert thread.state == "awaiting_approval" and branches(repo) == ["master"]
    [posted] = await bot.calls("chat.postMessage", thread_ts=ts)
    body = json.dumps(posted.args["blocks"], ensure_ascii=False)
    assert "git__git_create_branch" in body and "fix-äü" in body
    assert "MCP server git, tool git_create_branch" in body and "not trusted" in body
    values = button_values(posted)
    click = block_action("approval_approve", values["approval_approve"], user="U0BOB001", channel=CHANNEL,
                         message_ts="1.0", thread_ts=ts)
    first, second = await bot.send.interaction(click), await bot.send.interaction(click)
    assert first.status_code == second.status_code == 200
    thread = await settled(bot.rt, thread.id, timeout=60)
    assert thread.state == "idle" and branches(repo) == ["fix-äü", "master"]
    assert [e.type for e in thread.events].count("tool_started") == 1
    assert_result_reached_the_model(messages_api)


async def test_email_reply(email_bot, sink, messages_api, tmp_path, repo):  # noqa: F811
    path = tmp_path / "git.toml"  # not chatops.toml: the email_bot fixture writes its own there
    path.write_text(policy(tmp_path, repo, f'["{ALICE}"]'))
    bot = await email_bot(policy_file=path, anthropic_api_key="test-key", anthropic_base_url=messages_api.url)
    messages_api.add(create_branch(repo), text("branch made"))
    code, said = await bot.send(new_mail(BOB, "git@ops.test", "a branch please", "make a branch for the fix"))
    assert code == 250, said
    [mail] = await mails_to(sink, ALICE, 1)
    assert "MCP server git, tool git_create_branch" in text_of(mail) and "fix-äü" in text_of(mail)
    thread_id = header(mail, "X-Chatops-Thread")
    assert branches(repo) == ["master"]
    assert (await bot.send(reply_to(mail, ALICE, gmail("Approve", mail))))[0] == 250
    thread = await settled(bot.rt, thread_id, timeout=60)
    assert thread.state == "idle" and branches(repo) == ["fix-äü", "master"]
    assert [e.type for e in thread.events].count("tool_started") == 1
    assert_result_reached_the_model(messages_api)


async def test_http_api(model_settings, start_bot, serve, messages_api, policy_file, tmp_path, repo):  # noqa: F811
    settings = model_settings(api_token="tok", policy_file=policy_file(policy(tmp_path, repo, '["alice"]')))
    rt = await start_bot(settings)
    auth = {"Authorization": "Bearer tok"}
    messages_api.add(create_branch(repo), text("branch made"))
    async with httpx.AsyncClient(base_url=await serve(create_app(rt)), timeout=30, headers=auth) as client:
        made = await client.post("/v1/threads", json={"agent": "git", "text": "make a branch", "user": "bob"})
        thread_id = made.json()["id"]
        thread = await settled(rt, thread_id, timeout=60)
        [request] = thread.pending_approvals()
        assert request.args == {"repo_path": str(repo), "branch_name": "fix-äü"}
        path = f"/v1/approvals/{request.approval_id}"
        assert (await client.post(path, json={"decision": "approve", "user": "bob"})).status_code == 403
        assert branches(repo) == ["master"]
        assert (await client.post(path, json={"decision": "approve", "user": "alice"})).status_code == 200
        assert (await client.post(path, json={"decision": "approve", "user": "alice"})).status_code == 409
    thread = await settled(rt, thread_id, timeout=60)
    assert thread.state == "idle" and branches(repo) == ["fix-äü", "master"]
    assert [e.type for e in thread.events].count("tool_started") == 1
    assert_result_reached_the_model(messages_api)

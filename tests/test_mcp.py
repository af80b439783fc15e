"""MCP servers under our approval policy: the reference `mcp-server-git` over stdio on a temporary
repository, `mcp-server-time`, and our own failure server over streamable HTTP; the real worker,
the real anthropic client against the local Messages API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, settled, spawn_bot, wait_for
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


# ---- our failure server over streamable HTTP -----------------------------------------------

class FailureServer:
    """tests/mcp_http_server.py in a subprocess; `calls` is every tool call it received."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    async def start(self) -> FailureServer:
        (self.state / "port").unlink(missing_ok=True)
        args = [sys.executable, "-m", "tests.mcp_http_server", str(self.state)]
        if self.port is not None:
            args.append(str(self.port))
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.state / "port"

        async def listening():
            return port_file.exists()

        await wait_for(listening, 30, "the MCP test server to listen")
        self.port = int(port_file.read_text())
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def calls(self) -> list[str]:
        path = self.state / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
async def failures(tmp_path: Path):
    state = tmp_path / "mcp-state"
    state.mkdir()
    server = await FailureServer(state).start()
    yield server
    server.stop()


def failure_policy(tmp_path: Path, server: FailureServer, repo: Path | None = None, extra: str = "") -> Path:
    (tmp_path / "prompts").mkdir(exist_ok=True)
    (tmp_path / "prompts" / "ops.md").write_text("You operate with your tools.\n")
    git = f'\n[mcp.git]\ncommand = ["{BIN / "mcp-server-git"}", "--repository", "{repo}"]\nsafe = ["git_status"]\n' \
        if repo else ""
    path = tmp_path / "chatops.toml"
    path.write_text(f"""
approvers = ["alice"]
[mcp.failures]
url = "{server.url}"
safe = ["echo", "slow", "crash", "fail", "huge", "drop_count", "ask", "think"]
timeout = 30
{git}
[agents.ops]
prompt_file = "prompts/ops.md"
tools = ["mcp:failures"{', "mcp:git"' if repo else ''}]
{extra}
""")
    return path


async def test_annotations_never_remove_a_gate_and_invalid_arguments_never_reach_the_server(
        model_settings, start_bot, messages_api, tmp_path, failures):
    rt = await start_bot(model_settings(policy_file=failure_policy(tmp_path, failures)))
    messages_api.add(
        tool_use("failures__count", {"note": "x", "times": "many"}),  # times is an integer
        tool_use("failures__count", {"times": 2, "x": "\x00"}),  # no note
        tool_use("failures__count", {"note": "héllo", "times": 2}),
        text("counted"),
    )
    thread_id = await say(rt, "count", agent="ops")
    thread = await settled(rt, thread_id, timeout=60)
    first, second = [r for r in thread.results.values()]
    assert first.status == "error" and "times: 'many' is not of type 'integer'" in first.output
    assert second.status == "error" and "'note' is a required property" in second.output
    assert thread.state == "awaiting_approval"  # readOnlyHint=True from the server: still gated
    [request] = thread.pending_approvals()
    assert request.tool == "failures__count" and request.args == {"note": "héllo", "times": 2}
    assert "MCP server failures, tool count" in request.about
    assert "read_only_hint=True" in request.about and "not trusted" in request.about
    assert "Count a call" in request.about
    assert failures.calls() == []  # nothing reached the server before the approval
    assert (await rt.approvals.decide(request.approval_id, True, "alice", "api")).status == "decided"
    thread = await settled(rt, thread_id, timeout=60)
    assert thread.state == "idle" and thread.events[-1].text == "counted"
    assert failures.calls()[-1] == "count héllo 2"
    assert failures.calls().count("count héllo 2") == 1


async def test_server_failures_become_compact_errors_and_the_rest_of_the_agent_works(
        model_settings, start_bot, messages_api, tmp_path, failures, repo):
    policy = failure_policy(tmp_path, failures, repo, extra='[tools."failures.slow"]\ntimeout = 2\n')
    settings = model_settings(policy_file=policy, tool_output_limit=2000, error_budget=20)
    rt = await start_bot(settings)
    messages_api.add(
        tool_use("failures__fail", {}),
        tool_use("failures__huge", {"n": 500_000}),
        tool_use("failures__huge", {"n": 3_000_000}),  # past the SDK's 1 MiB limit of an event
        tool_use("failures__slow", {"seconds": 60}),
        tool_use("failures__crash", {}),
        tool_use("failures__echo", {"text": "still there?"}),  # the server is down now
        tool_use("git__git_status", {"repo_path": str(repo)}),  # another server: works
        text("done"),
    )
    thread = await settled(rt, await say(rt, "break things", agent="ops"), timeout=90)
    failed, huge, too_big, slow, crash, echo, status = thread.results.values()
    assert failed.status == "error" and "failures__fail failed" in failed.output
    assert huge.status == "ok" and len(huge.output) == 500_000
    assert too_big.status == "error" and "exceeded" in too_big.output
    assert slow.status == "error" and "no answer within 2s" in slow.output and "unknown" in slow.output
    assert crash.status == "error" and "Whether it took effect is unknown" in crash.output
    assert echo.status == "error" and "MCP server failures is down" in echo.output and "not run" in echo.output
    assert status.status == "ok" and "working tree clean" in status.output
    assert thread.events[-1].text == "done"
    # the model got the huge output truncated, as any tool output
    results = [b for m in messages_api.requests[2]["messages"] for b in m["content"]
               if isinstance(b, dict) and b.get("type") == "tool_result"]
    assert len(results[1]["content"]) < 3000
    assert [c.split()[0] for c in failures.calls()] == ["fail", "huge", "huge", "slow", "crash"]  # each once

    # the server comes back (on its port): the next call starts a new session after the back-off
    failures.stop()
    await failures.start()
    messages_api.add(tool_use("failures__echo", {"text": "back"}), text("ok"))

    async def echoed():
        thread_id = await say(rt, "again", agent="ops")
        thread = await settled(rt, thread_id, timeout=60)
        [result] = thread.results.values()
        if result.status != "ok":
            messages_api.add(tool_use("failures__echo", {"text": "back"}), text("ok"))
        return result.status == "ok" and result.output == "back"

    await wait_for(echoed, 60, "the server to be used again")


async def test_a_tool_that_disappears_fails_its_pending_call(model_settings, start_bot, messages_api,
                                                            tmp_path, failures):
    rt = await start_bot(model_settings(policy_file=failure_policy(tmp_path, failures)))
    messages_api.add(tool_use("failures__count", {"note": "later"}))
    thread_id = await say(rt, "count", agent="ops")
    thread = await settled(rt, thread_id, timeout=60)
    [request] = thread.pending_approvals()

    messages_api.add(tool_use("failures__drop_count", {}), text("dropped"))
    other = await settled(rt, await say(rt, "drop it", agent="ops"), timeout=60)
    assert other.events[-1].text == "dropped"

    async def gone():
        return "failures__count" not in {t.name for t in rt.agents["ops"].all_tools}

    await wait_for(gone, 30, "the tool list change to arrive")
    messages_api.add(text("it is gone"))
    assert (await rt.approvals.decide(request.approval_id, True, "alice", "api")).status == "decided"
    thread = await settled(rt, thread_id, timeout=60)
    result = thread.results[request.call_id]
    assert result.status == "error" and "does not offer failures__count" in result.output
    assert "count later 1" not in failures.calls()
    assert "failures__count" not in {t["name"] for t in messages_api.requests[-1]["tools"]}


async def test_a_worker_killed_mid_call_gives_an_unknown_outcome_and_no_second_call(
        model_settings, runtime, messages_api, tmp_path, failures):
    policy = failure_policy(tmp_path, failures)
    settings = model_settings(policy_file=policy, lease_ttl=1.0, claim_idle=1.0)
    rt = await runtime(settings)
    messages_api.add(tool_use("failures__slow", {"seconds": 4}))
    worker = spawn_bot(settings, "worker")
    try:
        thread_id = await say(rt, "take your time", agent="ops")

        async def called():
            return failures.calls() == ["slow 4.0"]

        await wait_for(called, 60, "the slow call to reach the server")
        thread = await rt.store.load(thread_id)
        assert [e.type for e in thread.events][-1] == "tool_started"
        worker.send_signal(signal.SIGKILL)
        worker.wait()

        worker = spawn_bot(settings, "worker")
        thread = await settled(rt, thread_id, timeout=60)
        assert thread.state == "awaiting_human"
        [result] = thread.results.values()
        assert result.status == "unknown" and "not run again" in result.output
        assert "check whether it took effect" in thread.events[-1].question
        assert failures.calls() == ["slow 4.0"]  # never called a second time
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()


def _children(name: str) -> list[int]:
    """Our child processes whose command line mentions `name` (a stdio server we started)."""
    pids = []
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                if name in Path(f"/proc/{pid}/cmdline").read_text():
                    pids.append(int(pid))
            except FileNotFoundError:
                pass
    return pids


async def test_a_dead_server_or_expired_session_is_replaced_before_the_next_call(
        model_settings, start_bot, messages_api, tmp_path, failures, repo):
    rt = await start_bot(model_settings(policy_file=failure_policy(tmp_path, failures, repo)))
    status = tool_use("git__git_status", {"repo_path": str(repo)})
    messages_api.add(tool_use("failures__echo", {"text": "one"}), status, text("ok"))
    thread = await settled(rt, await say(rt, "go", agent="ops"), timeout=60)
    assert [r.status for r in thread.results.values()] == ["ok", "ok"]

    # the HTTP server restarts (it forgets our session); the stdio server exits between calls
    failures.stop()
    await failures.start()
    [pid] = _children("mcp-server-git")
    os.kill(pid, signal.SIGKILL)

    messages_api.add(tool_use("failures__echo", {"text": "two"}), status, text("ok"))
    thread = await settled(rt, await say(rt, "again", agent="ops"), timeout=60)
    assert [(r.status, r.output[:20]) for r in thread.results.values()] == [
        ("ok", "two"), ("ok", "Repository status:\nO")]
    assert failures.calls() == ["echo one", "echo two"]  # each call sent once, none lost
    assert len(_children("mcp-server-git")) == 1


async def test_a_tool_section_gates_a_safe_tool_and_elicitation_is_refused(
        model_settings, start_bot, messages_api, tmp_path, failures, caplog):
    extra = '[tools."failures.echo"]\napprovers = ["carol"]\ntwo_person = true\n'
    rt = await start_bot(model_settings(policy_file=failure_policy(tmp_path, failures, extra=extra)))
    messages_api.add(tool_use("failures__ask", {}), tool_use("failures__think", {}),
                     tool_use("failures__echo", {"text": "hi"}))
    thread_id = await say(rt, "ask and echo", agent="ops")
    thread = await settled(rt, thread_id, timeout=60)
    asked, thought = thread.results.values()
    assert asked.status == "error" and "elicitation is not offered" in asked.output
    assert "asked for elicitation (input from a human); refused" in caplog.text
    assert thought.status == "error" and "sampling is not offered" in thought.output
    assert "asked for sampling (a model call); refused" in caplog.text
    assert len(messages_api.requests) == 3  # the server's request never reached the model
    [request] = thread.pending_approvals()  # echo is listed safe, but its section adds a gate
    assert request.tool == "failures__echo" and request.approvers == ["carol"] and request.two_person
    assert failures.calls() == ["ask", "think"]


def test_results_keep_text_and_structured_content_and_note_the_rest():
    import mcp.types as types

    from bot.mcp_results import result_text

    result = types.CallToolResult(content=[
        types.TextContent(type="text", text="3 pods"),
        types.ImageContent(type="image", data="aGk=", mime_type="image/png"),
        types.ResourceLink(type="resource_link", uri="file:///var/log/x", name="x"),
        types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
            uri="file:///etc/x", text="secret-ish file content")),
    ], structured_content={"pods": ["a", "b", "c"]}, is_error=False)
    out = result_text(result)
    assert out.splitlines() == [
        "3 pods", "[image (image/png) not shown]", "[resource link file:///var/log/x not read]",
        "[embedded resource file:///etc/x not shown]", '{"pods": ["a", "b", "c"]}']
    assert "aGk=" not in out and "secret-ish" not in out
    assert result_text(types.CallToolResult(content=[])) == "(no output)"


async def test_a_server_that_never_answers_leaves_the_rest_of_the_agent_working(
        model_settings, start_bot, messages_api, tmp_path, failures, repo):
    silent = socket.socket()  # accepts connections (the kernel does), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        port = silent.getsockname()[1]
        extra = f'[mcp.silent]\nurl = "http://127.0.0.1:{port}/mcp"\ntimeout = 1\n'
        policy = failure_policy(tmp_path, failures, repo, extra=extra)
        policy.write_text(policy.read_text().replace('"mcp:git"]', '"mcp:git", "mcp:silent"]'))
        rt = await start_bot(model_settings(policy_file=policy))
        messages_api.add(tool_use("git__git_status", {"repo_path": str(repo)}),
                         tool_use("silent__anything", {}), text("done"))
        thread = await settled(rt, await say(rt, "status", agent="ops"), timeout=60)
        status, silent_call = thread.results.values()
        assert status.status == "ok" and "working tree clean" in status.output
        assert silent_call.status == "error" and "MCP server silent is down" in silent_call.output
        assert thread.events[-1].text == "done"
        assert not any(t["name"].startswith("silent__") for t in messages_api.requests[0]["tools"])
    finally:
        silent.close()

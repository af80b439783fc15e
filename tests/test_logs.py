"""CHATOPS_LOG_FORMAT=json: one JSON object per line, with the thread id (and the approval, agent
and event where they apply), from a real `chatops worker` process; no secret in it."""

from __future__ import annotations

import json
import signal

from tests.conftest import settled, spawn_bot, wait_for
from tests.helpers import runbook_lines, say
from tests.messages_api import text, tool_use


async def test_json_logs_carry_the_thread_and_approval(model_settings, runtime, messages_api):
    settings = model_settings(api_token="api-secret-token")
    rt = await runtime(settings)  # plays the channel; the worker is the subprocess
    bot = spawn_bot(settings, "worker", CHATOPS_LOG_FORMAT="json", CHATOPS_API_TOKEN="api-secret-token")
    try:
        messages_api.add(tool_use("deploy", {"service": "api", "version": "1.2.3", "environment": "prod"}),
                         text("live"))
        thread_id = await say(rt, "ship api 1.2.3 to prod")
        [request] = (await settled(rt, thread_id, 60)).pending_approvals()
        await rt.approvals.decide(request.approval_id, True, "alice", "console")
        assert (await settled(rt, thread_id, 60)).state == "idle"
        assert runbook_lines(settings) == ["deploy api 1.2.3 prod"]
    finally:
        bot.send_signal(signal.SIGTERM)
        out = bot.output(timeout=60)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]  # every line parses
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    mine = [line for line in lines if line.get("thread_id") == thread_id]
    events = {line.get("event") for line in mine}
    assert {"approval_requested", "tool_started", "tool_result"} <= events, mine
    started = next(line for line in mine if line.get("event") == "tool_started")
    assert started["approval_id"] == request.approval_id and started["agent"] == "deploy"
    for secret in ("api-secret-token", "test-signing-key", "test-key"):
        assert secret not in out


async def test_text_is_the_default(make_settings):
    bot = spawn_bot(make_settings(), "worker")
    try:
        await wait_for(lambda: _contains(bot.log_path, "started"), 60, "the worker to start")
    finally:
        bot.send_signal(signal.SIGTERM)
        out = bot.output(timeout=60)
    started = next(line for line in out.splitlines() if "started" in line)
    assert " INFO chatops.worker: worker " in started and not started.startswith("{")


async def _contains(path, needle: str) -> bool:
    return needle in path.read_text(errors="replace")

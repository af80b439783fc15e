"""The deploy flow end to end: the real anthropic client against a local Messages API server,
a real Redis, the real worker and the real runbook scripts."""

from __future__ import annotations

from tests.conftest import settled
from tests.helpers import runbook_lines, say
from tests.messages_api import text, tool_use


async def test_deploy_to_prod_waits_for_approval_then_runs_once(model_settings, start_bot, messages_api):
    settings = model_settings()
    rt = await start_bot(settings)
    messages_api.add(
        tool_use("deploy", {"service": "api", "version": "1.2.3", "environment": "prod"}, say="Deploying."),
        text("api 1.2.3 is live in prod."),
    )
    thread_id = await say(rt, "ship api 1.2.3 to prod")

    thread = await settled(rt, thread_id)
    assert thread.state == "awaiting_approval"
    [request] = thread.pending_approvals()
    assert request.tool == "deploy" and request.requester == "bob"
    assert runbook_lines(settings) == []

    outcome = await rt.approvals.decide(request.approval_id, True, "alice", "console")
    assert outcome.status == "decided"

    thread = await settled(rt, thread_id)
    assert thread.state == "idle"
    assert runbook_lines(settings) == ["deploy api 1.2.3 prod"]
    assert thread.events[-1].type == "agent_reply"
    assert thread.events[-1].text == "api 1.2.3 is live in prod."

    # the second model request carries the tool's result, right after the tool_use
    assert len(messages_api.requests) == 2
    last_user = messages_api.requests[1]["messages"][-1]
    assert last_user["role"] == "user"
    [result] = last_user["content"]
    assert result["type"] == "tool_result" and "Deployed api 1.2.3 to prod" in result["content"]
    assert messages_api.requests[1]["tools"][-1]["cache_control"] == {"type": "ephemeral"}


async def test_safe_tool_runs_without_approval(model_settings, start_bot, messages_api):
    settings = model_settings()
    rt = await start_bot(settings)
    messages_api.add(
        tool_use("deploy", {"service": "web", "version": "2.0.0", "environment": "staging"}),
        text("done"),
    )
    thread = await settled(rt, await say(rt, "deploy web 2.0.0 to staging"))
    assert thread.state == "idle"
    assert runbook_lines(settings) == ["deploy web 2.0.0 staging"]
    assert not thread.approvals

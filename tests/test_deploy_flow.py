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
    # the stable prefix is cacheable: tools, the system prompt, and the conversation so far
    first, second = messages_api.requests
    assert second["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert second["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert result["cache_control"] == {"type": "ephemeral"}
    # ...and prefix-stable: the second request starts with the bytes of the first
    assert second["system"] == first["system"] and second["tools"] == first["tools"]
    assert _plain(second["messages"][:len(first["messages"])]) == _plain(first["messages"])


def _plain(messages: list[dict]) -> list[dict]:
    """Messages without their cache breakpoints (which move to the newest block)."""
    return [{**m, "content": [{k: v for k, v in b.items() if k != "cache_control"} for b in m["content"]]}
            for m in messages]


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

"""Model failures and bad tool calls: retried, compacted, budgeted, and always visible."""

from __future__ import annotations

import socket

from tests.conftest import settled
from tests.helpers import runbook_lines, say
from tests.messages_api import error, text, tool_use


async def test_overloaded_and_server_error_are_retried(model_settings, start_bot, messages_api):
    rt = await start_bot(model_settings(model_retries=2))
    messages_api.add(error(529, "overloaded_error"), error(500), text("all good"))
    thread = await settled(rt, await say(rt, "how is api?"))
    assert thread.events[-1].type == "agent_reply" and thread.events[-1].text == "all good"
    assert len(messages_api.requests) == 3


async def test_model_down_for_good_is_shown_to_the_human(model_settings, start_bot, messages_api):
    rt = await start_bot(model_settings(model_retries=1))
    messages_api.add(*[error(529, "overloaded_error")] * 5)
    thread = await settled(rt, await say(rt, "how is api?"))
    assert thread.state == "idle"
    kinds = [e.kind for e in thread.events if e.type == "error"]
    assert kinds == ["model_unavailable"]
    assert "could not reach the model" in thread.events[-1].text
    assert "529" in thread.events[-1].text
    assert len(messages_api.requests) == 2  # the first try and one retry


async def test_invalid_arguments_become_compact_errors_then_a_human_is_asked(
    model_settings, start_bot, messages_api
):
    settings = model_settings()
    rt = await start_bot(settings)
    messages_api.add(*[tool_use("deploy", {"service": "api", "environment": "moon"}) for _ in range(3)],
                     text("unreachable"))
    thread = await settled(rt, await say(rt, "deploy api to the moon"))

    assert thread.state == "awaiting_human"
    results = [e for e in thread.events if e.type == "tool_result"]
    assert [r.status for r in results] == ["error"] * 3
    assert results[0].output.startswith("invalid arguments for deploy: ")
    assert "version: Field required" in results[0].output
    assert "https://" not in results[0].output  # compact: no pydantic URLs
    question = thread.events[-1]
    assert question.type == "human_question" and "3 errors in a row" in question.question
    # the model saw the error of its first call before trying again
    second = messages_api.requests[1]["messages"][-1]["content"][0]
    assert second["type"] == "tool_result" and second["is_error"] is True
    assert len(messages_api.requests) == 3
    assert runbook_lines(settings) == []

    # the human's answer resets the budget and the model carries on
    messages_api.add(text("OK, I'll wait for a valid environment."))
    await say(rt, "never mind", thread_id=thread.id)
    thread = await settled(rt, thread.id)
    assert thread.state == "idle" and thread.events[-1].type == "agent_reply"
    assert messages_api.requests[-1]["messages"][-1]["content"][-1]["text"] == "bob: never mind"


async def test_unknown_tool_is_an_error_the_model_sees(model_settings, start_bot, messages_api):
    rt = await start_bot(model_settings())
    messages_api.add(tool_use("format_disk", {}), text("sorry"))
    thread = await settled(rt, await say(rt, "wipe it"))
    assert thread.events[-1].text == "sorry"
    [result] = messages_api.requests[1]["messages"][-1]["content"]
    assert result["is_error"] and "unknown tool 'format_disk'" in result["content"]


async def test_parallel_calls_each_get_a_result_in_one_message(model_settings, start_bot, messages_api):
    settings = model_settings()
    rt = await start_bot(settings)
    messages_api.add(
        tool_use("service_status", {"service": "api", "environment": "prod"},
                 ("deploy", {"service": "api", "version": "2.0.0", "environment": "prod"})),
        text("deployed after checking"),
    )
    thread_id = await say(rt, "check and deploy api 2.0.0 to prod")
    thread = await settled(rt, thread_id)
    assert thread.state == "awaiting_approval"
    assert runbook_lines(settings) == ["service_status api prod"]  # the safe call already ran
    assert len(messages_api.requests) == 1  # no model call while the turn is held
    [request] = thread.pending_approvals()
    await rt.approvals.decide(request.approval_id, True, "alice", "api")
    thread = await settled(rt, thread_id)
    assert thread.events[-1].text == "deployed after checking"
    last = messages_api.requests[1]["messages"]
    uses = [b["id"] for b in last[-2]["content"] if b["type"] == "tool_use"]
    results = [b["tool_use_id"] for b in last[-1]["content"]]
    assert len(uses) == 2 and sorted(results) == sorted(uses)


async def test_step_budget_stops_a_looping_model(model_settings, start_bot, messages_api):
    rt = await start_bot(model_settings(step_budget=3))
    messages_api.add(*[tool_use("service_status", {"service": "api", "environment": "dev"})
                       for _ in range(5)])
    thread = await settled(rt, await say(rt, "keep checking"))
    assert len(messages_api.requests) == 3
    assert [e.kind for e in thread.events if e.type == "error"] == ["step_budget"]
    assert "stopped after 3 steps" in thread.events[-1].text


async def test_ask_human_pauses_until_answered(model_settings, start_bot, messages_api):
    rt = await start_bot(model_settings())
    messages_api.add(tool_use("ask_human", {"question": "Which environment?"}), text("staging it is"))
    thread = await settled(rt, await say(rt, "deploy api 1.0"))
    assert thread.state == "awaiting_human"
    assert thread.events[-1].question == "Which environment?"
    await say(rt, "staging", user="bob", thread_id=thread.id)
    thread = await settled(rt, thread.id)
    assert thread.events[-1].text == "staging it is"
    assert [e.type for e in thread.events if getattr(e, "text", None) == "staging"] == ["human_response"]
    [result] = messages_api.requests[1]["messages"][-1]["content"]
    assert result["type"] == "tool_result" and result["content"] == "staging"


async def test_a_message_stored_as_user_message_still_answers_an_open_question(
    model_settings, start_bot, messages_api
):
    """The stored type follows the state the append saw; a human's words answer the question
    whichever type they were stored as, so the thread cannot be left waiting."""
    from bot.events import Source, UserMessage

    rt = await start_bot(model_settings())
    messages_api.add(tool_use("ask_human", {"question": "Which environment?"}), text("staging it is"))
    thread = await settled(rt, await say(rt, "deploy api 1.0"))
    assert thread.state == "awaiting_human"
    late = UserMessage(text="staging", source=Source(channel="api", user="bob"))
    await rt.store.append(thread.id, late, wake=True)  # as if the state had not been saved yet
    thread = await settled(rt, thread.id)
    assert thread.state == "idle" and thread.events[-1].text == "staging it is"
    [result] = messages_api.requests[1]["messages"][-1]["content"]
    assert result["type"] == "tool_result" and result["content"] == "staging"


async def test_a_model_that_times_out_is_shown_to_the_human(model_settings, start_bot, messages_api):
    messages_api.latency = 1.0
    rt = await start_bot(model_settings(model_timeout=0.2, model_retries=1))
    thread = await settled(rt, await say(rt, "how is api?"), timeout=20)
    assert [e.kind for e in thread.events if e.type == "error"] == ["model_unavailable"]
    assert "could not reach the model" in thread.events[-1].text


async def test_a_model_api_nobody_answers_is_shown_to_the_human(make_settings, start_bot):
    with socket.socket() as s:  # bound, never listening: refuses connections, and stays ours
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
        rt = await start_bot(make_settings(anthropic_api_key="k", anthropic_base_url=closed, model_retries=1))
        thread = await settled(rt, await say(rt, "how is api?"), timeout=30)
    assert [e.kind for e in thread.events if e.type == "error"] == ["model_unavailable"]
    assert "could not reach the model" in thread.events[-1].text


async def test_a_response_that_is_not_a_message_is_an_error_not_a_stuck_thread(
    model_settings, start_bot, messages_api
):
    messages_api.add((200, {"type": "message", "content": "not a list"}))
    rt = await start_bot(model_settings(model_retries=0))
    thread = await settled(rt, await say(rt, "how is api?"))
    assert thread.state == "idle"
    assert [e.kind for e in thread.events if e.type == "error"] == ["model_unavailable"]
    assert "malformed answer" in thread.events[-1].text

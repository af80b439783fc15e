"""Our context window: prefix-stable, compact, valid for the Messages API."""

from __future__ import annotations

import json

from bot.compaction import request_tokens
from bot.context import ContextBuilder, build_messages, serialized, truncate
from bot.events import AgentReply, ContextCompacted, Error, Source, ToolCall, ToolResult, UserMessage

BOB = Source(channel="slack", user="bob")


def _thread_events(steps: int) -> list:
    events: list = [UserMessage(text="check api until it is healthy", source=BOB)]
    for i in range(steps):
        events.append(ToolCall(call_id=f"toolu_{i}", tool="service_status", turn=f"msg_{i}",
                               args={"service": "api", "environment": "prod"}))
        if i == 3:  # a human writes while the call runs: it must come after the result
            events.append(UserMessage(text="any news?", source=BOB))
        events.append(ToolResult(call_id=f"toolu_{i}", output="x" * (100 if i % 2 else 9000)))
    events.append(AgentReply(text="healthy"))
    return events


def _blocks(messages: list) -> list[str]:
    return [json.dumps([m["role"], b], sort_keys=True) for m in messages for b in m["content"]]


def test_each_event_only_adds_blocks_at_the_end():
    events = _thread_events(12)
    builder, before = ContextBuilder(2000), []
    for event in events:
        builder.add(event)
        now = _blocks(builder.messages)
        assert now[: len(before)] == before  # nothing sent earlier ever changes
        before = now


def test_tool_results_come_right_after_their_calls_and_before_text():
    messages = build_messages(_thread_events(6))
    assert [m["role"] for m in messages] == ["user"] + ["assistant", "user"] * 6 + ["assistant"]
    turn4 = messages[8]["content"]  # the user message answering call 3
    assert [b["type"] for b in turn4] == ["tool_result", "text"]
    assert turn4[0]["tool_use_id"] == "toolu_3" and turn4[1]["text"] == "bob: any news?"


def test_long_outputs_are_truncated_with_a_note_and_the_context_is_compact():
    events = _thread_events(20)
    compact = len(json.dumps(build_messages(events, 2000)))
    full = len(json.dumps(build_messages(events, 10**9)))
    assert compact < full / 2
    cut = truncate("a" * 1500 + "b" * 8000 + "c" * 500, 2000)
    assert cut.startswith("a" * 1500) and cut.endswith("c" * 500)
    assert "8000 characters omitted" in cut and len(cut) < 2200
    assert truncate("short", 2000) == "short"


def test_the_builder_counts_the_bytes_of_its_messages_as_it_goes():
    """The token estimate of each model request reads the context's size from the builder (no
    serialization of the whole context per call): it must equal the serialized size exactly."""
    user = Source(channel="slack", user="ann")
    a, b, c = ToolCall(call_id="a", tool="t", args={"x": "é"}, turn="1", text="checking"), \
        ToolCall(call_id="b", tool="t", args={}, turn="1"), ToolCall(call_id="c", tool="deploy", args={}, turn="2",
                                                                      origin="command", source=user)
    events = [UserMessage(text="hi ☃", source=user), a, b, UserMessage(text="meanwhile", source=user),
              ToolResult(call_id="b", output="x" * 3000), ToolResult(call_id="a", output="ok", status="error"),
              c, ToolResult(call_id="c", output="done"), Error(kind="k", message="m" * 900), AgentReply(text="fine")]
    for base in (None, ContextCompacted(upto=1, summary="earlier: ☃", tokens_before=9)):
        builder = ContextBuilder(2000, base)
        assert builder.size == len(serialized(builder.messages))
        for event in events[base.upto if base else 0:]:
            builder.add(event)
            assert builder.size == len(serialized(builder.messages)), event.type
        tools = [{"name": "t", "description": "é", "input_schema": {"type": "object"}}]
        assert request_tokens("system ☃", tools, builder.size) == request_tokens("system ☃", tools, builder.messages)

"""Bounded context: a long history reaches the model as a summary our code wrote plus the recent
events, under the token budget, with a prefix that stays the same between calls; old outputs
stay readable through `read_event`. Checked on the requests tests/messages_api.py received."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from bot import compaction
from bot.events import (
    AgentReply,
    ContextCompacted,
    Source,
    ToolCall,
    ToolResult,
    UserMessage,
    new_id,
)
from bot.runtime import Runtime
from bot.thread import Origin, ThreadMeta
from tests.conftest import settled, wait_for
from tests.messages_api import text, tool_use

BUDGET = 60_000


def exchange(i: int) -> list[Any]:
    call_id = new_id("toolu")
    return [
        UserMessage(text=f"question {i}: is the api healthy in prod? " + "please check carefully. " * 10,
                    source=Source(channel="api", user="bob")),
        ToolCall(call_id=call_id, tool="service_status", args={"service": "api", "environment": "prod"},
                 turn=new_id("msg")),
        ToolResult(call_id=call_id, output=f"output {i}: " + "pod api-7f9c healthy, p99 81 ms; " * 60),
        AgentReply(text=f"answer {i}: the api is healthy. " * 8),
    ]


async def history(rt: Runtime, thread_id: str, size: int) -> list[Any]:
    events: list[Any] = []
    i = 0
    while sum(len(e.model_dump_json()) for e in events) < size:
        events += exchange(i)
        i += 1
    meta = ThreadMeta(id=thread_id, agent="deploy", origin=Origin(channel="api"), created=time.time())
    for start in range(0, len(events), 200):
        first, *rest = events[start:start + 200]
        assert (await rt.store.append(thread_id, first, create=meta, followed_by=rest, state="idle")).ok
    return events


def _plain(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages without the moving breakpoint (the one on the last block)."""
    out = copy.deepcopy(messages)
    last = out[-1]["content"][-1]
    if len(out) > 1 or len(out[0]["content"]) > 1:
        last.pop("cache_control", None)
    return out


async def test_a_long_history_is_sent_compacted_under_budget_with_a_stable_prefix(
        model_settings, start_bot, messages_api):
    rt = await start_bot(model_settings(context_tokens=BUDGET))
    thread_id = "00000000000c0de1"
    events = await history(rt, thread_id, 1_600_000)
    assert len(events) > 1000
    old_result = next(e for e in events[40:] if isinstance(e, ToolResult))

    messages_api.add(text("All good."))
    await rt.intake.message(thread_id, agent="deploy", origin=Origin(channel="api"), text="and now?",
                            source=Source(channel="api", user="bob"))
    thread = await settled(rt, thread_id)
    first = messages_api.requests[-1]
    size = len(json.dumps(first).encode())
    tokens = compaction.request_tokens(first["system"][0]["text"], first["tools"], first["messages"])
    assert size < 400_000 and tokens <= BUDGET, (size, tokens)
    [compacted] = [e for e in thread.events if isinstance(e, ContextCompacted)]
    assert compacted.tokens_before > BUDGET and 0 < compacted.upto < len(events)
    summary = first["messages"][0]["content"][0]
    assert summary["text"] == compacted.summary and summary["cache_control"] == {"type": "ephemeral"}
    assert "written by the bot" in summary["text"] and old_result.id in summary["text"] or \
        "older lines omitted" in summary["text"]
    assert first["messages"][-1]["content"][-1]["text"].endswith("and now?")

    # the next call: the same prefix, more at the end; the model reads an old output in full
    target = next(e for e in events[compacted.upto - 40:compacted.upto] if isinstance(e, ToolResult))
    assert f"[{target.id}]" in compacted.summary
    messages_api.add(tool_use("read_event", {"event_id": target.id}), text("Read it."))
    messages_api.usage = {"input_tokens": 100, "output_tokens": 5, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 300}
    await rt.intake.message(thread_id, agent="deploy", origin=Origin(channel="api"), text="details?",
                            source=Source(channel="api", user="bob"))

    async def answered() -> bool:
        return len(messages_api.requests) >= 3

    await wait_for(answered, 20, "two more model calls")
    await settled(rt, thread_id)
    second, third = messages_api.requests[-2:]
    before, after = _plain(first["messages"]), _plain(second["messages"])
    assert after[:len(before) - 1] == before[:-1]
    last = before[-1]["content"]
    assert after[len(before) - 1]["content"][:len(last)] == last
    read = third["messages"][-1]["content"][0]
    assert read["type"] == "tool_result" and target.output[:1000] in read["content"]
    thread = await rt.store.load(thread_id)
    assert len([e for e in thread.events if isinstance(e, ContextCompacted)]) == 1  # not at every call

    usage = await rt.store.usage(thread_id)
    assert len(usage) == 3 and all("cached_fraction" in u and u["estimated_input_tokens"] <= BUDGET for u in usage)
    assert usage[0]["input_tokens"] == 10 and usage[0]["cached_fraction"] == 0.0  # what the stub reports
    assert usage[1]["cache_read_input_tokens"] == 300 and usage[1]["cached_fraction"] == 0.75


async def test_pending_approval_arguments_stay_verbatim_in_the_summary():
    from bot.events import ApprovalDecided, ApprovalRequested

    args = {"service": "api", "version": "1.2.3-" + "x" * 300, "environment": "prod"}
    events: list[Any] = [*exchange(0)]
    events.append(ApprovalRequested(approval_id="0000000000000001.aaaaaaaa", call_id="c1", tool="deploy",
                                    args=args, requester="bob", approvers=["alice"], expires_at=0))
    events.append(ApprovalDecided(approval_id="0000000000000001.aaaaaaaa", decision="approved", by="alice",
                                  via="api"))
    for i in range(1, 400):
        events += exchange(i)
    summary = compaction.summarize(events, len(events), 20_000)
    assert json.dumps(args, sort_keys=True) in summary
    assert "older lines omitted" in summary and len(summary) <= 20_000 * compaction.SUMMARY_SHARE * 3 + 300


async def test_the_worker_cache_is_bounded_by_bytes_and_reloads_what_it_evicted(make_settings, runtime):
    from bot.worker import Worker

    rt = await runtime(make_settings(worker_cache_mb=0.2))  # about 200 KB
    worker = Worker(rt).executor
    ids = ["00000000000ca0e1", "00000000000ca0e2"]
    for thread_id in ids:
        await history(rt, thread_id, 30_000)  # about 120 KB cached each
    for thread_id in ids:
        await rt.intake.message(thread_id, agent="deploy", origin=Origin(channel="api"), text="/help",
                                source=Source(channel="api", user="bob"))
        assert await worker.advance(thread_id)
    assert list(worker.cache) == [ids[1]]  # the first was evicted to make room
    assert 0 < worker.cache_bytes <= worker.cache_limit
    assert set(worker.cached_sizes) == set(worker.cache) and set(worker.contexts) <= set(worker.cache)

    await rt.intake.message(ids[0], agent="deploy", origin=Origin(channel="api"), text="/help",
                            source=Source(channel="api", user="bob"))
    assert await worker.advance(ids[0])  # read from Redis again
    thread = await rt.store.load(ids[0])
    assert worker.cache[ids[0]].version == thread.version
    replies = [e for e in thread.events if isinstance(e, AgentReply) and "Commands of the deploy agent" in e.text]
    assert len(replies) == 2
    assert list(worker.cache) == [ids[0]]


async def test_doctor_checks_the_token_estimate_against_the_api_count(model_settings, messages_api):
    import asyncio
    import subprocess
    import sys

    from tests.conftest import ROOT, bot_env

    async def doctor() -> str:
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bot", "doctor"], capture_output=True,
                                       text=True, env=bot_env(model_settings()), cwd=ROOT, timeout=60)
        return done.stdout

    assert "ok: context budget: the estimate" in await doctor()  # the stand-in counts 4 bytes a token
    messages_api.bytes_per_token = 2  # an API that counts more tokens than we estimate
    assert "warning: context budget: the estimate" in await doctor()

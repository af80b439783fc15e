"""Bounded context: a token budget for each model request, kept by compacting old events into a
summary our code writes (a `context_compacted` event in the log).

The estimate: one token per 3 bytes of the request's JSON (system, tools, messages), UTF-8.
English prose runs at about 4 characters per token and JSON punctuation at 2 to 3, so this errs
on the high side; `chatops doctor` compares it with the API's own token count when a model is
configured.

Compaction happens in steps: when the request would pass the budget, the oldest events (up to a
turn boundary) are replaced by the summary so that the request comes back to about half the
budget. Between two compactions the context only grows at its end, so the cached prefix holds;
it changes once per compaction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from bot.events import (
    AgentReply,
    ApprovalDecided,
    ApprovalRequested,
    ContextCompacted,
    Error,
    Event,
    HumanQuestion,
    HumanResponse,
    ScheduleFired,
    ToolCall,
    ToolResult,
    UserMessage,
)

BYTES_PER_TOKEN = 3
TARGET = 0.5  # a compaction brings the request back to this share of the budget
SUMMARY_SHARE = 0.2  # the summary's own size, at most, as a share of the budget
LINE = 240  # characters of a message or an output quoted in the summary


def estimate(data: str | bytes) -> int:
    """Estimated tokens of some request text (see the module's doc)."""
    size = len(data.encode()) if isinstance(data, str) else len(data)
    return math.ceil(size / BYTES_PER_TOKEN)


def request_tokens(system: str, tools: list[dict[str, Any]], messages: list[dict[str, Any]] | int) -> int:
    """Estimated tokens of a request; `messages` may be given as the byte size of their JSON (as
    a ContextBuilder counts it), which saves serializing the whole context for each call."""
    head = json.dumps([system, tools], separators=(",", ":"), ensure_ascii=False).encode()
    if not isinstance(messages, int):
        messages = len(json.dumps(messages, separators=(",", ":"), ensure_ascii=False).encode())
    return math.ceil((len(head) + 1 + messages) / BYTES_PER_TOKEN)  # [system,tools,messages]


def boundaries(events: Sequence[Event], start: int) -> list[int]:
    """The positions in [start, len) where the context may begin: no tool call is waiting for
    its result across them (a tool_use and its tool_result must stay together)."""
    open_calls: set[str] = set()
    out = []
    for i in range(start, len(events)):
        event = events[i]
        if not open_calls and not isinstance(event, (ToolResult, ContextCompacted)):
            out.append(i)
        if isinstance(event, ToolCall):
            open_calls.add(event.call_id)
        elif isinstance(event, ToolResult):
            open_calls.discard(event.call_id)
    return out


def cut(events: Sequence[Event], start: int, keep_tokens: int, output_limit: int) -> int | None:
    """Where the kept tail should begin so that it is about `keep_tokens`: the earliest boundary
    after `start` whose tail fits, or the latest boundary if none does; None when no boundary
    after `start` leaves anything to compact."""
    candidates = [b for b in boundaries(events, start) if b > start]
    if not candidates:
        return None
    # estimated size of each tail, from the end
    tail = 0
    sizes: dict[int, int] = {}
    wanted = set(candidates)
    for i in range(len(events) - 1, start - 1, -1):
        tail += _tokens(events[i], output_limit)
        if i in wanted:
            sizes[i] = tail
    fitting = [b for b in candidates if sizes[b] <= keep_tokens]
    return fitting[0] if fitting else candidates[-1]


def _tokens(event: Event, output_limit: int) -> int:
    """A cheap estimate of what one event adds to the context."""
    if isinstance(event, ToolResult):
        size = min(len(event.output), output_limit + 100) + 80
    elif isinstance(event, ToolCall):
        size = len(json.dumps(event.args, ensure_ascii=False)) + len(event.text) + 120
    elif isinstance(event, (UserMessage, HumanResponse, AgentReply, ScheduleFired)):
        size = len(event.text) + 40
    elif isinstance(event, HumanQuestion):
        size = len(event.question) + 40
    elif isinstance(event, Error):
        size = min(len(event.message), 500) + 40
    else:
        size = 0  # not shown to the model
    return math.ceil(size * 1.1 / BYTES_PER_TOKEN)


def summarize(events: Sequence[Event], upto: int, budget: int) -> str:
    """What happened in events[:upto], one line each for what was asked, run, decided, replied
    and failed, with the ids `read_event` takes; approvals' arguments verbatim. Newest lines are
    kept when it would not fit in its share of the budget."""
    calls: dict[str, ToolCall] = {}
    lines: list[tuple[bool, str]] = []  # (about an approval, line)
    for event in events[:upto]:
        if (line := _line(event, calls)) is not None:
            lines.append((isinstance(event, (ApprovalRequested, ApprovalDecided)), line))
    limit = int(budget * SUMMARY_SHARE * BYTES_PER_TOKEN)
    # approvals first (their arguments verbatim), in up to half the room; then the rest
    chosen = _newest([i for i, (approval, _) in enumerate(lines) if approval], lines, limit // 2)
    room = limit - sum(len(lines[i][1].encode()) + 1 for i in chosen)
    chosen |= _newest([i for i, (approval, _) in enumerate(lines) if not approval], lines, room)
    kept = [lines[i][1] for i in sorted(chosen)]
    omitted = len(lines) - len(kept)
    head = (f"[Summary of the first {upto} events of this thread, written by the bot. Ids are in "
            f"brackets; the read_event tool returns any event in full.]")
    if omitted:
        head += f"\n[… {omitted} older lines omitted …]"
    return "\n".join([head, *kept])


def _newest(indexes: list[int], lines: list[tuple[bool, str]], room: int) -> set[int]:
    chosen: set[int] = set()
    for i in reversed(indexes):
        room -= len(lines[i][1].encode()) + 1
        if room < 0:
            break
        chosen.add(i)
    return chosen


def _line(event: Event, calls: dict[str, ToolCall]) -> str | None:
    who = event.source.user or event.source.channel
    match event:
        case UserMessage() | HumanResponse():
            return f"[{event.id}] {who} said: {_short(event.text)}"
        case ScheduleFired():
            return f"[{event.id}] schedule {event.schedule} fired: {_short(event.text)}"
        case ToolCall():
            calls[event.call_id] = event
            return None
        case ToolResult():
            call = calls.get(event.call_id)
            what = f"{call.tool}({_args(call.args)})" if call else event.call_id
            return f"[{event.id}] ran {what} → {event.status}: {_short(event.output)}"
        case ApprovalRequested():
            return (f"[{event.approval_id}] approval asked to run {event.tool} with arguments "
                    f"{json.dumps(event.args, ensure_ascii=False, sort_keys=True)}")
        case ApprovalDecided():
            reason = f": {_short(event.reason)}" if event.reason else ""
            by = f" by {event.by} via {event.via}" if event.by else ""
            return f"[{event.approval_id}] {event.decision}{by}{reason}"
        case AgentReply():
            return f"[{event.id}] replied: {_short(event.text)}"
        case HumanQuestion():
            return f"[{event.id}] asked the humans: {_short(event.question)}"
        case Error():
            return f"[{event.id}] failed ({event.kind}): {_short(event.message)}"
    return None


def _args(args: dict[str, Any]) -> str:
    return _short(", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items()), 120)


def _short(text: str, limit: int = LINE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


# A sample request for `chatops doctor`: its token count by the API checks our estimate.
SAMPLE_MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "deploy api 1.2.3 to staging, then check it is healthy"},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_doctor", "name": "service_status",
                                       "input": {"service": "api", "environment": "staging"}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_doctor",
                                  "content": "api staging: healthy, 3 pods, p99 45 ms\n" * 20}]},
]


def estimate_verdict(system: str, tools: list[dict[str, Any]], counted: int) -> tuple[bool, str]:
    """Whether our estimate of the sample request covers the API's count of it (it must not be
    lower, or the budget would be passed), and the sentence that says so."""
    ours = request_tokens(system, tools, SAMPLE_MESSAGES)
    if ours < counted:
        return False, (f"context budget: the estimate ({ours} tokens) is below the API's count ({counted}) "
                       "for a sample request")
    return True, f"context budget: the estimate ({ours} tokens) covers the API's count ({counted}) for a sample request"

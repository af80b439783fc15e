"""Our own context window: the thread serialized into Messages API turns.

- Compact: one short line per human input, tool outputs truncated with a note (the full output
  stays in the event), errors shortened.
- Prefix-stable: each event only ever adds blocks at the end, so the bytes sent for earlier
  events never change and prompt caching keeps working.
- Valid: every tool_use gets its tool_result in the next user message, results before any text,
  even when a human wrote while the calls were running.
"""

from __future__ import annotations

import json
from typing import Any

from bot.events import (
    AgentReply,
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

Block = dict[str, Any]
Message = dict[str, Any]

ERROR_LIMIT = 500


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 3 // 4], text[-(limit // 4):]
    omitted = len(text) - len(head) - len(tail)
    return f"{head}\n[… {omitted} characters omitted; the full output is in the thread's log …]\n{tail}"


def _who(event: Event) -> str:
    return event.source.user or event.source.channel


def _text(text: str) -> Block:
    return {"type": "text", "text": text}


class ContextBuilder:
    """Folds events into messages; `messages` is valid whenever no model turn is open."""

    def __init__(self, output_limit: int = 2000, base: ContextCompacted | None = None) -> None:
        """`base`: the latest compaction; the context then starts with its summary (a cache
        breakpoint on it: it is the stable prefix until the next compaction) and folds the
        events after `base.upto`."""
        self.output_limit = output_limit
        self.base = base
        self.messages: list[Message] = []
        self.size = 2  # bytes of `serialized(messages)`, kept as blocks are added: "[]" so far
        if base is not None:
            self._push("user", {**_text(base.summary), "cache_control": {"type": "ephemeral"}})
        self._open: set[str] = set()  # tool_use ids still waiting for their result
        self._results: list[Block] = []
        self._deferred: list[Block] = []
        self._commands: dict[str, str] = {}  # call id -> tool, for exact commands
        self._asked = False
        self.count = base.upto if base is not None else 0  # events folded in (or summarized) so far

    def extend(self, events: list[Event]) -> list[Message]:
        """Fold in the events after the ones already seen; the messages so far."""
        for event in events[self.count:]:
            self.add(event)
        return self.messages

    def add(self, event: Event) -> None:
        self.count += 1
        if isinstance(event, ContextCompacted):
            return  # a summary takes effect in a builder based on it
        if isinstance(event, ToolCall):
            self._add_call(event)
        elif isinstance(event, ToolResult):
            self._add_result(event)
        elif isinstance(event, AgentReply):
            self._push("assistant", _text(event.text))
        elif isinstance(event, HumanQuestion):
            if event.call_id is None:
                self._push("assistant", _text(event.question))
            else:
                self._asked = True  # the answer arrives as the ask_human call's tool_result
        elif isinstance(event, (HumanResponse, UserMessage)) and self._asked:
            self._asked = False
        elif isinstance(event, (UserMessage, HumanResponse)):
            self._user(_text(f"{_who(event)}: {event.text}"))
        elif isinstance(event, ScheduleFired):
            self._user(_text(f"[schedule {event.schedule}] {event.text}"))
        elif isinstance(event, Error):
            self._user(_text(f"[error: {event.kind}] {truncate(event.message, ERROR_LIMIT)}"))

    def _add_call(self, call: ToolCall) -> None:
        if call.origin == "command":
            self._commands[call.call_id] = call.tool
            args = " ".join(f"{k}={v}" for k, v in call.args.items())
            self._user(_text(f"{_who(call)} ran the command /{call.tool} {args}"))
            return
        if call.text and not self._open:
            self._push("assistant", _text(call.text))
        self._push("assistant", {"type": "tool_use", "id": call.call_id, "name": call.tool, "input": call.args})
        self._open.add(call.call_id)

    def _add_result(self, result: ToolResult) -> None:
        output = truncate(result.output, self.output_limit)
        if result.call_id in self._commands:
            self._user(_text(f"/{self._commands[result.call_id]} → {result.status}: {output}"))
            return
        if result.call_id not in self._open:
            return
        self._open.discard(result.call_id)
        block: Block = {"type": "tool_result", "tool_use_id": result.call_id, "content": output}
        if result.is_error:
            block["is_error"] = True
        self._results.append(block)
        if not self._open:
            blocks, self._results, deferred, self._deferred = self._results, [], self._deferred, []
            for b in [*blocks, *deferred]:
                self._push("user", b)

    def _user(self, block: Block) -> None:
        if self._open:
            self._deferred.append(block)
        else:
            self._push("user", block)

    def _push(self, role: str, block: Block) -> None:
        """Add a block (never changed afterwards: the size counts its bytes once)."""
        size = len(serialized(block))
        if self.messages and self.messages[-1]["role"] == role:
            self.messages[-1]["content"].append(block)
            self.size += 1 + size  # ",block"
        else:
            self.size += (1 if self.messages else 0) + len(_OPEN[role]) + size + 2  # [,]{"role":..,"content":[block]}
            self.messages.append({"role": role, "content": [block]})


def build_messages(events: list[Event], output_limit: int = 2000) -> list[Message]:
    builder = ContextBuilder(output_limit)
    for event in events:
        builder.add(event)
    return builder.messages


def with_cache_breakpoints(messages: list[Message]) -> list[Message]:
    """A copy with a cache breakpoint on the last block, so the whole prefix is cacheable."""
    if not messages:
        return messages
    out = messages[:-1]
    last = dict(messages[-1])
    content = [dict(b) for b in last["content"]]
    content[-1]["cache_control"] = {"type": "ephemeral"}
    last["content"] = content
    return [*out, last]


def serialized(messages: list[Message] | Block) -> bytes:
    return json.dumps(messages, separators=(",", ":"), ensure_ascii=False).encode()


_OPEN = {role: f'{{"role":"{role}","content":['.encode() for role in ("user", "assistant")}

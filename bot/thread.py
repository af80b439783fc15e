"""A thread: its metadata, its event log, and what is derived from the log by folding it.

`Thread.apply` is the only place the derived view changes, so a thread loaded in one go and a
thread grown event by event are the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from bot.events import (
    INPUT_TYPES,
    AgentReply,
    ApprovalDecided,
    ApprovalRequested,
    ApprovalVote,
    ContextCompacted,
    Error,
    Event,
    HumanQuestion,
    HumanResponse,
    ToolCall,
    ToolResult,
    ToolStarted,
    UserMessage,
)

State = Literal["working", "awaiting_approval", "awaiting_human", "idle"]
STATES: tuple[State, ...] = ("working", "awaiting_approval", "awaiting_human", "idle")


class Origin(BaseModel):
    """Where the thread's replies go: a channel and that channel's address of the conversation."""

    channel: str
    address: dict[str, Any] = {}


class ThreadMeta(BaseModel):
    id: str
    agent: str
    origin: Origin
    created: float


@dataclass
class Thread:
    meta: ThreadMeta
    events: list[Event] = field(default_factory=list)

    # derived by apply()
    calls: dict[str, ToolCall] = field(default_factory=dict)
    results: dict[str, ToolResult] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    approvals: dict[str, ApprovalRequested] = field(default_factory=dict)
    approval_of_call: dict[str, str] = field(default_factory=dict)
    decisions: dict[str, ApprovalDecided] = field(default_factory=dict)
    votes: dict[str, list[ApprovalVote]] = field(default_factory=dict)  # approval id -> its votes
    turn: list[str] = field(default_factory=list)  # call ids of the latest turn
    turn_origin: str = "model"
    input_since_turn: bool = True  # an input arrived after the latest turn began
    needs_agent: bool = False  # new input or results the agent has not answered yet
    open_question: HumanQuestion | None = None
    answers: dict[str, HumanResponse | UserMessage] = field(default_factory=dict)  # ask_human call -> reply
    last_input: Event | None = None  # the latest human (or schedule) input
    consecutive_errors: int = 0
    model_steps: int = 0  # model calls since the last human input
    last_error: str = ""
    compacted: ContextCompacted | None = None  # the latest compaction of the model's context
    size: int = 0  # bytes of its events as JSON, about (what a cache of threads is bounded by)

    @property
    def id(self) -> str:
        return self.meta.id

    @property
    def agent(self) -> str:
        return self.meta.agent

    @property
    def version(self) -> int:
        return len(self.events)

    def extend(self, events: list[Event]) -> None:
        for event in events:
            self.apply(event)

    def apply(self, event: Event, size: int | None = None) -> None:
        """Fold in one event; `size`: its JSON's length if known (else estimated)."""
        self.events.append(event)
        self.size += size if size is not None else approx_size(event)
        kind = event.type
        if kind in INPUT_TYPES:
            self._apply_input(event)
        elif isinstance(event, ToolCall):
            if event.turn != (self.calls[self.turn[0]].turn if self.turn else None):
                self.turn = []
            self.turn.append(event.call_id)
            self.turn_origin = event.origin
            self.input_since_turn = False
            self.calls[event.call_id] = event
            self.needs_agent = False
            if event.origin == "model":
                self.model_steps += 1 if len(self.turn) == 1 else 0
        elif isinstance(event, ToolStarted):
            self.started.add(event.call_id)
        elif isinstance(event, ToolResult):
            self.results[event.call_id] = event
            if event.status == "error":
                self.consecutive_errors += 1
                self.last_error = event.output[:300]
            elif event.status == "ok":
                self.consecutive_errors = 0
            self.needs_agent = not self.open_calls
        elif isinstance(event, ApprovalRequested):
            self.approvals[event.approval_id] = event
            self.approval_of_call[event.call_id] = event.approval_id
        elif isinstance(event, ApprovalDecided):
            self.decisions.setdefault(event.approval_id, event)
        elif isinstance(event, ApprovalVote):
            self.votes.setdefault(event.approval_id, []).append(event)
        elif isinstance(event, HumanQuestion):
            self.open_question = event
            self.needs_agent = False
        elif isinstance(event, AgentReply):
            self.needs_agent = False
        elif isinstance(event, Error):
            self.last_error = event.message[:300]
        elif isinstance(event, ContextCompacted):
            self.compacted = event

    def _apply_input(self, event: Event) -> None:
        # whatever a human says while a question is open answers it, whichever type it was
        # stored as: the stored type is only as fresh as the state the append saw
        if isinstance(event, (HumanResponse, UserMessage)) and self.open_question is not None:
            question, self.open_question = self.open_question, None
            if question.call_id is not None:
                self.answers[question.call_id] = event  # becomes the ask_human call's result
                return
        self.needs_agent = True
        self.input_since_turn = True
        self.last_input = event
        self.consecutive_errors = 0
        self.model_steps = 0

    # ---- derived views -------------------------------------------------------------------

    @property
    def open_calls(self) -> list[ToolCall]:
        return [self.calls[c] for c in self.turn if c not in self.results]

    def pending_approvals(self) -> list[ApprovalRequested]:
        return [a for a in self.approvals.values() if a.approval_id not in self.decisions]

    @property
    def state(self) -> State:
        open_calls = self.open_calls
        if open_calls:
            waiting = [
                c for c in open_calls
                if c.call_id in self.approval_of_call
                and self.approval_of_call[c.call_id] not in self.decisions
            ]
            if waiting and len(waiting) == len(open_calls):
                return "awaiting_approval"
            if self.open_question is not None and self.open_question.call_id in self.turn:
                return "awaiting_human"
            return "working"
        if self.open_question is not None:
            return "awaiting_human"
        return "working" if self.needs_agent else "idle"

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent": self.agent,
            "state": self.state,
            "origin": self.meta.origin.model_dump(),
            "created": self.meta.created,
            "updated": self.events[-1].ts if self.events else self.meta.created,
            "events": self.version,
        }


def approx_size(event: Event) -> int:
    """About the length of an event's JSON, without serializing it."""
    size = 120
    for value in event.__dict__.values():
        if isinstance(value, str):
            size += len(value) + 10
        elif isinstance(value, (dict, list)):
            size += len(str(value))
    return size

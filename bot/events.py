"""The typed events of a thread: the public audit format (documented in README.md).

A thread is an append-only list of these. Everything else (what a thread waits for, which
approvals are pending, what the model sees) is derived from them.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


def new_id(prefix: str = "e") -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


class Source(BaseModel):
    """Where an event came from: the channel, who (if a person), and the delivery's own id."""

    model_config = ConfigDict(frozen=True)

    channel: str = "worker"
    user: str | None = None
    external_id: str | None = None
    # more identities the channel verified for `user` (the email of its Slack profile), by which
    # it is matched to a [people] person
    also: tuple[str, ...] = ()


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=new_id)
    ts: float = Field(default_factory=time.time)
    source: Source = Field(default_factory=Source)


class UserMessage(_Event):
    type: Literal["user_message"] = "user_message"
    text: str


class ToolCall(_Event):
    """One call the agent wants to make. `turn` groups the parallel calls of one model answer."""

    type: Literal["tool_call"] = "tool_call"
    call_id: str
    tool: str
    args: dict[str, Any]
    turn: str
    origin: Literal["model", "command"] = "model"
    text: str = ""  # what the model said before its calls (first call of a turn only)


class ToolStarted(_Event):
    """Written (with a claim) just before a handler runs: the basis of at-most-once."""

    type: Literal["tool_started"] = "tool_started"
    call_id: str


ResultStatus = Literal["ok", "error", "rejected", "expired", "unknown"]


class ToolResult(_Event):
    type: Literal["tool_result"] = "tool_result"
    call_id: str
    output: str
    status: ResultStatus = "ok"

    @property
    def is_error(self) -> bool:
        return self.status != "ok"


class ApprovalRequested(_Event):
    type: Literal["approval_requested"] = "approval_requested"
    approval_id: str
    call_id: str
    tool: str
    args: dict[str, Any]
    requester: str | None
    approvers: list[str]
    expires_at: float
    two_person: bool = False
    remind_at: float | None = None  # when the approvers get a reminder (tool policy remind_before)
    escalate_at: float | None = None  # when `escalate_to` may decide too (tool policy escalate_after)
    escalate_to: list[str] = []
    # people and votes: the snapshot of the rules when asked, for the audit trail (who may decide
    # is checked against the policy in force at each vote)
    requester_person: str | None = None
    approvers_named: list[str] = []  # how the approvers are named to anyone: groups, people
    quorum: int = 1  # distinct people who must approve
    about: str = ""  # MCP tools: the server, tool, description and annotations (the server's claims)


Decision = Literal["approved", "rejected", "expired"]


class ApprovalDecided(_Event):
    type: Literal["approval_decided"] = "approval_decided"
    approval_id: str
    decision: Decision
    by: str | None
    via: str
    reason: str = ""
    person: str | None = None  # the person `by` is (the identity used)
    approved_by: list[str] = []  # the people whose approvals met the quorum


class ApprovalVote(_Event):
    """One person's approval of a request that needs more than one (quorum), or the approval that
    decides it. `by` is the identity used, `person` who that is."""

    type: Literal["approval_vote"] = "approval_vote"
    approval_id: str
    by: str
    person: str
    via: str
    votes: int  # approvals (distinct people) so far, this one included
    quorum: int
    people: list[str] = []  # who approved so far, this one included


class ApprovalRefused(_Event):
    """A decision attempt that was not accepted (not an approver, already decided, expired)."""

    type: Literal["approval_refused"] = "approval_refused"
    approval_id: str
    by: str | None
    via: str
    reason: str
    person: str | None = None


class ApprovalReminder(_Event):
    """The approval is still undecided and its deadline is near."""

    type: Literal["approval_reminder"] = "approval_reminder"
    approval_id: str
    tool: str
    args: dict[str, Any]
    approvers: list[str]
    expires_at: float


class ApprovalEscalated(_Event):
    """Undecided for too long: `approvers` (the escalation list) may now decide as well."""

    type: Literal["approval_escalated"] = "approval_escalated"
    approval_id: str
    tool: str
    args: dict[str, Any]
    approvers: list[str]
    expires_at: float


class HumanQuestion(_Event):
    type: Literal["human_question"] = "human_question"
    question: str
    call_id: str | None = None  # set when the agent asked through the ask_human tool


class HumanResponse(_Event):
    type: Literal["human_response"] = "human_response"
    text: str


class AgentReply(_Event):
    type: Literal["agent_reply"] = "agent_reply"
    text: str


class Notice(_Event):
    """A word to the human while a step takes long ("still working"): shown, never given to the
    model, and it ends nothing (unlike a reply, the agent still owes an answer)."""

    type: Literal["notice"] = "notice"
    text: str


class Error(_Event):
    type: Literal["error"] = "error"
    kind: str
    message: str


class ScheduleFired(_Event):
    type: Literal["schedule_fired"] = "schedule_fired"
    schedule: str
    scheduled_for: float
    text: str
    missed: int = 0  # earlier fires coalesced into this one


class ScheduleMissed(_Event):
    """Fires that passed while no process ran, too long ago to run (outside the grace)."""

    type: Literal["schedule_missed"] = "schedule_missed"
    schedule: str
    scheduled_for: float  # the latest of them
    missed: int  # how many
    grace: float


class ContextCompacted(_Event):
    """The model's context from here on starts with `summary`, written by our code, in place of
    the first `upto` events of the log (which stay in the log; `read_event` reads them)."""

    type: Literal["context_compacted"] = "context_compacted"
    upto: int
    summary: str
    tokens_before: int  # the estimated request that made it necessary


Event = Annotated[
    Union[
        UserMessage,
        ToolCall,
        ToolStarted,
        ToolResult,
        ApprovalRequested,
        ApprovalDecided,
        ApprovalVote,
        ApprovalRefused,
        ApprovalReminder,
        ApprovalEscalated,
        HumanQuestion,
        HumanResponse,
        AgentReply,
        Notice,
        Error,
        ScheduleFired,
        ScheduleMissed,
        ContextCompacted,
    ],
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

# Events a human should see on the thread's channel.
VISIBLE_TYPES = frozenset(
    {"agent_reply", "notice", "approval_requested", "approval_decided", "approval_refused",
     "human_question", "approval_reminder", "approval_escalated", "schedule_missed", "approval_vote"}
)
# Events that give the agent something new to act on.
INPUT_TYPES = frozenset({"user_message", "human_response", "schedule_fired"})


def parse_event(raw: str | bytes) -> Event:
    return EVENT_ADAPTER.validate_json(raw)


def dump_event(event: Event) -> str:
    return event.model_dump_json(exclude_defaults=False)

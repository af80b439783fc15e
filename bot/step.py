"""The agent step as a pure reducer: thread -> the next step. No I/O here.

The worker executes the step, appends what it produced, and asks again, until the answer is
Wait or Idle. Because the step is derived from the log alone, any worker can resume any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from bot.agent import Agent
from bot.commands import help_text, is_command
from bot.events import ResultStatus, ScheduleFired, ToolCall, UserMessage
from bot.policy import Policy
from bot.thread import Thread
from bot.tools import ASK_HUMAN, AskHumanArgs, Tool, compact_validation_error


@dataclass(frozen=True)
class RunTool:
    call: ToolCall
    args: dict[str, Any]  # the validated arguments (an approval's: exactly what was approved)


@dataclass(frozen=True)
class RequestApproval:
    call: ToolCall
    args: dict[str, Any]  # the validated arguments: what the approvers see is what runs


@dataclass(frozen=True)
class ExpireApproval:
    approval_id: str


@dataclass(frozen=True)
class Resolve:
    """Give a call its result without running it (invalid, rejected, expired, answered)."""

    call: ToolCall
    status: ResultStatus
    output: str


@dataclass(frozen=True)
class Recover:
    """A run started and its outcome is unknown: never run it again, ask a human."""

    call: ToolCall


@dataclass(frozen=True)
class AskHuman:
    question: str
    call_id: str | None = None


@dataclass(frozen=True)
class CallModel:
    pass


@dataclass(frozen=True)
class RunCommand:
    text: str


@dataclass(frozen=True)
class Reply:
    text: str
    error: str | None = None  # also record an error event of this kind


@dataclass(frozen=True)
class Wait:
    approvals: tuple[str, ...] = ()


@dataclass(frozen=True)
class Idle:
    pass


Step = (
    RunTool | RequestApproval | ExpireApproval | Resolve | Recover | AskHuman | CallModel
    | RunCommand | Reply | Wait | Idle
)


@dataclass(frozen=True)
class Limits:
    model_available: bool
    step_budget: int = 10
    error_budget: int = 3


def next_step(thread: Thread, agent: Agent, now: float, limits: Limits, policy: Policy | None = None) -> Step:
    """`policy`: the policy in force, which may gate a tool its code does not."""
    if thread.open_calls:
        return _next_for_calls(thread, agent, now, policy or Policy())
    if thread.open_question is not None:
        return Wait()
    if not thread.needs_agent:
        return Idle()
    if thread.consecutive_errors >= limits.error_budget:
        return AskHuman(
            f"I hit {thread.consecutive_errors} errors in a row and stopped. The last one: "
            f"{thread.last_error}\nHow should I continue?"
        )
    last = thread.last_input
    command = last.text if isinstance(last, (UserMessage, ScheduleFired)) else None
    asked_command = command is not None and is_command(command)
    if thread.turn and thread.turn_origin == "command" and not thread.input_since_turn:
        if asked_command or not (agent.prefetch and limits.model_available):
            return Reply(command_summary(thread))
    elif command is not None and asked_command:
        return RunCommand(command)
    elif agent.prefetch and thread.input_since_turn:
        return RunCommand(agent.prefetch)
    if not limits.model_available:
        return Reply(no_model_help(agent))
    if thread.model_steps >= limits.step_budget:
        return Reply(
            f"I stopped after {limits.step_budget} steps without finishing. "
            "Tell me how to continue, or narrow the request.",
            error="step_budget",
        )
    return CallModel()


def _next_for_calls(thread: Thread, agent: Agent, now: float, policy: Policy) -> Step:
    waiting: list[str] = []
    for call in thread.open_calls:
        if call.call_id in thread.started:
            return Recover(call)
        tool = agent.tool(call.tool)
        if tool is None:
            return Resolve(call, "error", agent.why_missing(call.tool))
        try:
            args = tool.validate(call.args)
        except ValidationError as exc:
            return Resolve(call, "error", compact_validation_error(call.tool, exc))
        if tool is ASK_HUMAN:
            if call.call_id in thread.answers:
                return Resolve(call, "ok", thread.answers[call.call_id].text)
            if thread.open_question is None:
                assert isinstance(args, AskHumanArgs)
                return AskHuman(args.question, call.call_id)
            continue
        exact = args.model_dump(mode="json")
        approval_id = thread.approval_of_call.get(call.call_id)
        # once asked, an approval stays the gate (a reload cannot lift it from a pending call)
        if approval_id is None and not _gated(tool, call.tool, args, exact, policy):
            return RunTool(call, exact)
        if approval_id is None:
            return RequestApproval(call, exact)
        decision = thread.decisions.get(approval_id)
        if decision is None:
            if now >= thread.approvals[approval_id].expires_at:
                return ExpireApproval(approval_id)
            waiting.append(approval_id)
        elif decision.decision == "approved":
            return RunTool(call, thread.approvals[approval_id].args)
        elif decision.decision == "rejected":
            reason = f": {decision.reason}" if decision.reason else ""
            return Resolve(call, "rejected", f"Rejected by {decision.by}{reason}. Not run.")
        else:
            return Resolve(call, "expired", "The approval expired before anyone decided. Not run.")
    return Wait(tuple(waiting))


def _gated(tool: Tool, name: str, args: BaseModel, exact: dict[str, Any], policy: Policy) -> bool:
    """Whether a call needs an approval: its code says so, or the policy adds a gate."""
    return tool.needs_approval(args) or policy.requires_approval(name, exact)


def runs_at_once(agent: Agent, calls: list[ToolCall], policy: Policy) -> RunTool | None:
    """What `next_step` answers right after `calls` are appended to a thread with no open calls,
    when that is running the first one (no approval by code or policy, valid arguments): the
    worker may then record its start in the same append, one round trip less."""
    call = calls[0] if calls else None
    tool = agent.tool(call.tool) if call else None
    if call is None or tool is None or tool is ASK_HUMAN:
        return None
    try:
        args = tool.validate(call.args)
    except ValidationError:
        return None
    exact = args.model_dump(mode="json")
    return None if _gated(tool, call.tool, args, exact, policy) else RunTool(call, exact)


def command_summary(thread: Thread) -> str:
    """The results of the latest turn of exact commands, as the reply to show."""
    lines = []
    for call_id in thread.turn:
        result = thread.results[call_id]
        prefix = "" if result.status == "ok" else f"{result.status}: "
        lines.append(prefix + result.output)
    return "\n".join(lines)


def no_model_help(agent: Agent) -> str:
    return "No model is configured, so I understand exact commands only.\n" + help_text(agent)

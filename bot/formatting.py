"""How the core words events and times for people: the console's lines, a scheduled thread's
log line, the CLI's tables. Plain text, no channel's markup."""

from __future__ import annotations

from datetime import datetime, timezone

from bot.approvals import shown, votes_text
from bot.events import (
    AgentReply,
    ApprovalDecided,
    ApprovalEscalated,
    ApprovalRefused,
    ApprovalReminder,
    ApprovalRequested,
    ApprovalVote,
    Event,
    HumanQuestion,
    Notice,
    ScheduleMissed,
)


def clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def call_text(tool: str, args: dict) -> str:
    return f"{tool}(" + ", ".join(f"{shown(k, 60)}={shown(v)}" for k, v in args.items()) + ")"


def format_event(event: Event) -> str | None:
    """How the console shows an event; None for events it does not show."""
    if isinstance(event, (AgentReply, Notice)):
        return "bot> " + event.text.replace("\n", "\n     ")
    if isinstance(event, ApprovalRequested):
        who = ", ".join(event.approvers_named) or "anyone"
        who += f" ({event.quorum} different people must approve)" if event.quorum > 1 else ""
        return (
            f"bot> approval needed [{event.approval_id}]: {call_text(event.tool, event.args)}\n"
            + "".join(f"     {line}\n" for line in event.about.splitlines())  # an MCP tool's server, claims
            + f"     asked by {event.requester or 'unknown'}; approvers: {who}; "
            f"expires {clock(event.expires_at)}\n"
            f"     answer: approve {event.approval_id}   or   reject {event.approval_id} <reason>"
        )
    if isinstance(event, ApprovalDecided):
        if event.decision == "expired":
            return f"bot> approval {event.approval_id} expired; nothing was run"
        reason = f": {event.reason}" if event.reason else ""
        return f"bot> approval {event.approval_id} {event.decision} by {event.by} via {event.via}{reason}"
    if isinstance(event, ApprovalVote):
        return f"bot> approval {event.approval_id}: {votes_text(event.people, event.quorum)}"
    if isinstance(event, ApprovalRefused):
        return f"bot> approval {event.approval_id}: refused for {event.by}: {event.reason}"
    if isinstance(event, HumanQuestion):
        return f"bot> question: {event.question}"
    if isinstance(event, ApprovalReminder):
        who = ", ".join(event.approvers) if event.approvers else "anyone"
        return (f"bot> reminder: approval {event.approval_id} for {call_text(event.tool, event.args)} "
                f"is still undecided and expires {clock(event.expires_at)}; approvers: {who}")
    if isinstance(event, ApprovalEscalated):
        return (f"bot> escalated: approval {event.approval_id} for {call_text(event.tool, event.args)} "
                f"may now also be decided by {', '.join(event.approvers)}; expires {clock(event.expires_at)}")
    if isinstance(event, ScheduleMissed):
        return (f"bot> schedule {event.schedule} missed {event.missed} run(s) up to "
                f"{clock(event.scheduled_for)} while the bot was down; not run (grace {event.grace:g}s)")
    return None

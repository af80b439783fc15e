"""The `digest` agent: on a schedule, a summary of the last day of threads.

Our code reads the event logs and builds the facts (what was asked, approved, rejected, expired,
failed, by whom) as a compact table: the agent's prefetch command, so it is in the context before
the model is asked, and with no model configured it is the digest itself. Only what happened in
the period counts: a thread active in it shows its events of the period, not its older history.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

from pydantic import BaseModel, Field

from bot.agent import Agent
from bot.events import (
    INPUT_TYPES,
    ApprovalDecided,
    Error,
    ScheduleFired,
    ScheduleMissed,
    ToolResult,
)
from bot.policy import Policy
from bot.store import Store, ThreadNotFound, members
from bot.thread import Thread
from bot.tools import Handler, Tool, ToolContext, ToolError

NAME = "digest"
MAX_THREADS = 500
TEXT_WIDTH = 60


class RecentThreads(BaseModel):
    hours: float = Field(24, gt=0, le=24 * 31, description="How far back to look, in hours")


@dataclass
class Row:
    """One thread, as the digest shows it."""

    thread: str
    when: float
    agent: str
    via: str
    asked_by: str
    request: str
    outcomes: list[str]
    approved: int = 0
    rejected: int = 0
    expired: int = 0
    failed: int = 0


def row_of(thread: Thread, since: float = 0.0) -> Row:
    """The thread's row, counting only what happened at or after `since`."""
    asks = [e for e in thread.events if e.type in ("user_message", "schedule_fired")]
    first = next((e for e in asks if e.ts >= since), asks[0] if asks else None)  # the day's request
    if isinstance(first, ScheduleFired):
        asked_by, request = f"schedule {first.schedule}", first.text
    else:
        asked_by = (first.source.user if first else None) or "unknown"
        request = getattr(first, "text", "")
    row = Row(thread.id, thread.meta.created, thread.agent, thread.meta.origin.channel, asked_by,
              _short(request), [])
    ran = []
    for event in thread.events:
        if event.ts < since:
            continue
        if isinstance(event, ApprovalDecided):
            request_ = thread.approvals.get(event.approval_id)
            what = _call(request_.tool, request_.args) if request_ else event.approval_id
            if event.decision == "expired":
                row.expired += 1
                row.outcomes.append(f"{what} expired undecided")
            else:
                setattr(row, event.decision, getattr(row, event.decision) + 1)
                row.outcomes.append(f"{what} {event.decision} by {event.by} via {event.via}")
        elif isinstance(event, ToolResult) and event.status == "ok" and event.call_id in thread.calls:
            ran.append(thread.calls[event.call_id])
        elif isinstance(event, ToolResult) and event.status in ("error", "unknown"):
            call = thread.calls.get(event.call_id)
            row.failed += 1
            what = _call(call.tool, call.args) if call else event.call_id
            row.outcomes.append(f"{what} failed: {_short(event.output, 80)}" if event.status == "error"
                                else f"{what} outcome unknown")
        elif isinstance(event, Error):
            row.failed += 1
            row.outcomes.append(f"error {event.kind}")
        elif isinstance(event, ScheduleMissed):
            row.outcomes.append(f"schedule {event.schedule} missed {event.missed} run(s), not run")
    if ran:
        row.outcomes.append("ran " + ", ".join(_call(c.tool, c.args) for c in ran))
    if thread.state != "idle":
        row.outcomes.append(f"now {thread.state.replace('_', ' ')}")
    return row


async def recent(store: Store, since: float, exclude_agent: str = NAME) -> tuple[list[Row], int]:
    """Rows of the threads active since `since` (oldest first), and how many were left out."""
    ids = members(await store.redis.zrangebyscore(store.keys.threads, repr(since), "+inf"))
    rows = []
    for thread_id in ids[-MAX_THREADS:]:
        try:
            thread = await store.load(thread_id)
        except ThreadNotFound:
            continue
        if thread.agent != exclude_agent:
            rows.append(row_of(thread, since))
    return sorted(rows, key=lambda r: r.when), max(0, len(ids) - MAX_THREADS)


def table(rows: list[Row], hours: float, left_out: int = 0) -> str:
    totals = (f"{len(rows)} threads · {sum(r.approved for r in rows)} approved · "
              f"{sum(r.rejected for r in rows)} rejected · {sum(r.expired for r in rows)} expired · "
              f"{sum(r.failed for r in rows)} failed")
    lines = [f"Digest of the last {hours:g} h: {totals}"]
    if not rows:
        return lines[0]
    head = ("started (UTC)", "thread", "agent", "via", "asked by", "request", "outcome")
    body = [(_clock(r.when), r.thread, r.agent, r.via, r.asked_by, r.request,
             "; ".join(r.outcomes) or "no action") for r in rows]
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(len(head) - 1)]
    for cells in (head, *body):
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + cells[-1])
    if left_out:
        lines.append(f"(and {left_out} older threads not shown)")
    return "\n".join(lines)


def recent_threads_handler(allowed_users: set[str]) -> Handler:
    """The digest reports on every thread, whatever channel it came from: it answers its schedule
    (and whoever fired it with `chatops schedules run`), and people only if `[agents.digest] users`
    names them, also in a scheduled digest's Slack or mail thread (never everyone by default)."""

    async def recent_threads(args: RecentThreads, ctx: ToolContext) -> str:
        if ctx.store is None:
            raise ToolError("recent_threads needs the thread store")
        thread = await ctx.store.load(ctx.thread_id)
        user = (ctx.user or asker(thread, ctx.call_id) or "").lower()
        if user not in allowed_users and user not in fired_by(thread):
            raise ToolError("the digest runs on a schedule; to ask for it, be listed in "
                            "[agents.digest] users in the policy file")
        rows, left_out = await recent(ctx.store, time.time() - args.hours * 3600)
        return table(rows, args.hours, left_out)

    return recent_threads


def fired_by(thread: Thread) -> set[str]:
    """Who fired this thread's schedule: `schedule:<name>`, or whoever ran `chatops schedules run`."""
    return {(e.source.user or "").lower() for e in thread.events if isinstance(e, ScheduleFired)} - {""}


def asker(thread: Thread, call_id: str) -> str | None:
    """Who made the model call `call_id`: the author of the latest input before it."""
    user = None
    for event in thread.events:
        if getattr(event, "call_id", None) == call_id and event.type == "tool_call":
            break
        if event.type in INPUT_TYPES:
            user = event.source.user
    return user


def _call(tool: str, args: dict) -> str:
    return f"{tool}(" + ", ".join(str(v) for v in args.values()) + ")"


def _short(text: str, width: int = TEXT_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%m-%d %H:%M")


def build(policy: Policy) -> Agent:
    return Agent(
        name=NAME,
        description="Summarizes the last day of threads: asked, approved, rejected, expired, failed.",
        prompt="digest",
        tools=(
            Tool(
                name="recent_threads",
                description="The threads of the last hours as a table: who asked what, every "
                            "approval decision and by whom, failures, what ran.",
                args=RecentThreads,
                handler=recent_threads_handler(policy.expand(policy.agent(NAME).users)),
            ),
        ),
        prefetch="/recent_threads 24",
    )

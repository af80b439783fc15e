"""The console channel, like Hubot's shell: type to the bot, answer its approvals.

It is a client: it appends what you type and follows the thread's log, printing what the bot
shows. `chatops run` attaches it when stdin is a terminal; `chatops console` runs it on its own
against a running bot, reading lines from stdin, so it can be scripted.
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import TextIO

from bot.events import (
    AgentReply,
    ApprovalDecided,
    ApprovalEscalated,
    ApprovalRefused,
    ApprovalReminder,
    ApprovalRequested,
    Event,
    HumanQuestion,
    ScheduleMissed,
    Source,
)
from bot.intake import new_thread_id
from bot.outage import stop_if_cancelled
from bot.routing import route
from bot.runtime import Runtime
from bot.thread import Origin, Thread

_DECISION = re.compile(r"^(approve|reject)\s+(\S+)\s*(.*)$", re.IGNORECASE)
SETTLE_TIMEOUT = 600.0


def clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def call_text(tool: str, args: dict) -> str:
    return f"{tool}(" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")"


def format_event(event: Event) -> str | None:
    """How the console shows an event; None for events it does not show."""
    if isinstance(event, AgentReply):
        return f"bot> {event.text}"
    if isinstance(event, ApprovalRequested):
        who = ", ".join(event.approvers) if event.approvers else "anyone"
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


async def stdin_lines(prompt: str = "") -> AsyncIterator[str]:
    """Lines typed on stdin. A daemon thread reads them: a read blocked on a terminal must not
    hold up shutdown (the default executor's threads are waited for; Ctrl-C would hang)."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        try:
            for line in iter(sys.stdin.readline, ""):
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, "")
        except RuntimeError:  # the loop closed while we were reading
            pass

    threading.Thread(target=read, name="stdin", daemon=True).start()
    while True:
        if prompt:
            print(prompt, end="", flush=True)
        line = await lines.get()
        if not line:
            return
        yield line


class Console:
    def __init__(self, rt: Runtime, user: str, out: TextIO = sys.stdout) -> None:
        self.rt = rt
        self.user = user
        self.out = out
        self.thread_id: str | None = None
        self.agent: str | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def run(self, lines: AsyncIterator[str]) -> None:
        async for raw in lines:
            line = raw.strip()
            if not line:
                continue
            if line in ("quit", "exit"):
                return
            await self.handle(line)

    async def handle(self, line: str) -> None:
        if match := _DECISION.match(line):
            verb, approval_id, reason = match.groups()
            outcome = await self.rt.approvals.decide(
                approval_id, verb.lower() == "approve", self.user, "console", reason
            )
            self.say(f"bot> {outcome.message}")
            if outcome.status in ("decided", "refused", "expired") and outcome.request is not None:
                await self.follow(approval_id.split(".")[0])
            return
        if self.thread_id is None:
            self.agent, _ = route(line, self.rt.agents, self.rt.settings.default_agent)
            self.thread_id = new_thread_id()
        assert self.agent is not None
        await self.rt.intake.message(
            self.thread_id, agent=self.agent, origin=Origin(channel="console"), text=line,
            source=Source(channel="console", user=self.user),
        )
        await self.follow(self.thread_id)

    async def follow(self, thread_id: str) -> Thread:
        """Print what the bot shows until the thread waits for a human or is done."""
        thread = await self.rt.store.load(thread_id)
        # show only what comes after the input that brought us here
        last_input = max((i for i, e in enumerate(thread.events) if e.source.channel == "console"), default=-1)
        shown = last_input + 1
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            stop_if_cancelled()
            for event in thread.events[shown:]:
                if text := format_event(event):
                    self.say(text)
            shown = thread.version
            if thread.state != "working":
                return thread
            if time.monotonic() > deadline:
                self.say("bot> (still working; check later with `chatops threads show " + thread_id + "`)")
                return thread
            await asyncio.sleep(0.05)
            thread = await self.rt.store.load(thread_id, thread)

"""The console channel, like Hubot's shell: type to the bot, answer its approvals.

It is a client: it appends what you type and follows the thread's log, printing what the bot
shows. `chatops run` attaches it when stdin is a terminal; `chatops console` runs it on its own
against a running bot, reading lines from stdin, so it can be scripted.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TYPE_CHECKING, TextIO

from bot.approvals import thread_of
from bot.channel import Address, Renderer
from bot.doctor import DoctorCheck
from bot.events import ApprovalDecided, ApprovalRefused, Event, Source
from bot.formatting import call_text, format_event
from bot.intake import new_thread_id
from bot.outage import REDIS_DOWN, stop_if_cancelled
from bot.routing import route
from bot.runtime import Runtime
from bot.store import ThreadNotFound
from bot.thread import Origin, Thread
from bot.verbs import Verb, as_user

if TYPE_CHECKING:
    from fastapi import FastAPI

# `reject <word> ...`: the word is an approval id if it looks like one (hex, with the dot), else
# the reason of a bare reject
_ID_LIKE = re.compile(r"^[0-9a-fA-F]{6,}(\.[0-9a-fA-F]*)?$")
SETTLE_TIMEOUT = 600.0
log = logging.getLogger("chatops.console")
POLL_BUSY = 0.05  # seconds between looks at the watched threads while one is working
POLL_IDLE = 0.5  # and while they all wait: decisions taken elsewhere show within this


class Screen:
    """Where the console writes: the bot's lines and (on a terminal) log records go above the
    `you>` prompt, which is drawn again below them, so nothing is printed into the line being typed.
    Log records come from any thread, hence a threading lock."""

    def __init__(self, out: TextIO = sys.stdout, prompt: str = "") -> None:
        self.out = out
        self.prompt = prompt
        self.prompting = False
        self.lock = threading.Lock()

    def show_prompt(self) -> None:
        with self.lock:
            if self.prompt and not self.prompting:
                self.out.write(self.prompt)
                self.out.flush()
                self.prompting = True

    def entered(self) -> None:
        """A line was typed: the terminal's echo of Enter left the cursor on a fresh line."""
        with self.lock:
            self.prompting = False

    def write(self, text: str, stream: TextIO | None = None) -> None:
        with self.lock:
            if self.prompting:
                self.out.write("\r\x1b[K")  # back to the start of the prompt's line, erase it
                self.out.flush()
            target = stream or self.out
            target.write(text + "\n")
            target.flush()
            if self.prompting:
                self.out.write(self.prompt)
                self.out.flush()


class ScreenLogHandler(logging.Handler):
    """Log records written through the screen (to stderr, above the prompt)."""

    def __init__(self, screen: Screen, stream: TextIO) -> None:
        super().__init__()
        self.screen = screen
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.screen.write(self.format(record), self.stream)
        except Exception:  # pragma: no cover - as logging.StreamHandler does
            self.handleError(record)


def log_through(screen: Screen) -> None:
    """Route the root logger's stream handlers through `screen`, keeping their format and level."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            replacement = ScreenLogHandler(screen, handler.stream)
            replacement.setFormatter(handler.formatter)
            replacement.setLevel(handler.level)
            root.removeHandler(handler)
            root.addHandler(replacement)


async def stdin_lines(screen: Screen | None = None, stream: TextIO | None = None) -> AsyncIterator[str]:
    """Lines typed on stdin. A daemon thread reads them: a read blocked on a terminal must not
    hold up shutdown (the default executor's threads are waited for; Ctrl-C would hang)."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()
    source = stream or sys.stdin

    def read() -> None:
        try:
            for line in iter(source.readline, ""):
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, "")
        except (RuntimeError, ValueError):  # the loop closed, or the stream, while we were reading
            pass

    threading.Thread(target=read, name="stdin", daemon=True).start()
    while True:
        if screen is not None:
            screen.show_prompt()
        line = await lines.get()
        if screen is not None:
            screen.entered()
        if not line:
            return
        yield line


class Console:
    """One person's conversation. A watcher task prints, as they happen, the visible events of the
    console's thread and of every thread whose approval was answered here: decisions taken in
    Slack, by mail, through the API or in another console, and the results that follow. Each input
    is handled once the previous one has settled, so a piped script reads like a transcript."""

    def __init__(self, rt: Runtime, user: str, out: TextIO = sys.stdout, screen: Screen | None = None) -> None:
        self.rt = rt
        self.user = user
        self.screen = screen or Screen(out)
        self.thread_id: str | None = None
        self.agent: str | None = None
        self.watched: dict[str, Thread | None] = {}
        self.shown: dict[str, int] = {}
        self.answered: set[str] = set()  # approval ids decided here: the outcome was said already
        self.printed = 0
        self.polled = asyncio.Event()

    def say(self, text: str) -> None:
        self.printed += 1
        self.screen.write(text)

    async def run(self, lines: AsyncIterator[str]) -> None:
        watcher = asyncio.create_task(self.watch(), name="console-watch")
        try:
            async for raw in lines:
                line = raw.strip()
                if not line:
                    continue
                if line in ("quit", "exit"):
                    return
                try:
                    await self.handle(line)
                except REDIS_DOWN as exc:
                    self.say(f"bot> Redis does not answer ({type(exc).__name__}), so nothing was "
                             "recorded; try again when it is back")
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def handle(self, line: str) -> None:
        if decision := _decision(line):
            await self.decide(*decision)
            return
        if self.thread_id is None:
            thread_id = new_thread_id()
            if not (admission := await self.rt.intake.admit(self.user, thread_id)).ok:
                self.say(f"bot> {admission.refusal(self.rt.settings.requests_per_hour)}")
                return
            self.agent, _ = route(line, self.rt.agents, self.rt.settings.default_agent)
            self.thread_id = thread_id
            self.watch_thread(self.thread_id, shown=0)
        assert self.agent is not None
        printed = self.printed
        appended = await self.rt.intake.message(
            self.thread_id, agent=self.agent, origin=Origin(channel="console"), text=line,
            source=Source(channel="console", user=self.user),
        )
        await self.settle(self.thread_id, appended.version, printed)

    async def decide(self, approve: bool, approval_id: str | None, reason: str) -> None:
        if approval_id is None:
            approval_id = await self._the_one_waiting(approve)
            if approval_id is None:
                return
        self.answered.add(approval_id)
        outcome = await self.rt.approvals.decide(approval_id, approve, self.user, "console", reason)
        self.say(f"bot> {outcome.message}")
        thread_id = thread_of(approval_id)
        if outcome.request is None or thread_id is None:
            return
        printed = self.printed
        version = (await self.rt.store.load(thread_id)).version  # the decision included
        self.watch_thread(thread_id, shown=version)
        if outcome.status == "decided":
            await self.settle(thread_id, version, printed)

    async def _the_one_waiting(self, approve: bool) -> str | None:
        """The approval a bare `approve` / `reject <reason>` means: the only one waiting in this
        console's thread. None (having said why) when there is none or there are several."""
        verb = "approve" if approve else "reject"
        waiting = []
        if self.thread_id is not None:
            try:
                waiting = (await self.rt.store.load(self.thread_id)).pending_approvals()
            except ThreadNotFound:
                pass
        if len(waiting) == 1:
            return waiting[0].approval_id
        if not waiting:
            self.say(f"bot> no approval waits in this conversation; to answer one from elsewhere: "
                     f"{verb} <approval id>")
        else:
            self.say(f"bot> {len(waiting)} approvals wait here; name one:\n" + "\n".join(
                f"     {verb} {a.approval_id}  ({call_text(a.tool, a.args)})" for a in waiting))
        return None

    def watch_thread(self, thread_id: str, shown: int) -> None:
        self.watched.setdefault(thread_id, None)
        self.shown.setdefault(thread_id, shown)

    async def watch(self) -> None:
        """Print the new visible events of the watched threads, for as long as the console runs."""
        while True:
            stop_if_cancelled()
            try:
                busy = await self.poll()
            except REDIS_DOWN:  # the input side says so when it fails; the watcher waits
                busy = False
            except Exception:
                log.exception("the console could not read its threads")
                busy = False
            self.polled.set()
            self.polled = asyncio.Event()
            await asyncio.sleep(POLL_BUSY if busy else POLL_IDLE)

    async def poll(self) -> bool:
        """One look at every watched thread; True if one of them is working."""
        busy = False
        for thread_id, cached in list(self.watched.items()):
            try:
                thread = await self.rt.store.load(thread_id, cached)
            except ThreadNotFound:  # not created yet
                continue
            self.watched[thread_id] = thread
            for event in thread.events[self.shown[thread_id]:]:
                if not self._said_already(event) and (text := format_event(event)):
                    self.say(text)
            self.shown[thread_id] = thread.version
            busy = busy or thread.state == "working"
        return busy

    def _said_already(self, event: Event) -> bool:
        return (isinstance(event, (ApprovalDecided, ApprovalRefused)) and event.via == "console"
                and event.approval_id in self.answered and event.by == self.user)

    async def settle(self, thread_id: str, version: int, printed: int) -> None:
        """Wait until the watcher has shown `thread_id` up to `version` at least and the thread
        waits for a human or is done; say so if nothing was shown since `printed`, or if that takes
        too long."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            try:
                await asyncio.wait_for(self.polled.wait(), POLL_IDLE * 4)
            except TimeoutError:
                pass
            thread = self.watched.get(thread_id)
            if thread is not None and thread.version >= version and thread.state != "working":
                break
            if time.monotonic() > deadline:
                self.say(f"bot> (still working; the answer will show here, or see "
                         f"`chatops threads show {thread_id}`)")
                return
        if self.printed == printed:
            self.say(f"bot> (nothing to show; the thread is {thread.state.replace('_', ' ')})")


def _decision(line: str) -> tuple[bool, str | None, str] | None:
    """(approve?, approval id or None for "the one waiting here", reason) for `approve [ID]`,
    `reject [ID] [reason]`; None for any other line."""
    verb, _, rest = line.partition(" ")
    verb = verb.lower()
    if verb not in ("approve", "reject"):
        return None
    first, _, after = rest.strip().partition(" ")
    if verb == "approve":
        return (True, first or None, after.strip())
    if first and _ID_LIKE.match(first):
        return (False, first, after.strip())
    return (False, None, rest.strip())


class ConsoleChannel:
    """The console as a `bot.channel.Channel`: `chatops run` attaches it when stdin is a terminal
    (`attach` overrides). It shows threads by reading their log itself, so it has no renderer."""

    name = "console"
    notifies_approvers = False

    def __init__(self, attach: bool | None = None) -> None:
        self.attach = attach

    settings = None  # no settings of its own

    def configured(self) -> bool:
        return True

    def service(self, rt: Runtime, app: FastAPI) -> Awaitable[None] | None:
        attach = sys.stdin.isatty() if self.attach is None else self.attach
        return run_on_terminal(rt) if attach else None

    def renderer(self, rt: Runtime) -> Renderer | None:
        return None

    def target(self, name: str) -> Address:
        raise ValueError("the console is not a destination: it shows the threads it starts")

    def contact(self, person: str) -> Address | None:
        return None

    def checks(self) -> Sequence[DoctorCheck]:
        return []

    def verbs(self) -> Sequence[Verb]:
        return [Verb("console", "talk to a running bot from stdin (scriptable)", run_console,
                     lambda p: as_user(p, "who you are: the requester of what you ask, the approver "
                                          "of what you approve"))]


async def run_console(rt: Runtime, args: argparse.Namespace) -> int:
    """`chatops console`: the console on stdin, as `--as` USER."""
    await Console(rt, user=args.user).run(stdin_lines())
    return 0


async def run_on_terminal(rt: Runtime) -> None:
    screen = Screen(sys.stdout, prompt="you> ")
    log_through(screen)  # log lines go above the prompt, never into the line being typed
    screen.write("chatops console: talk to the bot; `approve [id]`, `reject [id] <reason>`; "
                 "Ctrl-D quits.", sys.stderr)
    await Console(rt, user=getpass.getuser(), screen=screen).run(stdin_lines(screen))

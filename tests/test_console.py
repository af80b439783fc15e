"""The console as a person uses it: `chatops console` in a subprocess, stdin and stdout pipes, a
real worker, real Redis. What happens elsewhere shows up without typing."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import sys
import threading

from channels.console import Screen, ScreenLogHandler
from tests.conftest import ROOT, bot_env, settled
from tests.helpers import runbook_lines
from tests.messages_api import text, tool_use

READ_TIMEOUT = 60.0  # generous: a loaded 2-core machine


class ConsoleProcess:
    """`chatops console --as USER`, typed into line by line; what it printed, read as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[str] = []

    @classmethod
    async def start(cls, settings, user: str) -> ConsoleProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "console", "--as", user, env=bot_env(settings), cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def until(self, pattern: str) -> re.Match:
        """Read lines until one matches `pattern` (a regex); the match."""
        assert self.proc.stdout is not None
        for line in self.seen:
            if match := re.search(pattern, line):
                self.seen.remove(line)
                return match
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), READ_TIMEOUT)
            if not raw:
                stderr = await self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"console exited before {pattern!r}; stderr: {stderr.decode()[-2000:]}")
            line = raw.decode().rstrip("\n")
            if match := re.search(pattern, line):
                return match
            self.seen.append(line)

    async def close(self) -> str:
        """Ctrl-D; the rest of what it printed."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        out, err = await asyncio.wait_for(self.proc.communicate(), READ_TIMEOUT)
        assert self.proc.returncode == 0, err.decode()
        return "\n".join(self.seen) + "\n" + out.decode()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def test_decisions_taken_elsewhere_and_their_results_show_without_typing(make_settings, start_bot):
    settings = make_settings()
    rt = await start_bot(settings)
    bob = await ConsoleProcess.start(settings, "bob")
    alice = await ConsoleProcess.start(settings, "alice")
    try:
        await bob.type("/rollback api prod")
        approval_id = (await bob.until(r"answer: approve (\S+)")).group(1)

        # another console decides: it shows the decision, then the result of the run it allowed
        await alice.type(f"approve {approval_id}")
        await alice.until(r"^bot> approved by alice via console$")
        await alice.until(r"^bot> Rolled back api in prod")
        # and bob, who typed nothing more, sees both
        await bob.until(rf"^bot> approval {re.escape(approval_id)} approved by alice via console$")
        await bob.until(r"^bot> Rolled back api in prod")

        # a decision taken in another channel (the same function Slack, email and the API call)
        await bob.type("/rollback web prod")
        approval_id = (await bob.until(r"answer: approve (\S+)")).group(1)
        outcome = await rt.approvals.decide(approval_id, False, "carol", "slack", "not now")
        assert outcome.status == "decided"
        await bob.until(rf"^bot> approval {re.escape(approval_id)} rejected by carol via slack: not now$")
        await bob.until(r"^bot> rejected: Rejected by carol: not now. Not run.")
        assert runbook_lines(settings) == ["rollback api prod"]
        await bob.close()
        await alice.close()
    finally:
        bob.kill()
        alice.kill()


async def test_bare_approve_decides_the_one_waiting_and_says_when_it_cannot(
        model_settings, messages_api, start_bot):
    settings = model_settings()
    rt = await start_bot(settings)
    console = await ConsoleProcess.start(settings, "bob")
    try:
        await console.type("approve")
        await console.until(r"^bot> no approval waits in this conversation; to answer one from "
                            r"elsewhere: approve <approval id>$")

        messages_api.add(tool_use("rollback", {"service": "api", "environment": "prod"},
                                  ("rollback", {"service": "web", "environment": "prod"})))
        await console.type("roll back api and web in prod")
        await console.until(r"answer: approve")
        await console.until(r"answer: approve")
        await console.type("approve")
        await console.until(r"^bot> 2 approvals wait here; name one:$")
        first = (await console.until(r"^     approve (\S+)  \(rollback\(service=api")).group(1)
        await console.until(r"^     approve (\S+)  \(rollback\(service=web")

        await console.type(f"reject {first} wrong one")
        await console.until(r"^bot> rejected by bob via console: wrong one$")
        messages_api.add(text("Rolled back web; api was not touched."))
        await console.type("approve")  # now exactly one waits: this decides it
        await console.until(r"^bot> approved by bob via console$")
        await console.until(r"^bot> Rolled back web; api was not touched.$")
        assert runbook_lines(settings) == ["rollback web prod"]

        await console.type("approve")
        await console.until(r"^bot> no approval waits in this conversation")
        out = await console.close()
        assert "refused" not in out
    finally:
        console.kill()
    thread = await settled(rt, (await rt.store.list_threads())[0]["id"])
    assert [d.decision for d in thread.decisions.values()] == ["rejected", "approved"]


async def test_every_input_gets_a_visible_answer(make_settings, start_bot):
    settings = make_settings()
    await start_bot(settings)
    console = await ConsoleProcess.start(settings, "bob")
    try:
        await console.type("/deploy")
        await console.until(r"^bot> /deploy: missing service, version, environment.$")
        await console.until(r"^     usage: /deploy <service> <version> <environment>$")
        await console.type("reject 0123456789abcdef.01234567 no")
        await console.until(r"^bot> no approval 0123456789abcdef.01234567$")
        await console.type("reject")
        await console.until(r"^bot> no approval waits in this conversation; to answer one from "
                            r"elsewhere: reject <approval id>$")
        out = await console.close()
        assert "Field required" not in out and "pattern" not in out
    finally:
        console.kill()


def test_log_lines_go_above_the_prompt_never_into_it():
    """The console's writer over a pipe, a terminal's rendering of it: a log record or a bot line
    arriving while `you> ` waits for typing is drawn on its own line, and the prompt after it."""
    read_end, write_end = os.pipe()
    out = os.fdopen(write_end, "w")
    screen = Screen(out, prompt="you> ")
    handler = ScreenLogHandler(screen, out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("test.console.screen")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        screen.show_prompt()
        worker = threading.Thread(target=lambda: [logger.warning("redis is slow %d", i) for i in range(50)])
        worker.start()
        for i in range(50):
            screen.write(f"bot> line {i}")
        worker.join()
        out.write("/help\n")  # what the terminal echoes as the person types and presses Enter
        screen.entered()
        screen.write("bot> after enter")
    finally:
        logger.removeHandler(handler)
        out.close()
    with os.fdopen(read_end, newline="") as pipe:
        lines = _render_terminal(pipe.read())
    assert lines[-2:] == ["you> /help", "bot> after enter"]  # the prompt was redrawn below all
    body = lines[:-2]
    assert all(line.startswith(("WARNING test.console.screen: redis is slow", "bot> line"))
               for line in body[:-1]), body
    assert len(body) == 100


def _render_terminal(data: str) -> list[str]:
    """What a terminal shows: `\\r\\x1b[K` erases the current line, `\\n` ends it."""
    lines, current = [], io.StringIO()
    for chunk in re.split(r"(\r\x1b\[K|\n)", data):
        if chunk == "\r\x1b[K":
            current = io.StringIO()
        elif chunk == "\n":
            lines.append(current.getvalue())
            current = io.StringIO()
        else:
            current.write(chunk)
    if current.getvalue():
        lines.append(current.getvalue())
    return lines


async def test_with_redis_gone_the_console_says_nothing_was_recorded(make_settings, tmp_path):
    from tests.redis_process import RedisProcess

    server = RedisProcess(tmp_path / "redis")
    settings = make_settings(redis_url=server.start())
    console = await ConsoleProcess.start(settings, "bob")
    try:
        await console.type("approve")  # the console is up and has talked to Redis
        await console.until(r"^bot> no approval waits")
        server.stop()
        await console.type("/service_status api dev")
        await console.until(r"^bot> Redis does not answer \(\w+\), so nothing was recorded; try again")
        await console.close()
    finally:
        console.kill()
        server.stop()


async def test_run_on_a_terminal_logs_above_the_prompt(make_settings, policy_file):
    """`chatops run` on a terminal, a schedule logging every 2 s while `you> ` waits: every log
    line is drawn on a line of its own, and the prompt below it."""
    import pty
    import signal
    import subprocess

    from tests.conftest import wait_for

    policy = policy_file("""
[[schedules]]
name = "tick"
cron = "*/2 * * * * *"
agent = "deploy"
message = "/service_status api dev"
""")
    settings = make_settings(policy_file=policy)
    master, terminal = pty.openpty()
    bot = subprocess.Popen([sys.executable, "-m", "bot", "run"], env=bot_env(settings, PORT="0"), cwd=ROOT,
                           stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    screen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        async def logged_while_prompting():
            text = screen.decode(errors="replace")
            after = text.split("you> ", 1)[1] if "you> " in text else ""
            return after.count("fired for") >= 2

        await wait_for(logged_while_prompting, 60, "schedule logs after the prompt")
    finally:
        bot.send_signal(signal.SIGTERM)
        await asyncio.to_thread(bot.wait, 30)
        os.close(master)
        reader.join(10)
    lines = _render_terminal(screen.decode(errors="replace").replace("\r\n", "\n"))
    fired = [line for line in lines if "fired for" in line]
    assert len(fired) >= 2
    assert all(not line.startswith("you> ") for line in fired), fired
    assert not [line for line in lines if "you> " in line and line != "you> "], lines

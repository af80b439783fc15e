"""The `chatops` command."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from bot.logs import setup as setup_logging
from bot.policy import ConfigError
from bot.runtime import Runtime
from bot.settings import Settings

Command = Callable[[Runtime, argparse.Namespace], Awaitable[int]]


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings: Settings | None = Settings()
    except ValidationError as exc:
        settings, invalid = None, exc
    setup_logging(settings.log_level if settings else "INFO", settings.log_format if settings else "text")
    if args.command == "doctor":  # it reports an invalid setting among the rest
        from bot.doctor import doctor

        sys.exit(asyncio.run(doctor()))
    if settings is None:
        first = invalid.errors()[0]
        sys.exit(f"chatops: invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}")
    try:
        sys.exit(asyncio.run(_with_runtime(settings, args.func, args)))
    except ConfigError as exc:
        sys.exit(f"chatops: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)


async def _with_runtime(settings: Settings, func: Command, args: argparse.Namespace) -> int:
    _stop_on_signals()
    rt = await Runtime.start(settings)
    try:
        return await func(rt, args)
    except asyncio.CancelledError:
        logging.getLogger("chatops").info("stopping")
        return 0
    finally:
        await rt.close()


def _stop_on_signals() -> None:
    """SIGTERM/SIGINT cancel the main task so that cleanup runs (the embedded Redis is stopped
    and flushes its AOF)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatops", description="Slack and email chat-ops bot")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Command | None, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.set_defaults(func=func)
        return p

    add("run", cmd_run, "run everything: worker, HTTP API, channels, console on a terminal")
    add("worker", cmd_worker, "run one more worker")
    add("smtp", cmd_smtp, "run the email channel's SMTP server alone")
    console = add("console", cmd_console, "talk to a running bot from stdin (scriptable)")
    console.add_argument("--as", dest="user", default=getpass.getuser(), help="who you are")
    add("doctor", None, "check configuration and connectivity")
    add("clock", cmd_clock, "run the schedules of the policy file (any number of clocks fire each once)")

    schedules = sub.add_parser("schedules", help="list schedules, fire one now").add_subparsers(
        dest="schedules_command", required=True)
    s_list = schedules.add_parser("list")
    s_list.add_argument("--json", action="store_true")
    s_list.set_defaults(func=cmd_schedules_list, command="schedules")
    s_run = schedules.add_parser("run")
    s_run.add_argument("name")
    s_run.add_argument("--as", dest="user", default=getpass.getuser(), help="who runs it (the requester)")
    s_run.set_defaults(func=cmd_schedules_run, command="schedules")

    threads = sub.add_parser("threads", help="list and show threads").add_subparsers(
        dest="threads_command", required=True)
    t_list = threads.add_parser("list")
    t_list.add_argument("--state", choices=["working", "awaiting_approval", "awaiting_human", "idle"])
    t_list.add_argument("--json", action="store_true")
    t_list.set_defaults(func=cmd_threads_list, command="threads")
    t_show = threads.add_parser("show")
    t_show.add_argument("id")
    t_show.add_argument("--json", action="store_true")
    t_show.set_defaults(func=cmd_threads_show, command="threads")

    approve = add("approve", cmd_decide, "approve a pending approval")
    approve.add_argument("id")
    approve.add_argument("--as", dest="user", default=getpass.getuser())
    reject = add("reject", cmd_decide, "reject a pending approval")
    reject.add_argument("id")
    reject.add_argument("--reason", required=True)
    reject.add_argument("--as", dest="user", default=getpass.getuser())
    return parser


async def cmd_run(rt: Runtime, _args: argparse.Namespace) -> int:
    from bot.serve import run_all

    await run_all(rt, console=sys.stdin.isatty())
    return 0


async def cmd_worker(rt: Runtime, _args: argparse.Namespace) -> int:
    from bot.serve import run_worker

    await run_worker(rt)
    return 0


async def cmd_smtp(rt: Runtime, _args: argparse.Namespace) -> int:
    from channels.email import identity
    from channels.email_inbound import Inbound
    from channels.email_server import serve_smtp

    await serve_smtp(rt, Inbound(rt, identity(rt.settings)))
    return 0


async def cmd_clock(rt: Runtime, _args: argparse.Namespace) -> int:
    from channels.schedule import Clock

    if not rt.policy.schedules:
        logging.getLogger("chatops").warning("the policy file declares no schedules; the clock idles")
        await asyncio.Event().wait()
    await Clock(rt).run()
    return 0


async def cmd_schedules_list(rt: Runtime, args: argparse.Namespace) -> int:
    import time

    from bot import cron
    from channels.console import clock

    last = dict(await rt.redis.zrange(rt.store.keys.schedule_last, 0, -1, withscores=True))
    rows = []
    for s in rt.policy.schedules:
        handled = last.get(s.name.encode())
        rows.append({**s.model_dump(), "next": cron.next_fire(s.trigger(), time.time()), "last": handled})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        where = ", ".join(filter(None, [row["slack_channel"], *row["emails"]])) or "-"
        print(f"{row['name']:<20} {row['cron']:<16} {row['timezone']:<16} {row['agent']:<10} "
              f"next {clock(row['next']) if row['next'] else 'never'}  "
              f"last {clock(row['last']) if row['last'] else '-'}  -> {where}")
    if not rows:
        print("no schedules (declare them in the policy file: [[schedules]])")
    return 0


async def cmd_schedules_run(rt: Runtime, args: argparse.Namespace) -> int:
    from channels.schedule import Clock

    thread_id, appended = await Clock(rt).run_now(args.name, args.user)
    print(f"fired {args.name}: thread {thread_id}" if appended.ok else f"{args.name}: already fired")
    return 0 if appended.ok else 1


async def cmd_console(rt: Runtime, args: argparse.Namespace) -> int:
    from channels.console import Console, stdin_lines

    await Console(rt, user=args.user).run(stdin_lines())
    return 0


async def cmd_threads_list(rt: Runtime, args: argparse.Namespace) -> int:
    rows = await rt.store.list_threads(args.state)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from channels.console import clock

    for row in rows:
        print(f"{row['id']}  {row['state']:<18} {row['agent']:<10} {row['origin']['channel']:<8} "
              f"{clock(row['updated'])}")
    if not rows:
        print("no threads")
    return 0


async def cmd_threads_show(rt: Runtime, args: argparse.Namespace) -> int:
    from bot.store import ThreadNotFound
    from channels.console import clock

    try:
        thread = await rt.store.load(args.id)
    except ThreadNotFound:
        print(f"chatops: no thread {args.id}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**thread.summary(), "events": [e.model_dump(mode="json") for e in thread.events]},
                         indent=2))
        return 0
    print(f"thread {thread.id} · agent {thread.agent} · {thread.state} · via {thread.meta.origin.channel}")
    for event in thread.events:
        print(f"{clock(event.ts)}  {event.type:<18} {_timeline(event.model_dump())}")
    return 0


def _timeline(data: dict[str, Any]) -> str:
    skip = {"id", "ts", "type", "source"}
    who = data["source"].get("user")
    parts = [f"{k}={v}" for k, v in data.items() if k not in skip and v not in ("", None, [], {})]
    text = " ".join(parts).replace("\n", " ")
    return (f"[{who}] " if who else "") + (text[:160] + "…" if len(text) > 160 else text)


async def cmd_decide(rt: Runtime, args: argparse.Namespace) -> int:
    approve = args.command == "approve"
    outcome = await rt.approvals.decide(args.id, approve, args.user, "cli", getattr(args, "reason", ""))
    print(outcome.message)
    return 0 if outcome.status == "decided" else 1

"""The `chatops` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from bot.logs import setup as setup_logging
from bot.loop import run as run_async
from bot.policy import ConfigError
from bot.runtime import Runtime
from bot.settings import Settings, invalid_setting
from bot.verbs import HasVerbs, as_user
from bot.wiring import Wiring, default_wiring

Command = Callable[[Runtime, argparse.Namespace], Awaitable[int]]


def main(argv: list[str] | None = None) -> None:
    invalid: ValidationError | None = None
    try:
        settings: Settings | None = Settings()
    except ValidationError as exc:
        settings, invalid = None, exc
    setup_logging(settings.log_level if settings else "INFO", settings.log_format if settings else "text")
    try:  # the composition root: the channels (each reading its own settings) and agents of this bot
        wiring: Wiring | None = default_wiring()
    except ValidationError as exc:
        wiring, invalid = None, invalid or exc
    parser = build_parser(wiring)  # the wired channels' verbs too
    if wiring is None and (verb := _verb(argv)) is not None and verb not in _choices(parser):
        assert invalid is not None  # a channel's verb, but its channel could not be built
        sys.exit(f"chatops: invalid {invalid_setting(invalid)}")
    args = parser.parse_args(argv)
    if args.command == "doctor":  # it reports an invalid setting among the rest
        from bot.doctor import doctor, report_invalid

        if wiring is None:
            assert invalid is not None
            sys.exit(report_invalid(invalid))
        sys.exit(run_async(doctor(wiring)))
    if settings is None or wiring is None:
        assert invalid is not None
        sys.exit(f"chatops: invalid {invalid_setting(invalid)}")
    if args.command == "tools":  # no Redis needed: policy and servers only
        try:
            sys.exit(run_async(cmd_tools(settings, wiring, args)))
        except ConfigError as exc:
            sys.exit(f"chatops: {exc}")
    try:
        sys.exit(run_async(_with_runtime(settings, wiring, args.func, args, serving=args.serving)))
    except ConfigError as exc:
        sys.exit(f"chatops: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)
    except asyncio.CancelledError:  # SIGTERM or SIGINT while the runtime was starting
        sys.exit(0)
    except Exception as exc:  # a verb that fails says so in one line, not a traceback
        sys.exit(_one_line(exc))


async def _with_runtime(
    settings: Settings, wiring: Wiring, func: Command, args: argparse.Namespace, *, serving: bool = True
) -> int:
    _stop_on_signals()
    rt = await Runtime.start(settings, wiring, serving=serving)
    if serving:  # after the start: a configuration error stays the one line printed
        logging.getLogger("chatops").info("event loop: %s", type(asyncio.get_running_loop()).__module__)
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, rt.reload)  # the live policy
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


def build_parser(wiring: Wiring | None = None) -> argparse.ArgumentParser:
    """The core's verbs, and the verbs of the channels in `wiring` (`bot.verbs.HasVerbs`)."""
    parser = argparse.ArgumentParser(
        prog="chatops", description="Slack and email chat-ops bot",
        epilog="Settings come from the environment and .env (see .env.example); the policy from "
               "CHATOPS_POLICY or ./chatops.toml (see chatops.example.toml).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add(sub, "run", cmd_run, "run everything: worker, HTTP API, channels, console on a terminal",
        serving=True)
    add(sub, "worker", cmd_worker, "run one more worker", serving=True)
    add(sub, "doctor", None, "check configuration and connectivity: ok / warning / error, with the fix")
    tools = add(sub, "tools", None, "list an agent's tools (safe or gated) and its MCP servers' state")
    tools.add_argument("agent", help="the agent's name (see the policy file's [agents.*])")
    groups: dict[str, Any] = {}
    for channel in wiring.channels if wiring is not None else []:
        for verb in channel.verbs() if isinstance(channel, HasVerbs) else []:
            parent = sub
            if verb.group is not None:
                name, help = verb.group
                if name not in groups:
                    groups[name] = sub.add_parser(name, help=help, description=help).add_subparsers(
                        dest=f"{name}_command", required=True, metavar="SUBCOMMAND")
                parent = groups[name]
            verb.arguments(add(parent, verb.name, verb.run, verb.help, serving=verb.serving,
                               command=verb.group[0] if verb.group else None))

    threads = sub.add_parser("threads", help="list and show threads",
                             description="list and show threads").add_subparsers(
        dest="threads_command", required=True, metavar="SUBCOMMAND")
    t_list = add(threads, "list", cmd_threads_list, "the threads, most recently updated first",
                 command="threads")
    t_list.add_argument("--state", choices=["working", "awaiting_approval", "awaiting_human", "idle"],
                        help="only threads in this state")
    t_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    t_show = add(threads, "show", cmd_threads_show, "a thread's events, oldest first",
                 command="threads")
    t_show.add_argument("id", help="the thread id (first column of `chatops threads list`)")
    t_show.add_argument("--json", action="store_true", help="print JSON (every event in full)")

    approve = add(sub, "approve", cmd_decide, "approve a pending approval")
    approve.add_argument("id", help="the approval id, as shown in the approval request "
                         "(THREAD.XXXXXXXX)")
    as_user(approve, "who approves (must be one of the approvers)")
    reject = add(sub, "reject", cmd_decide, "reject a pending approval")
    reject.add_argument("id", help="the approval id, as shown in the approval request "
                        "(THREAD.XXXXXXXX)")
    reject.add_argument("--reason", required=True, help="why, shown to the requester")
    as_user(reject, "who rejects (must be one of the approvers)")
    return parser


def add(parent: Any, name: str, func: Command | None, help: str, *, serving: bool = False,
        command: str | None = None) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
    # serving: the verb runs a worker or a channel (model client, renderers); the others only
    # read and append to Redis, and skip those imports
    p.set_defaults(func=func, serving=serving, **({"command": command} if command else {}))
    return p


def _choices(parser: argparse.ArgumentParser) -> set[str]:
    return {name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices}


def _verb(argv: list[str] | None) -> str | None:
    return next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)


async def cmd_run(rt: Runtime, _args: argparse.Namespace) -> int:
    from bot.serve import run_all

    await run_all(rt)  # the console channel attaches itself when stdin is a terminal
    return 0


async def cmd_worker(rt: Runtime, _args: argparse.Namespace) -> int:
    from bot.serve import run_worker

    await run_worker(rt)
    return 0


async def cmd_threads_list(rt: Runtime, args: argparse.Namespace) -> int:
    rows = await rt.store.list_threads(args.state)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from bot.formatting import clock

    if not rows:
        print("no threads")
        return 0
    print(f"{'ID':<16}  {'STATE':<18} {'AGENT':<10} {'CHANNEL':<8} UPDATED")
    for row in rows:
        print(f"{row['id']:<16}  {row['state']:<18} {row['agent']:<10} {row['origin']['channel']:<8} "
              f"{clock(row['updated'])}")
    return 0


async def cmd_threads_show(rt: Runtime, args: argparse.Namespace) -> int:
    from bot.formatting import clock
    from bot.store import ThreadNotFound

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


def _one_line(exc: Exception) -> str:
    """A failed verb's message: one line (the traceback is logged at DEBUG)."""
    from redis.exceptions import RedisError

    from bot.outage import config_error

    logging.getLogger("chatops").debug("the command failed", exc_info=exc)
    if (refused := config_error(exc)) is not None:
        return f"chatops: {refused}"
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    if isinstance(exc, RedisError):
        return f"chatops: Redis: {first or type(exc).__name__} (is REDIS_URL right, and Redis up?)"
    return f"chatops: {type(exc).__name__}: {first} (CHATOPS_LOG_LEVEL=DEBUG shows where)"


async def cmd_tools(settings: Settings, wiring: Wiring, args: argparse.Namespace) -> int:
    from bot.mcp_status import tool_lines
    from bot.runtime import load_checked

    policy, agents = load_checked(settings, wiring)
    agent = agents.get(args.agent)
    if agent is None:
        print(f"chatops: no agent {args.agent!r} (agents: {', '.join(sorted(agents))})", file=sys.stderr)
        return 1
    try:
        lines, healthy = await tool_lines(agent, policy)
    finally:
        await agent.close()
    print("\n".join(lines))
    return 0 if healthy else 1

"""The schedules' `chatops` verbs: `clock` (run the schedules) and `schedules list` / `run`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time

from bot import cron
from bot.formatting import clock
from bot.runtime import Runtime
from bot.store import scored
from bot.verbs import Verb, as_user
from channels import schedule_keys

GROUP = ("schedules", "list schedules, fire one now")


def verbs() -> list[Verb]:
    return [
        Verb("clock", "run the schedules of the policy file (any number of clocks fire each once)",
             run_clock, serving=True),
        Verb("list", "each schedule: cron, next fire, last handled, where results go", list_schedules,
             _list_arguments, group=GROUP),
        Verb("run", "fire a schedule now, through the same path as the clock", run_schedule,
             _run_arguments, group=GROUP),
    ]


def _list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the schedule's name in the policy file")
    as_user(p, "who fires it (the requester of what it asks)")


async def run_clock(rt: Runtime, _args: argparse.Namespace) -> int:
    from channels.schedule import Clock

    if not rt.policy.schedules:
        logging.getLogger("chatops").warning("the policy file declares no schedules; the clock idles")
        await asyncio.Event().wait()
    await Clock(rt).run()
    return 0


async def list_schedules(rt: Runtime, args: argparse.Namespace) -> int:
    last = scored(await rt.redis.zrange(schedule_keys.last(rt.store.keys), 0, -1, withscores=True))
    rows = []
    for s in rt.policy.schedules:
        handled = last.get(s.name)
        rows.append({**s.model_dump(), "next": cron.next_fire(s.trigger(), time.time()), "last": handled})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        where = ", ".join(t for targets in row["to"].values() for t in targets) or "-"
        print(f"{row['name']:<20} {row['cron']:<16} {row['timezone']:<16} {row['agent']:<10} "
              f"next {clock(row['next']) if row['next'] else 'never'}  "
              f"last {clock(row['last']) if row['last'] else '-'}  -> {where}")
    if not rows:
        print("no schedules (declare them in the policy file: [[schedules]])")
    return 0


async def run_schedule(rt: Runtime, args: argparse.Namespace) -> int:
    from channels.schedule import Clock

    thread_id, appended = await Clock(rt).run_now(args.name, args.user)
    print(f"fired {args.name}: thread {thread_id}" if appended.ok else f"{args.name}: already fired")
    return 0 if appended.ok else 1

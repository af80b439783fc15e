"""The schedules' doctor check: each schedule's agent exists, and each place its results go to
is a channel of this bot that can parse it (whether that channel is configured to send is said by
the channel's own check)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from bot import cron
from bot.channel import Channel
from bot.doctor import Context, Finding, error, ok, warning


async def check(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    channels = {c.name: c for c in ctx.channels}
    for i, s in enumerate(ctx.policy.schedules):
        if s.agent not in ctx.agents:
            out.append(error(f"schedules.{i}.agent ({s.name}): no agent named {s.agent!r}",
                             f"agents: {', '.join(sorted(ctx.agents))}"))
            continue
        nxt = cron.next_fire(s.trigger(), time.time())
        where = s.where()
        when = datetime.fromtimestamp(nxt, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if nxt else "never"
        out.append(ok(f"schedule {s.name}: {s.cron} ({s.timezone}) -> {s.agent}; next {when}; "
                      f"results to {where or 'the thread log only'}"))
        if not where:
            out.append(warning(f"schedule {s.name}: its `to` names no channel, so nobody sees its results",
                               f"set to = {{ <channel> = [<targets>] }} in the [[schedules]] entry {s.name!r}"))
        for kind, targets in s.to.items():
            out += _targets(s.name, kind, targets, channels.get(kind))
    return out


def _targets(schedule: str, kind: str, targets: list[str], channel: Channel | None) -> list[Finding]:
    if channel is None:
        return [error(f"schedule {schedule}: results go to {kind} {', '.join(targets)}, but this bot has "
                      f"no channel named {kind!r}", "name one of its channels in the schedule's `to`")]
    out = []
    for target in targets:
        try:
            channel.target(target)
        except ValueError as exc:
            out.append(error(f"schedule {schedule}: {kind} cannot send to {target!r}: {exc}",
                             f"correct the schedule's `to.{kind}`"))
    return out

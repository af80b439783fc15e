"""The schedules' doctor check: each schedule's agent exists, and each place its results go to
is a configured channel (a Slack channel needs Slack, addresses need SMTP_URL)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from bot import cron
from bot.doctor import Context, Finding, error, ok, warning
from channels.slack.doctor import configured as slack_configured


async def check(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    settings = ctx.settings
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
            out.append(warning(f"schedule {s.name}: no slack_channel or emails, so nobody sees its results",
                               f"set slack_channel or emails in the [[schedules]] entry {s.name!r}"))
        if s.to.get("slack") and not slack_configured(settings):
            out.append(error(f"schedule {s.name}: results go to Slack {', '.join(s.to['slack'])}, but Slack is "
                             "not configured", "set SLACK_BOT_TOKEN (see Connecting Slack in the README)"))
        if s.to.get("email") and settings.smtp_url is None:
            out.append(error(f"schedule {s.name}: results go to {', '.join(s.to['email'])}, but SMTP_URL is "
                             "not set, so no mail is sent", "set SMTP_URL (see Connecting email)"))
    return out

"""Cron expressions as crontab(5) means them, on APScheduler 3.x triggers.

APScheduler 3.x numbers weekdays from Monday = 0, crontab from Sunday = 0 (its issue 286), so a
plain `from_crontab("0 9 * * 1-5")` would run Tuesday to Saturday. We translate numeric weekdays.
Five fields are standard crontab; six fields put seconds first (for tests and fast schedules).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

FIELDS = ("minute", "hour", "day", "month", "day_of_week")
_NUMERIC = re.compile(r"^(\*|\d+)(?:-(\d+))?(?:/(\d+))?$")
MAX_FIRES = 20_000  # fire times counted one by one in a catch-up; past that, counts are capped


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)") from None


def parse(expr: str, tz: str = "UTC") -> CronTrigger:
    """A trigger for a 5-field crontab expression (or 6 fields, seconds first); ValueError if bad."""
    values = expr.split()
    if len(values) not in (5, 6):
        raise ValueError(f"a cron expression has 5 fields (or 6 with seconds first), got {len(values)}")
    second = values.pop(0) if len(values) == 6 else "0"
    fields = dict(zip(FIELDS, values))
    fields["day_of_week"] = _weekdays(fields["day_of_week"])
    return CronTrigger(second=second, timezone=zone(tz), **fields)


def _weekdays(expr: str) -> str:
    """Crontab weekdays (0 or 7 = Sunday) as APScheduler's (0 = Monday); names pass unchanged."""
    parts = []
    for part in expr.lower().split(","):
        match = _NUMERIC.match(part)
        if match is None or part == "*":
            parts.append(part)  # names (mon-fri) and * mean the same in both
            continue
        start, end, step = match.groups()
        low, high = (0, 6) if start == "*" else (int(start), int(end or start))
        if end is None and step and start != "*":
            high = 6
        if not 0 <= low <= high <= 7:
            raise ValueError(f"day of week {part!r} is out of range 0-7")
        days = {d % 7 for d in range(low, high + 1, int(step or 1))}
        parts.extend(str((d - 1) % 7) for d in sorted(days))
    return ",".join(parts)


def due(trigger: CronTrigger, after: float, until: float, limit: int = MAX_FIRES) -> tuple[float | None, int]:
    """The latest fire time in (after, until] and how many there were (at most `limit`: past
    that, only the last hour is scanned for the latest one)."""
    latest, count = None, 0
    nxt = _first_after(trigger, after)
    while nxt is not None and nxt.timestamp() <= until:
        latest, count = nxt.timestamp(), count + 1
        if count == limit:
            nxt = _first_after(trigger, max(latest, until - 3600))
            while nxt is not None and nxt.timestamp() <= until:
                latest, nxt = nxt.timestamp(), trigger.get_next_fire_time(nxt, nxt)
            break
        nxt = trigger.get_next_fire_time(nxt, nxt)
    return latest, count


def between(trigger: CronTrigger, after: float, before: float, limit: int = MAX_FIRES) -> list[float]:
    """The fire times in (after, before), oldest first: the first `limit` of them."""
    out: list[float] = []
    nxt = _first_after(trigger, after)
    while nxt is not None and nxt.timestamp() < before and len(out) < limit:
        out.append(nxt.timestamp())
        nxt = trigger.get_next_fire_time(nxt, nxt)
    return out


def _first_after(trigger: CronTrigger, ts: float) -> datetime | None:
    start = datetime.fromtimestamp(ts, timezone.utc).astimezone(trigger.timezone)
    return trigger.get_next_fire_time(None, start + timedelta(microseconds=1))


def next_fire(trigger: CronTrigger, now: float) -> float | None:
    start = datetime.fromtimestamp(now, timezone.utc).astimezone(trigger.timezone)
    nxt = trigger.get_next_fire_time(None, start)
    return nxt.timestamp() if nxt else None

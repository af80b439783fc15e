"""The schedule channel's Redis key names, under `<prefix>schedules:` (the core's are in bot/keys.py;
its fire threads' claims are the core's `once`)."""

from __future__ import annotations

from bot.keys import Keys


def last(keys: Keys) -> str:
    """Sorted set: schedule name -> the latest fire time handled (fired or recorded missed)."""
    return f"{keys.prefix}schedules:last"

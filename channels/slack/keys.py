"""The Slack channel's Redis key names, under `<prefix>slack:` (the core's are in bot/keys.py)."""

from __future__ import annotations

from bot.keys import Keys


def approval(keys: Keys, approval_id: str) -> str:
    """Hash {channel, ts} of the Slack message that shows an approval, to update it later."""
    return f"{keys.prefix}slack:approval:{approval_id}"


def thread(keys: Keys, thread_id: str) -> str:
    """Hash: Slack channel -> ts of the message that started this scheduled thread's Slack thread
    (the reverse is `keys.address("slack", "<channel>:<ts>")`)."""
    return f"{keys.prefix}slack:thread:{thread_id}"

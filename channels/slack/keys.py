"""The Slack channel's Redis key names, under `<prefix>slack:` (and `<prefix>address:slack:`, its
older name) (the core's are in bot/keys.py)."""

from __future__ import annotations

from bot.keys import Keys


def approval(keys: Keys, approval_id: str) -> str:
    """Hash {channel, ts} of the Slack message that shows an approval, to update it later."""
    return f"{keys.prefix}slack:approval:{approval_id}"


def thread(keys: Keys, thread_id: str) -> str:
    """Hash: Slack channel -> ts of the message that started this scheduled thread's Slack thread
    (the reverse is `posted`)."""
    return f"{keys.prefix}slack:thread:{thread_id}"


# The two below keep the names they had when the core named them, so that stored data still reads.
def posted(keys: Keys, channel: str, ts: str) -> str:
    """The meta (JSON) of the thread whose events the bot posted in the Slack thread `ts` of
    `channel` (a channel and a ts name one message; no team needed): a reply there continues it."""
    return f"{keys.prefix}address:slack:{channel}:{ts}"


def email(keys: Keys, user: str) -> str:
    """The profile email of a Slack user (cached; "" for none)."""
    return f"{keys.prefix}slack:email:{user}"

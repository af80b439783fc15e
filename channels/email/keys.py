"""The email channel's Redis key names, under `<prefix>email:` (the core's are in bot/keys.py)."""

from __future__ import annotations

from bot.keys import Keys


def token_used(keys: Keys, mac: str) -> str:
    """A reply token that decided an approval (single use); holds the deciding message's id."""
    return f"{keys.prefix}email:token:{mac}"


def rate(keys: Keys, address: str, window: int) -> str:
    """Mails sent to one address in an hour window."""
    return f"{keys.prefix}email:rate:{address}:{window}"

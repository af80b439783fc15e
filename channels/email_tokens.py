"""Signed reply tokens: the plus part of our reply addresses and the left part of our Message-IDs.

A token names a thread, optionally one approval of it, and an expiry, signed with HMAC-SHA256 under
CHATOPS_SIGNING_KEY. It proves that the mail answers one we sent, not who sent it: the sender is
still checked against the approvers, and a token decides at most one approval (see Keys).
Lower-case hex only, since some mail systems change the case of local parts; at most 55
characters, so `bot+<token>` stays within the 64 octets of a local part.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

MAC_HEX = 20  # 80 bits: guessing is hopeless for an online forger
_TOKEN = re.compile(r"^([0-9a-f]{16})(?:-([0-9a-f]{8}))?-([0-9a-f]{1,10})-([0-9a-f]{%d})$" % MAC_HEX)


@dataclass(frozen=True)
class Token:
    thread_id: str
    approval_id: str | None  # the full approval id `<thread>.<8 hex>`, or None for a thread token
    expires: int
    mac: str

    def expired(self, now: float) -> bool:
        return now >= self.expires


def _mac(key: bytes, body: str) -> str:
    return hmac.new(key, b"chatops-email-reply\0" + body.encode(), hashlib.sha256).hexdigest()[:MAC_HEX]


def mint(key: bytes, thread_id: str, approval_id: str | None, expires: float) -> str:
    suffix = approval_id.split(".", 1)[1] if approval_id else None
    body = f"{thread_id}-{suffix}-{int(expires):x}" if suffix else f"{thread_id}-{int(expires):x}"
    return f"{body}-{_mac(key, body)}"


def verify(key: bytes, text: str) -> Token | None:
    """The token if `text` is one we signed (expired or not), else None."""
    match = _TOKEN.match(text.lower())
    if not match:
        return None
    thread_id, suffix, expires, mac = match.groups()
    body = text.lower().rsplit("-", 1)[0]
    if not hmac.compare_digest(_mac(key, body), mac):
        return None
    approval_id = f"{thread_id}.{suffix}" if suffix else None
    return Token(thread_id, approval_id, int(expires, 16), mac)

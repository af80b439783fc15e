"""Signed reply tokens: the plus part of our reply addresses (`bot+<token>@domain`).

Two kinds, both HMAC-SHA256 under CHATOPS_SIGNING_KEY:

- a thread token, `<thread>-<expiry>-<mac>`: a reply that carries it reaches the thread as a
  message; it never decides anything. It is also the left part of our Message-IDs.
- an approval token, `<thread>-<approval>-<approver>-<expiry>-<mac>`: it decides one approval,
  for one approver, at most once (see Inbound._use_token). `<approver>` is a keyed hash of the
  approver's address, so the token names nobody; only the approver's own mail carries it.

A token proves that the mail answers one we sent, not who sent it: the From address is still
checked against the approvers and against the token's approver (and DMARC, when configured).
Lower-case hex only, since some mail systems change the case of local parts; at most 60
characters, so `bot+<token>` stays within the 64 octets of a local part.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

MAC_HEX = 16  # 64 bits: guessing is hopeless for an online forger, and it fits the local part
TAG_HEX = 8
_TOKEN = re.compile(r"^([0-9a-f]{16})(?:-([0-9a-f]{8})-([0-9a-f]{%d}))?-([0-9a-f]{1,8})-([0-9a-f]{%d})$"
                    % (TAG_HEX, MAC_HEX))


@dataclass(frozen=True)
class Token:
    thread_id: str
    approval_id: str | None  # the full approval id `<thread>.<8 hex>`, or None for a thread token
    approver: str | None  # the approver's tag (see approver_tag), with approval_id
    expires: int
    mac: str

    def expired(self, now: float) -> bool:
        return now >= self.expires


def normalize(address: str) -> str:
    """An address as the policy lists approvers: trimmed and lower-cased."""
    return address.strip().lower()


def approver_tag(key: bytes, address: str) -> str:
    return hmac.new(key, b"chatops-email-approver\0" + normalize(address).encode(),
                    hashlib.sha256).hexdigest()[:TAG_HEX]


def _mac(key: bytes, body: str) -> str:
    return hmac.new(key, b"chatops-email-reply\0" + body.encode(), hashlib.sha256).hexdigest()[:MAC_HEX]


def _signed(key: bytes, body: str) -> str:
    return f"{body}-{_mac(key, body)}"


def thread_token(key: bytes, thread_id: str, expires: float) -> str:
    return _signed(key, f"{thread_id}-{int(expires):x}")


def approval_token(key: bytes, approval_id: str, approver: str, expires: float) -> str:
    thread_id, suffix = approval_id.split(".", 1)
    return _signed(key, f"{thread_id}-{suffix}-{approver_tag(key, approver)}-{int(expires):x}")


def verify(key: bytes, text: str) -> Token | None:
    """The token if `text` is one we signed (expired or not), else None."""
    text = text.lower()
    match = _TOKEN.match(text)
    if not match:
        return None
    thread_id, suffix, approver, expires, mac = match.groups()
    if not hmac.compare_digest(_mac(key, text.rsplit("-", 1)[0]), mac):
        return None
    approval_id = f"{thread_id}.{suffix}" if suffix else None
    return Token(thread_id, approval_id, approver, int(expires, 16), mac)


def is_for(key: bytes, token: Token, address: str) -> bool:
    """Whether `token` decides for `address`: it is an approval token minted for that approver."""
    return token.approver is not None and hmac.compare_digest(token.approver, approver_tag(key, address))

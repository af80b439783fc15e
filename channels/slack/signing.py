"""Signed button values: `<action>:<approval id>:<mac>`, an HMAC with CHATOPS_SIGNING_KEY.

Slack signs the whole request already; the value's own signature means a crafted payload (or a
button copied into another message) cannot name an approval or a decision the bot never offered.
Authorization still happens on the server, in `Approvals.decide`.
"""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr

_PURPOSE = "slack-approval"
_MAC_CHARS = 32


def _mac(key: SecretStr, action: str, approval_id: str) -> str:
    message = f"{_PURPOSE}:{action}:{approval_id}".encode()
    return hmac.new(key.get_secret_value().encode(), message, hashlib.sha256).hexdigest()[:_MAC_CHARS]


def sign(key: SecretStr, action: str, approval_id: str) -> str:
    return f"{action}:{approval_id}:{_mac(key, action, approval_id)}"


def verify(key: SecretStr | None, action: str, value: str) -> str | None:
    """The approval id if `value` was signed by us for `action`; None otherwise (no key: none)."""
    if key is None:
        return None
    parts = value.split(":")
    if len(parts) != 3 or parts[0] != action:
        return None
    expected = _mac(key, action, parts[1])
    return parts[1] if hmac.compare_digest(parts[2].encode(), expected.encode()) else None

"""The door of POST /slack/events, before Bolt: a request must be signed by Slack (checked before
its body is parsed) and well formed, or it is refused with a 4xx and one log line, never a 500.

The body arrives already bounded by the HTTP server's body limit (bot/http_limits.py).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import parse_qs

from slack_sdk.signature import SignatureVerifier

log = logging.getLogger("chatops.slack")

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def refusal(verifier: SignatureVerifier, headers: Any, body: bytes) -> tuple[int, str] | None:
    """(status, why) if the request must be refused, else None."""
    timestamp = headers.get("x-slack-request-timestamp", "")
    signature = headers.get("x-slack-signature", "")
    if not timestamp.isdigit() or not signature:
        return 400, "missing or malformed X-Slack-Request-Timestamp / X-Slack-Signature"
    if not verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
        return 401, "invalid signature or stale timestamp"
    try:
        payload = _parse(headers.get("content-type", ""), body.decode("utf-8"))
        if _has_surrogate(payload):
            return 400, "malformed body: a lone UTF-16 surrogate in a string"
        if why := _shape(payload):
            return 400, f"malformed body: {why}"
    except (UnicodeDecodeError, ValueError) as exc:
        return 400, f"malformed body: {str(exc)[:200]}"
    except RecursionError:
        return 400, "malformed body: nested too deeply"
    return None


def _parse(content_type: str, text: str) -> Any:
    if content_type.startswith("application/json"):
        payload = json.loads(text)
        if not isinstance(payload, dict):
            raise ValueError("not a JSON object")
        return payload
    if content_type.startswith("application/x-www-form-urlencoded"):
        form = parse_qs(text, strict_parsing=bool(text), errors="strict")
        if "payload" in form:
            payload = json.loads(form["payload"][0])
            if not isinstance(payload, dict):
                raise ValueError("payload is not a JSON object")
            return payload
        return form
    raise ValueError(f"unexpected content type {content_type!r}")


def _shape(payload: Any) -> str | None:
    """What an interaction or event lacks that our listeners read without checking."""
    kind = payload.get("type") if isinstance(payload, dict) else None
    if kind in ("block_actions", "view_submission"):
        user = payload.get("user")
        if not isinstance(user, dict) or not isinstance(user.get("id"), str):
            return f"{kind} without user.id"
        if kind == "block_actions" and not isinstance(payload.get("actions"), list):
            return "block_actions without actions"
        if kind == "view_submission":
            view = payload.get("view")
            state = view.get("state") if isinstance(view, dict) else None
            if not isinstance(state, dict) or not isinstance(state.get("values"), dict):
                return "view_submission without view.state.values"
    if kind == "event_callback" and not isinstance(payload.get("event"), dict):
        return "event_callback without an event"
    return None


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False

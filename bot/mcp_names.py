"""Model-facing names of MCP tools: `<server>__<tool>`, within what the Messages API allows
(`[a-zA-Z0-9_-]{1,64}`). A tool name with other characters, or too long, is shortened
deterministically: the same server and tool always give the same name, and two different tools
never share one (a hash of the original name decides)."""

from __future__ import annotations

import hashlib
import re

MAX_LENGTH = 64
_ALLOWED = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_OTHER = re.compile(r"[^a-zA-Z0-9_-]")


def model_name(server: str, tool: str) -> str:
    name = f"{server}__{tool}"
    if _ALLOWED.match(name):
        return name
    digest = hashlib.sha256(tool.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    head = _OTHER.sub("_", tool)[: MAX_LENGTH - len(server) - 2 - 9]
    return f"{server}__{head}_{digest}"

"""An MCP tool result as the text of a tool result: text blocks and structured content kept,
images, audio and resources noted (never inlined: they would flood the context window). The
worker's usual truncation for the model applies after this."""

from __future__ import annotations

import json

import mcp.types as types

MAX_TEXT = 1 << 20  # characters kept of one result; the context truncates far more for the model


def result_text(result: types.CallToolResult) -> str:
    parts: list[str] = []
    for block in result.content:
        parts.append(_block(block))
    if result.structured_content is not None:
        structured = json.dumps(result.structured_content, ensure_ascii=False, default=str)
        wrapped = result.structured_content.get("result") if isinstance(result.structured_content, dict) \
            and len(result.structured_content) == 1 else None
        if structured not in parts and not (isinstance(wrapped, str) and wrapped in parts):
            parts.append(structured)  # servers often send the same content as text too
    text = "\n".join(p for p in parts if p) or "(no output)"
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "\n[… output cut]"


def _block(block: object) -> str:
    kind = getattr(block, "type", "?")
    if kind == "text":
        return str(getattr(block, "text", ""))
    if kind in ("image", "audio"):
        return f"[{kind} ({getattr(block, 'mime_type', '?')}) not shown]"
    if kind == "resource_link":
        return f"[resource link {getattr(block, 'uri', '?')} not read]"
    if kind == "resource":
        resource = getattr(block, "resource", None)
        return f"[embedded resource {getattr(resource, 'uri', '?')} not shown]"
    return f"[{kind} content not shown]"

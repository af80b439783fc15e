"""MCP tools as our `Tool`s: the server's input schema, arguments checked with jsonschema before
an approval is asked or a call made, a gate on every tool the policy does not list as safe.

Descriptions and annotations come from the server and are untrusted: they are shown to the
approver (`about`) and never decide whether a tool needs an approval.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import logging
from typing import Any

import jsonschema
import mcp.types as types
from pydantic import BaseModel, ConfigDict, create_model, model_validator
from pydantic_core import PydanticCustomError

from bot.mcp_client import McpCallFailed, McpConnection, McpDown, McpRefused
from bot.mcp_names import model_name
from bot.mcp_results import result_text
from bot.policy import McpServer, Policy
from bot.tools import Tool, ToolContext, ToolError, never

log = logging.getLogger("chatops.mcp")

MAX_ERRORS = 3  # schema violations named in one error for the model


class McpArgs(BaseModel):
    """Arguments of an MCP tool: any JSON object that the server's schema accepts."""

    model_config = ConfigDict(extra="allow")
    _validator: Any = None  # set on each tool's subclass
    _input_schema: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise PydanticCustomError("mcp_args", "arguments must be a JSON object")
        errors = sorted(cls._validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            lines = [_error_line(e) for e in errors[:MAX_ERRORS]]
            more = f" (and {len(errors) - MAX_ERRORS} more)" if len(errors) > MAX_ERRORS else ""
            raise PydanticCustomError("mcp_args", "{msg}", {"msg": "; ".join(lines) + more})
        return data

    @classmethod
    def model_json_schema(cls, *_args: Any, **_kwargs: Any) -> dict[str, Any]:
        return dict(cls._input_schema)


def _error_line(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "arguments"
    message = error.message if len(error.message) <= 200 else error.message[:200] + "…"
    return f"{where}: {message}"


def args_model(name: str, schema: dict[str, Any]) -> type[McpArgs]:
    """A pydantic model whose validation is the server's JSON schema (checked to be a schema)."""
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    model = create_model(f"Args_{name}", __base__=McpArgs)
    model._validator = cls(schema)
    model._input_schema = {k: v for k, v in schema.items() if k not in ("$schema", "title")}
    return model


def is_safe(server: McpServer, tool: str, policy: Policy | None = None, key: str = "") -> bool:
    """Listed safe, and no [tools."server.tool"] section asks for approval rules (which add a
    gate: the policy never leaves an operator believing a tool is gated when it is not)."""
    section = policy.tools.get(key) if policy is not None else None
    if section is not None and (section.require_approval or any(
            v is not None for v in (section.approvers, section.two_person, section.quorum, section.approval_ttl))):
        return False
    return any(fnmatch.fnmatchcase(tool, pattern) for pattern in server.safe)


def about(server: str, tool: types.Tool) -> str:
    """What an approver reads about the tool, marked as the server's own claims."""
    lines = [f"MCP server {server}, tool {tool.name}"]
    if tool.description:
        description = " ".join(tool.description.split())
        lines.append("description (from the server): " + (description[:500] + "…" if len(description) > 500
                                                         else description))
    if tool.annotations is not None:
        hints = {k: v for k, v in tool.annotations.model_dump(exclude_none=True).items() if k != "title"}
        if hints:
            lines.append("annotations (from the server, not trusted): "
                         + ", ".join(f"{k}={v}" for k, v in sorted(hints.items())))
    return "\n".join(lines)


def mcp_tool(conn: McpConnection, tool: types.Tool, policy: Policy) -> Tool:
    server = conn.name
    name = model_name(server, tool.name)
    key = f"{server}.{tool.name}"
    if name != f"{server}__{tool.name}":
        policy.alias_mcp_tool(name, key)
    safe = is_safe(conn.config, tool.name, policy, key)
    timeout = policy.tool(name).timeout or conn.config.timeout

    async def handler(values: BaseModel, _ctx: ToolContext) -> str:
        if conn.listed and tool.name not in conn.tools:
            raise ToolError(f"{name}: MCP server {server} no longer offers {tool.name}; not run")
        try:
            result = await conn.call(tool.name, values.model_dump(), timeout)
        except McpDown as exc:
            raise ToolError(f"{exc}; {name} was not run") from None
        except McpRefused as exc:
            raise ToolError(f"{name}: {exc}") from None
        except McpCallFailed as exc:
            raise ToolError(f"{name}: {exc}. Whether it took effect is unknown; it was not retried.") from None
        text = result_text(result)
        if result.is_error:
            raise ToolError(f"{name} failed: {text}")
        return text

    description = (tool.description or tool.title or tool.name)[:1024]
    return Tool(
        name=name, description=description, args=args_model(name, tool.input_schema), handler=handler,
        needs_approval=never if safe else _always, about=about(server, tool), strict=False,
    )


def _always(_args: Any) -> bool:
    return True


class McpSource:
    """The MCP tools of one agent: whole servers (`mcp:git`) or single tools (`mcp:github/x`)."""

    def __init__(self, policy: Policy, conns: dict[str, McpConnection], picks: dict[str, set[str] | None]):
        self.policy = policy
        self.conns = conns
        self.picks = picks  # server -> the tools taken from it (None: all)
        self._built: dict[tuple[str, str], tuple[str, Tool]] = {}

    async def refresh(self) -> None:
        """Start the servers not running yet (lazily, with their back-off); one that is down
        leaves its tools out, the rest of the agent works."""
        await asyncio.gather(*(self._start(self.conns[s]) for s in self.picks), return_exceptions=True)

    async def _start(self, conn: McpConnection) -> None:
        try:
            await conn.ensure()
        except McpDown:
            pass  # logged by the connection; its tools answer with the reason

    def tools(self) -> list[Tool]:
        out = []
        for server, picked in self.picks.items():
            conn = self.conns[server]
            for tool in conn.tools.values():
                if picked is None or tool.name in picked:
                    if (built := self._tool(conn, tool)) is not None:
                        out.append(built)
        return sorted(out, key=lambda t: t.name)  # stable order: the tools are the cached prefix

    def _tool(self, conn: McpConnection, tool: types.Tool) -> Tool | None:
        fingerprint = hashlib.sha256(tool.model_dump_json().encode()).hexdigest()
        cached = self._built.get((conn.name, tool.name))
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        try:
            built = mcp_tool(conn, tool, self.policy)
        except jsonschema.SchemaError as exc:
            log.warning("MCP server %s: tool %s has an invalid input schema (%s); left out",
                        conn.name, tool.name, exc.message[:200])
            return None
        self._built[(conn.name, tool.name)] = (fingerprint, built)
        return built

    def why_missing(self, name: str) -> str | None:
        """Why a model-facing name of this source's servers has no tool now, if it is one of them."""
        server, sep, _ = self.policy.mcp_key(name).partition(".")
        if not sep or server not in self.picks:
            return None
        conn = self.conns[server]
        if conn.session is None and conn.error:
            return f"MCP server {server} is down ({conn.error}); {name} was not run"
        return f"MCP server {server} does not offer {name} (any more); not run"

    def describe(self) -> list[tuple[str, str, str]]:
        """(server, state, tool lines) for doctor and `chatops tools`."""
        rows = []
        for server, picked in self.picks.items():
            conn = self.conns[server]
            names = [t for t in sorted(conn.tools) if picked is None or t in picked]
            safe = {t for t in names if is_safe(conn.config, t, self.policy, f"{server}.{t}")}
            lines = ", ".join(f"{t} ({'safe' if t in safe else 'gated'})" for t in names)
            rows.append((server, conn.state, lines or "-"))
        return rows

    async def close(self) -> None:
        for server in self.picks:
            await self.conns[server].close()

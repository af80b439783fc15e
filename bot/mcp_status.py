"""What `chatops doctor` and `chatops tools AGENT` say about tools: each MCP server's state and
tools, safe or gated (connecting to start them, as a worker would)."""

from __future__ import annotations

from bot.agent import Agent
from bot.mcp_tools import McpSource
from bot.policy import Policy


async def server_findings(agents: dict[str, Agent]) -> list[tuple[str, str]]:
    """(level, message) per MCP server used by an agent: error when it cannot be started."""
    seen: dict[str, tuple[str, str]] = {}
    for agent in agents.values():
        await agent.prepare()
        for source in agent.sources:
            if not isinstance(source, McpSource):
                continue
            for server, state, tools in source.describe():
                if server not in seen or seen[server][1].count("(") < tools.count("("):
                    level = "ok" if state == "up" else "error"
                    seen[server] = (level, f"mcp.{server}: {state}; tools: {tools}")
    return [seen[name] for name in sorted(seen)] + _unknown_sections(agents)


def _unknown_sections(agents: dict[str, Agent]) -> list[tuple[str, str]]:
    """A [tools."server.tool"] section naming a tool the running server does not offer is likely a
    misspelling: its rules apply to nothing."""
    out = []
    for source in {id(s): s for a in agents.values() for s in a.sources if isinstance(s, McpSource)}.values():
        for key in sorted(source.policy.tools):
            server, sep, tool = key.partition(".")
            conn = source.conns.get(server) if sep else None
            if conn is not None and conn.listed and tool not in conn.tools:
                out.append(("warn", f"tools.\"{key}\": MCP server {server} offers no tool {tool!r}"))
    return sorted(set(out))


async def tool_lines(agent: Agent, policy: Policy) -> tuple[list[str], bool]:
    """The lines of `chatops tools AGENT`, and whether every server of it is up."""
    await agent.prepare()
    lines = [f"agent {agent.name}: {agent.description}"]
    for tool in sorted(agent.all_tools, key=lambda t: t.name):
        gate = "gated" if tool.gated else "safe"
        approvers = ", ".join(policy.approvers_for(tool.name)) or "anyone who may talk to the agent"
        lines.append(f"  {tool.name:<40} {gate:<5}" + (f"  approvers: {approvers}" if tool.gated else ""))
    healthy = True
    for source in agent.sources:
        if isinstance(source, McpSource):
            for server, state, _tools in source.describe():
                healthy = healthy and state == "up"
                lines.append(f"  mcp server {server}: {state}")
    return lines, healthy

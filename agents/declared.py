"""Agents declared in the policy file: `[agents.X]` with a `prompt_file` is an agent of its own,
whose tools are MCP servers or single MCP tools (`mcp:git`, `mcp:github/create_pull_request`)
and declared runbooks (`runbook:restart`)."""

from __future__ import annotations

from bot.agent import Agent
from bot.mcp_client import McpConnection
from bot.mcp_tools import McpSource
from bot.policy import AgentPolicy, ConfigError, Policy
from bot.runbook import declared_runbook
from bot.tools import Tool


def connections(policy: Policy) -> dict[str, McpConnection]:
    """One connection per server and process, shared by the agents that use it."""
    return {name: McpConnection(name, config) for name, config in policy.mcp.items()}


def build(name: str, section: AgentPolicy, policy: Policy, conns: dict[str, McpConnection]) -> Agent:
    prompt = (policy.base_dir / section.prompt_file).resolve() if section.prompt_file else None
    if prompt is None or not prompt.is_file():
        raise ConfigError(f"policy: setting 'agents.{name}.prompt_file': no such file: {prompt}")
    runbooks: list[Tool] = []
    picks: dict[str, set[str] | None] = {}  # server -> the tools taken from it (None: all)
    for ref in section.tools:
        kind, _, target = ref.partition(":")
        if kind == "runbook":
            if target not in policy.runbooks:
                raise ConfigError(f"policy: setting 'agents.{name}.tools': no [runbooks.{target}]")
            runbooks.append(declared_runbook(target, policy.runbooks[target], policy))
            continue
        server, _, tool = target.partition("/")
        if server not in policy.mcp:
            raise ConfigError(f"policy: setting 'agents.{name}.tools': no [mcp.{server}]")
        taken = picks.setdefault(server, set())
        if tool and taken is not None:
            taken.add(tool)
        else:
            picks[server] = None  # the whole server
    sources = (McpSource(policy, conns, picks),) if picks else ()
    return Agent(name=name, description=section.description or f"The {name} agent.", prompt=str(prompt),
                 tools=tuple(runbooks), sources=sources)

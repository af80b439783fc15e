"""The shipped agents. To add one: write a module with `build(policy) -> Agent`, list it here, or
declare it in the policy file (`[agents.X]` with a `prompt_file`, see agents/declared.py)."""

from __future__ import annotations

from agents import deploy, digest
from bot.agent import Agent
from bot.policy import ConfigError, Policy

MODULES = [deploy, digest]


def load_agents(policy: Policy) -> dict[str, Agent]:
    agents = [module.build(policy) for module in MODULES]
    sections = {name: s for name, s in policy.agents.items() if s.prompt_file is not None}
    if not sections:  # a section without a prompt file is about a code agent: who may talk to it
        return {agent.name: agent for agent in agents}
    from agents import declared  # the MCP SDK takes seconds to import: only when it is used

    conns = declared.connections(policy)
    for name, section in sections.items():
        if any(agent.name == name for agent in agents):
            raise ConfigError(f"policy: setting 'agents.{name}.prompt_file': {name} is already an agent "
                              "in code; give the declared agent another name")
        agents.append(declared.build(name, section, policy, conns))
    return {agent.name: agent for agent in agents}

"""The shipped agents. To add one: write a module with `build(policy) -> Agent`, list it here, or
declare it in the policy file (`[agents.X]` with a `prompt_file`, see agents/declared.py)."""

from __future__ import annotations

from agents import declared, deploy, digest
from bot.agent import Agent
from bot.policy import ConfigError, Policy

MODULES = [deploy, digest]


def load_agents(policy: Policy) -> dict[str, Agent]:
    agents = [module.build(policy) for module in MODULES]
    conns = declared.connections(policy)
    for name, section in policy.agents.items():
        if section.prompt_file is None:
            continue  # a section about a code agent: who may talk to it
        if any(agent.name == name for agent in agents):
            raise ConfigError(f"policy: setting 'agents.{name}.prompt_file': {name} is already an agent "
                              "in code; give the declared agent another name")
        agents.append(declared.build(name, section, policy, conns))
    return {agent.name: agent for agent in agents}

"""The shipped agents. To add one: write a module with `build(policy) -> Agent`, list it here, or
declare it in the policy file (`[agents.X]` with a `prompt_file`, see agents/declared.py)."""

from __future__ import annotations

from agents import declared, deploy, digest
from bot.agent import Agent
from bot.policy import Policy

MODULES = [deploy, digest]


def load_agents(policy: Policy) -> dict[str, Agent]:
    agents = [module.build(policy) for module in MODULES]
    conns = declared.connections(policy)
    agents += [declared.build(name, section, policy, conns) for name, section in policy.agents.items()
               if section.prompt_file is not None]
    return {agent.name: agent for agent in agents}

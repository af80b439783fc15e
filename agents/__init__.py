"""The shipped agents. To add one: write a module with `build(policy) -> Agent`, list it here."""

from __future__ import annotations

from agents import deploy, digest
from bot.agent import Agent
from bot.policy import Policy

MODULES = [deploy, digest]


def load_agents(policy: Policy) -> dict[str, Agent]:
    agents = [module.build(policy) for module in MODULES]
    return {agent.name: agent for agent in agents}

"""The shipped agents. To add one: write a module with `build(policy) -> Agent` and add its
`build` to the composition root's list (bot/wiring.py `default_wiring`), or declare it in the
policy file (`[agents.X]` with a `prompt_file`, see agents/declared.py)."""

from __future__ import annotations

from bot.agent import Agent
from bot.policy import Policy


def declared_agents(policy: Policy) -> list[Agent]:
    """The agents the policy file declares (`[agents.X]` sections with a prompt file; one without
    is about a code agent: who may talk to it)."""
    sections = {name: s for name, s in policy.agents.items() if s.prompt_file is not None}
    if not sections:
        return []
    from agents import declared  # the MCP SDK takes seconds to import: only when it is used

    conns = declared.connections(policy)
    return [declared.build(name, section, policy, conns) for name, section in sections.items()]

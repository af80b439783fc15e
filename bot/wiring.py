"""The composition root: which channels and agents a process runs, built in one place (the CLI
calls `default_wiring()`) and passed to the runtime.

Adding a channel is one package (or module) implementing `bot.channel.Channel` plus one line in
`shipped_channels` (its settings are its own: it reads them from the environment itself); adding
an agent is one module with `build(policy) -> Agent` plus one line in `default_wiring` (or a
policy section, for a declared agent). The imports are inside the functions: `bot` never imports
`channels` or `agents` at module level, and nothing registers itself on import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.agent import Agent
from bot.channel import Channel
from bot.policy import ConfigError, Policy
from bot.settings import secret_env_names

AgentBuilder = Callable[[Policy], Agent]  # an agent in code: its module's `build`
DeclaredAgents = Callable[[Policy], list[Agent]]  # the agents a policy file declares
# the `Origin.channel` / `via` names the core itself uses (bot/api.py, bot/cli.py): a channel
# taking one would be confused with them in threads and in the approvals' audit
RESERVED_CHANNEL_NAMES = frozenset({"api", "cli"})


@dataclass(frozen=True)
class Wiring:
    channels: Sequence[Channel]
    agents: Sequence[AgentBuilder]
    declared: DeclaredAgents | None = None

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for channel in self.channels:
            if channel.name in RESERVED_CHANNEL_NAMES:
                raise ConfigError(f"channel {channel.name!r}: the core uses that name itself "
                                  f"({', '.join(sorted(RESERVED_CHANNEL_NAMES))}); give the channel another")
            if channel.name in seen:
                raise ConfigError(f"channel {channel.name!r} is wired twice: a thread's origin names one channel")
            seen.add(channel.name)

    def channel(self, name: str) -> Channel | None:
        return next((c for c in self.channels if c.name == name), None)

    def load_agents(self, policy: Policy) -> dict[str, Agent]:
        return load_agents(policy, self.agents, self.declared)

    def secret_env(self) -> frozenset[str]:
        """The environment variables of every channel's secrets (its SecretStr settings)."""
        models = [type(c.settings) for c in self.channels if c.settings is not None]
        return frozenset(name for model in models for name in secret_env_names(model))


def load_agents(policy: Policy, builders: Sequence[AgentBuilder],
                declared: DeclaredAgents | None = None) -> dict[str, Agent]:
    """The agents in code, then those the policy declares (a name may not be taken twice)."""
    agents = {agent.name: agent for agent in (build(policy) for build in builders)}
    for agent in declared(policy) if declared is not None else []:
        if agent.name in agents:
            raise ConfigError(f"policy: setting 'agents.{agent.name}.prompt_file': {agent.name} is already "
                              "an agent in code; give the declared agent another name")
        agents[agent.name] = agent
    return agents


def default_wiring(channels: Sequence[Channel] | None = None) -> Wiring:
    """The shipped channels and agents. Each channel reads its own settings from the environment
    and `.env` (an invalid one raises pydantic's ValidationError); `channels` replaces them
    (tests give channels their settings this way)."""
    from agents import declared_agents, deploy, digest

    return Wiring(
        channels=list(channels) if channels is not None else shipped_channels(),
        agents=[deploy.build, digest.build],
        declared=declared_agents,
    )


def shipped_channels() -> list[Channel]:
    from channels.console import ConsoleChannel
    from channels.email.channel import EmailChannel
    from channels.schedule import ScheduleChannel
    from channels.slack.channel import SlackChannel

    return [SlackChannel(), EmailChannel(), ScheduleChannel(), ConsoleChannel()]

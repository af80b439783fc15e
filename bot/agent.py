"""An agent: one job, a prompt file, a few tools, and who may talk to it."""

from __future__ import annotations

from dataclasses import dataclass

from bot.read_event import READ_EVENT
from bot.tools import ASK_HUMAN, Tool


@dataclass(frozen=True)
class Agent:
    name: str
    description: str
    prompt: str  # the name of a file in prompts/, without .md
    tools: tuple[Tool, ...]
    # An exact command run on each new input before the model is asked: its result is context
    # our code builds (factor 3); with no model configured, that result is the reply.
    prefetch: str | None = None

    def tool(self, name: str) -> Tool | None:
        if name == ASK_HUMAN.name:
            return ASK_HUMAN
        if name == READ_EVENT.name:
            return READ_EVENT
        return next((t for t in self.tools if t.name == name), None)

    @property
    def model_tools(self) -> list[Tool]:
        return [*self.tools, READ_EVENT, ASK_HUMAN]

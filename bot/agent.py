"""An agent: one job, a prompt file, a few tools, and who may talk to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.read_event import READ_EVENT
from bot.tools import ASK_HUMAN, Tool


class ToolSource(Protocol):
    """Tools known at run time (an MCP server's): `refresh` before a step, then read."""

    async def refresh(self) -> None: ...
    def tools(self) -> list[Tool]: ...
    def why_missing(self, name: str) -> str | None: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class Agent:
    name: str
    description: str
    prompt: str  # the name of a file in prompts/, without .md
    tools: tuple[Tool, ...]
    # An exact command run on each new input before the model is asked: its result is context
    # our code builds (factor 3); with no model configured, that result is the reply.
    prefetch: str | None = None
    sources: tuple[ToolSource, ...] = ()

    def tool(self, name: str) -> Tool | None:
        if name == ASK_HUMAN.name:
            return ASK_HUMAN
        if name == READ_EVENT.name:
            return READ_EVENT
        return next((t for t in self.all_tools if t.name == name), None)

    @property
    def all_tools(self) -> list[Tool]:
        return [*self.tools, *(t for source in self.sources for t in source.tools())]

    @property
    def model_tools(self) -> list[Tool]:
        return [*self.all_tools, READ_EVENT, ASK_HUMAN]

    def why_missing(self, name: str) -> str:
        reasons = (source.why_missing(name) for source in self.sources)
        return next((r for r in reasons if r), f"unknown tool {name!r}")

    async def prepare(self) -> None:
        for source in self.sources:
            await source.refresh()

    async def close(self) -> None:
        for source in self.sources:
            await source.close()

"""What a channel that pushes messages out (Slack, email) implements.

The worker that advanced a thread renders the thread's new visible events through the channel
of the thread's origin: replies, approval requests, decisions taken anywhere, questions.
Console and HTTP API clients read the thread instead and need no renderer.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from bot.events import Event
from bot.thread import Thread

if TYPE_CHECKING:
    from bot.runtime import Runtime


class Renderer(Protocol):
    name: str

    async def render(self, thread: Thread, event: Event) -> None:
        """Show `event` on the thread's conversation. Retry transient failures; raise if it
        finally failed (the worker records the failure in the thread)."""
        ...

    async def close(self) -> None: ...


# Channel modules register themselves on import: a service in bot.serve.SERVICES, a renderer
# factory here (called in every process that runs a worker). Doctor checks: bot.doctor.checks().
CHANNEL_MODULES: list[str] = ["channels.slack.app", "channels.email.app", "channels.schedule"]
RENDERERS: list[Callable[["Runtime"], Renderer | None]] = []


def load_channels() -> None:
    for name in CHANNEL_MODULES:
        importlib.import_module(name)


def install_renderers(rt: "Runtime") -> None:
    load_channels()
    for make in RENDERERS:
        renderer = make(rt)
        if renderer is not None:
            rt.renderers[renderer.name] = renderer

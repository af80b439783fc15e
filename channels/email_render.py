"""The email Renderer (`rt.renderers["email"]`): what a thread started by mail shows, by mail,
and what a scheduled thread shows to the schedule's addresses (`render_to`)."""

from __future__ import annotations

import logging
from typing import Any

from bot.events import Event
from bot.thread import Thread
from channels.email_compose import Identity, Outgoing, compose
from channels.email_send import Sender, SendFailed

log = logging.getLogger("chatops.email")


class EmailRenderer:
    name = "email"

    def __init__(self, identity: Identity, sender: Sender) -> None:
        self.identity = identity
        self.sender = sender

    async def render(self, thread: Thread, event: Event) -> None:
        await self.send(thread, event, compose(self.identity, thread, event))

    async def render_to(self, address: dict[str, Any], thread: Thread, event: Event) -> None:
        """Mail an event of another channel's thread (a schedule's) to `address["to"]`."""
        await self.send(thread, event, compose(self.identity, thread, event, to=list(address["to"])))

    async def send(self, thread: Thread, event: Event, outgoing: Outgoing | None) -> None:
        if outgoing is None:
            return
        allowed = [r for r in outgoing.recipients if await self.sender.allow(r)]
        if not allowed:
            raise SendFailed(f"not sent: the hourly limit of mails to {', '.join(outgoing.recipients)} is reached")
        if len(allowed) < len(outgoing.recipients):
            log.warning("thread %s: hourly mail limit reached for some recipients; sent to %s only",
                        thread.id, ", ".join(allowed))
        await self.sender.send(outgoing.message, allowed)
        log.info("thread %s: mailed %s to %s", thread.id, event.type, ", ".join(allowed))

    async def close(self) -> None:
        return None

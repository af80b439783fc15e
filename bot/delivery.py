"""Delivery: showing a thread's new visible events to the humans, through its channels.

Each visible event is delivered at least once: through the thread's origin channel (console and
API clients read the thread themselves), and approval events also by mail to the approvers that
are email addresses, wherever the thread lives. A failed delivery is recorded in the thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Awaitable

from bot import metrics
from bot.approvals import approver_addresses
from bot.events import VISIBLE_TYPES, Error, Event
from bot.runtime import Runtime
from bot.thread import Thread

log = logging.getLogger("chatops.worker.delivery")

# channels whose renderer already mails an approval's approvers (email threads; a schedule's
# renderer forwards to the email channel itself)
MAILS_ITSELF = frozenset({"email", "schedule"})


@dataclass
class Shown:
    """How far a thread is now delivered (None: no channel shows it), and whether a delivery
    failed (its failure was appended to the log, so a cached copy of the thread is stale)."""

    upto: int | None
    failed: bool = False


class Delivery:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def show_new_events(self, thread: Thread) -> Shown:
        """Deliver the visible events after the thread's `rendered` marker; the caller saves
        how far it got."""
        renderer = self.rt.renderers.get(thread.meta.origin.channel)
        mail_to = getattr(self.rt.renderers.get("email"), "render_to", None) \
            if thread.meta.origin.channel not in MAILS_ITSELF else None
        if renderer is None and mail_to is None:
            return Shown(None)
        shown = Shown(thread.version)
        done = await self.rt.store.marker(thread.id, "rendered")
        for index in range(done, thread.version):
            event = thread.events[index]
            if event.type not in VISIBLE_TYPES:
                continue
            if renderer is not None:
                if not await self._send(thread, event, renderer.name, renderer.render(thread, event)):
                    shown.failed = True
            if mail_to is not None and (to := approver_addresses(thread, event)):
                if not await self._send(thread, event, "email", mail_to({"to": to}, thread, event)):
                    shown.failed = True
        return shown

    async def show_on_origin(self, thread: Thread, event: Event) -> None:
        """Deliver one event through the thread's origin channel only, marker aside (the last
        resort when the thread's log cannot be read)."""
        if renderer := self.rt.renderers.get(thread.meta.origin.channel):
            await self._send(thread, event, renderer.name, renderer.render(thread, event))

    async def _send(self, thread: Thread, event: Event, channel: str, sending: Awaitable[None]) -> bool:
        try:
            await sending
            return True
        except Exception as exc:
            metrics.DELIVERIES_FAILED.labels(channel).inc()
            log.warning("rendering %s of thread %s on %s failed: %s", event.type, thread.id, channel, exc,
                        extra={"event": event.type})
            failure = Error(kind="delivery_failed", message=f"{channel}: {exc}")
            await self.rt.store.append(thread.id, failure)
            return False

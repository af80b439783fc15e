"""Delivery: showing a thread's new visible events to the humans, through the channel protocol
(bot/channel.py) only.

Each visible event is delivered at least once: through the renderer of the thread's origin
channel (console and API clients read the thread themselves); and an approval event also to the
approvers that each channel with `notifies_approvers` can `contact`, when the thread does not
already show on that channel (its origin, or a channel its origin relays to). A failed delivery
is recorded in the thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Awaitable

from bot import metrics
from bot.approvals import approval_audience
from bot.channel import Channel, DelegatingRenderer, Forwarder, addresses_of
from bot.events import VISIBLE_TYPES, Error, Event
from bot.runtime import Runtime
from bot.thread import Thread

log = logging.getLogger("chatops.worker.delivery")


@dataclass
class Shown:
    """How far a thread is now delivered (None: no channel shows it), and whether a delivery
    failed (its failure was appended to the log, so a cached copy of the thread is stale)."""

    upto: int | None
    failed: bool = False


class Delivery:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def notifiers(self, thread: Thread) -> list[tuple[Channel, Forwarder]]:
        """The channels that tell approvers of this thread's approvals, in a conversation of their
        own (the thread does not show on them), with their renderers."""
        origin = thread.meta.origin.channel
        renderer = self.rt.renderers.get(origin)
        covered = {origin, *(renderer.relays_to(thread) if isinstance(renderer, DelegatingRenderer) else ())}
        out: list[tuple[Channel, Forwarder]] = []
        for channel in self.rt.channels.values():
            forwarder = self.rt.renderers.get(channel.name)
            if channel.notifies_approvers and channel.name not in covered and isinstance(forwarder, Forwarder):
                out.append((channel, forwarder))
        return out

    async def show_new_events(self, thread: Thread) -> Shown:
        """Deliver the visible events after the thread's `rendered` marker; the caller saves
        how far it got."""
        renderer = self.rt.renderers.get(thread.meta.origin.channel)
        notifiers = self.notifiers(thread)
        if renderer is None and not notifiers:
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
            for channel, forwarder in notifiers:
                to = addresses_of(channel, approval_audience(thread, event, channel.name))
                if to and not await self._send(thread, event, channel.name, forwarder.deliver_to(to, thread, event)):
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

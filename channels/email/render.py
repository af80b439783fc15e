"""The email Renderer (`rt.renderers["email"]`): what a thread started by mail shows, by mail,
and (`deliver_to`, a `bot.channel.Forwarder`) what another channel's thread shows to mailboxes:
a schedule's addresses, or the approvers of a Slack or console thread."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from bot.channel import Address
from bot.events import Event
from bot.thread import Thread
from channels.email.channel import Mailbox
from channels.email.compose import Identity, Outgoing, compose
from channels.email.send import Sender, SendFailed

log = logging.getLogger("chatops.email")


class EmailRenderer:
    name = "email"

    def __init__(self, identity: Identity, sender: Sender,
                 title: Callable[[Thread], str] = lambda thread: Address().title(thread)) -> None:
        self.identity = identity
        self.sender = sender
        self.title = title  # another channel's thread, as its channel names it (the subject)

    async def render(self, thread: Thread, event: Event) -> None:
        await self.send(thread, event, compose(self.identity, thread, event))

    async def deliver_to(self, addresses: Sequence[Address], thread: Thread, event: Event) -> None:
        """Mail an event of another channel's thread to `addresses` (`Mailbox`es)."""
        to = [a.address for a in addresses if isinstance(a, Mailbox)]
        await self.send(thread, event, compose(self.identity, thread, event, to=to,
                                                       title=self.title(thread)))

    async def send(self, thread: Thread, event: Event, mails: list[Outgoing]) -> None:
        """Send every mail; then, if any recipient went without (the hourly limit, a relay
        failure), raise SendFailed: the worker records it in the thread as `delivery_failed`."""
        failures: list[str] = []
        for outgoing in mails:
            # counted all the same; an approver's mail about their approval is never dropped
            allowed = [r for r in outgoing.recipients
                       if await self.sender.allow(r) or r in outgoing.exempt]
            dropped = [r for r in outgoing.recipients if r not in allowed]
            if dropped:
                failures.append(f"not sent to {', '.join(dropped)}: the hourly limit of mails is reached")
            if not allowed:
                continue
            try:
                await self.sender.send(outgoing.message, allowed)
            except SendFailed as exc:
                failures.append(f"to {', '.join(allowed)}: {exc}")
                continue
            log.info("thread %s: mailed %s to %s", thread.id, event.type, ", ".join(allowed))
        if failures:
            raise SendFailed("; ".join(failures))

    async def close(self) -> None:
        return None

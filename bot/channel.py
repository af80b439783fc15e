"""What a channel is to the core: one object per channel, implementing the protocol below. The
composition root (bot/wiring.py `default_wiring`, built by the CLI) lists them and passes them to
the runtime; the core never imports a channel.

A channel may receive (its `service`: an HTTP route on the bot's app, a socket, an SMTP server,
a clock), show a thread's visible events (its `renderer`, for threads whose origin it is), and be
forwarded to (a renderer that is also a `Forwarder`: a schedule's results, approvers reached
out of their thread). How it names a conversation or a person is its own typed `Address`, kept as
JSON in the thread's origin. Its settings are its own too (read from the environment under its own
variable names, e.g. SLACK_…), held by the channel object and passed down to its parts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from bot.events import Event
from bot.thread import Thread

if TYPE_CHECKING:
    from fastapi import FastAPI
    from pydantic_settings import BaseSettings

    from bot.doctor import DoctorCheck
    from bot.runtime import Runtime


class Address(BaseModel):
    """A place or person on one channel (a Slack channel, a mailbox). Each channel subclasses it;
    stored as JSON (`Origin.address`), read back with the channel's own model."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    def title(self, thread: Thread) -> str:
        """How another channel names `thread`'s conversation when it shows it (a mail's subject);
        a channel whose origins say more (a schedule's name and time) overrides it."""
        return f"{thread.agent} agent: thread {thread.id} ({thread.meta.origin.channel})"


class Renderer(Protocol):
    name: str

    async def render(self, thread: Thread, event: Event) -> None:
        """Show `event` on the thread's own conversation. Retry transient failures; raise if it
        finally failed (delivery records the failure in the thread)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Forwarder(Protocol):
    """A renderer that also shows events of threads it does not own (a schedule's, or an approval
    to approvers it reaches), at addresses it parsed itself (`Channel.target`, `Channel.contact`)."""

    name: str

    async def deliver_to(self, addresses: Sequence[Address], thread: Thread, event: Event) -> None:
        """Show `event` at `addresses` as for its own threads, keeping what continues the
        conversation there (a Slack thread, a Message-ID) keyed by `thread.id`."""
        ...


@runtime_checkable
class DelegatingRenderer(Protocol):
    """A renderer that shows its threads through other channels (a schedule's destinations).
    Those channels' renderers tell the approvers themselves, as for their own threads, so
    delivery does not tell them a second time."""

    def relays_to(self, thread: Thread) -> Collection[str]:
        """The names of the channels `thread`'s events are forwarded to."""
        ...


class Channel(Protocol):
    name: str  # the `Origin.channel` of the threads it starts
    # whether delivery tells the approvers it can `contact` of approval events in threads of
    # other channels (email: a reply address that decides)
    notifies_approvers: bool

    @property
    def settings(self) -> BaseSettings | None:
        """Its own settings (an `EnvSettings` under its own variable names), or None if it has
        none. The core reads none of them: it only keeps their secrets from runbooks."""
        ...

    def configured(self) -> bool:
        """Whether it is set up to send: a schedule's target on it is an error otherwise."""
        ...

    def service(self, rt: Runtime, app: FastAPI) -> Awaitable[None] | None:
        """What it runs in `chatops run` (given the HTTP app to add routes to), or None."""
        ...

    def renderer(self, rt: Runtime) -> Renderer | None:
        """Its renderer in a process that delivers (a worker), or None when it cannot send."""
        ...

    def target(self, name: str) -> Address:
        """A destination named in the policy (a schedule's `to`); ValueError if malformed."""
        ...

    def contact(self, person: str) -> Address | None:
        """How it reaches an approver named `person` in the policy, or None if not its kind."""
        ...

    def checks(self) -> Sequence[DoctorCheck]:
        """Its `chatops doctor` checks."""
        ...


@runtime_checkable
class Addressed(Protocol):
    """A channel whose origin addresses other channels read (its `Address.title`)."""

    def address(self, data: Mapping[str, Any]) -> Address:
        """Its own origin address, read from the JSON stored in `Origin.address`."""
        ...


def origin_address(channels: Mapping[str, Channel], thread: Thread) -> Address:
    """`thread`'s origin address as its channel reads it; a channel that does not say reads as
    the plain `Address` (its defaults)."""
    channel = channels.get(thread.meta.origin.channel)
    if isinstance(channel, Addressed):
        return channel.address(thread.meta.origin.address)
    return Address()


def addresses_of(channel: Channel, people: Sequence[str]) -> list[Address]:
    """The people `channel` can reach, each once."""
    found = (channel.contact(p) for p in people)
    return list(dict.fromkeys(a for a in found if a is not None))


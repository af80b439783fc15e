"""Slack outbound: what the worker shows in the thread's Slack conversation.

Replies and questions go to the thread; an approval request is a Block Kit message whose channel
and ts are kept in Redis so that a decision taken anywhere (a click, the API, the console, an
email), even hours later, replaces its buttons with `chat.update`. Failures raise: 429s are
retried by the client (after Retry-After), anything else is recorded in the thread by the worker.

A scheduled thread (`deliver_to`, for the schedule channel) has no Slack thread to start from:
its first message is posted top-level in the schedule's channel and starts one, and everything
after goes in it. Redis keeps both directions, so that a reply there continues that thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.channel import Address
from bot.events import (
    INPUT_TYPES,
    VISIBLE_TYPES,
    AgentReply,
    ApprovalDecided,
    ApprovalEscalated,
    ApprovalRefused,
    ApprovalReminder,
    ApprovalRequested,
    ApprovalVote,
    Event,
    HumanQuestion,
    Notice,
    ScheduleMissed,
)
from bot.runtime import Runtime
from bot.thread import Thread, ThreadMeta
from channels.slack import blocks
from channels.slack import keys as slack_keys
from channels.slack.channel import SlackPlace
from channels.slack.settings import SlackSettings
from channels.slack.signing import sign

log = logging.getLogger("chatops.slack")

KEEP_MESSAGE_REF = 7 * 86400.0  # after the approval's expiry, for late decisions of other channels
UNREACTED = "unreacted"  # thread meta marker: the log position up to which reactions are off


def address_key(team: str, channel: str, thread_ts: str) -> str:
    return f"{team}:{channel}:{thread_ts}"


@dataclass
class Place:
    """Where a thread's messages go: a Slack thread, or (thread_ts None) a channel, where the
    first message posted starts the Slack thread of the scheduled thread `meta`."""

    channel: str
    thread_ts: str | None
    meta: ThreadMeta | None = None


class SlackRenderer:
    name = "slack"

    def __init__(self, rt: Runtime, client: AsyncWebClient, settings: SlackSettings) -> None:
        self.rt = rt
        self.client = client
        self.settings = settings

    async def render(self, thread: Thread, event: Event) -> None:
        origin = SlackPlace.model_validate(thread.meta.origin.address)
        await self.show(thread, event, Place(origin.channel, origin.thread_ts))

    async def deliver_to(self, addresses: Sequence[Address], thread: Thread, event: Event) -> None:
        """Show an event of another channel's thread (a schedule's) in each `SlackPlace`'s channel,
        in the Slack thread its first message there started."""
        for address in addresses:
            if not isinstance(address, SlackPlace):
                raise TypeError(f"not a Slack address: {address!r}")
            key = slack_keys.thread(self.rt.store.keys, thread.id)
            root = await self.rt.redis.hget(key, address.channel)
            await self.show(thread, event, Place(address.channel, _s(root) if root else None, thread.meta))

    async def show(self, thread: Thread, event: Event, place: Place) -> None:
        try:
            await self._show(thread, event, place)
        finally:  # even if showing the turn's last event failed: nothing else would clear it
            if thread.state != "working" and event is _last_visible(thread):
                await clear_working(self.rt, self.client, self.settings.working_reaction, thread)

    async def _show(self, thread: Thread, event: Event, place: Place) -> None:
        if isinstance(event, (AgentReply, Notice)):
            await self.say(place, event.text)
        elif isinstance(event, HumanQuestion):
            await self.say(place, f"❓ {event.question}")
        elif isinstance(event, ApprovalRequested):
            await self._request(place, event)
        elif isinstance(event, ApprovalDecided):
            await self._decided(thread, place, event)
        elif isinstance(event, ApprovalVote):
            await self._voted(thread, place, event)
        elif isinstance(event, ApprovalRefused) and event.via != "slack":
            # refusals of Slack users were already explained to them, privately
            text = f"A decision on `{event.approval_id}` by {blocks.who(event.by)} via " \
                   f"{blocks.escape(event.via)} was refused: {blocks.escape(event.reason)}"
            await self.post(place, text, [blocks.context(text)])
        elif isinstance(event, (ApprovalReminder, ApprovalEscalated)):
            text = nudge_text(event)
            await self.post(place, text, [blocks.section(text)])
        elif isinstance(event, ScheduleMissed):
            text = f"Schedule `{blocks.escape(event.schedule)}` missed {event.missed} run(s) up to " \
                   f"{blocks.when(event.scheduled_for)} while the bot was down; not run (older than " \
                   f"the grace of {event.grace:g} s)."
            await self.post(place, text, [blocks.section(text)])

    async def close(self) -> None:
        session = getattr(self.client, "session", None)
        if session is not None:
            await session.close()

    # ---- messages ----------------------------------------------------------------------------

    async def say(self, place: Place, markdown: str) -> None:
        for fallback, section_blocks in blocks.reply_messages(markdown):
            await self.post(place, fallback, section_blocks)

    async def post(self, place: Place, text: str, body: list[dict[str, Any]]) -> str:
        response = await self.client.chat_postMessage(
            channel=place.channel, thread_ts=place.thread_ts, text=text, blocks=body, unfurl_links=False
        )
        ts = response["ts"]
        if place.thread_ts is None:
            place.thread_ts = ts
            await self._started(place)
        return ts

    async def _started(self, place: Place) -> None:
        """Remember the Slack thread a scheduled thread's first message started, both ways. The
        reverse holds the thread's meta (it never changes), which is what the inbound listener
        reads for a thread of its own: one lookup serves both."""
        assert place.meta is not None and place.thread_ts is not None
        keys = self.rt.store.keys
        pipe = self.rt.redis.pipeline(transaction=False)
        pipe.hset(slack_keys.thread(keys, place.meta.id), place.channel, place.thread_ts)
        pipe.set(slack_keys.posted(keys, place.channel, place.thread_ts), place.meta.model_dump_json())
        await pipe.execute()

    async def _request(self, place: Place, request: ApprovalRequested) -> None:
        key = self.rt.settings.signing_key
        approve = sign(key, "approve", request.approval_id) if key else None
        reject = sign(key, "reject", request.approval_id) if key else None
        text = f"Approval needed to run {blocks.escape(request.tool)}"
        ts = await self.post(place, text, blocks.approval_blocks(request, approve, reject))
        ref = slack_keys.approval(self.rt.store.keys, request.approval_id)
        ttl = max(request.expires_at - time.time(), 0) + KEEP_MESSAGE_REF
        pipe = self.rt.redis.pipeline(transaction=False)
        pipe.hset(ref, mapping={"channel": place.channel, "ts": ts})
        pipe.expire(ref, int(ttl))
        await pipe.execute()

    async def _voted(self, thread: Thread, place: Place, vote: ApprovalVote) -> None:
        """A vote that did not decide: the approval message shows the votes, buttons kept."""
        request = thread.approvals.get(vote.approval_id)
        ref = await self.rt.redis.hgetall(slack_keys.approval(self.rt.store.keys, vote.approval_id))
        if request is None or not ref or vote.approval_id in thread.decisions:
            return  # nothing to update, or the decision's own update shows it all
        key = self.rt.settings.signing_key
        approve = sign(key, "approve", request.approval_id) if key else None
        reject = sign(key, "reject", request.approval_id) if key else None
        await self.client.chat_update(
            channel=_s(ref[b"channel"]), ts=_s(ref[b"ts"]), text=f"Approval needed to run {request.tool}",
            blocks=blocks.approval_blocks(request, approve, reject, vote.people),
        )

    async def _decided(self, thread: Thread, place: Place, decision: ApprovalDecided) -> None:
        request = thread.approvals.get(decision.approval_id)
        ref = await self.rt.redis.hgetall(slack_keys.approval(self.rt.store.keys, decision.approval_id))
        text = blocks.outcome_text(decision)
        if request is None or not ref:
            await self.post(place, text, [blocks.section(text)])
            return
        await self.client.chat_update(
            channel=_s(ref[b"channel"]), ts=_s(ref[b"ts"]), text=text,
            blocks=blocks.decided_blocks(request, decision),
        )


# ---- the working indicator: a reaction on each Slack message the thread took, until its turn ends
# Which messages carry it is read off the log (each Slack input's delivery id names its channel
# and ts); a marker in the thread's meta says up to where the reactions were taken off.

def slack_inputs(events: list[Event]) -> list[tuple[str, str]]:
    """(channel, ts) of the Slack messages among `events`."""
    out = []
    for event in events:
        delivery = event.source.external_id or ""
        if event.type in INPUT_TYPES and delivery.startswith("slack:"):
            _, _team, channel, ts = delivery.split(":", 3)
            out.append((channel, ts))
    return out


async def show_working(rt: Runtime, client: AsyncWebClient, reaction: str, thread_id: str, channel: str,
                       ts: str, position: int) -> None:
    """React to the message that became the `position`th event of the thread. This runs after
    the ack, so the turn may be over already: if `clear_working` passed that position meanwhile,
    its remove may have come first; undo the add."""
    try:
        await client.reactions_add(channel=channel, timestamp=ts, name=reaction)
    except SlackApiError as exc:
        log.info("could not add the working reaction: %s", exc.response.get("error"))
    if await rt.store.marker(thread_id, UNREACTED) >= position:
        await _unreact(client, reaction, channel, ts)


async def clear_working(rt: Runtime, client: AsyncWebClient, reaction: str, thread: Thread) -> None:
    """Take the working reaction off the Slack messages the thread took since the last time. The
    marker moves first, so that a reaction added after this takes itself off (`show_working`)."""
    done = await rt.store.marker(thread.id, UNREACTED)
    await rt.store.set_marker(thread.id, UNREACTED, thread.version)
    for channel, ts in slack_inputs(thread.events[done:thread.version]):
        await _unreact(client, reaction, channel, ts)


async def _unreact(client: AsyncWebClient, reaction: str, channel: str, ts: str) -> None:
    try:
        await client.reactions_remove(channel=channel, timestamp=ts, name=reaction)
    except SlackApiError as exc:  # no_reaction and the like: the indicator is cosmetic
        log.info("could not clear the working reaction: %s", exc.response.get("error"))


def _last_visible(thread: Thread) -> Event | None:
    return next((e for e in reversed(thread.events) if e.type in VISIBLE_TYPES), None)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def nudge_text(event: ApprovalReminder | ApprovalEscalated) -> str:
    """A reminder or an escalation, in the approval's Slack thread; its buttons still decide."""
    call = f"`{blocks.escape(event.tool)}`"
    who = ", ".join(blocks.who(a) for a in event.approvers if "@" not in a) or "the approvers"
    if isinstance(event, ApprovalReminder):
        return (f":alarm_clock: Reminder: the approval of {call} is still undecided and expires "
                f"{blocks.when(event.expires_at)}. Approvers: {who}.")
    return (f":arrow_up: Escalated: nobody decided the approval of {call} in time, so {who} may "
            f"decide it too (the buttons above). It expires {blocks.when(event.expires_at)}.")

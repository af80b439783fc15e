"""Slack inbound: mentions, follow-ups in the bot's threads, direct messages.

A listener only verifies (Bolt checked the signature), drops what is not for us, appends through
`Intake.message` (which drops a delivery seen before) and returns: Bolt acknowledges after it
(process_before_response), so nothing is acknowledged that is not stored, and if Redis is down
the listener raises and Slack gets a 500 and retries. No agent work runs here; Web API calls
(the working reaction, refusals) are sent after the ack, in the background.

A typed `approve` / `reject <reason>` in a thread waiting for an approval is decided here instead,
under the same dedupe claim of the message, so that a retry or the twin event has no second effect.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Coroutine
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.events import ApprovalRequested, Source
from bot.intake import DEDUPE_TTL, thread_id_for
from bot.policy import Policy
from bot.routing import route
from bot.runtime import Runtime
from bot.store import ThreadNotFound
from bot.thread import Origin, ThreadMeta
from channels.slack import keys as slack_keys
from channels.slack.blocks import escape
from channels.slack.channel import SlackPlace
from channels.slack.people import UNVERIFIED, ProfileUnavailable, profile_emails
from channels.slack.render import address_key, show_working
from channels.slack.settings import SlackSettings

log = logging.getLogger("chatops.slack")

# Message subtypes that are a person (or, if allowed, a bot) saying something; edits, joins,
# deletions and the like are not.
_SAYING = {None, "file_share", "thread_broadcast", "bot_message"}
# A typed decision is the whole message: `approve`, `approved` or `reject [reason]`, with no
# more than a closing `.`/`!`. Anything else ("approve? what does it touch") goes to the agent.
_APPROVE = re.compile(r"approved?[.!\s]*", re.IGNORECASE)
_REJECT = re.compile(r"reject(?:[.!\s]*|[\s:,-]+(.*))", re.IGNORECASE | re.DOTALL)
DECIDING = "deciding"  # the claim's value while a delivery of the message decides
DECIDING_TTL = 30  # bounds a claim left "deciding" by a process that died mid-decision
TWIN_WAIT = 2.0  # how long a second delivery waits for the first to finish deciding
CLOSE_WAIT = 5.0  # how long a closing runtime lets the calls sent after an ack finish


class Later:
    """The Web API calls sent after an ack (the working reaction, refusals, the reject form),
    run without holding the response. One per Slack service, closed with the runtime."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task] = set()

    def __call__(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` in the background, and log its failure."""
        async def run() -> None:
            try:
                await coro
            except SlackApiError as exc:
                log.warning("Slack call failed: %s", exc.response.get("error"))
            except Exception:
                log.exception("Slack call failed")

        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def flush(self) -> None:
        """Wait for the calls started so far, and those they start (tests count them after this)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def close(self) -> None:
        """Let the calls still running finish for a moment, then stop them."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=CLOSE_WAIT)
        left = list(self.tasks)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)


async def _release(rt: Runtime, key: str) -> None:
    try:
        await rt.redis.delete(key)
    except Exception as exc:  # Redis is down: the claim expires after DECIDING_TTL instead
        log.warning("could not release the claim %s: %s", key, exc)


def typed_decision(text: str) -> tuple[bool, str] | None:
    """(approve, reason) if `text` (its mention stripped) is a decision, else None."""
    if _APPROVE.fullmatch(text):
        return True, ""
    if match := _REJECT.fullmatch(text):
        return False, (match.group(1) or "").strip()
    return None


def strip_mention(text: str, bot_user_id: str | None) -> str:
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", "", text)
    return text.strip()


def refusal(policy: Policy, agent: str, user: str | None, channel: str) -> str | None:
    """Why `user` may not talk to `agent` in `channel` (the agent's allowlists), or None."""
    allowed = policy.agent(agent)
    if allowed.users and not policy.allows(allowed.users, user):
        return f"Sorry, I can't take requests for the {agent} agent from you. " \
               "Ask whoever runs me to add you to its allowlist."
    if allowed.channels and channel.lower() not in {c.lower() for c in allowed.channels}:
        return f"Sorry, the {agent} agent doesn't take requests in this conversation. " \
               "Please ask in one of its channels."
    return None


class Inbound:
    def __init__(self, rt: Runtime, client: AsyncWebClient, settings: SlackSettings, later: Later) -> None:
        self.rt = rt
        self.client = client
        self.settings = settings
        self.later = later

    def register(self, app: AsyncApp) -> None:
        app.event("app_mention")(self.on_mention)
        app.event("message")(self.on_message)

    async def on_mention(self, body: dict, event: dict, context: dict) -> None:
        await self.handle(body, event, context, mentioned=True)

    async def on_message(self, body: dict, event: dict, context: dict) -> None:
        await self.handle(body, event, context, mentioned=event.get("channel_type") == "im")

    async def handle(self, body: dict, event: dict, context: dict, *, mentioned: bool) -> None:
        if not isinstance(event.get("subtype") or "", str) or not self._is_saying(event):
            return
        team = body.get("team_id") or event.get("team") or context.get("team_id") or ""
        channel, ts, user = event.get("channel"), event.get("ts"), event.get("user") or event.get("bot_id")
        if not (isinstance(channel, str) and isinstance(ts, str) and isinstance(team, str)
                and isinstance(user, str)) or \
                not all(isinstance(event.get(f) or "", str) for f in ("text", "thread_ts")):
            # acknowledged (a retry would be the same) and dropped
            log.warning("dropped a Slack %s event without a channel, ts, user or text: %s",
                        event.get("type"), body.get("event_id"))
            return
        thread_ts = event.get("thread_ts") or ts
        thread_id = thread_id_for("slack", address_key(team, channel, thread_ts))
        text = strip_mention(event.get("text") or "", context.get("bot_user_id"))
        meta = await self._known(thread_id, channel, event.get("thread_ts"))
        if meta is None and not mentioned:
            return  # a message in a conversation the bot is not part of
        message_id = f"slack:{team}:{channel}:{ts}"
        if meta is not None:
            thread_id, agent = meta.id, meta.agent
            if await self._typed_decision(thread_id, message_id, text, user, channel, thread_ts):
                return
        else:
            agent, text = self._route(channel, text)
        if why := refusal(self.rt.policy, agent, user, channel):
            self.later(self.client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread_ts, text=why))
            return
        if meta is None and not (admission := await self.rt.intake.admit(user, thread_id)).ok:
            if admission.tell:
                text = admission.refusal(self.rt.settings.requests_per_hour)
                self.later(self.client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread_ts, text=text))
            return
        try:
            also = await profile_emails(self.rt, self.client, self.settings, user)
        except ProfileUnavailable:
            self.later(self.client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread_ts, text=UNVERIFIED))
            return
        appended = await self.rt.intake.message(
            thread_id, agent=agent, text=text or "(empty message)",
            origin=Origin(channel="slack", address=SlackPlace(team=team, channel=channel, thread_ts=thread_ts).model_dump()),
            # one message, one event: Slack's retries and the app_mention + message pair of the
            # same message share (team, channel, ts), a stricter key than the event_id
            source=Source(channel="slack", user=user, external_id=message_id, also=also),
        )
        if appended.ok:
            self.later(show_working(self.rt, self.client, self.settings.working_reaction, thread_id, channel, ts,
                               appended.version))

    async def _known(self, thread_id: str, channel: str, thread_ts: str | None) -> ThreadMeta | None:
        """The thread this Slack conversation already belongs to: its own (`thread_id`), or, for
        a reply in a Slack thread the bot started for a scheduled thread, that one. One round
        trip either way: the reverse lookup rides in the same pipeline."""
        store = self.rt.store
        pipe = self.rt.redis.pipeline(transaction=False)
        store.queue_meta(pipe, thread_id)
        if thread_ts is not None:  # else a top-level message: only its own thread can exist
            pipe.get(slack_keys.posted(store.keys, channel, thread_ts))
        own, *started = await pipe.execute()
        info = own if own is not None or not started else started[0]
        return ThreadMeta.model_validate_json(info) if info is not None else None

    def _is_saying(self, event: dict) -> bool:
        subtype = event.get("subtype")
        if subtype not in _SAYING:
            return False
        if event.get("bot_id") or subtype == "bot_message":
            return self.settings.allow_bots  # our own are dropped by Bolt already
        return bool(event.get("user"))

    def _route(self, channel: str, text: str) -> tuple[str, str]:
        routed = self.rt.policy.routes.get(channel)
        if routed in self.rt.agents:
            return routed, text
        return route(text, self.rt.agents, self.rt.settings.default_agent)

    async def _typed_decision(
        self, thread_id: str, message_id: str, text: str, user: str, channel: str, thread_ts: str
    ) -> bool:
        """`approve` or `reject <reason>` in a thread waiting for one approval decides it
        (authorized like any decision). True if the message was taken as a decision."""
        decision = typed_decision(text)
        if decision is None:
            return False
        try:
            # the open approvals' events only: an ack costs the same in a long thread
            pending = (await self.rt.store.load_open_approvals(thread_id)).pending_approvals()
        except ThreadNotFound:
            return False
        if not pending:
            return False
        # Intake's dedupe claim of this message: a retry, or the app_mention/message twin of it,
        # finds it taken here or in intake, and has no second effect.
        claim = self.rt.store.keys.claim(thread_id, f"ext:{message_id}")
        if not await self._claim(claim):
            return True
        try:
            if len(pending) > 1:
                said: str | None = self._which_one(pending)
            else:
                approve, reason = decision
                try:
                    also = await profile_emails(self.rt, self.client, self.settings, user)
                except ProfileUnavailable:
                    also = None
                outcome = await self.rt.approvals.decide(pending[0].approval_id, approve, user, "slack", reason,
                                                         also=also) if also is not None else None
                # the message update shows a decision; explain the rest
                said = UNVERIFIED if outcome is None else outcome.message if outcome.status != "decided" else None
        except BaseException:  # not decided: Slack's retry must find the message unclaimed
            await _release(self.rt, claim)
            raise
        await self.rt.redis.set(claim, "decided", ex=int(DEDUPE_TTL))
        if said:
            self.later(self.client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread_ts,
                                                 text=escape(said)))  # may quote a person's reason
        return True

    async def _claim(self, key: str) -> bool:
        """True if this delivery decides; False if another already has (or intake stored the
        message). While another delivery is still deciding, wait for it: the twin event comes a
        few milliseconds apart, and a retry must not be acknowledged for a decision that may yet
        fail. If it does not finish in time, raise: Slack gets a 500 and tries again later."""
        deadline = time.monotonic() + TWIN_WAIT
        while not await self.rt.redis.set(key, DECIDING, nx=True, ex=DECIDING_TTL):
            held = await self.rt.redis.get(key)
            if held is not None and held != DECIDING.encode():
                return False
            if time.monotonic() > deadline:
                raise TimeoutError(f"another delivery of {key} is still deciding")
            await asyncio.sleep(0.02)
        return True

    def _which_one(self, pending: list[ApprovalRequested]) -> str:
        """Several approvals wait in this thread: a typed decision would be a guess."""
        tools = ", ".join(f"`{p.tool}`" for p in pending)
        if self.rt.settings.signing_key is not None:
            how = "use the Approve / Reject buttons on the approval you mean"
        else:
            how = "decide by id with `chatops approve ID` or `chatops reject ID --reason WHY` (or the " \
                  "HTTP API); the ids: " + ", ".join(f"`{p.approval_id}`" for p in pending)
        return f"{len(pending)} approvals are waiting in this thread ({tools}), so I can't tell which one " \
               f"you mean; nothing was decided. Please {how}."

"""Slack approvals: the Approve and Reject buttons, and the modal that asks why.

A click is checked twice: the button value must carry our signature for that approval and that
action, and the clicking user must be an approver, decided on the server by `Approvals.decide`
(which records refusals, lets the first decision win and turns a late click into "expired").
Reject opens the form that asks why only for an undecided, unexpired approval the clicker may
decide; any other click on it is answered (and recorded) as one on Approve would be.
The message itself is updated by the renderer when the worker sees the decision, the same way
as for a decision taken on any other channel; the clicker gets a private word for the rest.
"""

from __future__ import annotations

import json
import logging

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.approvals import Outcome
from bot.events import ApprovalRequested
from bot.runtime import Runtime
from channels.slack import blocks
from channels.slack.inbound import Later
from channels.slack.people import UNVERIFIED, ProfileUnavailable, profile_emails
from channels.slack.settings import SlackSettings
from channels.slack.signing import verify

log = logging.getLogger("chatops.slack")

INVALID = "This button is not one the bot offered (or its signature is wrong); nothing was done."


class Actions:
    def __init__(self, rt: Runtime, client: AsyncWebClient, settings: SlackSettings, later: Later) -> None:
        self.rt = rt
        self.client = client
        self.settings = settings
        self.later = later

    def register(self, app: AsyncApp) -> None:
        app.action(blocks.APPROVE)(self.on_approve)
        app.action(blocks.REJECT)(self.on_reject)
        app.view(blocks.REJECT_VIEW)(self.on_reject_reason)

    async def on_approve(self, ack: AsyncAck, body: dict, action: dict) -> None:
        user, channel, thread_ts = _where(body)
        approval_id = verify(self.rt.settings.signing_key, "approve", action.get("value", ""))
        if approval_id is None:
            await ack()
            log.warning("refused an approve click by %s with an invalid value", user)
            self._tell(channel, user, thread_ts, INVALID)
            return
        try:
            also = await profile_emails(self.rt, self.client, self.settings, user)
        except ProfileUnavailable:
            await ack()
            self._tell(channel, user, thread_ts, UNVERIFIED)
            return
        outcome = await self.rt.approvals.decide(approval_id, True, user, "slack", also=also)
        await ack()
        if outcome.status != "decided":
            self._tell(channel, user, thread_ts, outcome.message)

    async def on_reject(self, ack: AsyncAck, body: dict, action: dict) -> None:
        user, channel, thread_ts = _where(body)
        value = action.get("value", "")
        approval_id = verify(self.rt.settings.signing_key, "reject", value)
        if approval_id is None:
            await ack()
            log.warning("refused a reject click by %s with an invalid value", user)
            self._tell(channel, user, thread_ts, INVALID)
            return
        request = await self._to_reject(approval_id, user)
        await ack()
        if isinstance(request, str):
            self._tell(channel, user, thread_ts, request)
            return
        metadata = json.dumps({"value": value, "channel": channel, "thread_ts": thread_ts})
        self.later(self.client.views_open(
            trigger_id=body["trigger_id"], view=blocks.reject_view(metadata, request.tool)
        ))

    async def _to_reject(self, approval_id: str, user: str) -> ApprovalRequested | str:
        """The approval `user` may be asked a reason to reject, or why not: it is gone, decided,
        expired, or not theirs to decide (the last two recorded as a click on Approve would be)."""
        try:
            also = await profile_emails(self.rt, self.client, self.settings, user)
        except ProfileUnavailable:
            return UNVERIFIED
        screened = await self.rt.approvals.screen(approval_id, user, "slack", also=also)
        return screened.message if isinstance(screened, Outcome) else screened

    async def on_reject_reason(self, ack: AsyncAck, body: dict, view: dict) -> None:
        user = body["user"]["id"]
        try:
            metadata = json.loads(view.get("private_metadata") or "{}")
        except ValueError:
            metadata = {}
        approval_id = verify(self.rt.settings.signing_key, "reject", str(metadata.get("value", "")))
        if approval_id is None:
            log.warning("refused a reject form by %s with an invalid value", user)
            await ack(response_action="errors", errors={blocks.REASON_BLOCK: INVALID})
            return
        values = view["state"]["values"]
        reason = (values.get(blocks.REASON_BLOCK, {}).get(blocks.REASON_BLOCK, {}).get("value") or "").strip()
        try:
            also = await profile_emails(self.rt, self.client, self.settings, user)
        except ProfileUnavailable:
            await ack(response_action="errors", errors={blocks.REASON_BLOCK: UNVERIFIED})
            return
        outcome = await self.rt.approvals.decide(approval_id, False, user, "slack", reason, also=also)
        if outcome.status == "decided":
            await ack()
        else:  # refused, already decided, expired: said in the form, which stays open
            await ack(response_action="errors", errors={blocks.REASON_BLOCK: outcome.message[:300]})

    def _tell(self, channel: str | None, user: str, thread_ts: str | None, text: str) -> None:
        if channel:
            self.later(self.client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread_ts,
                                                 text=blocks.escape(text)))  # may quote a person


def _where(body: dict) -> tuple[str, str | None, str | None]:
    """(user, channel, thread ts) of a click on a message."""
    message = body.get("message") or {}
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    return body["user"]["id"], channel, message.get("thread_ts") or message.get("ts")

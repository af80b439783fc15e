"""Scheduled threads at their destinations, through the real Slack and email channels: results in
the schedule's Slack channel (tests/slack_api.py) and mailbox (an aiosmtpd sink); approvals
decided by a signed button click to the real Bolt app or by a reply mail to the bot's real SMTP
server; a reply in the Slack thread or the email thread continues the scheduled thread."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from bot.api import create_app
from bot.intake import thread_id_for
from bot.runtime import Runtime
from bot.settings import Settings
from channels.email import app as email_channel
from channels.slack import app as slack
from channels.email.settings import EmailSettings
from channels.email.server import start_smtp
from channels.schedule import Clock
from tests.conftest import make_wiring, settled, wait_for
from tests.mail import Sink, address_of, deliver, gmail, header, reply_to, text_of
from tests.slack_api import TEAM, Call, Sender, SlackAPI, block_action, message

SECRET = "test-slack-signing-secret"
OPS_CHANNEL = "C0OPS"
OPS, ALICE = "ops@example.com", "alice@example.com"
POLICY = f"""
[tools.rollback]
approvers = ["U0BOB001", "{ALICE}"]

[[schedules]]
name = "status"
cron = "0 9 * * *"
agent = "deploy"
message = "/service_status api prod"
to = {{ slack = ["{OPS_CHANNEL}"], email = ["{OPS}"] }}

[[schedules]]
name = "undo"
cron = "0 9 * * *"
agent = "deploy"
message = "/rollback api prod"
to = {{ slack = ["{OPS_CHANNEL}"], email = ["{OPS}"] }}
"""


CAROL = "carol@example.com"
SLACK_ONLY = f"""
[tools.rollback]
approvers = ["U0BOB001"]
escalate_after = 1
escalate_to = ["{CAROL}"]

[[schedules]]
name = "undo"
cron = "0 9 * * *"
agent = "deploy"
message = "/rollback api prod"
to = {{ slack = ["{OPS_CHANNEL}"] }}
"""

h = header  # short, for the many header checks


@dataclass
class Bot:
    rt: Runtime
    settings: Settings
    api: SlackAPI
    sink: Sink
    send: Sender  # signed requests to the Bolt app
    smtp_port: int  # the bot's SMTP server
    clock: Clock

    async def calls(self, method: str, n: int = 1, **match: Any) -> list[Call]:
        return await self.api.wait_calls(method, n, **match)

    async def mails(self, address: str, n: int) -> list:
        async def enough():
            got = self.sink.to(address)
            return got if len(got) >= n else None

        return await wait_for(enough, 15, f"{n} mails to {address}")

    async def mail(self, msg) -> int:
        code, _ = await deliver(self.smtp_port, msg, address_of(msg["From"]), [address_of(msg["To"])])
        return code

    def runbook(self) -> list[str]:
        log = self.settings.data_dir / "runbook.log"
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def policy() -> str:
    """The policy file's text; a test parametrizes `policy` to use another."""
    return POLICY


@pytest.fixture
async def bot(make_settings, start_bot, policy_file, serve, policy) -> AsyncIterator[Bot]:
    api, sink = await SlackAPI().start(), Sink()
    sink_port = await sink.start()
    settings = make_settings(policy_file=policy_file(policy))
    email = EmailSettings(_env_file=None, email_domain="ops.test", smtp_url=f"smtp://127.0.0.1:{sink_port}",
                          smtp_port=0, smtp_send_backoff=0.05)
    rt = await start_bot(settings, make_wiring(slack=dict(bot_token="xoxb-test", signing_secret=SECRET,
                                                          api_url=api.url), email=email))
    assert {"slack", "email", "schedule"} <= set(rt.renderers)
    app = create_app(rt)
    assert rt.channels["slack"].service(rt, app) is None  # HTTP only: the route is mounted
    url = await serve(app)
    smtp = await start_smtp(email, email_channel.inbound(rt, email), port=0)
    send = Sender(url + slack.PATH, SECRET)
    yield Bot(rt, settings, api, sink, send, smtp.sockets[0].getsockname()[1], Clock(rt))
    await send.close()
    smtp.close()
    await smtp.wait_closed()
    await sink.stop()
    await api.close()


def blocks_text(call: Call) -> str:
    return json.dumps(call.args["blocks"])


def button(call: Call, action: str) -> str:
    [actions] = [b for b in call.args["blocks"] if b["type"] == "actions"]
    return next(e["value"] for e in actions["elements"] if e["action_id"] == action)


async def fire(bot: Bot, name: str):
    thread_id, appended = await bot.clock.run_now(name)
    assert appended.ok
    return await settled(bot.rt, thread_id)


async def test_results_land_in_the_channel_and_the_mailbox_and_replies_continue_the_thread(bot):
    thread = await fire(bot, "status")
    # Slack: the first message of the thread is a new top-level message in the schedule's channel
    [root] = await bot.calls("chat.postMessage", channel=OPS_CHANNEL)
    assert "thread_ts" not in root.args and "api in prod: healthy" in blocks_text(root)
    root_ts = root.result["ts"]
    # email: a new conversation under the schedule's name, answerable through its reply address
    [first] = await bot.mails(OPS, 1)
    assert h(first, "Subject").startswith("status (") and "deploy agent" in h(first, "Subject")
    assert first["In-Reply-To"] is None and h(first, "X-Chatops-Thread") == thread.id
    assert address_of(first["Reply-To"]).startswith("bot+") and "api in prod: healthy" in text_of(first)

    # a human answers in the Slack thread (no mention): the scheduled thread goes on
    await bot.send.event(message("/service_status web prod", user="U0CAROL1", channel=OPS_CHANNEL,
                                 thread_ts=root_ts))
    [_, answer] = await bot.calls("chat.postMessage", 2, channel=OPS_CHANNEL)
    assert answer.args["thread_ts"] == root_ts and "web in prod: healthy" in blocks_text(answer)
    thread = await settled(bot.rt, thread.id)
    said = [e for e in thread.events if e.type == "user_message"]
    assert [(e.text, e.source.user) for e in said] == [("/service_status web prod", "U0CAROL1")]
    assert not await bot.rt.store.exists(thread_id_for("slack", f"{TEAM}:{OPS_CHANNEL}:{root_ts}"))
    # the mailbox follows the same conversation, threaded on the first mail
    [_, second] = await bot.mails(OPS, 2)
    assert "web in prod: healthy" in text_of(second)
    assert h(second, "In-Reply-To") == h(first, "Message-ID") and h(second, "Subject") == "Re: " + h(first, "Subject")

    # and a reply by mail goes on in the same thread, shown in the Slack thread too
    assert await bot.mail(reply_to(second, OPS, gmail("/service_status db prod", second))) == 250
    [*_, third] = await bot.calls("chat.postMessage", 3, channel=OPS_CHANNEL)
    assert third.args["thread_ts"] == root_ts and "db in prod: healthy" in blocks_text(third)
    [*_, mailed] = await bot.mails(OPS, 3)
    assert "db in prod: healthy" in text_of(mailed) and h(first, "Message-ID") in h(mailed, "References").split()
    thread = await settled(bot.rt, thread.id)
    assert [e.source.channel for e in thread.events if e.type == "user_message"] == ["slack", "email"]
    assert len(await bot.rt.store.list_threads()) == 1


async def test_approval_clicked_in_slack_runs_once_and_updates_the_message(bot):
    thread = await fire(bot, "undo")
    [request] = thread.pending_approvals()
    assert request.requester == "schedule:undo"
    [posted] = await bot.calls("chat.postMessage", channel=OPS_CHANNEL)
    assert "thread_ts" not in posted.args and request.approval_id in button(posted, "approval_approve")
    # the approval mail: a copy to the schedule's addresses (it cannot decide), and each approver
    # with an address their own, whose reply address alone can decide
    [approval_mail] = await bot.mails(OPS, 1)
    [alices] = await bot.mails(ALICE, 1)
    assert approval_mail["Cc"] is None and request.approval_id in text_of(approval_mail)
    assert h(alices, "Reply-To") != h(approval_mail, "Reply-To")

    root_ts = posted.result["ts"]
    click = block_action("approval_approve", button(posted, "approval_approve"), user="U0BOB001",
                         channel=OPS_CHANNEL, message_ts=root_ts, thread_ts=root_ts)
    first, second = await asyncio.gather(bot.send.interaction(click), bot.send.interaction(click))
    assert first.status_code == second.status_code == 200
    thread = await settled(bot.rt, thread.id)
    assert thread.decisions[request.approval_id].by == "U0BOB001" and thread.state == "idle"
    assert bot.runbook() == ["rollback api prod"]
    [update] = await bot.calls("chat.update")
    assert update.args["channel"] == OPS_CHANNEL and update.args["ts"] == root_ts
    assert "Approved by <@U0BOB001>" in blocks_text(update)
    assert not [b for b in update.args["blocks"] if b["type"] == "actions"]
    [reply] = await bot.calls("chat.postMessage", channel=OPS_CHANNEL, thread_ts=root_ts)
    assert "Rolled back api in prod" in blocks_text(reply)
    assert len(bot.api.to("chat.update")) == 1 and bot.runbook() == ["rollback api prod"]
    confirm = await wait_for(lambda: _async([m for m in bot.sink.to(OPS) if "by U0BOB001" in text_of(m)]))
    assert h(approval_mail, "Message-ID") in h(confirm[0], "References").split()


async def test_approval_by_reply_mail_and_by_typing_in_the_slack_thread(bot):
    approved = await fire(bot, "undo")
    [request] = approved.pending_approvals()
    [approval_mail] = await bot.mails(ALICE, 1)
    assert await bot.mail(reply_to(approval_mail, ALICE, gmail("approve", approval_mail))) == 250
    approved = await settled(bot.rt, approved.id)
    decided = approved.decisions[request.approval_id]
    assert (decided.decision, decided.by, decided.via) == ("approved", ALICE, "email")
    assert bot.runbook() == ["rollback api prod"]
    [update] = await bot.calls("chat.update")
    assert f"Approved by {ALICE} via email" in blocks_text(update)

    rejected = await fire(bot, "undo")
    [other] = rejected.pending_approvals()
    [posted] = [c for c in await bot.calls("chat.postMessage", 3, channel=OPS_CHANNEL)
                if other.approval_id in blocks_text(c)]
    await bot.send.event(message("reject not during the freeze", user="U0BOB001", channel=OPS_CHANNEL,
                                 thread_ts=posted.result["ts"]))
    rejected = await settled(bot.rt, rejected.id)
    decided = rejected.decisions[other.approval_id]
    assert (decided.decision, decided.by, decided.reason) == ("rejected", "U0BOB001", "not during the freeze")
    assert not [e for e in rejected.events if e.type == "user_message"]
    assert bot.runbook() == ["rollback api prod"]
    [_, update] = await bot.calls("chat.update", 2)
    assert update.args["ts"] == posted.result["ts"] and "Rejected by <@U0BOB001>" in blocks_text(update)


async def test_a_missed_fire_is_reported_at_the_destination(bot):
    schedule = bot.rt.policy.schedule("status")
    appended = await bot.clock.record_missed(schedule, 1_700_000_000.0, 3, 600.0)
    assert appended.ok
    [posted] = await bot.calls("chat.postMessage", channel=OPS_CHANNEL)
    assert "missed 3 run(s)" in blocks_text(posted)
    [mail] = await bot.mails(OPS, 1)
    assert "missed 3 run(s)" in text_of(mail) and "2023-11-14 22:13 UTC" in h(mail, "Subject")


@pytest.mark.parametrize("policy", [SLACK_ONLY])
async def test_escalation_to_an_address_is_mailed_from_a_slack_only_schedule(bot):
    thread = await fire(bot, "undo")
    [request] = thread.pending_approvals()
    assert request.escalate_to == [CAROL]
    [posted] = await bot.calls("chat.postMessage", channel=OPS_CHANNEL)
    assert request.approval_id in button(posted, "approval_approve")
    # the schedule has no emails, but the escalation is for an address: it is mailed there
    [escalation] = await bot.mails(CAROL, 1)
    assert "Escalated" in text_of(escalation) and request.approval_id in text_of(escalation)
    assert h(escalation, "X-Chatops-Thread") == thread.id
    [_, nudge] = await bot.calls("chat.postMessage", 2, channel=OPS_CHANNEL)
    assert "Escalated" in blocks_text(nudge) and nudge.args["thread_ts"] == posted.result["ts"]

    # carol decides by answering that mail; the decision is mailed to her and shown in Slack
    assert await bot.mail(reply_to(escalation, CAROL, gmail("approve", escalation))) == 250
    thread = await settled(bot.rt, thread.id)
    decided = thread.decisions[request.approval_id]
    assert (decided.decision, decided.by, decided.via) == ("approved", CAROL, "email")
    assert bot.runbook() == ["rollback api prod"]
    [update] = await bot.calls("chat.update")
    assert f"Approved by {CAROL} via email" in blocks_text(update)
    [_, confirmation] = await bot.mails(CAROL, 2)
    assert f"by {CAROL}" in text_of(confirmation)
    assert h(escalation, "Message-ID") in h(confirmation, "References").split()


async def _async(value):
    return value

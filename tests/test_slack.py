"""The Slack channel end to end: requests signed with a test secret, sent over HTTP to the real
Bolt app mounted on the bot's real FastAPI app (uvicorn on a free loopback port); the Slack Web
API and Socket Mode served by tests/slack_api.py; the real worker, Redis and anthropic client."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from bot.api import create_app
from bot.intake import thread_id_for
from bot.runtime import Runtime
from bot.settings import Settings
from bot.thread import Thread
from channels.slack import app as slack
from channels.slack import inbound as slack_inbound
from channels.slack.doctor import PATH as EVENTS_PATH
from tests.conftest import make_wiring, settled, wait_for
from tests.helpers import runbook_lines
from tests.messages_api import MessagesAPI, text, tool_use
from tests.slack_api import (
    BOT_USER,
    TEAM,
    Call,
    Sender,
    SlackAPI,
    block_action,
    event_body,
    mention,
    message,
    new_ts,
    view_submission,
)

SECRET = "test-slack-signing-secret"
API_TOKEN = "test-api-token"
CHANNEL = "C0DEPLOY"
POLICY = """
approvers = ["U0BOB001", "U0DAVE01"]
"""
DEPLOY_PROD = {"service": "api", "version": "1.2.3", "environment": "prod"}


@dataclass
class Bot:
    rt: Runtime
    api: SlackAPI
    send: Sender
    http: httpx.AsyncClient  # the bot's own HTTP API
    settings: Settings

    def thread_id(self, ts: str, channel: str = CHANNEL) -> str:
        return thread_id_for("slack", f"{TEAM}:{channel}:{ts}")

    async def calls(self, method: str, n: int = 1, **match: Any) -> list[Call]:
        return await self.api.wait_calls(method, n, **match)

    def count(self, method: str, **match: Any) -> int:
        return len(self.api.matching(method, **match))

    async def done(self, *thread_ids: str) -> None:
        """The bot is done: the threads settled (so their events were shown) and the Web API
        calls sent after an ack returned were made. Then `count` is exact."""
        for thread_id in thread_ids:
            await settled(self.rt, thread_id)
        await self.rt.channels["slack"].later.flush()


@pytest.fixture
async def slack_api() -> AsyncIterator[SlackAPI]:
    api = await SlackAPI().start()
    yield api
    await api.close()


async def serve_http(app: Any) -> tuple[str, uvicorn.Server, asyncio.Task]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def up() -> bool:
        return server.started

    await wait_for(up, 10, "uvicorn to start")
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, task


@pytest.fixture
async def slack_bot(
    model_settings: Callable[..., Settings], start_bot: Callable[[Settings], Awaitable[Runtime]],
    slack_api: SlackAPI, policy_file: Callable[[str], Any],
) -> AsyncIterator[Callable[..., Awaitable[Bot]]]:
    running: list[tuple[Bot, uvicorn.Server, asyncio.Task]] = []

    async def start(policy: str = POLICY, slack: dict[str, Any] | None = None,
                    email: dict[str, Any] | None = None, **overrides: Any) -> Bot:
        """A bot on Slack over HTTP: `overrides` are the core's settings, `slack` and `email`
        the channels' (by field name)."""
        settings = model_settings(api_token=API_TOKEN, policy_file=policy_file(policy), **overrides)
        own = dict(bot_token="xoxb-test", signing_secret=SECRET, api_url=slack_api.url) | (slack or {})
        rt = await start_bot(settings, make_wiring(slack=own, email=email))
        app = create_app(rt)
        assert rt.channels["slack"].service(rt, app) is None  # HTTP only: the route is mounted, nothing to run
        url, server, task = await serve_http(app)
        http = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"})
        bot = Bot(rt, slack_api, Sender(url + EVENTS_PATH, SECRET), http, settings)
        running.append((bot, server, task))
        return bot

    yield start
    for bot, server, task in running:
        server.should_exit = True
        await task
        await bot.send.close()
        await bot.http.aclose()


def button_values(call: Call) -> dict[str, str]:
    [actions] = [b for b in call.args["blocks"] if b["type"] == "actions"]
    return {e["action_id"]: e["value"] for e in actions["elements"]}


def all_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks)


async def ask_for_prod_deploy(bot: Bot, messages_api: MessagesAPI, *then: Any) -> tuple[str, Thread, Call]:
    """Alice asks for a prod deploy; returns the Slack thread ts, the waiting thread and the
    approval message."""
    messages_api.add(tool_use("deploy", DEPLOY_PROD, say="Deploying."), *then)
    ts = new_ts()
    assert (await bot.send.event(mention("deploy api 1.2.3 to prod", ts=ts))).status_code == 200
    thread = await settled(bot.rt, bot.thread_id(ts))
    assert thread.state == "awaiting_approval"
    [posted] = await bot.calls("chat.postMessage", thread_ts=ts)
    return ts, thread, posted


# ---- inbound -----------------------------------------------------------------------------------

async def test_mention_starts_a_thread_and_the_reply_lands_in_the_same_slack_thread(slack_bot, messages_api):
    bot = await slack_bot()
    messages_api.add(text("All **good**: api is healthy."), text("web too."))
    ts = new_ts()
    response = await bot.send.event(mention("how is api doing?", ts=ts))
    assert response.status_code == 200

    thread = await settled(bot.rt, bot.thread_id(ts))
    assert thread.meta.origin.channel == "slack"
    assert thread.meta.origin.address == {"team": TEAM, "channel": CHANNEL, "thread_ts": ts}
    first = thread.events[0]
    assert first.type == "user_message" and first.text == "how is api doing?"
    assert first.source.user == "U0ALICE1"
    [reply] = await bot.calls("chat.postMessage", thread_ts=ts)
    assert reply.args["channel"] == CHANNEL
    assert reply.args["blocks"] == [{"type": "section", "text": {"type": "mrkdwn",
                                                                 "text": "All *good*: api is healthy."}}]
    # the working indicator on the asking message, cleared when the agent is done
    [added] = await bot.calls("reactions.add", timestamp=ts)
    assert added.args["name"] == "eyes"
    await bot.calls("reactions.remove", timestamp=ts)

    # a follow-up in the thread needs no mention
    follow = new_ts()
    await bot.send.event(message("and web?", ts=follow, thread_ts=ts))
    await bot.calls("chat.postMessage", 2, thread_ts=ts)
    thread = await settled(bot.rt, bot.thread_id(ts))
    assert [e.text for e in thread.events if e.type == "user_message"] == ["how is api doing?", "and web?"]
    assert messages_api.requests[-1]["messages"][-1]["content"][-1]["text"].endswith("and web?")


async def test_other_conversations_own_and_bot_messages_are_ignored_and_dms_are_answered(slack_bot, messages_api):
    bot = await slack_bot()
    stranger = new_ts()
    await bot.send.event(message("nothing for the bot", ts=stranger))
    own = new_ts()
    await bot.send.event(message("I am the bot", ts=own, user="UBOT0001", bot_id="BBOT0001"))
    other_bot = new_ts()
    await bot.send.event(message("beep", ts=other_bot, subtype="bot_message", bot_id="BOTHER"))
    edited = new_ts()
    await bot.send.event(message("edit", ts=edited, subtype="message_changed", channel_type="im"))

    messages_api.add(text("Hello in private."))
    dm = new_ts()
    assert (await bot.send.event(message("hi", ts=dm, channel="D0ALICE", channel_type="im"))).status_code == 200
    thread = await settled(bot.rt, bot.thread_id(dm, "D0ALICE"))
    assert thread.events[0].text == "hi"
    await bot.calls("chat.postMessage", channel="D0ALICE", thread_ts=dm)
    for ts in (stranger, own, other_bot, edited):
        assert not await bot.rt.store.exists(bot.thread_id(ts))
    assert len(messages_api.requests) == 1


async def test_routing_by_channel_config_and_first_word_and_allowlists(slack_bot, messages_api):
    bot = await slack_bot(POLICY + """
routes = { C0OPS = "deploy" }
[agents.deploy]
users = ["U0ALICE1"]
channels = ["C0DEPLOY", "C0OPS"]
""")
    messages_api.add(text("ok"), text("ok"))
    ts = new_ts()
    await bot.send.event(mention("deploy status of api", ts=ts))
    assert (await settled(bot.rt, bot.thread_id(ts))).agent == "deploy"
    routed = new_ts()
    await bot.send.event(mention("status please", ts=routed, channel="C0OPS"))
    assert (await settled(bot.rt, bot.thread_id(routed, "C0OPS"))).agent == "deploy"

    # not on the agent's allowlists: a short polite private refusal, nothing stored
    stranger = new_ts()
    assert (await bot.send.event(mention("deploy api", ts=stranger, user="U0MALLORY"))).status_code == 200
    [refusal] = await bot.calls("chat.postEphemeral", user="U0MALLORY")
    assert refusal.args["text"].startswith("Sorry") and refusal.args["thread_ts"] == stranger
    elsewhere = new_ts()
    await bot.send.event(mention("deploy api", ts=elsewhere, channel="C0RANDOM"))
    [refusal] = await bot.calls("chat.postEphemeral", channel="C0RANDOM")
    assert "doesn't take requests in this conversation" in refusal.args["text"]
    assert not await bot.rt.store.exists(bot.thread_id(stranger))
    assert not await bot.rt.store.exists(bot.thread_id(elsewhere, "C0RANDOM"))


async def test_a_slack_retry_and_the_message_twin_of_a_mention_are_one_event(slack_bot, messages_api):
    bot = await slack_bot()
    messages_api.add(text("once"))
    ts = new_ts()
    event = mention("how is api?", ts=ts)
    assert (await bot.send.event(event, event_id="Ev0RETRY01")).status_code == 200
    assert (await bot.send.event(event, event_id="Ev0RETRY01", retry=1)).status_code == 200
    assert (await bot.send.event(event, event_id="Ev0RETRY01", retry=2)).status_code == 200
    # Slack also sends message.channels for the same message, with another event_id
    twin = message(event["text"], ts=ts)
    assert (await bot.send.event(twin)).status_code == 200
    thread = await settled(bot.rt, bot.thread_id(ts))
    assert [e.type for e in thread.events].count("user_message") == 1
    await bot.calls("chat.postMessage", thread_ts=ts)
    assert len(messages_api.requests) == 1


async def test_forged_or_stale_requests_get_401_and_store_nothing(slack_bot, messages_api):
    bot = await slack_bot()
    forged, stale = new_ts(), new_ts()
    response = await bot.send.event(mention("deploy api to prod", ts=forged), forge=True)
    assert response.status_code == 401
    response = await bot.send.event(mention("deploy api to prod", ts=stale), timestamp=int(time.time()) - 301)
    assert response.status_code == 401
    # a click with a forged request signature is refused the same way
    click = block_action("approval_approve", "approve:0123456789abcdef.01234567:00", user="U0BOB001",
                         channel=CHANNEL, message_ts=forged, thread_ts=forged)
    assert (await bot.send.interaction(click, forge=True)).status_code == 401
    for ts in (forged, stale):
        assert not await bot.rt.store.exists(bot.thread_id(ts))
    stored = await bot.rt.redis.keys(f"{bot.settings.key_prefix}*")
    assert [k for k in stored if not k.endswith(b":inbox")] == []  # the inbox: the worker's group
    assert await bot.rt.redis.xlen(bot.rt.store.keys.inbox) == 0
    assert bot.api.calls == [] and messages_api.requests == []


async def test_redis_down_answers_non_2xx_so_slack_retries(make_settings, slack_api):
    settings = make_settings(redis_url="redis://127.0.0.1:1/0")
    rt = await Runtime.start(settings, make_wiring(slack=dict(bot_token="xoxb-test", signing_secret=SECRET,
                                                              api_url=slack_api.url)))
    app = create_app(rt)
    rt.channels["slack"].service(rt, app)
    url, server, task = await serve_http(app)
    send = Sender(url + slack.PATH, SECRET)
    try:
        response = await send.event(mention("deploy api", ts=new_ts()))
        assert response.status_code >= 500
    finally:
        server.should_exit = True
        await task
        await send.close()
        await rt.close()


# ---- approvals ---------------------------------------------------------------------------------

async def test_approval_buttons_unauthorized_click_then_double_click_runs_once(slack_bot, messages_api):
    bot = await slack_bot()
    ts, thread, posted = await ask_for_prod_deploy(bot, messages_api, text("api 1.2.3 is live."))
    [request] = thread.pending_approvals()
    blocks = posted.args["blocks"]
    body = all_text(blocks)
    assert "`deploy`" in body and "<@U0ALICE1>" in body and "<@U0BOB001>" in body and "<!date^" in body
    fields = [f["text"] for b in blocks if "fields" in b for f in b["fields"]]
    assert fields == ["*service*\napi", "*version*\n1.2.3", "*environment*\nprod"]
    values = button_values(posted)
    assert request.approval_id in values["approval_approve"]

    def click(user: str, action: str = "approval_approve", value: str | None = None) -> dict:
        return block_action(action, value or values[action], user=user, channel=CHANNEL,
                            message_ts="1.0", thread_ts=ts)

    # Carol is not an approver: refused, told privately, recorded; nothing runs
    assert (await bot.send.interaction(click("U0CAROL1"))).status_code == 200
    [told] = await bot.calls("chat.postEphemeral", user="U0CAROL1")
    assert "not an approver" in told.args["text"] and told.args["thread_ts"] == ts
    thread = await bot.rt.store.load(thread.id)
    [refused] = [e for e in thread.events if e.type == "approval_refused"]
    assert refused.by == "U0CAROL1" and refused.via == "slack"
    assert thread.state == "awaiting_approval" and runbook_lines(bot.settings) == []

    # a value we did not sign (another approval id, or a reject value on approve) does nothing
    forged = values["approval_approve"].rsplit(":", 1)[0] + ":" + "0" * 32
    assert (await bot.send.interaction(click("U0BOB001", value=forged))).status_code == 200
    swapped = values["approval_reject"]
    assert (await bot.send.interaction(click("U0BOB001", value=swapped))).status_code == 200
    await bot.calls("chat.postEphemeral", 2, user="U0BOB001")
    assert (await bot.rt.store.load(thread.id)).pending_approvals()

    # Bob double-clicks: one decision, the tool runs once, the message is updated once
    first, second = await asyncio.gather(bot.send.interaction(click("U0BOB001")), bot.send.interaction(click("U0BOB001")))
    assert first.status_code == second.status_code == 200
    thread = await settled(bot.rt, thread.id)
    assert thread.state == "idle"
    assert runbook_lines(bot.settings) == ["deploy api 1.2.3 prod"]
    [decided] = [e for e in thread.events if e.type == "approval_decided"]
    assert decided.decision == "approved" and decided.by == "U0BOB001"
    [update] = await bot.calls("chat.update")
    assert update.args["channel"] == CHANNEL and update.args["ts"] == posted.result["ts"]
    assert "Approved by <@U0BOB001>" in all_text(update.args["blocks"])
    assert not [b for b in update.args["blocks"] if b["type"] == "actions"]
    [again] = (await bot.calls("chat.postEphemeral", 3, user="U0BOB001"))[2:]
    assert again.args["text"].startswith("Already decided")
    [_, reply] = await bot.calls("chat.postMessage", 2, thread_ts=ts)
    assert "api 1.2.3 is live." in all_text(reply.args["blocks"])
    # and nothing more: one update, one word for each click that did nothing, one refusal
    await bot.done(thread.id)
    assert bot.count("chat.update") == 1 and bot.count("chat.postMessage", thread_ts=ts) == 2
    assert bot.count("chat.postEphemeral", user="U0BOB001") == 3
    assert bot.count("chat.postEphemeral", user="U0CAROL1") == 1
    thread = await bot.rt.store.load(thread.id)
    assert [e.type for e in thread.events].count("approval_refused") == 1
    assert len(messages_api.requests) == 2


async def test_reject_through_the_modal_gives_the_reason_to_the_model(slack_bot, messages_api):
    bot = await slack_bot()
    ts, thread, posted = await ask_for_prod_deploy(bot, messages_api, text("Understood, not deploying."))
    values = button_values(posted)

    def click(user: str) -> dict:
        return block_action("approval_reject", values["approval_reject"], user=user, channel=CHANNEL,
                            message_ts="1.0", thread_ts=ts)

    # Carol may not decide: no form for her; told privately and recorded, as on Approve
    assert (await bot.send.interaction(click("U0CAROL1"))).status_code == 200
    [told] = await bot.calls("chat.postEphemeral", user="U0CAROL1")
    assert "not an approver" in told.args["text"]
    thread = await bot.rt.store.load(thread.id)
    [refused] = [e for e in thread.events if e.type == "approval_refused"]
    assert refused.by == "U0CAROL1" and thread.state == "awaiting_approval"

    bobs = click("U0BOB001")
    assert (await bot.send.interaction(bobs)).status_code == 200
    [opened] = await bot.calls("views.open")
    assert opened.args["trigger_id"] == bobs["trigger_id"]
    view = opened.args["view"]
    assert view["type"] == "modal" and view["blocks"][0]["block_id"] == "reason"

    # someone not allowed submits the form: refused in the form, recorded
    response = await bot.send.interaction(view_submission(view, user="U0CAROL1", reason="because"))
    assert response.json()["response_action"] == "errors"
    assert "not an approver" in response.json()["errors"]["reason"]

    response = await bot.send.interaction(view_submission(view, user="U0BOB001", reason="change freeze until Monday"))
    assert response.status_code == 200 and response.content == b""
    thread = await settled(bot.rt, thread.id)
    [decided] = [e for e in thread.events if e.type == "approval_decided"]
    assert decided.decision == "rejected" and decided.reason == "change freeze until Monday"
    assert runbook_lines(bot.settings) == []
    result = messages_api.requests[-1]["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and "change freeze until Monday" in result["content"]
    [update] = await bot.calls("chat.update")
    assert "Rejected by <@U0BOB001>" in all_text(update.args["blocks"])
    assert "change freeze until Monday" in all_text(update.args["blocks"])

    # a later click on Reject opens no form either
    assert (await bot.send.interaction(click("U0DAVE01"))).status_code == 200
    [late] = await bot.calls("chat.postEphemeral", user="U0DAVE01")
    assert late.args["text"].startswith("Already decided")
    await bot.done(thread.id)
    assert bot.count("views.open") == 1 and bot.count("chat.update") == 1
    assert bot.count("chat.postEphemeral") == 2
    thread = await bot.rt.store.load(thread.id)
    assert [e.type for e in thread.events].count("approval_refused") == 2


@pytest.mark.parametrize("button", ["approval_approve", "approval_reject"])
async def test_click_after_expiry_is_expired_never_approved(slack_bot, messages_api, button):
    bot = await slack_bot(POLICY + "[tools.deploy]\napproval_ttl = 1\n", sweep_interval=3600)
    ts, thread, posted = await ask_for_prod_deploy(bot, messages_api, text("It expired."))
    [request] = thread.pending_approvals()
    await asyncio.sleep(max(0.0, request.expires_at - time.time()) + 0.05)
    click = block_action(button, button_values(posted)[button], user="U0BOB001",
                         channel=CHANNEL, message_ts="1.0", thread_ts=ts)
    assert (await bot.send.interaction(click)).status_code == 200
    [told] = await bot.calls("chat.postEphemeral", user="U0BOB001")
    assert "expired" in told.args["text"]
    thread = await settled(bot.rt, thread.id)
    [decided] = [e for e in thread.events if e.type == "approval_decided"]
    assert decided.decision == "expired"
    assert runbook_lines(bot.settings) == []
    [update] = await bot.calls("chat.update")
    assert "Expired" in all_text(update.args["blocks"])
    await bot.done(thread.id)
    assert bot.count("chat.update") == 1 and bot.count("views.open") == 0
    assert bot.count("chat.postEphemeral") == 1


async def test_reminder_and_escalation_show_in_the_thread_and_the_escalated_user_may_click(
    slack_bot, messages_api
):
    bot = await slack_bot(
        '[tools.deploy]\napprovers = ["U0BOB001"]\napproval_ttl = 60\nremind_before = 59\n'
        'escalate_after = 1\nescalate_to = ["U0CAROL1"]\n'
    )
    ts, thread, posted = await ask_for_prod_deploy(bot, messages_api, text("Deployed."))

    async def nudged():
        said = [all_text(c.args["blocks"]) for c in await bot.calls("chat.postMessage", 3, thread_ts=ts)]
        return said if any("Reminder" in t for t in said) and any("Escalated" in t for t in said) else None

    said = await wait_for(nudged, what="the reminder and the escalation in the Slack thread")
    assert any("<@U0CAROL1> may decide it too" in t for t in said)
    click = block_action("approval_approve", button_values(posted)["approval_approve"], user="U0CAROL1",
                         channel=CHANNEL, message_ts="1.0", thread_ts=ts)
    assert (await bot.send.interaction(click)).status_code == 200
    thread = await settled(bot.rt, thread.id)
    [decision] = thread.decisions.values()
    assert (decision.decision, decision.by) == ("approved", "U0CAROL1")
    assert runbook_lines(bot.settings) == ["deploy api 1.2.3 prod"]


async def test_decision_through_the_http_api_updates_the_slack_message(slack_bot, messages_api):
    bot = await slack_bot()
    ts, thread, posted = await ask_for_prod_deploy(bot, messages_api, text("Deployed."))
    [request] = thread.pending_approvals()
    response = await bot.http.post(f"/v1/approvals/{request.approval_id}",
                                   json={"decision": "approve", "user": "U0DAVE01"})
    assert response.status_code == 200
    [update] = await bot.calls("chat.update")
    assert update.args["channel"] == CHANNEL
    assert "Approved by <@U0DAVE01> via api" in all_text(update.args["blocks"])
    await bot.done(thread.id)
    assert runbook_lines(bot.settings) == ["deploy api 1.2.3 prod"]
    assert bot.count("chat.update") == 1


@pytest.mark.parametrize(("said", "decision"), [
    ("approve", (True, "")), ("Approved!", (True, "")), ("APPROVE .", (True, "")),
    ("reject not today", (False, "not today")), ("Reject: change freeze", (False, "change freeze")),
    ("reject", (False, "")),
    ("approve? wait, what does this touch", None), ("approve?", None), ("approve it", None),
    ("approved by whom?", None), ("rejection rates are up", None), ("reject? why", None),
    ("please approve", None), ("", None),
])
def test_a_typed_decision_is_the_whole_message(said, decision):
    assert slack_inbound.typed_decision(said) == decision


async def test_only_exactly_approve_approves_anything_else_goes_to_the_agent(slack_bot, messages_api):
    bot = await slack_bot()
    ts, thread, _ = await ask_for_prod_deploy(bot, messages_api, text("api 1.2.3 is live."))
    await bot.send.event(message("approve? wait, what does this touch", user="U0BOB001", thread_ts=ts))

    async def taken():
        thread = await bot.rt.store.load(bot.thread_id(ts))
        return [e for e in thread.events if e.type == "user_message" and e.text.startswith("approve?")]

    await wait_for(taken, what="the question to be appended as an ordinary message")
    thread = await settled(bot.rt, thread.id)
    assert not thread.decisions and thread.pending_approvals() and runbook_lines(bot.settings) == []

    await bot.send.event(message("Approved!", user="U0BOB001", thread_ts=ts))
    [update] = await bot.calls("chat.update")
    assert "Approved by <@U0BOB001>" in all_text(update.args["blocks"])
    thread = await settled(bot.rt, thread.id)
    [decided] = thread.decisions.values()
    assert (decided.decision, decided.by) == ("approved", "U0BOB001")
    assert runbook_lines(bot.settings) == ["deploy api 1.2.3 prod"]
    # the model read the question as a message in the thread
    assert "approve? wait, what does this touch" in json.dumps(messages_api.requests[-1]["messages"])
    await bot.done(thread.id)
    assert bot.count("chat.update") == 1 and bot.count("chat.postEphemeral") == 0


async def test_a_typed_decision_has_one_effect_whatever_slack_delivers(slack_bot, messages_api):
    bot = await slack_bot()
    ts, thread, _ = await ask_for_prod_deploy(bot, messages_api, text("Not deploying."))

    # Carol may not decide, and Slack retries her message: one refusal, one private word
    carol = message("approve", user="U0CAROL1", thread_ts=ts)
    assert (await bot.send.event(carol, event_id="Ev0CAROL01")).status_code == 200
    assert (await bot.send.event(carol, event_id="Ev0CAROL01", retry=1)).status_code == 200
    [told] = await bot.calls("chat.postEphemeral", user="U0CAROL1")
    assert "not an approver" in told.args["text"]

    # Bob's "@bot reject not today" arrives as an app_mention and as a message, at once
    said = new_ts()
    as_mention = mention("reject not today", user="U0BOB001", ts=said, thread_ts=ts)
    as_message = message(f"<@{BOT_USER}> reject not today", user="U0BOB001", ts=said, thread_ts=ts)
    responses = await asyncio.gather(bot.send.event(as_mention), bot.send.event(as_message))
    assert [r.status_code for r in responses] == [200, 200]
    thread = await settled(bot.rt, thread.id)
    [decided] = [e for e in thread.events if e.type == "approval_decided"]
    assert decided.decision == "rejected" and decided.by == "U0BOB001" and decided.reason == "not today"
    await bot.calls("chat.update")
    # and a retry of it once decided is no message for the model either
    assert (await bot.send.event(as_message, retry=1)).status_code == 200

    await bot.done(thread.id)
    thread = await bot.rt.store.load(thread.id)
    assert [e.type for e in thread.events].count("approval_refused") == 1
    assert [e.type for e in thread.events].count("approval_decided") == 1
    assert [e.text for e in thread.events if e.type in ("user_message", "human_response")] == \
        ["deploy api 1.2.3 to prod"]
    assert runbook_lines(bot.settings) == []
    assert bot.count("chat.update") == 1
    assert bot.count("chat.postEphemeral", user="U0CAROL1") == 1
    assert bot.count("chat.postEphemeral", user="U0BOB001") == 0
    assert len(messages_api.requests) == 2  # the request, then the rejection's result


async def test_a_retry_is_not_acknowledged_while_the_first_delivery_may_still_fail(slack_bot, messages_api):
    bot = await slack_bot()
    ts, thread, _ = await ask_for_prod_deploy(bot, messages_api, text("Not deploying."))
    said = new_ts()
    bob = message("reject not today", user="U0BOB001", ts=said, thread_ts=ts)
    # the first delivery is deciding (slow, or about to fail) when Slack's retry arrives
    claim = bot.rt.store.keys.claim(thread.id, f"ext:slack:{TEAM}:{CHANNEL}:{said}")
    await bot.rt.redis.set(claim, "deciding", ex=30)
    retried = await bot.send.event(bob, retry=1)
    assert retried.status_code >= 500  # not acknowledged: Slack will try again
    # the first delivery failed and let go of the message: the next retry decides it
    await bot.rt.redis.delete(claim)
    assert (await bot.send.event(bob, retry=2)).status_code == 200
    thread = await settled(bot.rt, thread.id)
    [decided] = [e for e in thread.events if e.type == "approval_decided"]
    assert (decided.decision, decided.reason) == ("rejected", "not today")


async def test_a_typed_decision_with_two_approvals_waiting_decides_nothing(slack_bot, messages_api):
    bot = await slack_bot()
    web = {**DEPLOY_PROD, "service": "web"}
    messages_api.add(tool_use("deploy", DEPLOY_PROD, ("deploy", web)))
    ts = new_ts()
    await bot.send.event(mention("deploy api and web 1.2.3 to prod", ts=ts))
    thread = await settled(bot.rt, bot.thread_id(ts))
    assert len(thread.pending_approvals()) == 2

    said = new_ts()
    as_mention = mention("approve", user="U0BOB001", ts=said, thread_ts=ts)
    as_message = message(f"<@{BOT_USER}> approve", user="U0BOB001", ts=said, thread_ts=ts)
    await asyncio.gather(bot.send.event(as_mention), bot.send.event(as_message))
    await bot.send.event(as_message, retry=1)
    [told] = await bot.calls("chat.postEphemeral", user="U0BOB001")
    assert "2 approvals are waiting" in told.args["text"] and "buttons" in told.args["text"]
    assert told.args["thread_ts"] == ts

    await bot.done(thread.id)
    after = await bot.rt.store.load(thread.id)
    assert after.version == thread.version and len(after.pending_approvals()) == 2
    assert bot.count("chat.postEphemeral") == 1 and bot.count("chat.update") == 0
    assert runbook_lines(bot.settings) == [] and len(messages_api.requests) == 1


# ---- outbound ----------------------------------------------------------------------------------

async def test_a_429_is_retried_after_retry_after_and_other_failures_are_recorded(slack_bot, messages_api):
    bot = await slack_bot()
    bot.api.fail("chat.postMessage", 429, retry_after=1)
    messages_api.add(text("after the rate limit"))
    ts = new_ts()
    await bot.send.event(mention("status?", ts=ts))
    [reply] = await bot.calls("chat.postMessage", thread_ts=ts)
    attempts = bot.api.attempts("chat.postMessage")
    assert len(attempts) == 2 and attempts[0].failed
    assert attempts[1].at - attempts[0].at >= 1.0  # waited the Retry-After
    assert "after the rate limit" in all_text(reply.args["blocks"])
    thread = await settled(bot.rt, bot.thread_id(ts))
    assert not [e for e in thread.events if e.type == "error"]

    bot.api.fail("chat.postMessage", 200, retry_after=None, error="channel_not_found")
    messages_api.add(text("this one is lost"))
    await bot.send.event(message("again?", thread_ts=ts))

    async def recorded():
        thread = await bot.rt.store.load(bot.thread_id(ts))
        return [e for e in thread.events if e.type == "error" and e.kind == "delivery_failed"]

    [failure] = await wait_for(recorded, 10, "the delivery failure to be recorded")
    assert "channel_not_found" in failure.message


async def test_the_working_reaction_comes_off_every_message_of_the_turn_even_if_showing_fails(
    slack_bot, messages_api
):
    bot = await slack_bot()
    messages_api.latency = 0.5  # the second message arrives while the model thinks about the first
    messages_api.add(text("api is fine."), text("web too."), text("this one is lost"))
    first, second = new_ts(), new_ts()
    await bot.send.event(mention("how is api?", ts=first))
    await bot.calls("reactions.add", timestamp=first)
    await bot.send.event(message("and web?", ts=second, thread_ts=first))
    await bot.calls("reactions.add", timestamp=second)

    async def removed(*timestamps: str) -> bool:
        return {c.args["timestamp"] for c in bot.api.to("reactions.remove")} >= set(timestamps)

    await wait_for(lambda: removed(first, second), what="both reactions to be cleared")

    # showing the answer fails: the reaction still comes off
    messages_api.latency = 0
    await bot.done(bot.thread_id(first))
    bot.api.fail("chat.postMessage", 200, retry_after=None, error="channel_not_found")
    third = new_ts()
    await bot.send.event(message("and db?", ts=third, thread_ts=first))
    await bot.calls("reactions.add", timestamp=third)
    await wait_for(lambda: removed(third), what="the reaction of the failed turn to be cleared")
    await bot.done(bot.thread_id(first))
    thread = await bot.rt.store.load(bot.thread_id(first))
    assert [e for e in thread.events if e.type == "error" and e.kind == "delivery_failed"]
    removals = [c.args["timestamp"] for c in bot.api.to("reactions.remove")]
    assert sorted(removals) == sorted([first, second, third])  # each once


# ---- socket mode -------------------------------------------------------------------------------

async def test_socket_mode_delivers_and_acks_through_the_same_handlers(
    model_settings, start_bot, slack_api, policy_file, messages_api
):
    settings = model_settings(policy_file=policy_file(POLICY))
    rt = await start_bot(settings, make_wiring(slack=dict(bot_token="xoxb-test", app_token="xapp-test",
                                                          api_url=slack_api.url)))
    job = rt.channels["slack"].service(rt, create_app(rt))
    assert job is not None
    task = asyncio.ensure_future(job)
    try:
        messages_api.add(text("over the socket"))
        ts = new_ts()
        body = event_body(mention("status?", ts=ts), "Ev0SOCKET1")
        ack = await slack_api.envelope("events_api", body)
        assert "envelope_id" in ack
        again = await slack_api.envelope("events_api", body, retry_attempt=1)
        assert "envelope_id" in again
        thread = await settled(rt, thread_id_for("slack", f"{TEAM}:{CHANNEL}:{ts}"))
        assert [e.type for e in thread.events].count("user_message") == 1
        await wait_for(lambda: _async(slack_api.to("chat.postMessage")), 10, "the reply")
        # the token checked once at start, then the handler's connection
        opened = slack_api.to("apps.connections.open")
        assert [o.headers["Authorization"] for o in opened] == ["Bearer xapp-test"] * 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _async(value: Any) -> Any:
    return value


async def test_socket_mode_refused_at_start_stops_the_bot_naming_the_token(
    model_settings, start_bot, slack_api, policy_file
):
    from bot.policy import ConfigError

    slack_api.fail("apps.connections.open", status=200, retry_after=None, error="invalid_auth", times=10)
    settings = model_settings(policy_file=policy_file(POLICY))
    rt = await start_bot(settings, make_wiring(slack=dict(bot_token="xoxb-test", app_token="xapp-revoked",
                                                          api_url=slack_api.url)))
    job = rt.channels["slack"].service(rt, create_app(rt))
    assert job is not None
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN: Socket Mode could not connect: invalid_auth"):
        await asyncio.wait_for(job, 60)

"""A channel added only through the composition root's list: the test-only webhook channel
(tests/webhook_channel.py) runs inside the real bot (`run_all`: worker, HTTP API, every channel's
service) and carries a deploy with an approval end to end, over real HTTP both ways, with the
real anthropic client against the local Messages API."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import httpx
import pytest
from aiohttp import web

from bot.runtime import Runtime
from bot.serve import run_all
from bot.wiring import Wiring
from tests.conftest import make_wiring, wait_for
from tests.helpers import runbook_lines
from tests.messages_api import text, tool_use
from tests.webhook_channel import WebhookChannel

SECRET = "webhook-secret"


class Receiver:
    """The sender's side: a local HTTP server the bot POSTs the thread's events to."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> Receiver:
        async def receive(request: web.Request) -> web.Response:
            self.events.append(await request.json())
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", receive)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def got(self, kind: str, count: int = 1) -> list[dict[str, Any]]:
        async def enough():
            found = [e["event"] for e in self.events if e["event"]["type"] == kind]
            return found if len(found) >= count else None

        return await wait_for(enough, 20, f"{count} {kind} POSTed to the receiver")


@pytest.fixture
async def receiver():
    found = await Receiver().start()
    yield found
    assert found.runner is not None
    await found.runner.cleanup()


@pytest.fixture
async def bot_with_webhook(model_settings, policy_file, caplog):
    """The real bot with one more channel: the composition root's list, extended in the test."""
    caplog.set_level(logging.INFO, logger="chatops")
    settings = model_settings(port=0, policy_file=policy_file('approvers = ["alice"]\n'))
    shipped = make_wiring(email=dict(smtp_enabled=False))
    wiring: Wiring = dataclasses.replace(shipped, channels=[*shipped.channels, WebhookChannel(secret=SECRET)])
    rt = await Runtime.start(settings, wiring)
    task = asyncio.create_task(run_all(rt))

    async def listening():
        found = [r.args for r in caplog.records if r.getMessage().startswith("HTTP API on")]
        return f"http://127.0.0.1:{found[0][1]}" if found else None

    url = await wait_for(listening, 20, "the HTTP API")
    async with httpx.AsyncClient(base_url=url, headers={"X-Webhook-Token": SECRET}) as client:
        yield rt, client, settings
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await rt.close()


async def test_a_channel_from_the_wiring_list_runs_a_deploy_with_an_approval(bot_with_webhook, receiver,
                                                                              messages_api):
    rt, client, settings = bot_with_webhook
    messages_api.add(
        tool_use("deploy", {"service": "api", "version": "1.2.3", "environment": "prod"}, say="Deploying."),
        text("api 1.2.3 is live in prod."),
    )
    sent = {"conversation": "ops-42", "callback": receiver.url, "user": "bob", "id": "m1",
            "text": "ship api 1.2.3 to prod"}
    started = await client.post("/webhook/messages", json=sent)
    assert started.status_code == 202, started.text
    thread_id = started.json()["thread"]
    again = await client.post("/webhook/messages", json=sent)  # the sender's retry: one effect
    assert again.json() == {"thread": thread_id, "outcome": "duplicate"}

    [request] = await receiver.got("approval_requested")
    assert request["tool"] == "deploy" and request["args"]["environment"] == "prod"
    assert request["answer"]["path"] == "/webhook/decisions"
    assert runbook_lines(settings) == []

    decision = {"approval_id": request["approval_id"], "approve": True}
    refused = await client.post("/webhook/decisions", json={**decision, "user": "bob"})
    assert refused.status_code == 403  # the requester is no approver
    [told] = await receiver.got("approval_refused")
    assert told["by"] == "bob" and told["via"] == "webhook"
    assert runbook_lines(settings) == []

    decided = await client.post("/webhook/decisions", json={**decision, "user": "alice"})
    assert decided.status_code == 200, decided.text
    [outcome] = await receiver.got("approval_decided")
    assert outcome["decision"] == "approved" and outcome["by"] == "alice" and outcome["via"] == "webhook"
    [reply] = await receiver.got("agent_reply")
    assert reply["text"] == "api 1.2.3 is live in prod."
    assert runbook_lines(settings) == ["deploy api 1.2.3 prod"]
    twice = await client.post("/webhook/decisions", json={**decision, "user": "alice"})
    assert twice.status_code == 409  # the first decision won

    # the same conversation continues the thread
    messages_api.add(text("Nothing else is pending."))
    follow = await client.post("/webhook/messages", json={**sent, "id": "m2", "text": "anything else?"})
    assert follow.json()["thread"] == thread_id
    await receiver.got("agent_reply", 2)
    thread = await rt.store.load(thread_id)
    assert thread.meta.origin.channel == "webhook"
    assert thread.meta.origin.address == {"conversation": "ops-42", "callback": receiver.url}


async def test_the_webhook_refuses_requests_without_its_secret(bot_with_webhook, receiver):
    _rt, client, _settings = bot_with_webhook
    body = {"conversation": "c", "callback": receiver.url, "user": "mallory", "text": "deploy"}
    for headers in ({"X-Webhook-Token": "wrong"}, {"X-Webhook-Token": ""}):
        refused = await client.post("/webhook/messages", json=body, headers=headers)
        assert refused.status_code == 401
    decision = {"approval_id": "x.y", "approve": True, "user": "alice"}
    assert (await client.post("/webhook/decisions", json=decision, headers={"X-Webhook-Token": "no"})).status_code == 401

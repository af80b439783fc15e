"""A long thread costs a request what a short one does: posting a message, deciding an approval
(API and Slack) and a Slack ack read the same from Redis at 4,000 events as at 40. Measured on a
redis-server of the test's own (INFO stats: bytes Redis sent us, commands it ran), not by time."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import redis as sync_redis

from bot.api import create_app
from bot.approvals import new_approval_id
from bot.events import (
    AgentReply,
    ApprovalRequested,
    Event,
    Source,
    ToolCall,
    ToolResult,
    UserMessage,
    new_id,
)
from bot.intake import thread_id_for
from bot.runtime import Runtime
from bot.settings import Settings
from bot.thread import Origin, ThreadMeta
from channels.slack import app as slack
from channels.slack.inbound import Later
from channels.slack.render import address_key
from tests.conftest import make_wiring
from tests.slack_api import TEAM, Sender, SlackAPI, message, new_ts

TOKEN = "long-thread-token"
SECRET = "long-thread-secret"
CHANNEL = "C0LONG01"
APPROVER = "u0alice1"


@pytest.fixture
async def slack_web() -> AsyncIterator[SlackAPI]:
    api = await SlackAPI().start()
    yield api
    await api.close()


def filler(i: int) -> list[Event]:
    """Four events of an ordinary exchange: a question, a tool call and its output, a reply."""
    call_id = new_id("c")
    source = Source(channel="api", user="bob")
    return [
        UserMessage(text=f"message {i}: " + "how is the api service doing today? " * 5, source=source),
        ToolCall(call_id=call_id, tool="service_status", args={"service": "api", "environment": "prod"},
                 turn=new_id("t")),
        ToolResult(call_id=call_id, status="ok", output="api prod: healthy, 12 pods, p99 80 ms\n" * 8),
        AgentReply(text="The api is healthy in prod: 12 pods, p99 80 ms. " * 3),
    ]


async def grow(rt: Runtime, meta: ThreadMeta, n: int) -> None:
    events = [e for i in range(n // 4) for e in filler(i)]
    for start in range(0, len(events), 200):
        first, *rest = events[start:start + 200]
        appended = await rt.store.append(meta.id, first, create=meta, followed_by=rest, state="idle")
        assert appended.ok


async def request_approval(rt: Runtime, thread_id: str) -> str:
    approval_id = new_approval_id(thread_id)
    call_id = new_id("c")
    call = ToolCall(call_id=call_id, tool="deploy", args={"service": "api", "version": "1.2.3"}, turn=new_id("t"))
    request = ApprovalRequested(approval_id=approval_id, call_id=call_id, tool="deploy", args=call.args,
                                requester="bob", approvers=[APPROVER, "alice"], expires_at=time.time() + 3600)
    assert (await rt.store.append(thread_id, call)).ok
    assert (await rt.store.append(thread_id, request, state="awaiting_approval")).ok
    return approval_id


class Meter:
    """What Redis sent and did between two readings (one INFO call each, the same every time)."""

    def __init__(self, url: str, later: Later) -> None:
        self.client = sync_redis.Redis.from_url(url)
        self.later = later  # the Slack service's calls after an ack

    def reading(self) -> tuple[int, int]:
        stats = self.client.info("stats")
        return int(stats["total_net_output_bytes"]), int(stats["total_commands_processed"])

    async def cost(self, action: Callable[[], Any]) -> tuple[int, int]:
        before = self.reading()
        await action()
        await self.later.flush()  # the Web API calls after an ack read Redis too: count them
        after = self.reading()
        return after[0] - before[0], after[1] - before[1]


async def test_requests_cost_the_same_in_a_long_thread(own_redis, make_settings: Callable[..., Settings],
                                                       runtime, serve, slack_web):
    settings = make_settings(redis_url=own_redis.url, api_token=TOKEN, signing_key=None)
    channel = dict(bot_token="xoxb-test", signing_secret=SECRET, api_url=slack_web.url)
    rt = await runtime(settings, make_wiring(slack=channel))  # no worker: only the requests touch Redis
    app = create_app(rt)
    assert rt.channels["slack"].service(rt, app) is None
    url = await serve(app)
    sender = Sender(url + slack.PATH, SECRET)
    meter = Meter(own_redis.url, rt.channels["slack"].later)
    costs: dict[int, dict[str, tuple[int, int]]] = {}
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async def measure(size: int) -> dict[str, tuple[int, int]]:
            api_meta = ThreadMeta(id=f"{size:016x}", agent="deploy", origin=Origin(channel="api"),
                                  created=time.time())
            await grow(rt, api_meta, size)
            root = new_ts()
            slack_meta = ThreadMeta(
                id=thread_id_for("slack", address_key(TEAM, CHANNEL, root)), agent="deploy",
                origin=Origin(channel="slack", address={"team": TEAM, "channel": CHANNEL, "thread_ts": root}),
                created=time.time())
            await grow(rt, slack_meta, size)

            async def post_message() -> None:
                said = await http.post(f"/v1/threads/{api_meta.id}/messages", json={"text": "and web?", "user": "bob"})
                assert said.status_code == 202

            approval = await request_approval(rt, api_meta.id)

            async def decide() -> None:
                decided = await http.post(f"/v1/approvals/{approval}", json={"decision": "approve", "user": "alice"})
                assert decided.status_code == 200, decided.text

            async def listing() -> None:
                listed = (await http.get("/v1/approvals")).json()["approvals"]
                assert [a["approval_id"] for a in listed] == [slack_approval]

            async def slack_ack() -> None:
                ack = await sender.event(message("and web?", channel=CHANNEL, thread_ts=root, ts=new_ts()))
                assert ack.status_code == 200

            async def slack_decide() -> None:
                ack = await sender.event(message("approve", user="U0ALICE1", channel=CHANNEL, thread_ts=root,
                                                 ts=new_ts()))
                assert ack.status_code == 200

            cost = {"message": await meter.cost(post_message), "decide": await meter.cost(decide),
                    "slack ack": await meter.cost(slack_ack)}
            slack_approval = await request_approval(rt, slack_meta.id)
            cost["approvals"] = await meter.cost(listing)
            cost["slack decide"] = await meter.cost(slack_decide)
            assert slack_approval in (await rt.store.load(slack_meta.id)).decisions
            assert approval in (await rt.store.load(api_meta.id)).decisions
            return cost

        for size in (40, 4000):
            costs[size] = await measure(size)
    await sender.close()
    print(json.dumps(costs))
    for what, (short_bytes, short_commands) in costs[40].items():
        long_bytes, long_commands = costs[4000][what]
        assert long_bytes < 3 * short_bytes, (what, costs)
        assert long_commands < 3 * short_commands, (what, costs)

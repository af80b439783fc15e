"""The HTTP API over real HTTP (uvicorn on loopback), with a real Redis behind it."""

from __future__ import annotations

import httpx
import pytest

from bot.api import create_app
from tests.conftest import settled
from tests.helpers import runbook_lines

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def api(make_settings, start_bot, serve, policy_file):
    settings = make_settings(api_token=TOKEN, policy_file=policy_file('approvers = ["alice"]\n'))
    rt = await start_bot(settings)
    base = await serve(create_app(rt))
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        yield rt, client, settings


async def test_without_the_token_everything_but_health_is_refused(api):
    rt, client, _ = api
    assert (await client.get("/healthz")).status_code == 200
    for method, path in [("GET", "/v1/threads"), ("POST", "/v1/threads"), ("GET", "/v1/approvals"),
                         ("POST", "/v1/approvals/0123456789abcdef.01234567"), ("GET", "/v1/threads/x"),
                         ("GET", "/openapi.json")]:
        assert (await client.request(method, path, json={})).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.request(method, path, json={}, headers=wrong)).status_code == 401
    assert await rt.store.list_threads() == []


async def test_threads_and_approvals_round_trip(api):
    rt, client, settings = api
    made = await client.post("/v1/threads", json={"text": "/rollback api prod", "user": "bob"}, headers=AUTH)
    assert made.status_code == 201 and made.json()["agent"] == "deploy"
    thread_id = made.json()["id"]
    await settled(rt, thread_id)

    listed = (await client.get("/v1/threads?state=awaiting_approval", headers=AUTH)).json()["threads"]
    assert [t["id"] for t in listed] == [thread_id]
    [approval] = (await client.get("/v1/approvals?state=pending", headers=AUTH)).json()["approvals"]
    assert approval["tool"] == "rollback" and approval["thread"] == thread_id

    path = f"/v1/approvals/{approval['approval_id']}"
    refused = await client.post(path, json={"decision": "approve", "user": "bob"}, headers=AUTH)
    assert refused.status_code == 403
    ok = await client.post(path, json={"decision": "approve", "user": "alice"}, headers=AUTH)
    assert ok.status_code == 200 and ok.json()["decision"] == "approved"
    again = await client.post(path, json={"decision": "reject", "user": "alice", "reason": "x"}, headers=AUTH)
    assert again.status_code == 409

    await settled(rt, thread_id)
    body = (await client.get(f"/v1/threads/{thread_id}", headers=AUTH)).json()
    assert body["state"] == "idle" and body["events"][-1]["type"] == "agent_reply"
    assert runbook_lines(settings) == ["rollback api prod"]

    said = await client.post(f"/v1/threads/{thread_id}/messages", json={"text": "/help", "user": "bob"},
                             headers=AUTH)
    assert said.status_code == 202
    thread = await settled(rt, thread_id)
    assert "Commands of the deploy agent" in thread.events[-1].text


async def test_bad_input_gets_clear_errors(api):
    _, client, _ = api
    assert (await client.post("/v1/threads", json={"text": "", "user": "bob"}, headers=AUTH)).status_code == 422
    unknown = await client.post("/v1/threads", json={"agent": "nope", "text": "hi", "user": "b"}, headers=AUTH)
    assert unknown.status_code == 422 and "no agent 'nope'" in unknown.json()["detail"]
    assert (await client.get("/v1/threads/ffffffffffffffff", headers=AUTH)).status_code == 404
    missing = await client.post("/v1/approvals/not-an-id", json={"decision": "approve", "user": "a"}, headers=AUTH)
    assert missing.status_code == 404
    assert (await client.get("/openapi.json", headers=AUTH)).json()["paths"]["/v1/approvals/{approval_id}"]
    assert (await client.get("/docs")).status_code == 404


async def test_redis_down_answers_503(make_settings, runtime, serve):
    import socket

    dead_port = socket.socket()  # bound, never listening: refuses connections, and stays ours
    dead_port.bind(("127.0.0.1", 0))
    dead = f"redis://127.0.0.1:{dead_port.getsockname()[1]}/0"
    rt = await runtime(make_settings(api_token=TOKEN, redis_url=dead))
    base = await serve(create_app(rt))
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        made = await client.post("/v1/threads", json={"text": "hi", "user": "bob"}, headers=AUTH)
        assert made.status_code == 503 and made.headers["retry-after"] == "5"
        assert (await client.get("/healthz")).status_code == 503
    dead_port.close()

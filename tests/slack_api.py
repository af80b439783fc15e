"""A small local Slack for tests: the Web API (every call recorded; scripted failures such as a
429 with Retry-After) and the Socket Mode WebSocket, plus a sender that signs Events API and
interactivity requests with a test signing secret like Slack does.

It runs on aiohttp in the test's event loop; the bot talks to it with the real slack_sdk client
(SLACK_API_URL) and receives from it through the real Bolt app.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from aiohttp import WSMsgType, web
from slack_sdk.signature import SignatureVerifier

TEAM = "T0TEST"
BOT_USER = "UBOT0001"
BOT_ID = "BBOT0001"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    failed: bool = False
    result: dict[str, Any] = field(default_factory=dict)


class SlackAPI:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.failures: dict[str, deque[tuple[int, dict[str, str], dict[str, Any]]]] = {}
        self.acks: dict[str, asyncio.Future] = {}
        self.sockets: list[web.WebSocketResponse] = []
        self.connected = asyncio.Event()
        self._ts = itertools.count(1)
        # what auth.test says the bot token was granted (Slack's x-oauth-scopes header)
        self.scopes: list[str] = ["app_mentions:read", "channels:history", "groups:history",
                                  "im:history", "chat:write", "reactions:write"]
        self._runner: web.AppRunner | None = None
        self.base = ""
        self.emails: dict[str, str] = {}  # Slack user id -> the email of their profile (users.info)

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> SlackAPI:
        app = web.Application()
        app.router.add_post("/api/{method}", self._web_api)
        app.router.add_get("/api/{method}", self._web_api)  # slack_sdk reads users.info with GET
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        for ws in self.sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"{self.base}/api/"

    # ---- scripting and inspection ----------------------------------------------------------

    def fail(self, method: str, status: int = 429, *, retry_after: int | None = 1,
             error: str = "ratelimited", times: int = 1) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        queue = self.failures.setdefault(method, deque())
        for _ in range(times):
            queue.append((status, headers, {"ok": False, "error": error}))

    def to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and not c.failed]

    def matching(self, method: str, **match: Any) -> list[Call]:
        """The successful calls of `method` so far whose args match."""
        return [c for c in self.to(method) if all(c.args.get(k) == v for k, v in match.items())]

    async def wait_calls(self, method: str, n: int = 1, **match: Any) -> list[Call]:
        """The first `n` matching calls, once there are `n`. Says nothing of further calls: to
        show there are none, let the bot finish and count `matching`."""
        from tests.conftest import wait_for

        async def enough() -> list[Call] | None:
            found = self.matching(method, **match)
            return found[:n] if len(found) >= n else None

        return await wait_for(enough, 15, f"{n} call(s) to {method} with {match}")

    def attempts(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    # ---- the Web API -----------------------------------------------------------------------

    async def _web_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        raw = await request.read()
        if request.content_type == "application/json":
            args = json.loads(raw or b"{}")
        else:
            args = dict(parse_qsl(raw.decode()))
        args.update(dict(request.query))
        call = Call(method, args, dict(request.headers))
        self.calls.append(call)
        if queue := self.failures.get(method):
            status, headers, body = queue.popleft()
            call.failed = True
            return web.json_response(body, status=status, headers=headers)
        call.result = self._answer(method, args)
        headers = {"x-oauth-scopes": ",".join(self.scopes)} if method == "auth.test" else {}
        return web.json_response(call.result, headers=headers)

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        ok: dict[str, Any] = {"ok": True}
        if method == "auth.test":
            return {**ok, "url": "https://test.slack.com/", "team": "Test", "user": "chatops",
                    "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID}
        if method == "chat.postMessage":
            return {**ok, "channel": args.get("channel"), "ts": self.next_ts(),
                    "message": {"text": args.get("text"), "thread_ts": args.get("thread_ts")}}
        if method == "chat.update":
            return {**ok, "channel": args.get("channel"), "ts": args.get("ts")}
        if method == "chat.postEphemeral":
            return {**ok, "message_ts": self.next_ts()}
        if method == "views.open":
            return {**ok, "view": {"id": "VTEST"}}
        if method == "users.info":
            user = args.get("user", "")
            return {**ok, "user": {"id": user, "profile": {"email": self.emails[user]} if user in self.emails else {}}}
        if method == "apps.connections.open":
            return {**ok, "url": f"{self.base.replace('http', 'ws')}/socket"}
        return ok

    def next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    # ---- Socket Mode -----------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1,
                            "connection_info": {"app_id": "ATEST"}, "debug_info": {}})
        self.connected.set()
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            future = self.acks.get(data.get("envelope_id", ""))
            if future is not None and not future.done():
                future.set_result(data)
        return ws

    async def envelope(self, kind: str, payload: dict[str, Any], *, retry_attempt: int = 0,
                       timeout: float = 10.0) -> dict[str, Any]:
        """Deliver an envelope over Socket Mode; the bot's acknowledgement."""
        await asyncio.wait_for(self.connected.wait(), timeout)
        envelope_id = str(uuid.uuid4())
        self.acks[envelope_id] = asyncio.get_running_loop().create_future()
        await self.sockets[-1].send_json({
            "envelope_id": envelope_id, "type": kind, "payload": payload,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": retry_attempt, "retry_reason": "timeout" if retry_attempt else "",
        })
        return await asyncio.wait_for(self.acks[envelope_id], timeout)


# ---- what Slack sends to the bot -------------------------------------------------------------

def event_body(event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "token": "legacy", "team_id": TEAM, "api_app_id": "ATEST", "type": "event_callback",
        "event": {"event_ts": event.get("ts", ""), **event},
        "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": int(time.time()),
        "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
    }


def mention(text: str, *, user: str = "U0ALICE1", channel: str = "C0DEPLOY", ts: str | None = None,
            thread_ts: str | None = None) -> dict[str, Any]:
    event = {"type": "app_mention", "user": user, "text": f"<@{BOT_USER}> {text}", "channel": channel,
             "ts": ts or new_ts(), "team": TEAM}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def message(text: str, *, user: str = "U0ALICE1", channel: str = "C0DEPLOY", ts: str | None = None,
            thread_ts: str | None = None, channel_type: str = "channel", **extra: Any) -> dict[str, Any]:
    event = {"type": "message", "user": user, "text": text, "channel": channel,
             "ts": ts or new_ts(), "channel_type": channel_type, "team": TEAM, **extra}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def block_action(action_id: str, value: str, *, user: str, channel: str, message_ts: str,
                 thread_ts: str) -> dict[str, Any]:
    return {
        "type": "block_actions", "team": {"id": TEAM}, "user": {"id": user, "team_id": TEAM},
        "api_app_id": "ATEST", "trigger_id": f"trig.{uuid.uuid4().hex[:8]}",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
        "channel": {"id": channel}, "message": {"ts": message_ts, "thread_ts": thread_ts},
        "response_url": "https://hooks.invalid/x",
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": value,
                     "action_ts": new_ts()}],
    }


def view_submission(view: dict[str, Any], *, user: str, reason: str) -> dict[str, Any]:
    return {
        "type": "view_submission", "team": {"id": TEAM}, "user": {"id": user, "team_id": TEAM},
        "api_app_id": "ATEST", "trigger_id": f"trig.{uuid.uuid4().hex[:8]}",
        "view": {**view, "id": "VTEST", "state": {"values": {"reason": {"reason": {
            "type": "plain_text_input", "value": reason}}}}},
    }


_ts = itertools.count(1)


def new_ts() -> str:
    return f"{int(time.time())}.{next(_ts):06d}"


class Sender:
    """Posts to the bot's /slack/events as Slack does: raw body signed with the signing secret."""

    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self.verifier = SignatureVerifier(secret)
        self.http = httpx.AsyncClient(timeout=10)

    async def close(self) -> None:
        await self.http.aclose()

    def signed(self, body: str, *, timestamp: int | None = None, forge: bool = False,
               retry: int | None = None, content_type: str = "application/json") -> dict[str, str]:
        ts = str(timestamp if timestamp is not None else int(time.time()))
        signature = self.verifier.generate_signature(timestamp=ts, body=body) or ""
        if forge:
            signature = signature[:-4] + ("0000" if not signature.endswith("0000") else "1111")
        headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature,
                   "Content-Type": content_type}
        if retry is not None:
            headers.update({"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"})
        return headers

    async def event(self, event: dict[str, Any], *, event_id: str | None = None, **how: Any) -> httpx.Response:
        body = json.dumps(event_body(event, event_id))
        return await self.http.post(self.url, content=body, headers=self.signed(body, **how))

    async def interaction(self, payload: dict[str, Any], **how: Any) -> httpx.Response:
        body = urlencode({"payload": json.dumps(payload)})
        headers = self.signed(body, content_type="application/x-www-form-urlencoded", **how)
        return await self.http.post(self.url, content=body, headers=headers)

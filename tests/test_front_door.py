"""The front door: bounded requests (a server process whose memory is measured), poison input
refused with a 4xx, and malformed Slack requests refused without a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.api import create_app
from bot.settings import Settings
from channels.slack import app as slack
from tests.conftest import ROOT, bot_env, make_wiring
from tests.messages_api import text, tool_use
from tests.slack_api import Sender, event_body, mention, message, new_ts
from tests.test_slack import DEPLOY_PROD, slack_api, slack_bot  # noqa: F401  (fixtures)

TOKEN = "front-door-token"
SECRET = "front-door-slack-secret"
MB = 1024 * 1024


# ---- a server in its own process ------------------------------------------------------------

class Server:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    def status(self, field: str) -> int:
        """A memory figure of the server process from /proc, in bytes (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field}")


@pytest.fixture
def server_process(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Server]]:
    procs: list[subprocess.Popen] = []

    def start(**env: str) -> Server:
        settings = make_settings()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        log = settings.data_dir / f"server-{uuid.uuid4().hex[:6]}.log"
        environment = bot_env(settings, CHATOPS_API_TOKEN=TOKEN, SLACK_BOT_TOKEN="xoxb-test",
                              SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL="http://127.0.0.1:9/", **env)
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "tests.front_server"], env=environment, cwd=ROOT,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        deadline = time.monotonic() + 30
        while not (ports := [line for line in log.read_text().splitlines() if line.isdigit()]):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not start: " + log.read_text()
            time.sleep(0.05)
        server = Server(proc, int(ports[0]), log)
        deadline = time.monotonic() + 30
        while not _healthy(server.port):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        return server

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


async def send_huge(port: int, path: str, headers: dict[str, str], size: int, *, chunked: bool) -> tuple[int, float]:
    """POST `size` bytes of body as fast as the server takes them; (status, seconds to the
    answer). The answer may come while the body is still being sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
            *(f"{k}: {v}" for k, v in headers.items())]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    started = time.monotonic()
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())

    async def pour() -> None:
        chunk = b"x" * MB
        sent = 0
        try:
            while sent < size:
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
                await writer.drain()
                sent += len(chunk)
        except (ConnectionError, OSError):
            pass  # the server answered and closed: what we want

    pouring = asyncio.create_task(pour())
    try:
        status_line = await asyncio.wait_for(reader.readline(), 60)
        elapsed = time.monotonic() - started
    finally:
        pouring.cancel()
        await asyncio.gather(pouring, return_exceptions=True)
        writer.close()
    return int(status_line.split()[1]), elapsed


async def test_huge_bodies_are_refused_before_they_are_read(server_process):
    server = server_process()
    before = server.status("VmRSS")
    bad_token = {"Authorization": "Bearer wrong"}
    good_token = {"Authorization": f"Bearer {TOKEN}"}
    forged = {"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v0=" + "0" * 64}
    cases = [
        ("/v1/threads", bad_token, False, {401, 413}),
        ("/v1/threads", bad_token, True, {401, 413}),
        ("/v1/threads", good_token, False, {413}),
        ("/v1/threads", good_token, True, {413}),  # no length declared: counted as it comes
        ("/slack/events", forged, False, {413}),
        ("/slack/events", forged, True, {401, 413}),
    ]
    for path, headers, chunked, expected in cases:
        status, seconds = await send_huge(server.port, path, headers, 100 * MB, chunked=chunked)
        assert status in expected, (path, headers, chunked, status)
        assert seconds < 1.0, (path, chunked, seconds)
    grown = server.status("VmHWM") - before
    assert grown < 64 * MB, f"the server grew by {grown / MB:.0f} MB"
    assert _healthy(server.port)


async def test_a_client_that_never_finishes_its_request_head_is_disconnected(server_process):
    server = server_process(CHATOPS_HTTP_HEADER_TIMEOUT="1")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /v1/threads HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    await writer.drain()
    # the server closes it: EOF, well before the generous deadline
    assert await asyncio.wait_for(reader.read(), 30) == b""
    writer.close()
    # a well-behaved client on a kept-alive connection is unaffected
    assert _healthy(server.port)


# ---- in-process: the real app over real uvicorn ------------------------------------------------

@pytest.fixture
async def front(make_settings, runtime, serve, slack_api_url) -> AsyncIterator[tuple[Any, httpx.AsyncClient, Sender]]:
    settings = make_settings(api_token=TOKEN)
    rt = await runtime(settings, make_wiring(slack=dict(bot_token="xoxb-test", signing_secret=SECRET,
                                                        api_url=slack_api_url)))
    app = create_app(rt)
    assert rt.channels["slack"].service(rt, app) is None
    url = await serve(app)
    sender = Sender(url + slack.PATH, SECRET)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield rt, client, sender
    await sender.close()


@pytest.fixture
async def slack_api_url() -> AsyncIterator[str]:
    from tests.slack_api import SlackAPI

    api = await SlackAPI().start()
    yield api.url
    await api.close()


JSON = {"Content-Type": "application/json"}


async def test_poison_text_is_a_4xx_with_a_clear_message(front):
    rt, client, _ = front
    for raw, why in [
        ('{"text": "hi \\udab5 there", "user": "bob"}', "unicode"),
        ('{"text": "hi", "user": "b\\udc00b"}', "unicode"),
        ('{"text": "nul \\u0000 here", "user": "bob"}', "U+0000"),
        ('{"text": "bell \\u0007", "user": "bob"}', "U+0007"),
    ]:
        response = await client.post("/v1/threads", content=raw, headers=JSON)
        assert response.status_code == 422, raw
        assert why in response.text, response.text
    overlong = await client.post("/v1/threads", json={"text": "x" * 40_001, "user": "bob"})
    assert overlong.status_code == 422
    assert (await client.post("/v1/threads", content=b"{not json", headers=JSON)).status_code == 422
    assert await rt.redis.zcard(rt.store.keys.threads) == 0  # nothing was stored


async def test_the_token_is_checked_before_the_body_is_parsed(front):
    _, client, _ = front
    for body in (b"{not json", b'{"text": "\\udab5", "user": "x"}'):
        response = await client.post("/v1/threads", content=body,
                                     headers={**JSON, "Authorization": "Bearer wrong"})
        assert response.status_code == 401


async def test_intake_cleans_what_any_channel_brings(front):
    rt, _, _ = front
    from bot.events import Source
    from bot.thread import Origin

    await rt.intake.message("00000000000000aa", agent="deploy", origin=Origin(channel="console"),
                            text="a\udab5b\x00c" + "y" * 50_000, source=Source(channel="console", user="z\udc00"))
    [event] = (await rt.store.load("00000000000000aa")).events
    assert event.text.startswith("a\ufffdbc") and len(event.text) < 40_100
    assert event.source.user == "z\ufffd"


async def test_malformed_slack_requests_get_400_with_a_log_line(front, caplog):
    rt, _, sender = front
    good = json.dumps(event_body(message("hi", channel_type="im", channel="D0X")))
    cases: list[tuple[str, dict[str, str], int]] = [
        (good, {**sender.signed(good), "X-Slack-Request-Timestamp": "abc"}, 400),
        ("{not json", sender.signed("{not json"), 400),
        ("[1, 2]", sender.signed("[1, 2]"), 400),
        ("payload=%7Bnot", sender.signed("payload=%7Bnot", content_type="application/x-www-form-urlencoded"), 400),
        (good.replace('"hi"', '"hi \\udab5"'), sender.signed(good.replace('"hi"', '"hi \\udab5"')), 400),
        (good, sender.signed(good, forge=True), 401),
    ]
    with caplog.at_level(logging.WARNING, logger="chatops.slack"):
        for body, headers, expected in cases:
            response = await sender.http.post(sender.url, content=body, headers=headers)
            assert response.status_code == expected, body
    refusals = [r for r in caplog.records if "refused a request" in r.getMessage()]
    assert len(refusals) == len(cases) and not any(r.exc_info for r in caplog.records)
    assert await rt.redis.zcard(rt.store.keys.threads) == 0


async def test_a_slack_event_without_the_fields_we_need_is_acked_and_dropped(front, caplog):
    rt, _, sender = front
    event = message("hi there", channel_type="im", channel="D0X")
    del event["ts"]
    with caplog.at_level(logging.WARNING, logger="chatops.slack"):
        response = await sender.event(event)
    assert response.status_code == 200
    assert any("dropped a Slack message event" in r.getMessage() for r in caplog.records)
    assert await rt.redis.zcard(rt.store.keys.threads) == 0
    odd = message("hi", channel_type="im", channel="D0X", ts=new_ts())
    odd["user"] = {"id": "U1"}
    assert (await sender.event(odd)).status_code == 200
    assert await rt.redis.zcard(rt.store.keys.threads) == 0


async def test_thread_events_are_paged(front):
    rt, client, _ = front
    from bot.events import Source
    from bot.thread import Origin

    thread_id = "00000000000000bb"
    for i in range(5):
        await rt.intake.message(thread_id, agent="deploy", origin=Origin(channel="api"), text=f"m{i}",
                                source=Source(channel="api", user="u"))
    first = (await client.get(f"/v1/threads/{thread_id}?limit=2")).json()
    assert first["total_events"] == 5 and [e["text"] for e in first["events"]] == ["m0", "m1"]
    second = (await client.get(f"/v1/threads/{thread_id}?limit=2&after={first['next_after']}")).json()
    assert [e["text"] for e in second["events"]] == ["m2", "m3"]
    last = (await client.get(f"/v1/threads/{thread_id}?limit=2&after={second['next_after']}")).json()
    assert [e["text"] for e in last["events"]] == ["m4"] and last["next_after"] is None
    everything = (await client.get(f"/v1/threads/{thread_id}")).json()
    assert len(everything["events"]) == 5 and everything["agent"] == "deploy"
    assert (await client.get(f"/v1/threads/{thread_id}?after=e_nope")).status_code == 404


# ---- safe text out -------------------------------------------------------------------------------

async def test_what_the_model_says_can_mention_no_one_and_hide_no_link(slack_bot, messages_api):  # noqa: F811
    bot = await slack_bot()
    messages_api.add(text("<!channel> <!here> ping <@U0BOB001>, and [approve here](https://evil.example/x) "
                          "or <https://evil.example|approve> `<!everyone>`"))
    ts = new_ts()
    assert (await bot.send.event(mention("status?", ts=ts))).status_code == 200
    [reply] = await bot.calls("chat.postMessage", thread_ts=ts)
    shown = reply.args["blocks"][0]["text"]["text"] + reply.args["text"]
    for markup in ("<!channel>", "<!here>", "<@U0BOB001>", "<!everyone>", "<https://evil.example"):
        assert markup not in shown, shown
    assert "&lt;!channel&gt;" in shown and "approve here (https://evil.example/x)" in shown
    # the bot's own mentions still work (the approval message names its approvers)
    messages_api.add(tool_use("deploy", DEPLOY_PROD, say="Deploying."))
    ts = new_ts()
    await bot.send.event(mention("deploy api 1.2.3 to prod", ts=ts))
    [request] = await bot.calls("chat.postMessage", thread_ts=ts)
    assert "<@U0BOB001>" in json.dumps(request.args["blocks"])


async def test_a_slack_interaction_without_the_fields_we_need_is_not_a_500(front):
    _, _, sender = front
    from tests.slack_api import block_action

    click = block_action("approval_approve", "approve:x:y", user="U0BOB001", channel="C0X", message_ts=new_ts(),
                         thread_ts=new_ts())
    del click["user"]
    assert (await sender.interaction(click)).status_code == 400
    form = {"type": "view_submission", "user": {"id": "U0BOB001"}, "view": {"id": "V1"}}
    assert (await sender.interaction(form)).status_code == 400
    event = event_body(message("hi", channel_type="im", channel="D0X"))
    event["event"] = "not an object"
    raw = json.dumps(event)
    assert (await sender.http.post(sender.url, content=raw, headers=sender.signed(raw))).status_code == 400

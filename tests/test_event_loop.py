"""Every process on uvloop when installed (asyncio's loop otherwise), and the model client on the
SDK's aiohttp transport with as many connections as the worker advances threads at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from aiohttp import web

from bot.model import Model
from tests.conftest import ROOT, spawn_bot, wait_for

WHICH_LOOP = "import asyncio; from bot.loop import run\n" \
             "async def which(): return type(asyncio.get_running_loop()).__module__\n" \
             "print(run(which()))\n"


async def test_a_worker_process_runs_on_uvloop(make_settings):
    worker = spawn_bot(make_settings(), "worker")
    try:
        await wait_for(lambda: _said(worker, "event loop: uvloop"), 60, "the worker to start on uvloop")
    finally:
        worker.kill()
        worker.wait()


async def test_without_uvloop_the_asyncio_loop_runs():
    blocked = "import sys; sys.modules['uvloop'] = None\n" + WHICH_LOOP  # as if not installed
    out = subprocess.run([sys.executable, "-c", blocked], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "asyncio.unix_events", out.stderr


async def _said(worker, text: str) -> bool:
    return text in worker.log_path.read_text(errors="replace")  # while it runs


async def test_model_connections_are_bounded_by_the_worker_concurrency(make_settings):
    """Six calls at once with CHATOPS_WORKER_CONCURRENCY=2: never more than two in flight."""
    in_flight, peak, peers = 0, 0, set()

    async def messages(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        peers.add(request.transport.get_extra_info("peername"))
        try:
            await asyncio.sleep(0.2)
        finally:
            in_flight -= 1
        return web.json_response({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "end_turn",
            "stop_sequence": None, "content": [{"type": "text", "text": "hi"}],
            "usage": {"input_tokens": 1, "output_tokens": 1},
        })

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    model = Model(make_settings(anthropic_api_key="k", anthropic_base_url=f"http://127.0.0.1:{port}",
                                worker_concurrency=2))
    try:
        turns = await asyncio.gather(*(model.next_turn("s", [], [{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
                                       for _ in range(6)))
        assert [t.text for t in turns] == ["hi"] * 6
        assert peak == 2 and len(peers) == 2  # two kept-alive connections served all six
    finally:
        await model.close()
        await runner.cleanup()

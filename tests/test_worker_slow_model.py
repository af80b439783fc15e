"""A model endpoint that is slow or never answers: the human hears once that the bot is still
working, the wait is bounded (the SDK's timeout and retries multiply), and a worker asked to stop
does not wait for the model."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from bot.runtime import Runtime
from tests.conftest import make_wiring, settled, spawn_bot, wait_for
from tests.helpers import say
from tests.messages_api import text


async def test_a_slow_model_gets_one_still_working_notice(model_settings, start_bot, messages_api):
    messages_api.latency = 3.0
    messages_api.add(text("All good."))
    rt = await start_bot(model_settings(model_slow_notice=0.5, model_timeout=60))
    thread = await settled(rt, await say(rt, "how is api?"), timeout=60)
    kinds = [e.type for e in thread.events]
    assert kinds == ["user_message", "notice", "agent_reply"], kinds
    assert "still working" in thread.events[1].text.lower()
    assert thread.events[-1].text == "All good."


async def test_a_model_that_never_answers_is_given_up_at_the_deadline(model_settings, start_bot, messages_api):
    messages_api.latency = 600  # accepts, never answers in time
    settings = model_settings(model_timeout=60, model_retries=3, model_deadline=2, model_slow_notice=60)
    rt = await start_bot(settings)
    started = time.monotonic()
    thread = await settled(rt, await say(rt, "how is api?"), timeout=50)  # well below 4 x 60 s
    assert [e.kind for e in thread.events if e.type == "error"] == ["model_unavailable"]
    assert "did not answer within 2 s" in thread.events[-1].text
    print(f"\ngiven up after {time.monotonic() - started:.1f} s")


@pytest.mark.timeout(300)  # a process that imports everything, on a loaded machine
async def test_a_worker_stopped_during_a_model_wait_exits_without_the_grace(
        model_settings, messages_api):
    messages_api.latency = 600
    settings = model_settings(shutdown_grace=120.0)
    rt = await Runtime.start(settings, make_wiring())  # a client: the worker is the subprocess
    worker = spawn_bot(settings, "worker", CHATOPS_SHUTDOWN_GRACE="120")
    try:
        await say(rt, "how is api?")
        await wait_for(lambda: _received(messages_api), 120, "the worker to call the model")
        started = time.monotonic()
        worker.send_signal(signal.SIGINT)  # Ctrl-C
        code = await asyncio.to_thread(worker.wait, 60)  # the grace (120 s) is not waited out
        took = time.monotonic() - started
        print(f"\nexited {took:.2f} s after SIGINT")
        assert code in (0, 130) and took < 30, (code, took, worker.log_path.read_text())
    finally:
        if worker.poll() is None:
            worker.kill()
        await rt.close()


async def _received(api) -> bool:
    return api.received > 0

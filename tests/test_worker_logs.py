"""At INFO, each step of a thread is one log line: thread id, agent, what ran, outcome, duration."""

from __future__ import annotations

import logging
import re

from tests.conftest import settled
from tests.helpers import say


async def test_each_step_is_one_info_line(make_settings, start_bot, caplog):
    caplog.set_level(logging.INFO, logger="chatops.worker")
    rt = await start_bot(make_settings())
    thread_id = await say(rt, "/service_status api prod")
    await settled(rt, thread_id)
    lines = [r.getMessage() for r in caplog.records
             if r.levelno == logging.INFO and r.getMessage().startswith(f"thread {thread_id} ")]
    pattern = re.compile(rf"thread {thread_id} agent deploy: (.+) -> (\w+) \(\d+\.\d\d s\)")
    steps = [pattern.fullmatch(line) for line in lines]
    assert all(steps), lines
    assert [(m[1], m[2]) for m in steps] == [
        ("RunCommand /service_status", "tool_result"),  # the call, its start and its run: one step
        ("Reply", "agent_reply"),  # without a model, the tool's output is the reply
    ], lines

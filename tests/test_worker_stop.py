"""A worker asked to stop stops, wherever the request lands.

redis-py turns a cancellation that lands mid-command into a connection error and retries the
command; the retry succeeds and the CancelledError is gone. Before the loops checked the task's
cancel request themselves, a worker cancelled at the wrong moment ran forever (seen in CI as a
sweep loop that ignored cancellation).
"""

from __future__ import annotations

import asyncio
import random

from bot.worker import Worker


async def test_worker_stops_whenever_it_is_cancelled(make_settings, runtime):
    # a sweep interval of a millisecond keeps the loops inside Redis commands most of the time
    rt = await runtime(make_settings(sweep_interval=0.001, claim_idle=0.02))
    rng = random.Random(7)
    for attempt in range(60):
        task = asyncio.create_task(Worker(rt).run())
        await asyncio.sleep(rng.uniform(0.001, 0.02))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        left = asyncio.all_tasks() - {asyncio.current_task()}
        loops = [t for t in left if "Worker." in repr(t.get_coro())]
        for t in loops:
            t.cancel()
        _, alive = await asyncio.wait(loops, timeout=2) if loops else (set(), set())
        assert not alive, f"attempt {attempt}: worker loops ignored cancellation: {alive}"

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
        _, running = await asyncio.wait({task}, timeout=5)
        assert not running, f"attempt {attempt}: the worker did not stop: {task.get_stack()}"
        # and run() returned only once its loops had stopped: none is left behind
        left = [t for t in asyncio.all_tasks() if any(part in repr(t.get_coro()) for part in ("Worker.", "Inbox."))]
        assert not left, f"attempt {attempt}: worker loops left running: {left}"


async def test_each_loop_stops_on_a_single_cancel(make_settings, runtime):
    """One cancel must do, wherever it lands: nothing above a loop cancels it twice in production
    (a SIGTERM is one cancel of the main task)."""
    rt = await runtime(make_settings(sweep_interval=0.001, claim_idle=0.02))
    worker = Worker(rt)
    await worker.inbox.ensure_group()
    rng = random.Random(11)
    for attempt in range(60):
        for loop in (worker.sweep_loop, worker.inbox.read_loop, worker.inbox.claim_loop):
            task = asyncio.create_task(loop())
            await asyncio.sleep(rng.uniform(0.001, 0.02))
            task.cancel()
            _, running = await asyncio.wait({task}, timeout=2)
            assert not running, f"attempt {attempt}: {loop.__name__} ignored its cancel"


async def test_a_cancel_during_start_up_stops_the_worker(make_settings, runtime):
    """A cancel that lands while the worker creates its consumer group (on a fresh connection,
    so that the cancel hits redis-py mid-command at some step) must stop it too: each attempt
    cancels the start-up after one more turn of the event loop than the last."""
    rt = await runtime(make_settings(sweep_interval=0.001, claim_idle=0.02))
    for turns in range(40):
        await rt.redis.delete(rt.store.keys.inbox)
        await rt.redis.connection_pool.disconnect()
        task = asyncio.create_task(Worker(rt).run())
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        _, running = await asyncio.wait({task}, timeout=10)
        assert not running, f"cancelled after {turns} turns: the worker did not stop: {task.get_stack()}"

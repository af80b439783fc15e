"""A worker outlives a Redis outage: its loops log and retry instead of crashing the process."""

from __future__ import annotations

import asyncio
import logging

from bot.embedded_redis import EmbeddedRedis
from bot.runtime import Runtime
from bot.worker import Worker
from tests.conftest import wait_for


async def test_worker_loops_survive_redis_going_away(make_settings, tmp_path, caplog):
    embedded = EmbeddedRedis(tmp_path / "redis")
    url = await embedded.start()
    rt = await Runtime.start(make_settings(redis_url=url))
    task = asyncio.create_task(Worker(rt).run())
    try:
        await wait_for(lambda: rt.redis.exists(rt.store.keys.inbox), what="the worker's group")
        await embedded.shutdown()
        caplog.set_level(logging.WARNING, logger="chatops.worker")

        async def retried():
            return any("approval sweep failed" in r.getMessage() for r in caplog.records) or task.done()
        await wait_for(retried, what="the sweep to fail and retry")
        assert not task.done(), task.exception()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rt.close()
        await embedded.stop()

"""A worker outlives a Redis outage: its loops log and retry instead of crashing the process, with
one log line per back-off step; it outlives a Redis that comes back empty; and it stops, loudly,
when Redis refuses it (a wrong password is no outage)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.embedded_redis import EmbeddedRedis
from bot.runtime import Runtime
from bot.worker import Worker
from tests.conftest import make_wiring, settled, spawn_bot, wait_for
from tests.helpers import say
from tests.redis_process import RedisProcess


async def test_worker_loops_survive_redis_going_away(make_settings, tmp_path, caplog):
    embedded = EmbeddedRedis(tmp_path / "redis")
    url = await embedded.start()
    rt = await Runtime.start(make_settings(redis_url=url), make_wiring())
    task = asyncio.create_task(Worker(rt).run())
    try:
        await wait_for(lambda: rt.redis.exists(rt.store.keys.inbox), what="the worker's group")
        await embedded.shutdown()
        caplog.set_level(logging.WARNING, logger="chatops.worker")

        def outage_lines():
            return [r.getMessage() for r in caplog.records if "Redis unreachable" in r.getMessage()]

        async def backed_off_thrice():
            return len(outage_lines()) >= 3 or task.done()
        await wait_for(backed_off_thrice, 60, what="three back-off steps")
        assert not task.done(), task.exception()
        # one line per step, whichever of the three loops failed: the delays announced grow
        delays = [float(line.rsplit("retrying in ", 1)[1].rstrip("s")) for line in outage_lines()]
        assert delays[:3] == sorted(delays[:3]) and delays[2] >= 1.0, outage_lines()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rt.close()
        await embedded.stop()


async def test_a_redis_that_comes_back_empty_gets_its_group_back(make_settings, start_bot, caplog):
    caplog.set_level(logging.WARNING, logger="chatops.worker")
    rt = await start_bot(make_settings())
    await settled(rt, await say(rt, "/help"))
    await rt.redis.delete(rt.store.keys.inbox)  # what a restart without persistence leaves

    async def answered():
        thread = await rt.store.load(thread_id)
        return thread.state == "idle" and thread.events[-1].type == "agent_reply"
    thread_id = await say(rt, "/help")
    await wait_for(answered, 60, what="the worker to carry on after the group vanished")
    lost = [r for r in caplog.records if "consumer group was gone" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.WARNING
    assert "lost" in lost[0].getMessage()


@pytest.mark.timeout(300)  # two processes that each import everything, on a loaded machine
async def test_a_wrong_redis_password_stops_the_worker_with_one_line(make_settings, tmp_path):
    server = RedisProcess(tmp_path / "redis", extra=("--requirepass", "right-password"))
    server.start()
    try:
        # (without any password, redis-py 8's BlockingConnectionPool recurses endlessly on the
        # HELLO refusal and hangs: a redis-py issue, not covered here)
        for url in (server.url.replace("unix://", "unix://:wrong-password@"),):
            worker = spawn_bot(make_settings(redis_url=url), "worker")
            out = await asyncio.to_thread(worker.output, 120)
            assert worker.returncode != 0, out
            [line] = [ln for ln in out.splitlines() if ln.startswith("chatops:")]
            assert line.startswith("chatops: REDIS_URL: Redis refused the connection"), out
            assert "Traceback" not in out and "wrong-password" not in out
    finally:
        server.remove()

"""The inbox as CHATOPS_INBOX_SHARDS streams: a thread's wake-ups always on the same shard, every
worker reading every shard; two workers, 16 shards, each message answered exactly once."""

from __future__ import annotations

import asyncio

from bot.keys import Keys
from tests.conftest import settled, wait_for
from tests.helpers import say


async def test_two_workers_sixteen_shards_answer_each_message_once(make_settings, start_bot):
    settings = make_settings(inbox_shards=16)
    rt = await start_bot(settings)
    await start_bot(settings)
    keys = rt.store.keys
    assert len(set(keys.inboxes())) == 16 and keys.inboxes()[0] == keys.inbox

    threads = await asyncio.gather(*(say(rt, "/help") for _ in range(60)))
    for thread_id in threads:
        await settled(rt, thread_id, 60)
    await asyncio.gather(*(say(rt, "/help", thread_id=t) for t in threads))  # a second turn each

    async def answered_twice():
        logs = [await rt.store.load(t) for t in threads]
        return all(sum(e.type == "agent_reply" for e in log.events) >= 2 and log.state == "idle"
                   for log in logs) and logs
    logs = await wait_for(answered_twice, 60, "every thread to be answered twice")
    for log in logs:
        assert sum(e.type == "agent_reply" for e in log.events) == 2, log.id
    used = {keys.inbox_of(t) for t in threads}
    assert len(used) > 8  # 60 threads spread over the shards
    assert all(Keys(settings.key_prefix, 16).inbox_of(t) == keys.inbox_of(t) for t in threads)

    async def drained():
        return all([await rt.redis.xlen(inbox) == 0 for inbox in keys.inboxes()])
    await wait_for(drained, 60, "every shard to be drained")
    consumers = set()
    for inbox in keys.inboxes():
        for consumer in await rt.redis.xinfo_consumers(inbox, "workers"):
            consumers.add(consumer["name"])
    assert len(consumers) == 2  # both workers read (every worker reads every shard)

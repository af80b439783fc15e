"""The store's guarantees, against a real Redis: duplicates dropped until their claim expires,
fenced writers refused, a model turn appended whole, refused appends leave no index behind."""

from __future__ import annotations

import time

from bot.events import AgentReply, Source, ToolCall, UserMessage
from bot.intake import new_thread_id
from bot.thread import Origin, ThreadMeta
from tests.conftest import wait_for


def meta(thread_id: str) -> ThreadMeta:
    return ThreadMeta(id=thread_id, agent="deploy", origin=Origin(channel="api"), created=time.time())


async def test_a_delivery_seen_before_is_dropped_until_its_claim_expires(make_settings, runtime):
    rt = await runtime(make_settings())
    thread_id = new_thread_id()

    async def deliver():
        return await rt.intake.message(thread_id, agent="deploy", origin=Origin(channel="api"), text="hi",
                                       source=Source(channel="api", external_id="delivery-1"), dedupe_ttl=60)

    assert [(await deliver()).outcome, (await deliver()).outcome] == ["appended", "duplicate"]
    claim = rt.store.keys.claim(thread_id, "ext:delivery-1")
    assert 0 < await rt.redis.pttl(claim) <= 60_000  # the claim expires with dedupe_ttl...
    await rt.redis.pexpire(claim, 1)  # ...so let its time pass (no sleep racing a short TTL)
    await wait_for(lambda: _gone(rt, claim), what="the claim to expire")
    assert (await deliver()).outcome == "appended"
    assert (await rt.store.load(thread_id)).version == 2


async def _gone(rt, key: str) -> bool:
    return not await rt.redis.exists(key)


async def test_a_writer_without_the_lease_is_refused(make_settings, runtime):
    rt = await runtime(make_settings())
    thread_id = new_thread_id()
    await rt.store.append(thread_id, UserMessage(text="hi"), create=meta(thread_id))
    old = await rt.store.acquire(thread_id, "worker-a", 0.2)
    # worker-a stalls past its lease; worker-b takes over as soon as it expires
    new = await wait_for(lambda: rt.store.acquire(thread_id, "worker-b", 5), what="the lease to expire")
    assert new > old
    late = await rt.store.append(thread_id, AgentReply(text="stale"), fence=old)
    current = await rt.store.append(thread_id, AgentReply(text="fresh"), fence=new)
    assert (late.outcome, current.outcome) == ("fenced", "appended")
    assert [e.type for e in (await rt.store.load(thread_id)).events] == ["user_message", "agent_reply"]


async def test_a_model_turn_is_appended_whole(make_settings, runtime):
    rt = await runtime(make_settings())
    thread_id = new_thread_id()
    await rt.store.append(thread_id, UserMessage(text="hi"), create=meta(thread_id))
    calls = [ToolCall(call_id=f"toolu_{i}", tool="service_status", args={}, turn="msg_1") for i in range(3)]
    appended = await rt.store.append(thread_id, calls[0], followed_by=calls[1:])
    assert appended.ok and appended.version == 4
    thread = await rt.store.load(thread_id)
    assert thread.turn == ["toolu_0", "toolu_1", "toolu_2"]


async def test_an_append_to_a_missing_thread_leaves_no_trace(make_settings, runtime):
    rt = await runtime(make_settings())
    appended = await rt.store.append("0123456789abcdef", UserMessage(text="forged"))
    assert appended.outcome == "missing"
    assert await rt.redis.zscore(rt.store.keys.threads, "0123456789abcdef") is None
    assert not await rt.redis.exists(rt.store.keys.log("0123456789abcdef"))


async def test_listing_by_state_finds_old_threads_behind_many_new_ones(make_settings, runtime):
    rt = await runtime(make_settings())
    waiting = new_thread_id()
    await rt.store.append(waiting, UserMessage(text="old"), create=meta(waiting))
    await rt.store.set_state(waiting, "awaiting_approval")
    pipe = rt.redis.pipeline(transaction=False)
    for i in range(1200):  # newer activity, all idle
        tid = f"{i:016x}"
        pipe.hset(rt.store.keys.meta(tid), mapping={"info": meta(tid).model_dump_json(), "state": "idle"})
        pipe.zadd(rt.store.keys.threads, {tid: time.time() + 1 + i})
    await pipe.execute()
    [row] = await rt.store.list_threads("awaiting_approval", limit=10)
    assert row["id"] == waiting
    assert len(await rt.store.list_threads(limit=50)) == 50


async def test_a_refused_append_leaves_the_state_index_as_the_thread_is(make_settings, runtime):
    rt = await runtime(make_settings())
    thread_id = new_thread_id()

    async def deliver():
        return await rt.intake.message(thread_id, agent="deploy", origin=Origin(channel="api"), text="hi",
                                       source=Source(channel="api", external_id="delivery-2"))

    assert (await deliver()).ok
    await rt.store.set_state(thread_id, "idle")  # the worker settled it
    assert (await deliver()).outcome == "duplicate"  # a retry of the same delivery
    assert [r["id"] for r in await rt.store.list_threads("idle")] == [thread_id]
    assert await rt.store.list_threads("working") == []


async def test_only_the_lease_holder_renews_it(make_settings, runtime):
    rt = await runtime(make_settings())
    thread_id = new_thread_id()
    await rt.store.append(thread_id, UserMessage(text="hi"), create=meta(thread_id))
    assert await rt.store.acquire(thread_id, "worker-a", 5)
    assert await rt.store.renew(thread_id, "worker-b", 600) is False
    assert await rt.redis.pttl(rt.store.keys.lease(thread_id)) <= 5000  # not extended by worker-b
    assert await rt.store.renew(thread_id, "worker-a", 600) is True
    assert await rt.redis.pttl(rt.store.keys.lease(thread_id)) > 5000


async def test_acquiring_with_a_read_reads_only_once_the_lease_is_ours(make_settings, runtime):
    """A wake-up takes the lease and reads the thread in one round trip: the read counts only if
    the lease was acquired, and reads only what the cached copy lacks."""
    rt = await runtime(make_settings())
    thread_id = new_thread_id()
    await rt.store.append(thread_id, UserMessage(text="hi"), create=meta(thread_id))
    fence, thread = await rt.store.acquire_and_load(thread_id, "worker-a", 5)
    assert fence and thread is not None and [e.type for e in thread.events] == ["user_message"]
    await rt.store.append(thread_id, AgentReply(text="hello"), fence=fence)
    assert await rt.store.acquire_and_load(thread_id, "worker-b", 5, thread) == (0, None)
    assert thread.version == 1  # the refused try left the cached copy as it was
    again, same = await rt.store.acquire_and_load(thread_id, "worker-a", 5, thread)
    assert again == fence and same is thread and [e.type for e in thread.events] == ["user_message", "agent_reply"]
    missing = new_thread_id()
    fence, nothing = await rt.store.acquire_and_load(missing, "worker-a", 5)
    assert fence and nothing is None  # no thread: the step's own read says so (ThreadNotFound)


async def test_acquiring_with_a_read_after_the_server_lost_its_scripts(make_settings, runtime, own_redis):
    rt = await runtime(make_settings(redis_url=own_redis.url))
    thread_id = new_thread_id()
    await rt.store.append(thread_id, UserMessage(text="hi"), create=meta(thread_id))
    await rt.redis.script_flush()
    fence, thread = await rt.store.acquire_and_load(thread_id, "worker-a", 5)
    assert fence and thread is not None and thread.version == 1

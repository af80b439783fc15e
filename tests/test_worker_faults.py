"""What a worker does when something is wrong with a thread rather than with Redis: it says so to
the human once, and never loops or retries a broken thread forever."""

from __future__ import annotations

from tests.conftest import settled, wait_for
from tests.helpers import say
from tests.messages_api import error


async def test_a_thread_whose_agent_is_gone_gets_one_answer(make_settings, start_bot):
    rt = await start_bot(make_settings())
    thread_id = await say(rt, "hello", agent="retired")
    thread = await settled(rt, thread_id)
    assert [e.type for e in thread.events] == ["user_message", "agent_reply"]
    assert "no agent 'retired'" in thread.events[-1].text
    await say(rt, "anyone?", agent="retired", thread_id=thread_id)
    thread = await wait_for(lambda: _events(rt, thread_id, 4), what="the second answer")
    assert [e.type for e in thread.events].count("agent_reply") == 2


async def _events(rt, thread_id, n):
    thread = await rt.store.load(thread_id)
    return thread if thread.version >= n and thread.state != "working" else None


async def test_a_wake_up_that_keeps_failing_is_given_up_visibly(make_settings, start_bot):
    rt = await start_bot(make_settings(claim_idle=0.2))
    thread_id = await say(rt, "/help")
    await settled(rt, thread_id)
    # a log entry no version of the bot can read: every attempt to advance the thread fails
    await rt.redis.rpush(rt.store.keys.log(thread_id), '{"type": "from_the_future"}')
    await say(rt, "/help", thread_id=thread_id)  # the thread is "working" on it, and woken

    async def given_up():
        raw = await rt.redis.lrange(rt.store.keys.log(thread_id), -2, -1)
        return raw if b"internal_error" in raw[0] else None

    error_event, reply = await wait_for(given_up, 30, "the worker to give up on the entry")
    assert b"ValidationError" in error_event and b"Something went wrong on my side" in reply

    async def let_go():  # acknowledged just after the reply was appended
        return (await rt.redis.xpending(rt.store.keys.inbox, "workers"))["pending"] == 0
    await wait_for(let_go, 30, "the entry to be acknowledged")
    # the thread no longer claims to be working: lists show it settled
    [row] = [r for r in await rt.store.list_threads() if r["id"] == thread_id]
    assert row["state"] == "idle"


async def test_one_broken_approval_does_not_stop_the_sweep(make_settings, start_bot):
    rt = await start_bot(make_settings(sweep_interval=0.1))
    good = await say(rt, "/rollback api prod")
    [request] = (await settled(rt, good)).pending_approvals()
    broken = await say(rt, "/rollback db prod")
    [other] = (await settled(rt, broken)).pending_approvals()
    await rt.redis.rpush(rt.store.keys.log(broken), '{"type": "from_the_future"}')
    # both deadlines pass (in the sweep's index; the requests say a day from now): the broken one
    # fails to load at every sweep
    due = {request.approval_id: 1.0, other.approval_id: 0.5}
    await rt.redis.zadd(rt.store.keys.pending_approvals, due)

    async def expired():
        thread = await rt.store.load(good)
        decision = thread.decisions.get(request.approval_id)
        return decision.decision if decision else None

    # the broken approval sorts first; the good one expires all the same
    assert await wait_for(expired, 10, "the good approval to be swept") == "expired"

    # and the sweep does not retry the broken one forever
    async def given_up():
        return other.approval_id not in await rt.store.pending_approval_ids()

    await wait_for(given_up, 10, "the sweep to give up the broken approval")


async def test_with_the_model_down_the_digest_still_delivers_its_table(model_settings, start_bot,
                                                                      messages_api, policy_file):
    settings = model_settings(model_retries=0, policy_file=policy_file('[agents.digest]\nusers = ["bob"]\n'))
    rt = await start_bot(settings)
    messages_api.add(*[error(529, "overloaded_error")] * 3)
    thread = await settled(rt, await say(rt, "the digest please", agent="digest"))
    reply = thread.events[-1]
    assert reply.type == "agent_reply" and "without a summary" in reply.text
    assert "Digest of the last 24 h" in reply.text

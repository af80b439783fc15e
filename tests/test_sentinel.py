"""Redis with a replica and Sentinel: an approved action runs at most once across a failover, the
bot rides a failover out as an outage, and a tool does not start before the replicas have its
start marker. Real redis-server processes (master, replica, sentinel) the tests start."""

from __future__ import annotations

import asyncio

import pytest

from bot.keys import Keys
from bot.outage import REDIS_DOWN, NotReplicated
from tests.conftest import settled, spawn_bot, wait_for
from tests.helpers import runbook_lines, say
from tests.messages_api import text, tool_use
from tests.redis_ha import ReplicatedRedis

STAGING = {"service": "web", "version": "2.0.0", "environment": "staging"}
PROD = {"service": "api", "version": "1.2.3", "environment": "prod"}


@pytest.fixture
def ha(tmp_path):
    servers = ReplicatedRedis(tmp_path / "ha")
    yield servers
    servers.stop()


@pytest.fixture
def plain_ha(tmp_path):
    servers = ReplicatedRedis(tmp_path / "ha", sentinel=False)
    yield servers
    servers.stop()


async def _decide_through_outage(rt, approval_id: str):
    """What a human does when told "storage unavailable, retry": retry."""
    async def attempt():
        try:
            return await rt.approvals.decide(approval_id, True, "alice", "console")
        except REDIS_DOWN:
            return None
    return await wait_for(attempt, 90, "the decision to be accepted")


async def test_failover_between_request_and_approval_runs_the_deploy_once(
        ha, model_settings, start_bot, messages_api):
    settings = model_settings(redis_url=ha.sentinel_url, redis_min_replicas=1)
    rt = await start_bot(settings)
    worker = [t for t in asyncio.all_tasks() if "Worker.run" in repr(t.get_coro())][0]
    messages_api.add(tool_use("deploy", STAGING), text("web is on staging."),
                     tool_use("deploy", PROD), text("api 1.2.3 is live in prod."))
    earlier = await say(rt, "deploy web 2.0.0 to staging")
    assert (await settled(rt, earlier, 60)).state == "idle"
    thread_id = await say(rt, "ship api 1.2.3 to prod")
    thread = await settled(rt, thread_id, 60)
    [request] = thread.pending_approvals()
    old_master = ha.master_port()

    await asyncio.to_thread(ha.failover)
    assert ha.master_port() != old_master

    outcome = await _decide_through_outage(rt, request.approval_id)
    assert outcome.status == "decided"
    thread = await settled(rt, thread_id, 90)
    assert thread.state == "idle", thread.events[-3:]
    assert runbook_lines(settings) == ["deploy web 2.0.0 staging", "deploy api 1.2.3 prod"]
    assert not worker.done()  # the bot rode the failover out
    # the new master holds both threads' results (read there directly, not through the bot)
    keys = Keys(settings.key_prefix)
    new_master = ha.current_master().client
    for tid in (earlier, thread_id):
        log = [e.decode() for e in new_master.lrange(keys.log(tid), 0, -1)]
        assert any('"type":"tool_result"' in e and '"status":"ok"' in e for e in log), tid
    # a second approval (a retried click) after the failover is refused, not run again
    again = await rt.approvals.decide(request.approval_id, True, "alice", "console")
    assert again.status == "already_decided"
    assert runbook_lines(settings).count("deploy api 1.2.3 prod") == 1


async def test_an_approved_deploy_waits_for_a_frozen_replica(plain_ha, model_settings, runtime,
                                                             start_bot, messages_api):
    settings = model_settings(redis_url=plain_ha.plain_url, redis_min_replicas=1,
                              redis_replica_timeout=0.5)
    rt = await start_bot(settings)
    messages_api.add(tool_use("deploy", PROD), text("api 1.2.3 is live in prod."))
    thread_id = await say(rt, "ship api 1.2.3 to prod")
    [request] = (await settled(rt, thread_id, 60)).pending_approvals()

    plain_ha.replica.freeze()
    try:
        # the decision is not acknowledged while no replica has it (the human is told to retry)
        with pytest.raises(NotReplicated):
            await rt.approvals.decide(request.approval_id, True, "alice", "console")

        async def told():
            thread = await rt.store.load(thread_id)
            return [e for e in thread.events if e.type == "agent_reply" and "not started" in e.text]
        [note] = await wait_for(told, 60, "the thread to say the deploy waits for the replicas")
        assert "deploy" in note.text
        # several rounds of retries later: still not run, and said once
        await wait_for(_log_count(plain_ha, "WAIT", 4), 60, "more WAIT rounds")
        assert runbook_lines(settings) == []
        assert len(await told()) == 1
    finally:
        plain_ha.replica.thaw()
    thread = await settled(rt, thread_id, 60)
    assert thread.state == "idle"
    assert runbook_lines(settings) == ["deploy api 1.2.3 prod"]
    again = await rt.approvals.decide(request.approval_id, True, "alice", "console")
    assert again.status == "already_decided"
    assert runbook_lines(settings) == ["deploy api 1.2.3 prod"]


def _log_count(ha, command: str, more: int):
    start = ha.master.client.info("commandstats").get(f"cmdstat_{command.lower()}", {}).get("calls", 0)

    async def check():
        calls = ha.master.client.info("commandstats").get(f"cmdstat_{command.lower()}", {}).get("calls", 0)
        return calls >= start + more
    return check


async def test_intake_is_refused_while_no_replica_acknowledges(plain_ha, make_settings, runtime):
    rt = await runtime(make_settings(redis_url=plain_ha.plain_url, redis_min_replicas=1,
                                     redis_replica_timeout=0.3))
    await say(rt, "/help")  # acknowledged: the replica has it
    plain_ha.replica.freeze()
    try:
        with pytest.raises(NotReplicated):
            await say(rt, "/help")
    finally:
        plain_ha.replica.thaw()
    await say(rt, "/help")


def test_doctor_warns_when_replicas_exist_but_none_must_acknowledge(plain_ha, make_settings):
    settings = make_settings(redis_url=plain_ha.plain_url)
    warned = spawn_bot(settings, "doctor").output(timeout=90)
    assert "warning: Redis has 1 replica(s) but CHATOPS_REDIS_MIN_REPLICAS is 0" in warned
    fine = spawn_bot(settings, "doctor", CHATOPS_REDIS_MIN_REPLICAS="1").output(timeout=90)
    assert "ok: Redis replicas: 1" in fine and "CHATOPS_REDIS_MIN_REPLICAS is 0" not in fine
    too_many = spawn_bot(settings, "doctor", CHATOPS_REDIS_MIN_REPLICAS="2").output(timeout=90)
    assert "error: CHATOPS_REDIS_MIN_REPLICAS is 2 but Redis has 1" in too_many


async def test_a_demoted_master_is_an_outage_not_a_crash(plain_ha, make_settings, start_bot, caplog):
    """Pointed at the master's own address, a failover leaves the bot writing to a replica:
    READONLY is refused like an outage and the worker keeps running."""
    import logging

    rt = await start_bot(make_settings(redis_url=plain_ha.plain_url))
    worker = [t for t in asyncio.all_tasks() if "Worker.run" in repr(t.get_coro())][0]
    await settled(rt, await say(rt, "/help"), 60)
    caplog.set_level(logging.WARNING, logger="chatops.worker")
    plain_ha.replica.client.replicaof("NO", "ONE")
    plain_ha.master.client.replicaof("127.0.0.1", plain_ha.replica.port)
    with pytest.raises(REDIS_DOWN):
        await say(rt, "/help")

    async def read_failed():
        return any("reading the inbox" in r.getMessage() for r in caplog.records) or worker.done()
    await wait_for(read_failed, 60, "the inbox read to meet the demoted master")
    assert not worker.done(), worker.exception()

"""Redis Cluster (REDIS_URL=redis+cluster://...): the deploy flow with an approval runs once, a
schedule fires once across two clocks, two workers on 16 inbox shards answer each message once,
the approval sweep works, the API refuses with 503 while the cluster is down, and the configuration
errors are one line. Real `redis-server --cluster-enabled yes` processes the tests start."""

from __future__ import annotations

import asyncio

import pytest

from bot.keys import Keys
from bot.redis_client import is_cluster, parse_cluster
from bot.runtime import Runtime
from channels.schedule import Clock
from tests.conftest import make_wiring, settled, spawn_bot, wait_for
from tests.helpers import runbook_lines, say
from tests.messages_api import text, tool_use
from tests.redis_cluster import Cluster
from tests.redis_ha import Server
from tests.test_schedules import fires, schedule_toml

PROD = {"service": "api", "version": "1.2.3", "environment": "prod"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster (3 masters, a replica each) for the tests that do not stop a node: each test
    has its own key prefix."""
    servers = Cluster(tmp_path_factory.mktemp("cluster"), replicas=True)
    yield servers
    servers.stop()


@pytest.fixture
def own_cluster(tmp_path):
    servers = Cluster(tmp_path / "own-cluster")
    yield servers
    servers.stop()


def test_cluster_url_parsing():
    url = parse_cluster("rediss+cluster://:p%40ss@10.0.0.1:7000,[::1]:7001")
    assert url.hosts == [("10.0.0.1", 7000), ("::1", 7001)]
    assert (url.password, url.tls) == ("p@ss", True)
    for bad in ("redis+cluster://", "redis+cluster://h", "redis+cluster://h:1/2"):
        with pytest.raises(Exception, match="REDIS_URL"):
            parse_cluster(bad)


async def test_deploy_flow_with_an_approval_runs_once(cluster, model_settings, start_bot, messages_api):
    settings = model_settings(redis_url=cluster.url, inbox_shards=16, redis_min_replicas=1)
    rt = await start_bot(settings)
    assert is_cluster(rt.redis)
    messages_api.add(tool_use("deploy", PROD), text("api 1.2.3 is live in prod."))
    thread_id = await say(rt, "ship api 1.2.3 to prod")
    thread = await settled(rt, thread_id, 60)
    [request] = thread.pending_approvals()
    assert runbook_lines(settings) == []

    outcome = await rt.approvals.decide(request.approval_id, True, "alice", "console")
    assert outcome.status == "decided"
    thread = await settled(rt, thread_id, 60)
    assert thread.state == "idle", thread.events[-3:]
    assert runbook_lines(settings) == ["deploy api 1.2.3 prod"]
    again = await rt.approvals.decide(request.approval_id, True, "alice", "console")
    assert again.status == "already_decided"
    assert runbook_lines(settings) == ["deploy api 1.2.3 prod"]
    # the thread's keys and the global indexes live in other slots, on other nodes
    keys = rt.store.keys
    nodes = {rt.redis.get_node_from_key(k).name for k in
             (keys.log(thread_id), keys.threads, keys.pending_approvals, keys.inbox_of(thread_id))}
    assert len(nodes) > 1
    assert [r["id"] for r in await rt.store.list_threads("idle")] == [thread_id]


async def test_replicated_waits_on_the_slots_master(cluster, make_settings, runtime):
    """WAIT goes to the master of the thread's slot, after the write, on the same connection:
    acknowledged while its replica runs, not while the replica is frozen."""
    rt = await runtime(make_settings(redis_url=cluster.url, redis_min_replicas=1,
                                     redis_replica_timeout=0.3))
    thread_id = await say(rt, "/help")
    assert await rt.store.replicated(thread_id) == "ok"
    master = rt.redis.get_node_from_key(rt.store.keys.acked(thread_id))
    [index] = [i for i, m in enumerate(cluster.masters) if m.port == master.port]
    replica = cluster.replicas[index]
    replica.process.send_signal(19)  # SIGSTOP
    try:
        assert await rt.store.replicated(thread_id) == "waiting"
    finally:
        replica.process.send_signal(18)  # SIGCONT
    await wait_for(lambda: _is(rt.store.replicated(thread_id), "ok"), 60, "the replica to be back")


async def _is(awaitable, value) -> bool:
    return await awaitable == value


async def test_two_workers_sixteen_shards_answer_each_message_once(cluster, make_settings, start_bot):
    settings = make_settings(redis_url=cluster.url, inbox_shards=16)
    rt = await start_bot(settings)
    await start_bot(settings)
    keys = rt.store.keys
    assert len({rt.redis.get_node_from_key(inbox).name for inbox in keys.inboxes()}) == 3

    threads = await asyncio.gather(*(say(rt, "/help") for _ in range(40)))
    for thread_id in threads:
        await settled(rt, thread_id, 60)
    await asyncio.gather(*(say(rt, "/help", thread_id=t) for t in threads))

    async def answered_twice():
        logs = [await rt.store.load(t) for t in threads]
        return all(sum(e.type == "agent_reply" for e in log.events) >= 2 and log.state == "idle"
                   for log in logs) and logs
    logs = await wait_for(answered_twice, 60, "every thread to be answered twice")
    for log in logs:
        assert sum(e.type == "agent_reply" for e in log.events) == 2, log.id

    async def drained():
        return all([await rt.redis.xlen(inbox) == 0 for inbox in keys.inboxes()])
    await wait_for(drained, 60, "every shard to be drained")
    consumers = {c["name"] for inbox in keys.inboxes()
                 for c in await rt.redis.xinfo_consumers(inbox, "workers")}
    assert len(consumers) == 2


async def test_two_clocks_fire_each_time_once(cluster, make_settings, policy_file):
    settings = make_settings(redis_url=cluster.url, inbox_shards=16,
                             policy_file=policy_file(schedule_toml("race", "0 9 * * *", "/help")))
    a, b = await Runtime.start(settings, make_wiring()), await Runtime.start(settings, make_wiring())
    try:
        [schedule] = a.policy.schedules
        clocks = [Clock(a), Clock(b)]
        times = [1_700_000_000.0 + 60 * i for i in range(10)]
        results = await asyncio.gather(*(c.fire(schedule, t) for t in times for c in clocks))
        assert sum(r.ok for r in results) == len(times)
        assert sum(c.stats["fired"] for c in clocks) == len(times)
        assert sum(c.stats["taken"] for c in clocks) == len(times)
        assert sorted(e.scheduled_for for e in await fires(a, "race")) == times
    finally:
        await a.close()
        await b.close()


async def test_the_sweep_expires_an_approval(cluster, model_settings, start_bot, messages_api):
    settings = model_settings(redis_url=cluster.url, inbox_shards=16, approval_ttl=1.0)
    rt = await start_bot(settings)
    messages_api.add(tool_use("deploy", PROD), text("Understood, not deployed."))
    thread_id = await say(rt, "ship api 1.2.3 to prod")

    async def expired():
        thread = await rt.store.load(thread_id)
        return thread.state == "idle" and any(
            e.type == "approval_decided" and e.decision == "expired" for e in thread.events)
    await wait_for(expired, 60, "the approval to expire")
    assert runbook_lines(settings) == []
    assert await rt.store.pending_approval_ids() == []


async def test_the_api_answers_503_while_the_cluster_is_down(own_cluster, make_settings, runtime, serve):
    import httpx

    from bot.api import create_app

    rt = await runtime(make_settings(redis_url=own_cluster.url, api_token="t0ken"))
    base = await serve(create_app(rt))
    headers = {"Authorization": "Bearer t0ken"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        body = {"text": "/help", "user": "bob"}
        assert (await http.post("/v1/threads", json=body)).status_code == 201
        for node in own_cluster.masters:
            node.stop()

        async def unavailable():
            return (await http.post("/v1/threads", json=body)).status_code == 503
        await wait_for(unavailable, 60, "a 503")
        for node in own_cluster.masters:
            node.start()
        own_cluster.wait_ok()

        async def created():
            return (await http.post("/v1/threads", json=body)).status_code == 201
        await wait_for(created, 90, "the API to accept input again")


async def test_a_worker_rides_out_a_node_restart(own_cluster, make_settings, start_bot):
    """redis-py's cluster client drops every connection when a node fails, under commands still
    in flight on them: the worker's loops take that as an outage and answer after the restart."""
    from bot.outage import REDIS_DOWN

    rt = await start_bot(make_settings(redis_url=own_cluster.url, inbox_shards=16))
    thread = await settled(rt, await say(rt, "/service_status api staging"), 60)
    assert thread.events[-1].text.startswith("api in staging: healthy")
    node = own_cluster.masters[1]
    node.stop()
    await wait_for(lambda: _cluster_down(own_cluster.masters[0]), 60, "the cluster to see the node fail")
    node.start()
    own_cluster.wait_ok()

    async def said() -> str | None:
        try:
            return await say(rt, "/service_status api prod")
        except REDIS_DOWN:
            return None
    thread = await settled(rt, await wait_for(said, 90, "the cluster to take input again"), 90)
    assert thread.events[-1].text.startswith("api in prod: healthy"), thread.events[-3:]


async def _cluster_down(node) -> bool:
    return node.client.cluster("info")["cluster_state"] != "ok"


async def test_smtp_answers_451_while_the_cluster_is_down(own_cluster, make_settings, runtime, policy_file):
    """Not the 451 of a bug ("temporary error"): the cluster client's own exceptions, which are not
    RedisErrors, are an outage like Redis's."""
    from channels.email import app as email_channel
    from channels.email.server import start_smtp
    from channels.email.settings import EmailSettings
    from tests.mail import deliver, new_mail

    settings = make_settings(redis_url=own_cluster.url,
                             policy_file=policy_file('approvers = ["alice@example.com"]\n'))
    email = EmailSettings(_env_file=None, email_domain="ops.test", smtp_port=0)
    rt = await runtime(settings, make_wiring(email=email))
    server = await start_smtp(email, email_channel.inbound(rt, email), port=0)
    port = server.sockets[0].getsockname()[1]
    try:
        for node in own_cluster.masters:
            node.stop()
        msg = new_mail("bob@example.com", "deploy@ops.test", "status", "/service_status api prod")
        code, text = await deliver(port, msg, "bob@example.com", ["deploy@ops.test"])
        assert (code, "unable to store" in text) == (451, True), text
    finally:
        server.close()
        await server.wait_closed()


async def test_a_schedule_rides_out_a_cluster_outage(own_cluster, make_settings, runtime, policy_file, caplog):
    """The clock's retry takes the cluster client's own exceptions (not RedisErrors) as an outage:
    past the grace it goes on in the background instead of losing the fire to a traceback."""
    import logging

    rt = await runtime(make_settings(redis_url=own_cluster.url, policy_file=policy_file(
        schedule_toml("nightly", "0 3 * * *", "/service_status api prod", extra="grace = 1"))))
    caplog.set_level(logging.WARNING, logger="chatops.schedule")
    clock = Clock(rt)
    for node in own_cluster.masters:
        node.stop()
    try:
        await clock.tick("nightly")
        assert any("retrying in the background" in r.getMessage() for r in caplog.records)
        assert not clock.recovering["nightly"].done()
    finally:
        for task in clock.recovering.values():
            task.cancel()
        await asyncio.gather(*clock.recovering.values(), return_exceptions=True)


# ---- configuration errors and doctor -------------------------------------------------------------

def _refused(settings, **env: str) -> str:
    bot = spawn_bot(settings, "worker", **env)
    out = bot.output(timeout=90)
    assert bot.returncode == 1, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "REDIS_URL" in lines[0] and "Traceback" not in out, out
    return lines[0]


def test_a_cluster_node_as_a_plain_url_says_use_redis_cluster(cluster, make_settings):
    line = _refused(make_settings(), REDIS_URL=f"redis://127.0.0.1:{cluster.masters[0].port}/0")
    assert "redis+cluster://" in line


def test_a_single_redis_as_a_cluster_url_says_use_redis(make_settings, tmp_path):
    single = Server(tmp_path / "single")
    try:
        line = _refused(make_settings(), REDIS_URL=f"redis+cluster://127.0.0.1:{single.port}")
        assert "not a cluster node" in line and "redis://" in line
    finally:
        single.stop()


def test_wrong_and_missing_cluster_password(make_settings, tmp_path):
    secured = Cluster(tmp_path / "secured", password="s3cret-pass")
    try:
        nodes = ",".join(f"127.0.0.1:{n.port}" for n in secured.masters)
        line = _refused(make_settings(), REDIS_URL=f"redis+cluster://:nope@{nodes}")
        assert "refused the password" in line and "nope" not in line
        line = _refused(make_settings(), REDIS_URL=f"redis+cluster://{nodes}")
        assert "requires a password" in line
    finally:
        secured.stop()


def test_doctor_on_a_cluster(cluster, make_settings):
    settings = make_settings(redis_url=cluster.url)
    out = spawn_bot(settings, "doctor").output(timeout=90)
    assert "ok: Redis Cluster reachable at REDIS_URL: 3 master(s), 3 replica(s)" in out, out
    assert "warning: CHATOPS_INBOX_SHARDS is 1 on a Redis Cluster" in out
    assert "warning: every Redis Cluster master has 1 replica(s) but CHATOPS_REDIS_MIN_REPLICAS is 0" in out
    fine = spawn_bot(settings, "doctor", CHATOPS_INBOX_SHARDS="16",
                     CHATOPS_REDIS_MIN_REPLICAS="1").output(timeout=90)
    assert "CHATOPS_INBOX_SHARDS is 1" not in fine and "ok: Redis Cluster replicas" in fine, fine
    too_many = spawn_bot(settings, "doctor", CHATOPS_REDIS_MIN_REPLICAS="2").output(timeout=90)
    assert "error: CHATOPS_REDIS_MIN_REPLICAS is 2 but a Redis Cluster master has 1" in too_many


def test_keys_of_a_thread_share_one_slot():
    from redis.crc import key_slot

    keys = Keys("p:", 16)
    tid = "abc123"
    slots = {key_slot(k.encode()) for k in (keys.log(tid), keys.meta(tid), keys.lease(tid),
                                            keys.claim(tid, "x"), keys.acked(tid),
                                            keys.approval_events(tid, "a"), keys.open_approvals(tid),
                                            keys.usage(tid))}
    assert len(slots) == 1

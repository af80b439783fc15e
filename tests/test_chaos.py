"""Fault injection: several worker processes SIGKILLed at random moments and restarted while
approvals are decided concurrently through the HTTP API; then the same with the Redis server
restarted mid-run (AOF on, our own redis-server: the shared one is never touched); then with a
master, a replica and Sentinel, failed over every few seconds (CHATOPS_REDIS_MIN_REPLICAS=1).

At the end every thread is finished or explicitly waiting on a human, every approved rollback ran
exactly once or was handed to a human as an unknown outcome (the runbook logs one line per start),
and nothing acknowledged (a message accepted by intake, a decision answered 200) is missing.

Size: CHATOPS_CHAOS_THREADS (CI: 30; `make chaos`: 200).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from redis.exceptions import ResponseError

from bot.api import create_app
from bot.events import Source
from bot.intake import new_thread_id
from bot.outage import REDIS_DOWN
from bot.runtime import Runtime
from bot.thread import Origin
from bot.inbox import GROUP
from tests.conftest import ROOT, bot_env, make_wiring
from tests.redis_ha import ReplicatedRedis
from tests.redis_process import RedisProcess

THREADS = int(os.environ.get("CHATOPS_CHAOS_THREADS", "30"))
WORKERS = 3
KILLS = THREADS  # as many kills on a slow machine as on a fast one, each after the victim was up
# Generous: on a loaded 2-core machine a worker takes seconds to start. The test's own deadline
# stays below pytest's timeout, so that a slow run fails with what was left undone.
TIMEOUT = max(600, 4 * THREADS)
DEADLINE = TIMEOUT - 120

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(TIMEOUT)]
TOKEN = "chaos-token"

RUNBOOK = """#!/bin/sh
# one line when a run starts, one when it ends; sleeps so that kills land mid-run
echo "start $1 $2 $CHATOPS_THREAD" >> "$CHATOPS_DATA_DIR/runbook.log"
sleep 0.3
echo "done $1 $2 $CHATOPS_THREAD" >> "$CHATOPS_DATA_DIR/runbook.log"
echo "Rolled back $1 in $2"
"""


class Workers:
    def __init__(self, settings, logs: Path) -> None:
        self.settings, self.logs, self.procs = settings, logs, []
        self.started = 0
        self.exited: list[int | None] = []  # return codes of workers that stopped by themselves

    def spawn(self) -> subprocess.Popen:
        self.started += 1
        out = open(self.logs / f"worker-{self.started}.log", "wb")
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "worker"], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, env=bot_env(
                self.settings, CHATOPS_LOG_LEVEL="WARNING",
                CHATOPS_REDIS_MIN_REPLICAS=str(self.settings.redis_min_replicas)),
        )

    def start(self, n: int) -> None:
        self.procs = [self.spawn() for _ in range(n)]

    def collect_exits(self) -> None:
        """Workers that stopped by themselves (not killed by us): replaced, and remembered."""
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                self.exited.append(p.returncode)
                self.procs[i] = self.spawn()

    async def up(self, rt: Runtime) -> list[int]:
        """The workers that are up: reading the inbox as consumers of the group (a worker's
        consumer name holds its pid)."""
        try:
            consumers = await rt.redis.xinfo_consumers(rt.store.keys.inbox, GROUP)
        except ResponseError:
            return []  # no group yet
        names = [c["name"] if isinstance(c["name"], str) else c["name"].decode() for c in consumers]
        return [i for i, p in enumerate(self.procs)
                if p.poll() is None and any(f"-{p.pid}-" in n for n in names)]

    def kill(self, i: int) -> None:
        self.collect_exits()
        self.procs[i].kill()
        self.procs[i].wait()
        self.procs[i] = self.spawn()

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


async def _retry(fn, *args, **kwargs):
    """Call until Redis answers: what a channel's sender does when refused (SMTP 451, HTTP 503)."""
    while True:
        try:
            return await fn(*args, **kwargs)
        except REDIS_DOWN:
            await asyncio.sleep(0.1)


async def chaos_run(make_settings, tmp_path: Path, redis: RedisProcess | None = None,
                    ha: ReplicatedRedis | None = None) -> None:
    script = tmp_path / "rollback.sh"
    script.write_text(RUNBOOK)
    script.chmod(0o755)
    policy = tmp_path / "chatops.toml"
    policy.write_text(f'approvers = ["alice"]\n[tools.rollback]\ncommand = ["{script}", "{{service}}", "{{environment}}"]\n')
    settings = make_settings(
        policy_file=policy, api_token=TOKEN, lease_ttl=2.0, claim_idle=2.0, sweep_interval=1.0,
        **({"redis_url": redis.url} if redis else {}),
        **({"redis_url": ha.sentinel_url, "redis_min_replicas": 1} if ha else {}),
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    rt = await Runtime.start(settings, make_wiring())
    workers = Workers(settings, tmp_path)
    workers.start(WORKERS)
    api = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(rt)), base_url="http://bot",
                            headers={"Authorization": f"Bearer {TOKEN}"})
    accepted: dict[str, str] = {}  # thread -> service, for every message intake acknowledged
    # refused as an outage after it was stored (not replicated in time): the sender is told to
    # retry, and the bot may still act on it (at most once, like any thread)
    refused: set[str] = set()
    decided: dict[str, list[str]] = {}  # approval id -> decisions the API acknowledged with 200
    stop = asyncio.Event()

    async def submit() -> None:
        for i in range(THREADS):
            thread_id, service = new_thread_id(), f"svc-{i}"
            try:
                await rt.intake.message(thread_id, agent="deploy", origin=Origin(channel="api"),
                                        text=f"/rollback {service} prod", source=Source(channel="api", user="bob"))
                accepted[thread_id] = service
            except REDIS_DOWN:
                refused.add(thread_id)  # not acknowledged: the sender would retry
            await asyncio.sleep(random.uniform(0, 0.2 if redis or ha else 0.02))  # across the restarts

    async def decide() -> None:
        while not stop.is_set():
            try:
                pending = await rt.store.pending_approval_ids()
            except REDIS_DOWN:
                await asyncio.sleep(0.1)
                continue
            random.shuffle(pending)
            for approval_id in pending[:10]:
                approve = int(approval_id[-2:], 16) % 10 != 0  # about one in ten is rejected
                body = {"decision": "approve" if approve else "reject", "user": "alice", "reason": "chaos"}
                r = await api.post(f"/v1/approvals/{approval_id}", json=body)
                if r.status_code == 200:
                    decided.setdefault(approval_id, []).append(r.json()["decision"])
                elif r.status_code == 404 and ha:
                    # read from the master before a failover, lost with it (never acknowledged by a
                    # replica): then the new master must not list it either
                    assert approval_id not in await _retry(rt.store.pending_approval_ids), r.text
                else:
                    assert r.status_code in (409, 503), r.text
            await asyncio.sleep(0.02)

    async def kill() -> None:
        kills = 0
        while not stop.is_set() and kills < KILLS:
            up = await _retry(workers.up, rt)
            if not up:
                await asyncio.sleep(0.1)
                continue
            await asyncio.sleep(random.uniform(0.3, 1.0))  # lands anywhere in its work
            workers.kill(random.choice(up))
            kills += 1

    async def restart_redis() -> None:
        assert redis is not None
        # a quick restart (redis-py's own retries ride it out), then an outage longer than they
        # last (about 4 s), which the worker's loops must survive by themselves
        for down in (0.5, 6.0):
            await asyncio.sleep(random.uniform(1.0, 2.0))
            redis.stop()
            await asyncio.sleep(down)
            redis.start()

    async def failovers() -> None:
        assert ha is not None
        for _ in range(5):  # a failover every few seconds while threads arrive and are decided
            await asyncio.sleep(random.uniform(2.0, 4.0))
            await asyncio.to_thread(ha.failover)

    async def all_decided() -> bool:
        for thread_id in accepted:
            thread = await rt.store.load(thread_id)
            if not thread.decisions and not thread.results:
                return False
        return True

    try:
        # with Sentinel the failovers are the chaos (workers killed on top starve a loaded machine)
        helpers = [asyncio.create_task(c()) for c in ((decide, decide) if ha else (decide, decide, kill))]
        chaos = [asyncio.create_task(restart_redis())] if redis else []
        chaos += [asyncio.create_task(failovers())] if ha else []
        await submit()
        await asyncio.gather(*chaos)
        deadline = time.monotonic() + DEADLINE
        while not await _retry(all_decided):
            assert time.monotonic() < deadline, "approvals still undecided"
            for task in helpers:
                if task.done():
                    task.result()  # a failed helper fails the test now
            await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*helpers)
        workers.collect_exits()
        assert not workers.exited, f"workers stopped by themselves ({workers.exited}); logs in {tmp_path}"
        # let the survivors settle everything (a dead worker's entries are claimed after claim_idle)
        while True:
            states = Counter([(await rt.store.load(t)).state for t in accepted])
            if set(states) <= {"idle", "awaiting_human"}:
                break
            assert time.monotonic() < deadline, f"threads not settled: {states}"
            await asyncio.sleep(0.3)
        check(settings, rt, accepted, decided, await _load_all(rt, accepted), refused)
    finally:
        stop.set()
        workers.stop()
        await api.aclose()
        await rt.close()


async def _load_all(rt, accepted):
    return {t: await rt.store.load(t) for t in accepted}


def check(settings, rt, accepted, decided, threads, refused=frozenset()) -> None:
    log = (settings.data_dir / "runbook.log").read_text().splitlines()
    starts = Counter(line.split()[3] for line in log if line.startswith("start "))
    assert set(starts) <= set(accepted) | set(refused), "a rollback ran for a thread nobody asked"
    assert max(starts.values(), default=0) <= 1, "a rollback ran twice"
    unknown = 0
    for thread_id, thread in threads.items():
        service = accepted[thread_id]
        messages = [e for e in thread.events if e.type == "user_message"]
        assert [m.text for m in messages] == [f"/rollback {service} prod"]  # acknowledged, kept, once
        [call] = [e for e in thread.events if e.type == "tool_call"]
        [request] = [e for e in thread.events if e.type == "approval_requested"]
        decisions = [e for e in thread.events if e.type == "approval_decided"]
        assert len(decisions) == 1, f"{thread_id}: {len(decisions)} decisions"
        acked = decided.get(request.approval_id, [])
        assert len(acked) <= 1, f"two decisions of {request.approval_id} were both accepted"
        assert acked in ([], [decisions[0].decision]), "an acknowledged decision is not the recorded one"
        assert len([e for e in thread.events if e.type == "tool_started"]) <= 1
        [result] = [e for e in thread.events if e.type == "tool_result" and e.call_id == call.call_id]
        ran = starts.get(thread_id, 0)
        assert ran <= 1, f"{thread_id}: the rollback ran {ran} times"
        if decisions[0].decision != "approved":
            assert result.status == "rejected" and ran == 0 and thread.state == "idle"
        elif result.status == "ok":
            assert ran == 1 and thread.state == "idle"
        else:
            assert result.status == "unknown", result
            assert thread.state == "awaiting_human", "an unknown outcome must be handed to a human"
            unknown += 1
    print(f"\nchaos: {len(threads)} threads, {sum(starts.values())} runs, {unknown} unknown outcomes handed to a human")


async def test_workers_killed_at_random(make_settings, tmp_path):
    await chaos_run(make_settings, tmp_path)


async def test_redis_restarted_mid_run(make_settings, tmp_path):
    redis = RedisProcess(tmp_path / "redis", appendonly=True)
    redis.start()
    try:
        await chaos_run(make_settings, tmp_path, redis)
    finally:
        redis.remove()


async def test_sentinel_failovers_mid_run(make_settings, tmp_path):
    ha = ReplicatedRedis(tmp_path / "ha")
    try:
        await chaos_run(make_settings, tmp_path, ha=ha)
    finally:
        ha.stop()

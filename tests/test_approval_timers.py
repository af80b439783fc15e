"""Approval deadlines, reminders and escalation: expiry found on start after an outage, a reminder
and an escalation on their times, each once, on the thread's channel. Real Redis, real workers."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.runtime import Runtime
from tests.conftest import make_wiring, settled, spawn_bot, wait_for
from tests.helpers import runbook_lines, say


class ChannelRenderer:
    """Stands in for the origin channel (Slack, email): records what the worker renders."""

    name = "test"

    def __init__(self) -> None:
        self.shown: list[tuple[str, object]] = []

    async def render(self, thread, event) -> None:
        self.shown.append((thread.id, event))

    async def close(self) -> None:
        pass


@pytest.mark.timeout(300)  # two worker processes start, on a possibly loaded machine
async def test_deadline_passed_while_no_process_ran_expires_on_start(make_settings, policy_file):
    settings = make_settings(policy_file=policy_file('[tools.rollback]\napproval_ttl = 2\n'))
    rt = await Runtime.start(settings, make_wiring())  # a client only: no worker, no sweep in this process
    # its only sweep runs at its start: a slow test must not let it expire the approval before
    # it is killed (the point is that nothing runs at the deadline)
    worker = spawn_bot(settings, "worker", CHATOPS_SWEEP_INTERVAL="3600")
    try:
        thread_id = await say(rt, "/rollback api prod")
        thread = await settled(rt, thread_id, timeout=90)
        [request] = thread.pending_approvals()
    finally:
        worker.kill()
        worker.wait(timeout=10)
    while time.time() <= request.expires_at + 0.3:  # everything is down at the deadline
        await asyncio.sleep(0.05)
    thread = await rt.store.load(thread_id)
    assert thread.state == "awaiting_approval" and not thread.decisions

    worker = spawn_bot(settings, "worker")
    try:
        async def decided():
            t = await rt.store.load(thread_id)
            return t if t.decisions and t.state == "idle" else None
        thread = await wait_for(decided, timeout=90, what="the expiry on start")
    finally:
        worker.terminate()
        worker.wait(timeout=10)
    [decision] = thread.decisions.values()
    assert decision.decision == "expired" and decision.by is None
    [result] = thread.results.values()
    assert result.status == "expired"
    assert runbook_lines(settings) == []
    late = await rt.approvals.decide(request.approval_id, True, "alice", "console")
    assert late.status == "already_decided" and late.decision.decision == "expired"
    assert runbook_lines(settings) == []
    await rt.close()


async def test_reminder_and_escalation_on_their_times_once_each(make_settings, policy_file, start_bot):
    settings = make_settings(policy_file=policy_file(
        '[tools.rollback]\napprovers = ["alice"]\napproval_ttl = 60\nremind_before = 59\n'
        'escalate_after = 2\nescalate_to = ["Carol"]\n'))
    rt = await start_bot(settings)
    other = await start_bot(settings)  # a second worker sweeping the same timers
    channel = ChannelRenderer()
    rt.renderers["test"] = other.renderers["test"] = channel  # either worker may render

    thread_id = await say(rt, "/rollback api prod", channel="test")
    thread = await settled(rt, thread_id)
    [request] = thread.pending_approvals()
    assert request.escalate_to == ["carol"]
    assert request.remind_at == request.expires_at - 59 and request.escalate_at < request.expires_at
    early = await rt.approvals.decide(request.approval_id, True, "carol", "console")
    assert early.status == "refused"  # not yet escalated: carol may not decide

    async def nudged():
        t = await rt.store.load(thread_id)
        kinds = [e.type for e in t.events]
        return t if "approval_reminder" in kinds and "approval_escalated" in kinds else None
    thread = await wait_for(nudged, timeout=60, what="reminder and escalation")
    await asyncio.sleep(3 * settings.sweep_interval)  # more sweeps by both workers: still once each
    thread = await rt.store.load(thread_id)
    [reminder] = [e for e in thread.events if e.type == "approval_reminder"]
    [escalation] = [e for e in thread.events if e.type == "approval_escalated"]
    assert reminder.ts >= request.remind_at and reminder.approvers == ["alice"]
    assert escalation.ts >= request.escalate_at and escalation.approvers == ["carol"]
    assert not thread.decisions

    async def rendered():  # the worker renders after the log settles
        shown = [e.type for t, e in channel.shown if t == thread_id]
        return shown if {"approval_reminder", "approval_escalated"} <= set(shown) else None
    shown = await wait_for(rendered, what="the reminder and escalation on the channel")
    assert shown.count("approval_reminder") == 1 and shown.count("approval_escalated") == 1

    outcome = await rt.approvals.decide(request.approval_id, True, "carol", "console")
    assert outcome.status == "decided", outcome.message
    thread = await settled(rt, thread_id)
    assert runbook_lines(settings) == ["rollback api prod"]
    assert await rt.redis.zcard(rt.store.keys.approval_timers) == 0


async def test_decided_approval_gets_no_reminder(make_settings, policy_file, start_bot):
    settings = make_settings(policy_file=policy_file(
        '[tools.rollback]\napproval_ttl = 60\nremind_before = 58\nescalate_after = 2\nescalate_to = ["carol"]\n'))
    rt = await start_bot(settings)
    thread_id = await say(rt, "/rollback api prod")
    [request] = (await settled(rt, thread_id)).pending_approvals()
    assert (await rt.approvals.decide(request.approval_id, False, "alice", "api", "not now")).status == "decided"
    while time.time() <= request.escalate_at + 2 * settings.sweep_interval:
        await asyncio.sleep(0.05)
    assert await rt.approvals.nudge_due() == 0
    thread = await settled(rt, thread_id)
    assert not [e for e in thread.events if e.type in ("approval_reminder", "approval_escalated")]

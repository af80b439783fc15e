"""Approvals: rejection reaches the model, expiry, unauthorized approvers, first decision wins."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from bot.approvals import Approvals
from bot.events import ApprovalEscalated, ApprovalRequested
from bot.policy import ConfigError, Policy
from bot.thread import Origin, Thread, ThreadMeta
from tests.conftest import settled, wait_for
from tests.helpers import runbook_lines, say
from tests.messages_api import text, tool_use

DEPLOY_PROD = {"service": "api", "version": "1.2.3", "environment": "prod"}
POLICY = """
approvers = ["group:oncall"]
[groups]
oncall = ["alice", "carol"]
[tools.rollback]
two_person = true
"""


async def pending(rt, thread_id):
    thread = await settled(rt, thread_id)
    assert thread.state == "awaiting_approval", thread.state
    [request] = thread.pending_approvals()
    return request


async def test_rejection_reason_reaches_the_model(model_settings, start_bot, messages_api, policy_file):
    settings = model_settings(policy_file=policy_file(POLICY))
    rt = await start_bot(settings)
    messages_api.add(tool_use("deploy", DEPLOY_PROD), text("Understood, not deploying."))
    thread_id = await say(rt, "deploy api 1.2.3 to prod")
    request = await pending(rt, thread_id)

    outcome = await rt.approvals.decide(request.approval_id, False, "alice", "api", "freeze until Monday")
    assert outcome.status == "decided"
    thread = await settled(rt, thread_id)
    assert thread.state == "idle" and runbook_lines(settings) == []
    [result] = messages_api.requests[1]["messages"][-1]["content"]
    assert result["is_error"] is True
    assert "Rejected by alice: freeze until Monday" in result["content"]


async def test_unauthorized_then_second_decision_refused(model_settings, start_bot, messages_api, policy_file):
    settings = model_settings(policy_file=policy_file(POLICY))
    rt = await start_bot(settings)
    messages_api.add(tool_use("deploy", DEPLOY_PROD), text("done"))
    thread_id = await say(rt, "deploy", user="bob")
    request = await pending(rt, thread_id)
    assert request.approvers == ["alice", "carol"]

    mallory = await rt.approvals.decide(request.approval_id, True, "mallory", "api")
    assert mallory.status == "refused" and "not an approver" in mallory.message
    first = await rt.approvals.decide(request.approval_id, True, "alice", "api")
    second = await rt.approvals.decide(request.approval_id, False, "carol", "api", "no")
    assert first.status == "decided" and second.status == "already_decided"
    assert "approved by alice" in second.message

    thread = await settled(rt, thread_id)
    assert runbook_lines(settings) == ["deploy api 1.2.3 prod"]
    refused = [e for e in thread.events if e.type == "approval_refused"]
    assert [(e.by, e.via) for e in refused] == [("mallory", "api")]
    assert [e.decision for e in thread.events if e.type == "approval_decided"] == ["approved"]


async def test_racing_decisions_have_one_winner(make_settings, start_bot):
    settings = make_settings()
    rt = await start_bot(settings)
    thread_id = await say(rt, "/rollback api prod")
    request = await pending(rt, thread_id)
    outcomes = await asyncio.gather(*[
        rt.approvals.decide(request.approval_id, i % 2 == 0, f"user{i}", "api", "race")
        for i in range(20)
    ])
    assert sorted(o.status for o in outcomes).count("decided") == 1
    await settled(rt, thread_id)
    thread = await rt.store.load(thread_id)
    [decision] = [e for e in thread.events if e.type == "approval_decided"]
    expected = ["rollback api prod"] if decision.decision == "approved" else []
    assert runbook_lines(settings) == expected


async def test_two_person_rule(make_settings, start_bot, policy_file):
    settings = make_settings(policy_file=policy_file(POLICY))
    rt = await start_bot(settings)
    thread_id = await say(rt, "/rollback api prod", user="alice")
    request = await pending(rt, thread_id)
    own = await rt.approvals.decide(request.approval_id, True, "alice", "console")
    assert own.status == "refused" and "two-person" in own.message
    other = await rt.approvals.decide(request.approval_id, True, "carol", "console")
    assert other.status == "decided"
    await wait_for(lambda: _ran(settings), what="the rollback to run")


async def _ran(settings):
    return runbook_lines(settings) == ["rollback api prod"]


async def test_expiry_is_never_approval(make_settings, start_bot, policy_file):
    settings = make_settings(policy_file=policy_file("[tools.rollback]\napproval_ttl = 0.5\n"))
    rt = await start_bot(settings)
    thread_id = await say(rt, "/rollback api prod")

    async def expired():  # not "pending first": on a slow machine the sweep may be quicker
        thread = await rt.store.load(thread_id)
        return thread.state == "idle" and thread.decisions and thread

    thread = await wait_for(expired, 30, what="the sweeper to expire the approval")
    [request] = [e for e in thread.events if e.type == "approval_requested"]
    assert thread.decisions[request.approval_id].decision == "expired"
    late = await rt.approvals.decide(request.approval_id, True, "alice", "api")
    assert late.status == "already_decided" and "expired" in late.message
    thread = await rt.store.load(thread_id)
    assert thread.results[request.call_id].status == "expired"
    assert runbook_lines(settings) == []
    assert await rt.store.pending_approval_ids() == []


async def test_with_no_approvers_only_those_who_may_talk_to_the_agent_decide(make_settings, start_bot,
                                                                              policy_file):
    settings = make_settings(policy_file=policy_file('[agents.deploy]\nusers = ["bob", "dave"]\n'))
    rt = await start_bot(settings)
    thread_id = await say(rt, "/rollback api prod", user="bob")
    request = await pending(rt, thread_id)
    assert request.approvers == []
    stranger = await rt.approvals.decide(request.approval_id, True, "mallory", "api")
    assert stranger.status == "refused" and "may not talk to this agent" in stranger.message
    allowed = await rt.approvals.decide(request.approval_id, True, "dave", "api")
    assert allowed.status == "decided"
    await wait_for(lambda: _ran(settings), what="the rollback to run")


@pytest.mark.parametrize("policy, named", [
    ('approvers = ["group:oncal"]\n[groups]\noncall = ["alice"]\n', "approvers names group 'oncal'"),
    ('[groups]\noncall = []\n[tools.deploy]\napprovers = ["group:oncall"]\n', "which has no members"),
    ('[tools.deploi]\napprovers = ["alice"]\n', "setting 'tools.deploi'"),
    ('[agents.deplyo]\nusers = ["bob"]\n', "setting 'agents.deplyo'"),
    ('[routes]\nC0123 = "nope"\n', "setting 'routes.C0123'"),
])
async def test_a_policy_that_would_fail_open_stops_the_bot(make_settings, runtime, policy_file, policy, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        await runtime(make_settings(policy_file=policy_file(policy)))


def test_an_escalation_lets_its_people_decide_even_where_only_the_agents_users_may():
    approvals = Approvals(None, Policy.model_validate({"agents": {"deploy": {"users": ["bob", "dave"]}}}), 60)
    request = ApprovalRequested(approval_id="0123456789abcdef.01234567", call_id="c", tool="rollback",
                                args={}, requester="bob", approvers=[], expires_at=time.time() + 60)
    thread = Thread(ThreadMeta(id="0123456789abcdef", agent="deploy", origin=Origin(channel="api"), created=0))
    thread.extend([request])
    assert approvals.authorize(thread, request, "carol") is not None
    assert approvals.authorize(thread, request, "dave") is None
    thread.apply(ApprovalEscalated(approval_id=request.approval_id, tool="rollback", args={},
                                   approvers=["carol"], expires_at=request.expires_at))
    assert approvals.authorize(thread, request, "carol") is None


# ---- tests that bite: each fails when its check is removed -------------------------------------

async def test_a_decision_after_the_deadline_expires_the_approval_never_approves_it(
        make_settings, start_bot, policy_file):
    """No sweep runs here (its interval is an hour, and the first ran at start): the late click is
    the first to look at the approval after its deadline, and must expire it, not approve it."""
    settings = make_settings(policy_file=policy_file("[tools.rollback]\napproval_ttl = 1\n"),
                             sweep_interval=3600)
    rt = await start_bot(settings)
    thread_id = await say(rt, "/rollback api prod")
    thread = await wait_for(lambda: _requested(rt, thread_id), 30, "the approval request")
    [request] = [e for e in thread.events if e.type == "approval_requested"]
    while time.time() <= request.expires_at:  # the deadline passes (wall-clock time is the condition)
        await asyncio.sleep(0.05)
    late = await rt.approvals.decide(request.approval_id, True, "alice", "api")
    assert late.status in ("expired", "already_decided") and "expired" in late.message, late
    thread = await settled(rt, thread_id)
    assert thread.decisions[request.approval_id].decision == "expired"
    assert runbook_lines(settings) == []


async def _requested(rt, thread_id):
    thread = await rt.store.load(thread_id)
    return thread if any(e.type == "approval_requested" for e in thread.events) else None


async def test_a_reminder_due_as_the_approval_is_decided_is_not_sent(make_settings, start_bot, policy_file):
    """A sweep that read the due reminders just before the decision landed still holds the timer:
    the reminder path must see the decision and send nothing."""
    settings = make_settings(policy_file=policy_file(
        '[tools.rollback]\napproval_ttl = 60\nremind_before = 30\n'), sweep_interval=3600)
    rt = await start_bot(settings)
    thread_id = await say(rt, "/rollback api prod")
    request = await pending(rt, thread_id)
    assert (await rt.approvals.decide(request.approval_id, False, "alice", "api", "no")).status == "decided"
    timer = f"remind:{request.approval_id}"
    await rt.redis.zadd(rt.store.keys.approval_timers, {timer: time.time() - 1})  # the sweep's stale view
    assert await rt.approvals.nudge_due() == 1
    thread = await settled(rt, thread_id)
    assert not [e for e in thread.events if e.type == "approval_reminder"]
    assert await rt.redis.zscore(rt.store.keys.approval_timers, timer) is None  # done with, not retried

"""SIGKILL a real worker process: while a thread awaits approval, and while the tool runs.
Nothing acknowledged is lost, nothing runs twice, an unknown outcome goes to a human."""

from __future__ import annotations

import signal
import subprocess

from bot.events import ToolStarted
from tests.conftest import settled, spawn_bot, wait_for
from tests.helpers import runbook_lines, say
from tests.messages_api import text, tool_use
from tests.test_round_trips import calls, reset

SLOW_ROLLBACK = """\
#!/bin/sh
echo "started $$" >> "$CHATOPS_DATA_DIR/slow.log"
sleep 3
echo "rollback $1 $2" >> "$CHATOPS_DATA_DIR/runbook.log"
"""


async def _ran(settings) -> bool:
    return runbook_lines(settings) == ["rollback api prod"]


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


async def test_killed_while_awaiting_approval(make_settings, runtime, policy_file):
    settings = make_settings(lease_ttl=1.0, claim_idle=1.0)
    rt = await runtime(settings)
    worker = spawn_bot(settings, "worker")
    try:
        thread_id = await say(rt, "/rollback api prod")
        thread = await settled(rt, thread_id, timeout=60)
        assert thread.state == "awaiting_approval"
        kill(worker)

        [request] = thread.pending_approvals()
        assert (await rt.approvals.decide(request.approval_id, True, "alice", "api")).status == "decided"
        worker = spawn_bot(settings, "worker")
        thread = await settled(rt, thread_id, timeout=60)
        assert thread.state == "idle"
        assert runbook_lines(settings) == ["rollback api prod"]
        assert [e.type for e in thread.events] == [
            "user_message", "tool_call", "approval_requested", "approval_decided",
            "tool_started", "tool_result", "agent_reply",
        ]
    finally:
        kill(worker)


async def test_killed_while_the_tool_runs_is_never_run_again(make_settings, runtime, policy_file, tmp_path):
    script = tmp_path / "slow_rollback.sh"
    script.write_text(SLOW_ROLLBACK)
    script.chmod(0o755)
    policy = policy_file(f'[tools.rollback]\ncommand = ["{script}", "{{service}}", "{{environment}}"]\n')
    settings = make_settings(policy_file=policy, lease_ttl=1.0, claim_idle=1.0)
    rt = await runtime(settings)
    slow_log = settings.data_dir / "slow.log"
    worker = spawn_bot(settings, "worker")
    try:
        thread_id = await say(rt, "/rollback api prod")
        thread = await settled(rt, thread_id, timeout=60)
        [request] = thread.pending_approvals()
        await rt.approvals.decide(request.approval_id, True, "alice", "api")

        async def started():
            return slow_log.exists() and slow_log.read_text().strip()

        await wait_for(started, 60, "the runbook to start")
        kill(worker)  # the runbook leads its own session: it carries on and finishes

        worker = spawn_bot(settings, "worker")
        thread = await settled(rt, thread_id, timeout=30)
        assert thread.state == "awaiting_human"
        result = thread.results[request.call_id]
        assert result.status == "unknown" and "not run again" in result.output
        assert "check whether it took effect" in thread.events[-1].question
        await wait_for(lambda: _ran(settings), 10, "the orphaned runbook to finish")
        assert slow_log.read_text().count("started") == 1  # it took effect once, and ran once

        # the human says it went through; the thread carries on without running it again
        await say(rt, "it went through, thanks", thread_id=thread_id)
        thread = await settled(rt, thread_id, timeout=60)
        assert thread.state == "idle" and slow_log.read_text().count("started") == 1
    finally:
        kill(worker)


async def test_a_worker_stopped_while_the_tool_runs_lets_it_finish(make_settings, runtime, policy_file, tmp_path):
    script = tmp_path / "slow_rollback.sh"
    script.write_text(SLOW_ROLLBACK)
    script.chmod(0o755)
    policy = policy_file(f'[tools.rollback]\ncommand = ["{script}", "{{service}}", "{{environment}}"]\n')
    settings = make_settings(policy_file=policy, shutdown_grace=10.0)
    rt = await runtime(settings)
    slow_log = settings.data_dir / "slow.log"
    worker = spawn_bot(settings, "worker")
    try:
        thread_id = await say(rt, "/rollback api prod")
        [request] = (await settled(rt, thread_id, timeout=60)).pending_approvals()
        await rt.approvals.decide(request.approval_id, True, "alice", "api")
        await wait_for(lambda: _exists(slow_log), 60, "the runbook to start")
        worker.send_signal(signal.SIGTERM)  # a deploy of the bot, mid-rollback
        assert worker.wait(20) == 0
        thread = await rt.store.load(thread_id)
        assert thread.results[request.call_id].status == "ok"  # recorded, not an unknown outcome
        assert runbook_lines(settings) == ["rollback api prod"]
        assert "waiting up to 10s for 1 thread(s) in progress" in worker.output()
    finally:
        if worker.poll() is None:
            kill(worker)


async def _exists(path) -> bool:
    return path.exists()


SLOW_DEPLOY = """\
#!/bin/sh
echo "started $$" >> "$CHATOPS_DATA_DIR/slow.log"
sleep 3
echo "deploy $1 $2 $3" >> "$CHATOPS_DATA_DIR/runbook.log"
"""


async def test_killed_after_a_start_folded_into_the_model_turn_is_an_unknown_outcome(
        model_settings, messages_api, runtime, policy_file, tmp_path):
    """A call that needs no approval has its tool_started appended with the model's turn (one
    round trip less): still durable before the handler, so a worker killed while the handler
    runs leaves an unknown outcome for a human, and nothing is run again."""
    script = tmp_path / "slow_deploy.sh"
    script.write_text(SLOW_DEPLOY)
    script.chmod(0o755)
    policy = policy_file(f'[tools.deploy]\ncommand = ["{script}", "{{service}}", "{{version}}", '
                         '"{environment}"]\n')
    settings = model_settings(policy_file=policy, lease_ttl=1.0, claim_idle=1.0)
    staging = {"service": "api", "version": "1.2.3", "environment": "staging"}
    messages_api.add(tool_use("deploy", staging), text("Tell me what you found."))
    rt = await runtime(settings)
    slow_log = settings.data_dir / "slow.log"
    worker = spawn_bot(settings, "worker")
    try:
        thread_id = await say(rt, "ship api to staging")
        await wait_for(lambda: _exists(slow_log), 20, "the first deploy to start")
        kill(worker)  # after the folded append, before the result
        thread = await rt.store.load(thread_id)
        [first] = thread.turn
        assert [e.type for e in thread.events] == ["user_message", "tool_call", "tool_started"]
        # the start rode with the turn, not in an append of its own (which takes a claim)
        assert not await rt.redis.exists(rt.store.keys.claim(thread_id, f"run:{first}"))

        worker = spawn_bot(settings, "worker")
        thread = await settled(rt, thread_id, timeout=30)
        assert thread.state == "awaiting_human"
        assert thread.results[first].status == "unknown" and "not run again" in thread.results[first].output
        await wait_for(lambda: _deployed(settings), 10, "the orphaned deploy to finish")
        assert slow_log.read_text().count("started") == 1  # ran once
    finally:
        kill(worker)


async def _deployed(settings) -> bool:
    return runbook_lines(settings) == ["deploy api 1.2.3 staging"]


async def test_an_unknown_outcome_and_its_question_to_a_human_are_one_append(make_settings, runtime, own_redis):
    """The recovery of a run whose worker died appends the unknown result and the question to a
    human at once: written apart, a worker killed (or a lease lost) between the two left the call
    resolved and no question, and the next worker answered it with a reply and left the thread
    idle, the unknown outcome told to nobody (the chaos test, on a loaded machine). Counted as
    RPUSHes to the log on a redis-server of the test's own: one append, one push."""
    settings = make_settings(redis_url=own_redis.url, lease_ttl=1.0, claim_idle=1.0)
    rt = await runtime(settings)
    worker = spawn_bot(settings, "worker")
    try:
        thread_id = await say(rt, "/rollback api prod")
        [request] = (await settled(rt, thread_id, timeout=60)).pending_approvals()
        kill(worker)
        # what a worker killed while the handler ran leaves: the decision and the start, no result
        await rt.approvals.decide(request.approval_id, True, "alice", "api")
        assert (await rt.store.append(thread_id, ToolStarted(call_id=request.call_id))).ok
        reset(own_redis.url)

        worker = spawn_bot(settings, "worker")
        thread = await settled(rt, thread_id, timeout=30)
        assert thread.state == "awaiting_human"
        assert [e.type for e in thread.events[-3:]] == ["tool_started", "tool_result", "human_question"]
        assert thread.results[request.call_id].status == "unknown"
        assert calls(own_redis.url).get("rpush") == 1  # the result and the question together
        assert runbook_lines(settings) == []  # never run again
    finally:
        kill(worker)

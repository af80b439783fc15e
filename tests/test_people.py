"""Approvals people can trust, through the real channels: signed Slack clicks against the Bolt
app, replies over SMTP, the HTTP API and the console; one person is one vote whatever identity
they use, a quorum, the policy in force at each vote, exactly the validated arguments."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import signal

import pytest

from channels.email import app as email_channel
from channels.email import keys as email_keys
from channels.console import Console
from channels.email.server import start_smtp
from channels.email.settings import EmailSettings
from tests.conftest import make_wiring, settled, spawn_bot, wait_for
from tests.helpers import runbook_lines, say
from tests.mail import gmail, new_mail, reply_to, text_of
from tests.messages_api import text, tool_use
from tests.slack_api import block_action, mention, new_ts
from tests.test_email import Bot as MailBot
from tests.test_email import mails_to, sink  # noqa: F401  (fixture)
from tests.test_slack import (  # noqa: F401  (fixtures)
    CHANNEL,
    DEPLOY_PROD,
    all_text,
    ask_for_prod_deploy,
    button_values,
    slack_api,
    slack_bot,
)

PEOPLE = """
[people]
alice = ["U0ALICE1", "alice@example.com"]
bob = ["U0BOB001", "bob@example.com"]
carol = ["U0CAROL1", "carol@example.com"]

[groups]
oncall = ["alice", "bob", "carol"]
"""


async def slack_and_mail(slack_bot, sink, policy: str):  # noqa: F811
    """A bot with Slack (HTTP) and email (SMTP) both connected."""
    email = EmailSettings(_env_file=None, email_domain="ops.test", smtp_url=f"smtp://127.0.0.1:{sink.port}",
                          smtp_port=0, smtp_send_backoff=0.05)
    bot = await slack_bot(policy, email=email)
    server = await start_smtp(email, email_channel.inbound(bot.rt, email), port=0)
    return bot, server, MailBot(bot.rt, server.sockets[0].getsockname()[1], bot.settings)


def click(values: dict[str, str], user: str, ts: str, action: str = "approval_approve") -> dict:
    return block_action(action, values[action], user=user, channel=CHANNEL, message_ts="1.0", thread_ts=ts)


# ---- one person, one vote, across channels -----------------------------------------------------

async def test_the_requester_cannot_approve_their_own_request_through_another_identity(
    slack_bot, sink, messages_api  # noqa: F811
):
    policy = PEOPLE + '[tools.deploy]\napprovers = ["group:oncall"]\ntwo_person = true\n'
    bot, server, mail = await slack_and_mail(slack_bot, sink, policy)
    try:
        # alice asks as her Slack id (the mention comes from U0ALICE1)
        ts, thread, posted = await ask_for_prod_deploy(bot, messages_api, text("Deployed."))
        [request] = thread.pending_approvals()
        assert request.requester == "U0ALICE1" and request.requester_person == "alice"
        values = button_values(posted)

        # her click is refused
        assert (await bot.send.interaction(click(values, "U0ALICE1", ts))).status_code == 200
        [told] = await bot.calls("chat.postEphemeral", user="U0ALICE1")
        assert "two-person" in told.args["text"]

        # then she answers the approval mail sent to alice@example.com: refused too, recorded
        [approval_mail] = await mails_to(sink, "alice@example.com", 1)
        code, said = await mail.send(reply_to(approval_mail, "alice@example.com", gmail("approve", approval_mail)))
        assert code == 250 and "two-person" in said
        thread = await bot.rt.store.load(thread.id)
        assert thread.state == "awaiting_approval" and runbook_lines(bot.settings) == []
        refused = [(e.by, e.person, e.via) for e in thread.events if e.type == "approval_refused"]
        assert refused == [("U0ALICE1", "alice", "slack"), ("alice@example.com", "alice", "email")]

        # the API's approval resource shows who tried, as which person, through which channel
        got = (await bot.http.get(f"/v1/approvals/{request.approval_id}")).json()
        assert [(r["by"], r["person"], r["via"]) for r in got["refusals"]] == refused

        # bob, another person, decides
        assert (await bot.send.interaction(click(values, "U0BOB001", ts))).status_code == 200
        thread = await settled(bot.rt, thread.id)
        decision = thread.decisions[request.approval_id]
        assert (decision.decision, decision.by, decision.person) == ("approved", "U0BOB001", "bob")
        assert runbook_lines(bot.settings) == ["deploy api 1.2.3 prod"]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_quorum_of_two_is_met_only_by_two_different_people(slack_bot, sink, messages_api):  # noqa: F811
    policy = PEOPLE + '[tools.deploy]\napprovers = ["group:oncall"]\nquorum = 2\n'
    bot, server, mail = await slack_and_mail(slack_bot, sink, policy)
    try:
        messages_api.add(tool_use("deploy", DEPLOY_PROD, say="Deploying."), text("Deployed."))
        ts = new_ts()
        await bot.send.event(mention("deploy api 1.2.3 to prod", user="U0DAVE01", ts=ts))
        thread = await settled(bot.rt, bot.thread_id(ts))
        [request] = thread.pending_approvals()
        assert request.quorum == 2
        [posted] = await bot.calls("chat.postMessage", thread_ts=ts)
        assert "2 different people must approve" in all_text(posted.args["blocks"])
        values = button_values(posted)

        # alice approves in Slack: a vote, not a decision; the message shows it, buttons kept
        assert (await bot.send.interaction(click(values, "U0ALICE1", ts))).status_code == 200
        [update] = await bot.calls("chat.update")
        assert "1 of 2 approvals: alice" in all_text(update.args["blocks"])
        assert [b for b in update.args["blocks"] if b["type"] == "actions"]
        [told] = await bot.calls("chat.postEphemeral", user="U0ALICE1")
        assert "1 of 2 approvals: alice" in told.args["text"]

        # alice again, by mail and through the API: one person, one vote
        approval_mail = (await mails_to(sink, "alice@example.com", 1))[0]
        code, said = await mail.send(reply_to(approval_mail, "alice@example.com", "approve"))
        assert code == 250 and "already approved" in said
        api = await bot.http.post(f"/v1/approvals/{request.approval_id}", json={"decision": "approve", "user": "alice"})
        assert api.status_code == 403 and "already approved" in api.json()["message"]
        thread = await bot.rt.store.load(thread.id)
        assert request.approval_id not in thread.decisions and runbook_lines(bot.settings) == []
        assert [(v.by, v.person, v.via) for v in thread.votes[request.approval_id]] == [("U0ALICE1", "alice", "slack")]

        # the console shows the same count
        out = io.StringIO()
        console = Console(bot.rt, user="dave", out=out)
        console.watch_thread(thread.id, shown=0)
        await console.poll()
        assert "1 of 2 approvals: alice" in out.getvalue()

        # bob's approval by mail meets the quorum: decided once, run once
        bob_mail = (await mails_to(sink, "bob@example.com", 1))[0]
        assert "Approval needed" in text_of(bob_mail)
        code, said = await mail.send(reply_to(bob_mail, "bob@example.com", "approve"))
        assert code == 250
        thread = await settled(bot.rt, thread.id)
        decision = thread.decisions[request.approval_id]
        assert decision.decision == "approved" and decision.approved_by == ["alice", "bob"]
        assert runbook_lines(bot.settings) == ["deploy api 1.2.3 prod"]
        await wait_for(lambda: _async([c for c in bot.api.matching("chat.update")
                                       if "Approved by" in all_text(c.args["blocks"])]), what="the outcome in Slack")
    finally:
        server.close()
        await server.wait_closed()


async def test_the_nth_approval_decides_once_under_concurrent_votes(make_settings, start_bot, policy_file):
    five = PEOPLE.replace('oncall = ["alice", "bob", "carol"]', 'oncall = ["alice", "bob", "carol", "dave", "erin"]')
    settings = make_settings(policy_file=policy_file(five + '[tools.rollback]\napprovers = ["group:oncall"]\nquorum = 2\n'))
    rt = await start_bot(settings)
    for _ in range(3):
        thread_id = await say(rt, "/rollback api prod", user="zed")
        [request] = (await settled(rt, thread_id)).pending_approvals()
        outcomes = await asyncio.gather(*[
            rt.approvals.decide(request.approval_id, True, who, "api")
            for who in ("alice", "U0ALICE1", "bob", "carol", "dave", "erin", "alice@example.com")
        ])
        assert [o.status for o in outcomes].count("decided") == 1
        thread = await settled(rt, thread_id)
        assert [e.type for e in thread.events].count("approval_decided") == 1
        approved_by = thread.decisions[request.approval_id].approved_by
        assert len(approved_by) >= 2 and len(set(approved_by)) == len(approved_by)
        alice_votes = [v for v in thread.votes[request.approval_id] if v.person == "alice"]
        assert len(alice_votes) <= 1
    assert runbook_lines(settings) == ["rollback api prod"] * 3


async def test_the_api_answers_a_vote_that_does_not_decide_with_202_and_the_votes(make_settings, start_bot,
                                                                                 policy_file, serve):
    import httpx

    from bot.api import create_app

    settings = make_settings(api_token="t", policy_file=policy_file(
        PEOPLE + '[tools.rollback]\napprovers = ["group:oncall"]\nquorum = 2\n'))
    rt = await start_bot(settings)
    url = await serve(create_app(rt))
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer t"}) as http:
        thread_id = await say(rt, "/rollback api prod", user="zed")
        [request] = (await settled(rt, thread_id)).pending_approvals()
        first = await http.post(f"/v1/approvals/{request.approval_id}", json={"decision": "approve", "user": "carol"})
        assert first.status_code == 202
        assert first.json()["votes"] == ["carol"] and first.json()["quorum"] == 2
        got = (await http.get(f"/v1/approvals/{request.approval_id}")).json()
        assert got["approvals_so_far"] == ["carol"] and got["votes"][0]["via"] == "api"
        second = await http.post(f"/v1/approvals/{request.approval_id}", json={"decision": "approve", "user": "U0BOB001"})
        assert second.status_code == 200 and second.json()["approved_by"] == ["carol", "bob"]


# ---- the live policy ---------------------------------------------------------------------------------

async def test_a_person_removed_from_the_reloaded_policy_can_no_longer_vote(make_settings, start_bot,
                                                                          policy_file, caplog):
    caplog.set_level(logging.INFO, logger="chatops")
    before = PEOPLE + '[tools.rollback]\napprovers = ["group:oncall"]\nquorum = 2\n'
    path = policy_file(before)
    settings = make_settings(policy_file=path, policy_poll=0.1)
    rt = await start_bot(settings)
    thread_id = await say(rt, "/rollback api prod", user="zed")
    [request] = (await settled(rt, thread_id)).pending_approvals()
    out = io.StringIO()
    console = Console(rt, user="bob", out=out)
    await console.handle(f"approve {request.approval_id}")
    assert "1 of 2 approvals: bob" in out.getvalue()

    # bob leaves on-call: the file changes, every process reloads it
    path.write_text(before.replace('oncall = ["alice", "bob", "carol"]', 'oncall = ["alice", "carol"]'))
    await wait_for(lambda: _async("policy reloaded" in caplog.text), what="the reload")
    # his pending vote no longer counts, and a new one is refused
    await Console(rt, user="bob@example.com", out=out).handle(f"approve {request.approval_id}")
    assert "bob@example.com is not an approver of rollback" in out.getvalue()
    carol = await rt.approvals.decide(request.approval_id, True, "carol", "console")
    assert carol.status == "voted" and carol.votes == ("carol",)
    alice = await rt.approvals.decide(request.approval_id, True, "alice", "console")
    assert alice.status == "decided" and alice.decision.approved_by == ["carol", "alice"]
    thread = await settled(rt, thread_id)
    [refused] = [e for e in thread.events if e.type == "approval_refused"]
    assert (refused.by, refused.person, refused.via) == ("bob@example.com", "bob", "console")
    assert request.approvers == sorted(request.approvers) and "bob@example.com" in request.approvers  # snapshot kept

    # a policy that fails to load is refused whole: an ERROR line, the one in force stays
    in_force = rt.policy
    path.write_text('[tools.rollback]\napprovers = []\n')
    await wait_for(lambda: _async("policy reload refused" in caplog.text), what="the refused reload")
    assert rt.policy is in_force
    [line] = [r for r in caplog.records if "policy reload refused" in r.getMessage()]
    assert line.levelno == logging.ERROR and "empty approver list" in line.getMessage()


async def test_sighup_reloads_the_policy_of_a_running_process(make_settings, policy_file):
    path = policy_file('[tools.rollback]\napprovers = ["alice"]\n')
    settings = make_settings(policy_file=path)
    bot = spawn_bot(settings, "worker", CHATOPS_POLICY_POLL="0")
    try:
        await wait_for(lambda: _async("worker" in bot.log_path.read_text() and "started" in bot.log_path.read_text()),
                       60, "the worker to start")
        path.write_text('[tools.rollback]\napprovers = ["bob"]\n')
        bot.send_signal(signal.SIGHUP)
        await wait_for(lambda: _async("policy reloaded" in bot.log_path.read_text()), 30, "the reload")
        path.write_text('[tools.rollback]\nquorum = "x"\n')
        bot.send_signal(signal.SIGHUP)
        await wait_for(lambda: _async("policy reload refused" in bot.log_path.read_text()), 30, "the refusal")
        assert bot.poll() is None  # still running, on the policy in force
        assert re.search(r"ERROR chatops: policy reload refused", bot.log_path.read_text())
    finally:
        bot.terminate()
        bot.wait(30)


async def _lines(*lines: str):
    for line in lines:
        yield line


async def _async(value):
    return value


# ---- no fail-open policy ---------------------------------------------------------------------------

async def test_an_empty_approver_list_stops_the_bot_at_start(make_settings, policy_file):
    settings = make_settings(policy_file=policy_file('[tools.deploy]\napprovers = []\n'))
    bot = spawn_bot(settings, "worker")
    assert bot.wait(60) != 0
    out = bot.output()
    assert "tools.deploy.approvers" in out and 'write ["*"] for anyone' in out


@pytest.mark.parametrize("policy, named", [
    ('[tools.service_status]\ntwo_person = true\n', "'tools.service_status.two_person': service_status never asks"),
    ('[tools.service_status]\napprovers = ["alice"]\n', "'tools.service_status.approvers'"),
    ('[tools.service_status]\nrequire_approval = true\nwhen = { env = ["prod"] }\n', "has no argument 'env'"),
    ('[tools.deploy]\napprovers = ["alice"]\nquorum = 2\n', "2 approvals needed but only 1 approver"),
    ('[people]\nalice = ["U1"]\nbob = ["u1"]\n', "belongs to both"),
])
async def test_approval_settings_that_would_gate_nothing_stop_the_bot(make_settings, runtime, policy_file,
                                                                     policy, named):
    from bot.policy import ConfigError

    with pytest.raises(ConfigError, match=re.escape(named)):
        await runtime(make_settings(policy_file=policy_file(policy)))


async def test_the_policy_can_require_an_approval_the_code_does_not(make_settings, start_bot, policy_file):
    settings = make_settings(policy_file=policy_file(
        '[tools.service_status]\nrequire_approval = true\nwhen = { environment = ["prod"] }\n'
        'approvers = ["alice"]\n'))
    rt = await start_bot(settings)
    out = io.StringIO()
    console = Console(rt, user="bob", out=out)
    await console.run(_lines("/service_status api prod"))  # returns once what it said is shown
    thread = await settled(rt, console.thread_id)
    [request] = thread.pending_approvals()
    assert request.tool == "service_status" and runbook_lines(settings) == []
    assert f"approval needed [{request.approval_id}]: service_status(service=api, environment=prod)" in out.getvalue()
    # not for other values, and the gate holds until alice decides
    dev = await say(rt, "/service_status api dev")
    assert (await settled(rt, dev)).state == "idle" and runbook_lines(settings) == ["service_status api dev"]
    assert (await rt.approvals.decide(request.approval_id, True, "bob", "console")).status == "refused"
    await Console(rt, user="alice", out=out).run(_lines(f"approve {request.approval_id}"))
    await wait_for(lambda: _async(runbook_lines(settings)[-1:] == ["service_status api prod"]), what="the run")


# ---- exactly what will run -------------------------------------------------------------------------

async def test_extra_model_arguments_never_reach_an_approval_or_a_run(slack_bot, messages_api):  # noqa: F811
    bot = await slack_bot()
    lie = {**DEPLOY_PROD, "dry_run": "true (read-only, nothing changes)", "pre_approved_by": "CTO"}
    flood = {**DEPLOY_PROD, **{f"note_{i}": "x" * 200 for i in range(600)}}
    messages_api.add(tool_use("deploy", lie), tool_use("deploy", flood), tool_use("deploy", DEPLOY_PROD),
                     text("Deployed."))
    ts = new_ts()
    await bot.send.event(mention("deploy api 1.2.3 to prod", ts=ts))
    thread = await settled(bot.rt, bot.thread_id(ts))
    [request] = thread.pending_approvals()
    assert request.args == DEPLOY_PROD  # the one valid call, as validated
    # the model saw each bad call as a compact error, not an approval
    errors = [r for r in thread.results.values() if r.status == "error"]
    assert len(errors) == 2
    assert "dry_run: unknown argument, not allowed" in errors[0].output
    assert "pre_approved_by" in errors[0].output
    assert "and 595 more" in errors[1].output and len(errors[1].output) < 600
    [posted] = await bot.calls("chat.postMessage", thread_ts=ts)
    body = all_text(posted.args["blocks"])
    assert "dry_run" not in body and "CTO" not in body and "note_" not in body
    values = button_values(posted)
    assert (await bot.send.interaction(click(values, "U0BOB001", ts))).status_code == 200
    await settled(bot.rt, thread.id)
    assert runbook_lines(bot.settings) == ["deploy api 1.2.3 prod"]
    assert len([e for e in (await bot.rt.store.load(thread.id)).events if e.type == "approval_requested"]) == 1


# ---- approval mail is never crowded out -----------------------------------------------------------

async def test_thirty_requests_from_one_outsider_do_not_stop_a_genuine_approval_mail(make_settings, start_bot,
                                                                                    policy_file, sink):  # noqa: F811
    settings = make_settings(policy_file=policy_file('approvers = ["alice@example.com"]\n'))
    email = EmailSettings(_env_file=None, email_domain="ops.test", smtp_url=f"smtp://127.0.0.1:{sink.port}",
                          smtp_port=0)
    rt = await start_bot(settings, make_wiring(email=email))
    server = await start_smtp(email, email_channel.inbound(rt, email), port=0)
    mail = MailBot(rt, server.sockets[0].getsockname()[1], settings)
    try:
        outsider = "mallory@elsewhere.example"
        codes = []
        for i in range(30):
            code, said = await mail.send(new_mail(outsider, "deploy@ops.test", f"ship {i}", f"/deploy api 1.0.{i} prod"))
            codes.append(code)
        assert codes == [250] * 20 + [550] * 10
        assert "too many new requests" in said
        await mails_to(sink, "alice@example.com", 20)

        code, _ = await mail.send(new_mail("bob@example.com", "deploy@ops.test", "ship api", "/deploy api 1.2.3 prod"))
        assert code == 250
        to_alice = await mails_to(sink, "alice@example.com", 21)
        assert any("1.2.3" in text_of(m) and "Asked by: bob@example.com" in text_of(m) for m in to_alice)
        # the outsider's copies name the approvers, not their addresses
        copies = sink.to(outsider)
        assert copies and all("alice@example.com" not in text_of(m) for m in copies)
        assert "Approvers: an approver at example.com" in text_of(copies[0])
    finally:
        server.close()
        await server.wait_closed()


async def test_a_slack_user_is_matched_to_a_person_by_their_profile_email(slack_bot, slack_api, messages_api):  # noqa: F811
    # alice's Slack account is not listed: her profile email is, and the two-person rule holds
    policy = ('[people]\nalice = ["alice@example.com"]\nbob = ["bob@example.com"]\n'
              '[tools.deploy]\napprovers = ["alice", "bob"]\ntwo_person = true\n')
    slack_api.emails.update({"U0ALICE1": "Alice@Example.com", "U0BOB001": "bob@example.com"})
    bot = await slack_bot(policy, slack=dict(match_email=True))
    ts, thread, posted = await ask_for_prod_deploy(bot, messages_api, text("Deployed."))
    [request] = thread.pending_approvals()
    assert request.requester == "U0ALICE1" and request.requester_person == "alice"
    values = button_values(posted)
    assert (await bot.send.interaction(click(values, "U0ALICE1", ts))).status_code == 200
    [told] = await bot.calls("chat.postEphemeral", user="U0ALICE1")
    assert "two-person" in told.args["text"]
    assert (await bot.send.interaction(click(values, "U0BOB001", ts))).status_code == 200
    thread = await settled(bot.rt, thread.id)
    assert thread.decisions[request.approval_id].person == "bob"
    assert runbook_lines(bot.settings) == ["deploy api 1.2.3 prod"]
    # cached: one users.info per user, whatever the number of events and clicks
    assert sorted(c.args["user"] for c in slack_api.to("users.info")) == ["U0ALICE1", "U0BOB001"]


async def test_approvers_hear_the_outcome_of_a_console_thread_even_over_the_mail_cap(make_settings, start_bot,
                                                                                    policy_file, sink):  # noqa: F811
    import time

    settings = make_settings(policy_file=policy_file('approvers = ["alice@example.com", "carol@example.com"]\n'))
    rt = await start_bot(settings, make_wiring(email=dict(email_domain="ops.test", smtp_port=0, email_rate_limit=1,
                                                          smtp_url=f"smtp://127.0.0.1:{sink.port}")))
    window = int(time.time() // 3600)
    for w in (window, window + 1):  # the test may straddle the hour
        await rt.redis.set(email_keys.rate(rt.store.keys, "alice@example.com", w), 5, ex=7200)
    thread_id = await say(rt, "/rollback api prod", user="bob", channel="console")
    [request] = (await settled(rt, thread_id)).pending_approvals()
    await mails_to(sink, "alice@example.com", 1)
    assert (await rt.approvals.decide(request.approval_id, True, "carol@example.com", "console")).status == "decided"
    [*_, outcome] = await mails_to(sink, "alice@example.com", 2)
    assert "approved by carol@example.com via console" in text_of(outcome)

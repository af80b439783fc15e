"""The email channel over real SMTP on loopback: the bot's aiosmtpd server receives (through
aiosmtplib), a local aiosmtpd sink receives what the bot sends; real Redis, the real worker and
the real runbooks behind the deploy agent."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import pytest

from bot.runtime import Runtime
from bot.settings import Settings
from channels.email import app as email_channel
from channels.email import keys as email_keys
from channels.email import tokens as email_tokens
from channels.email.server import start_smtp
from channels.email.settings import EmailSettings
from tests.conftest import email_fields, make_wiring, settled, wait_for
from tests.helpers import runbook_lines, say
from tests.mail import (
    Sink,
    address_of,
    deliver,
    german,
    gmail,
    gmail_html,
    header,
    iphone,
    new_mail,
    outlook,
    reply_to,
    text_of,
    with_headers,
)

POLICY = 'approvers = ["alice@example.com", "carol@example.com"]\n'
BOB, ALICE, CAROL, MALLORY = "bob@example.com", "alice@example.com", "carol@example.com", "mallory@example.com"


h = header  # short, for the many header checks


@dataclass
class Bot:
    rt: Runtime
    port: int
    settings: Settings

    async def send(self, msg, mail_from: str | None = None, rcpts: list[str] | None = None):
        frm = mail_from if mail_from is not None else address_of(msg["From"])
        return await deliver(self.port, msg, frm, rcpts or [address_of(msg["To"])])


@pytest.fixture
async def sink():
    s = Sink()
    s.port = await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def email_bot(make_settings, start_bot, policy_file, sink):
    servers = []

    async def start(**overrides) -> Bot:
        """A bot with the settings `overrides` names, the core's or the email channel's."""
        core, email = email_fields(overrides)
        email = dict(email_domain="ops.test", smtp_url=f"smtp://127.0.0.1:{sink.port}", smtp_port=0,
                     smtp_send_backoff=0.05) | email
        settings = make_settings(**(dict(policy_file=policy_file(POLICY)) | core))
        channel = EmailSettings(_env_file=None, **email)
        rt = await start_bot(settings, make_wiring(email=channel))
        server = await start_smtp(channel, email_channel.inbound(rt, channel), port=0)
        servers.append(server)
        return Bot(rt, server.sockets[0].getsockname()[1], settings)

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def mails_to(sink: Sink, address: str, n: int):
    async def check():
        got = sink.to(address)
        return got if len(got) >= n else None

    return await wait_for(check, 10, f"{n} mails to {address}")


async def request_deploy(bot: Bot, sink: Sink, version: str = "1.2.3"):
    """Bob asks for a prod deploy by mail; returns (thread id, approval id, the approval mail)."""
    before = len(sink.to(ALICE))
    code, _ = await bot.send(new_mail(BOB, "deploy@ops.test", f"ship api {version}",
                                      f"/deploy api {version} prod"))
    assert code == 250
    mail = (await mails_to(sink, ALICE, before + 1))[-1]
    thread_id = str(mail["X-Chatops-Thread"])
    thread = await settled(bot.rt, thread_id)
    [request] = thread.pending_approvals()
    return thread_id, request.approval_id, mail


# ---- a thread by email -------------------------------------------------------------------------

async def test_new_thread_by_email_and_the_reply_in_the_same_email_thread(email_bot, sink):
    bot = await email_bot()
    first = new_mail(BOB, "deploy@ops.test", "status of api", "/service_status api prod\n\n-- \nBob")
    code, text = await bot.send(first)
    assert code == 250 and "queued in thread" in text

    [answer] = await mails_to(sink, BOB, 1)
    assert h(answer, "Subject") == "Re: status of api"
    assert h(answer, "In-Reply-To") == h(first, "Message-ID")
    assert h(first, "Message-ID") in h(answer, "References").split()
    assert answer["Auto-Submitted"] == "auto-replied"
    reply_address = address_of(answer["Reply-To"])
    assert reply_address.startswith("bot+") and reply_address.endswith("@ops.test")
    token = reply_address[4:].split("@")[0]
    assert h(answer, "Message-ID").startswith(f"<{token}.")
    assert {p.get_content_type() for p in answer.walk()} >= {"text/plain", "text/html"}
    assert "api in prod: healthy" in text_of(answer)
    thread_id = str(answer["X-Chatops-Thread"])
    thread = await settled(bot.rt, thread_id)
    assert thread.meta.origin.channel == "email"
    assert thread.events[0].text == "/service_status api prod"  # signature stripped
    assert thread.events[0].source.user == BOB and thread.events[0].source.external_id == h(first, "Message-ID")

    # bob answers in the same email thread: the bot's reply threads on both mails
    second = reply_to(answer, BOB, "/service_status web prod\n\nOn Mon, bot wrote:\n> api in prod")
    code, _ = await bot.send(second)
    assert code == 250
    [_, again] = await mails_to(sink, BOB, 2)
    assert "web in prod: healthy" in text_of(again)
    assert h(again, "Subject") == "Re: status of api"
    assert h(again, "In-Reply-To") == h(second, "Message-ID")
    refs = h(again, "References").split()
    assert refs[0] == h(first, "Message-ID") and h(answer, "Message-ID") in refs and refs[-1] == h(second, "Message-ID")
    thread = await settled(bot.rt, thread_id)
    inputs = [e for e in thread.events if e.type == "user_message"]
    assert [e.text for e in inputs] == ["/service_status api prod", "/service_status web prod"]


async def test_unknown_recipients_are_refused_at_rcpt(email_bot):
    bot = await email_bot()
    msg = new_mail(BOB, "nobody@ops.test", "hi", "hello")
    assert (await bot.send(msg))[0] == 550
    assert (await bot.send(msg, rcpts=["deploy@elsewhere.test"]))[0] == 550  # no relaying
    assert (await bot.send(msg, rcpts=["bot+0123456789abcdef-ffffffff-0000000000000000@ops.test"]))[0] == 550
    expired = email_tokens.thread_token(b"test-signing-key", "0123456789abcdef", time.time() - 1)
    code, text = await bot.send(msg, rcpts=[f"bot+{expired}@ops.test"])
    assert code == 550 and "expired" in text


# ---- approvals by reply ------------------------------------------------------------------------

STYLES = {"gmail": gmail, "outlook": outlook, "iphone": iphone, "german": german, "html": gmail_html}


@pytest.mark.parametrize("style,answer,reason", [
    ("gmail", "reject: not during the freeze", "not during the freeze"),
    ("outlook", "Reject - wait for the 1.2.4 hotfix", "wait for the 1.2.4 hotfix"),
    ("iphone", "no, the api is paging right now", "the api is paging right now"),
    # a German client: its signature and quote header ("Am ... schrieb ...:") are German
    ("german", "reject: Bitte erst nach dem Freeze am Montag.", "Bitte erst nach dem Freeze am Montag."),
    ("html", "Reject. Not today, the on-call is away", "Not today, the on-call is away"),
])
async def test_reply_styles_reject_with_the_exact_reason(email_bot, sink, style, answer, reason):
    bot = await email_bot()
    thread_id, approval_id, mail = await request_deploy(bot, sink)
    assert mail["To"] == ALICE and mail["Cc"] is None
    body = text_of(mail)
    for expected in ("deploy", "service", "api", "version", "1.2.3", "environment", "prod",
                     f"Asked by: {BOB}", "Expires:", "reply with \"approve\"", "\"reject\""):
        assert expected in body
    assert "<table>" in mail.get_body(preferencelist=("html",)).get_content()

    write = STYLES[style]
    reply = reply_to(mail, ALICE, write(answer, mail)) if style != "html" else \
        reply_to(mail, ALICE, "", html=write(answer, mail))
    code, _ = await bot.send(reply)
    assert code == 250

    thread = await settled(bot.rt, thread_id)
    decided = thread.decisions[approval_id]
    assert (decided.decision, decided.by, decided.via) == ("rejected", ALICE, "email")
    assert decided.reason == reason  # nothing of the quote, the signature or the client's header
    assert runbook_lines(bot.settings) == []
    # the decision is confirmed in the same email thread, to bob (no approver address in his
    # copy) and, in a mail of theirs, to the approvers
    confirm = await wait_for(lambda: _async([m for m in sink.to(BOB) if "by alice" in text_of(m)]))
    assert f"rejected by {ALICE} via email: {reason}" in text_of(confirm[0])
    assert confirm[0]["Cc"] is None and CAROL not in str(confirm[0])
    [theirs] = await wait_for(lambda: _async([m for m in sink.to(CAROL) if "by alice" in text_of(m)]))
    assert ALICE in str(theirs["To"]) and CAROL in str(theirs["To"])
    assert h(confirm[0], "Subject") == h(mail, "Subject")
    assert h(mail, "Message-ID") in h(confirm[0], "References").split()


async def test_an_approval_by_reply_runs_the_tool_once(email_bot, sink, caplog):
    caplog.set_level(logging.DEBUG)
    bot = await email_bot()
    thread_id, approval_id, mail = await request_deploy(bot, sink)
    assert (await bot.send(reply_to(mail, ALICE, gmail("Approve, go ahead", mail))))[0] == 250
    thread = await settled(bot.rt, thread_id)
    decided = thread.decisions[approval_id]
    assert (decided.decision, decided.by, decided.via, decided.reason) == ("approved", ALICE, "email", "go ahead")
    assert runbook_lines(bot.settings) == ["deploy api 1.2.3 prod"]
    # the approval token is a credential: in no log line, at any level
    token = h(mail, "Reply-To").split("+")[1].split("@")[0]
    assert token not in caplog.text


async def _async(value):
    return value


def _tokens_in(msg) -> list[email_tokens.Token]:
    """Every token a recipient can read in a mail's headers."""
    text = " ".join(h(msg, name) for name in ("Reply-To", "Message-ID", "In-Reply-To", "References"))
    words = re.findall(r"[0-9a-f-]{30,}", text)
    return [t for t in (email_tokens.verify(b"test-signing-key", w) for w in words) if t is not None]


async def test_each_approver_gets_a_token_of_their_own_and_the_requester_none(email_bot, sink):
    bot = await email_bot()
    thread_id, approval_id, to_alice = await request_deploy(bot, sink)
    [to_carol] = await mails_to(sink, CAROL, 1)
    [to_bob] = await mails_to(sink, BOB, 1)
    for mail, who in ((to_alice, ALICE), (to_carol, CAROL)):
        assert mail["To"] == who and mail["Cc"] is None
        [token] = [t for t in _tokens_in(mail) if t.approval_id]
        assert token.approval_id == approval_id and email_tokens.is_for(b"test-signing-key", token, who)
    assert address_of(to_alice["Reply-To"]) != address_of(to_carol["Reply-To"])
    # the requester's copy: the same request, a thread token only, and it says so
    assert to_bob["To"] == BOB and to_bob["Cc"] is None and f"Asked by: {BOB}" in text_of(to_bob)
    assert "cannot decide" in text_of(to_bob) and _tokens_in(to_bob)
    assert all(t.approval_id is None for t in _tokens_in(to_bob))

    # the requester forges alice's From on a reply to his copy: a message, not a decision
    code, text = await bot.send(reply_to(to_bob, ALICE, "approve"))
    assert code == 250 and "queued in thread" in text
    # naming the approval does not make it one: refused, recorded, answered
    code, text = await bot.send(reply_to(to_bob, ALICE, f"approve {approval_id}"))
    assert code == 250 and "no reply token of this approval" in text
    # carol answers alice's mail: its token is alice's
    code, text = await bot.send(reply_to(to_alice, CAROL, "approve"))
    assert code == 250 and "sent to another approver" in text
    thread = await settled(bot.rt, thread_id)
    assert approval_id not in thread.decisions and runbook_lines(bot.settings) == []
    said = [e for e in thread.events if e.type in ("user_message", "human_response") and e.source.user == ALICE]
    assert [e.text for e in said] == ["approve"]
    refusals = [(e.by, e.reason) for e in thread.events if e.type == "approval_refused"]
    assert [by for by, _ in refusals] == [ALICE, CAROL]
    assert "no reply token of this approval" in refusals[0][1] and "another approver" in refusals[1][1]

    # carol answers her own mail: that decides
    assert (await bot.send(reply_to(to_carol, CAROL, "approve")))[0] == 250
    thread = await settled(bot.rt, thread_id)
    assert (thread.decisions[approval_id].decision, thread.decisions[approval_id].by) == ("approved", CAROL)
    assert runbook_lines(bot.settings) == ["deploy api 1.2.3 prod"]


async def test_a_new_request_that_opens_with_no_starts_a_thread(email_bot, sink):
    bot = await email_bot()
    forwarded = new_mail(BOB, "deploy@ops.test", "Re: release plan", "No deploys today, please check api.")
    code, text = await bot.send(forwarded)
    assert code == 250 and "queued in thread" in text
    # while an answer that lost its threading is still refused, so its sender learns why
    lost = new_mail(ALICE, "bot@ops.test", "Re: ship api", "Approve")
    code, text = await bot.send(lost)
    assert code == 554 and "no reply token" in text


async def test_a_yes_or_no_with_only_a_thread_token_is_a_message_to_the_thread(email_bot, sink):
    bot = await email_bot()
    thread_id, approval_id, _ = await request_deploy(bot, sink)
    [to_bob] = await mails_to(sink, BOB, 1)
    code, text = await bot.send(reply_to(to_bob, BOB, gmail("No, use 1.2.4", to_bob)))
    assert code == 250 and f"queued in thread {thread_id}" in text
    thread = await settled(bot.rt, thread_id)
    [said] = [e for e in thread.events if e.type in ("user_message", "human_response") and e.source.user == BOB
              and e.source.channel == "email" and e.text.startswith("No")]
    assert said.text == "No, use 1.2.4"
    assert approval_id not in thread.decisions
    assert not [e for e in thread.events if e.type == "approval_refused"]


async def test_a_decision_taken_elsewhere_is_confirmed_in_the_email_thread(email_bot, sink):
    bot = await email_bot()
    thread_id, approval_id, mail = await request_deploy(bot, sink)
    outcome = await bot.rt.approvals.decide(approval_id, True, "carol@example.com", "console")
    assert outcome.status == "decided"
    confirm = await wait_for(lambda: _async([m for m in sink.to(BOB) if "via console" in text_of(m)]))
    assert "approved by carol@example.com via console" in text_of(confirm[0])
    assert confirm[0]["In-Reply-To"] is not None
    assert h(mail, "Message-ID") in h(confirm[0], "References").split()
    assert all(t.approval_id is None for t in _tokens_in(confirm[0]))
    thread = await settled(bot.rt, thread_id)
    assert runbook_lines(bot.settings) == ["deploy api 1.2.3 prod"] and thread.state == "idle"


async def test_forged_approvals_are_refused_and_only_those_tied_to_the_thread_recorded(email_bot, sink):
    bot = await email_bot()
    thread_id, approval_id, mail = await request_deploy(bot, sink)
    other_thread, other_id, other_mail = await request_deploy(bot, sink, version="9.9.9")
    versions = {t: (await settled(bot.rt, t)).version for t in (thread_id, other_thread)}

    # answered at SMTP level, nothing written: mail that no token ties to the approval's thread
    # - a token of another approval: approval A's address, naming approval B
    code, text = await bot.send(reply_to(mail, ALICE, f"approve {other_id}"))
    assert code == 554 and "no reply token of its thread" in text
    # - no token: a new mail naming the approval
    code, text = await bot.send(new_mail(ALICE, "deploy@ops.test", "approval", f"approve {approval_id}"))
    assert code == 554 and "no reply token" in text
    # - no token: a reply to the approval mail, sent to the bot's plain address, threading lost
    bare = reply_to(mail, ALICE, gmail("approve", mail))
    for name in ("To", "In-Reply-To", "References"):
        del bare[name]
    bare["To"] = "bot@ops.test"
    code, text = await bot.send(bare)
    assert code == 554 and "no reply token" in text
    for t, version in versions.items():
        assert (await bot.rt.store.load(t)).version == version
    assert len(await bot.rt.store.list_threads()) == 2

    # recorded in the thread and answered: a sender who is not an approver, with the right token
    code, text = await bot.send(reply_to(mail, MALLORY, gmail("approve", mail)))
    assert code == 250 and "not accepted" in text
    # an expired token of the right approval and approver
    expired = email_tokens.approval_token(b"test-signing-key", approval_id, ALICE, time.time() - 1)
    assert (await bot.send(new_mail(ALICE, f"bot+{expired}@ops.test", "Re: ship api", "approve")))[0] == 250

    thread = await settled(bot.rt, thread_id)
    assert approval_id not in thread.decisions
    reasons = [e.reason for e in thread.events if e.type == "approval_refused"]
    assert len(reasons) == 2
    assert "mallory@example.com is not an approver" in reasons[0]
    assert "expired" in reasons[1]
    other = await settled(bot.rt, other_thread)
    assert other_id not in other.decisions and other.version == versions[other_thread]
    assert runbook_lines(bot.settings) == []

    # each refused sender got a short explanation, threaded on their own mail
    [to_mallory] = await mails_to(sink, MALLORY, 1)
    assert "not an approver" in text_of(to_mallory) and to_mallory["Auto-Submitted"] == "auto-replied"
    await mails_to(sink, ALICE, 2 + 1)  # two approval mails + one explanation

    # a reused token: alice approves, then answers the same mail again
    assert (await bot.send(reply_to(mail, ALICE, "approve")))[0] == 250
    code, text = await bot.send(reply_to(mail, ALICE, "reject wait"))
    assert code == 250 and "already answered" in text
    thread = await settled(bot.rt, thread_id)
    assert thread.decisions[approval_id].by == ALICE and thread.decisions[approval_id].decision == "approved"
    assert "already answered" in [e for e in thread.events if e.type == "approval_refused"][-1].reason
    assert runbook_lines(bot.settings) == ["deploy api 1.2.3 prod"]


OURS = ("Authentication-Results: mx.ops.test; spf=pass smtp.mailfrom=example.com; dkim=pass; "
        "dmarc=pass header.from=example.com")  # what our relay adds on top


@pytest.mark.parametrize("case,headers,why", [
    ("dmarc=fail", ["Authentication-Results: mx.ops.test; dmarc=fail header.from=example.com"], "dmarc=fail"),
    ("dmarc=none", ["Authentication-Results: mx.ops.test; spf=pass; dmarc=none header.from=example.com"], "dmarc=none"),
    ("dmarc=temperror", ["Authentication-Results: mx.ops.test; dmarc=temperror"], "dmarc=temperror"),
    ("no dmarc result", ["Authentication-Results: mx.ops.test; spf=pass smtp.mailfrom=example.com"], "dmarc=absent"),
    ("no header", [], "dmarc=absent"),
    ("a pass from another authserv-id", ["Authentication-Results: mx.evil.test; dmarc=pass"], "dmarc=absent"),
    ("a pass in a quoted string", ['Authentication-Results: mx.ops.test; spf=fail smtp.mailfrom="x;dmarc=pass"'
                                   '@evil.test; dmarc=fail'], "dmarc=fail"),
    ("a pass below ours", ["Authentication-Results: mx.ops.test; dmarc=fail", OURS], "dmarc=fail"),
    ("two From addresses", [OURS], "exactly one From"),
    ("two From headers", [OURS, f"From: {ALICE}"], "exactly one From"),
])
async def test_a_decision_needs_dmarc_pass_from_our_relay_and_one_author(email_bot, sink, case, headers, why):
    bot = await email_bot(email_authserv_id="mx.ops.test")
    thread_id, approval_id, mail = await request_deploy_authenticated(bot, sink)
    reply = reply_to(mail, ALICE, "approve")
    if case == "two From addresses":
        reply.replace_header("From", f"{ALICE}, {MALLORY}")
    code, text = await deliver(bot.port, with_headers(reply, *headers), ALICE, [address_of(reply["To"])])
    assert code == 550 and why in text
    thread = await settled(bot.rt, thread_id)
    assert approval_id not in thread.decisions
    [refusal] = [e for e in thread.events if e.type == "approval_refused"]
    assert refusal.via == "email-unauthenticated" and why in refusal.reason

    # no mail to whoever the From names; the real approver's authenticated reply still decides
    good = reply_to(mail, ALICE, "approve")
    assert (await deliver(bot.port, with_headers(good, OURS), ALICE, [address_of(good["To"])]))[0] == 250
    thread = await settled(bot.rt, thread_id)
    assert thread.decisions[approval_id].decision == "approved"
    await wait_for(lambda: _async([m for m in sink.to(ALICE) if "by alice" in text_of(m)]))
    assert not [m for m in sink.mails if "not accepted" in text_of(m[2])]


async def test_dmarc_failure_refuses_a_message_too_and_records_nothing(email_bot, sink):
    bot = await email_bot(email_authserv_id="mx.ops.test")
    msg = new_mail(BOB, "deploy@ops.test", "status", "/service_status api prod")
    code, _ = await deliver(bot.port, with_headers(msg, "Authentication-Results: mx.ops.test; dmarc=fail"),
                            BOB, ["deploy@ops.test"])
    assert code == 550
    assert await bot.rt.store.list_threads() == []


async def request_deploy_authenticated(bot: Bot, sink: Sink):
    before = len(sink.to(ALICE))
    msg = new_mail(BOB, "deploy@ops.test", "ship api", "/deploy api 1.2.3 prod")
    code, _ = await deliver(bot.port, with_headers(msg, OURS), BOB, ["deploy@ops.test"])
    assert code == 250
    mail = (await mails_to(sink, ALICE, before + 1))[-1]
    thread_id = str(mail["X-Chatops-Thread"])
    [request] = (await settled(bot.rt, thread_id)).pending_approvals()
    return thread_id, request.approval_id, mail


# ---- loops -------------------------------------------------------------------------------------

async def test_out_of_office_bulk_and_bounces_are_ignored_and_nothing_is_sent(email_bot, sink):
    bot = await email_bot()
    approval_thread, approval_id, mail = await request_deploy(bot, sink)
    assert (await bot.send(new_mail(BOB, "deploy@ops.test", "status", "/service_status api prod")))[0] == 250
    [answer] = [m for m in await mails_to(sink, BOB, 2) if "healthy" in text_of(m)]
    status_thread = h(answer, "X-Chatops-Thread")
    versions = {t: (await settled(bot.rt, t)).version for t in (approval_thread, status_thread)}
    sent = len(sink.mails)

    # an out-of-office answer to the approval mail does not approve, whatever it says
    ooo = reply_to(mail, ALICE, "approve\n\nI am out of the office until Monday.", Auto_Submitted="auto-replied")
    code, text = await bot.send(ooo)
    assert code == 250 and "ignored" in text
    exchange = reply_to(answer, BOB, "Out of office", X_Auto_Response_Suppress="All")
    assert (await bot.send(exchange))[0] == 250
    vacation = reply_to(answer, BOB, "On vacation", X_Autoreply="yes")
    assert (await bot.send(vacation))[0] == 250
    bulk = new_mail("news@example.com", "deploy@ops.test", "Weekly digest", "/service_status api prod",
                    Precedence="bulk", List_Id="<digest.example.com>")
    assert (await bot.send(bulk))[0] == 250
    bounce = reply_to(answer, "MAILER-DAEMON@example.com", "The mail could not be delivered.")
    code, text = await bot.send(bounce, mail_from="")
    assert code == 250 and "automatic" in text
    noreply = new_mail("noreply@example.com", "deploy@ops.test", "alert", "/service_status api prod")
    assert (await bot.send(noreply))[0] == 250

    for thread_id, version in versions.items():
        assert (await bot.rt.store.load(thread_id)).version == version  # nothing recorded
    assert len(await bot.rt.store.list_threads()) == 2  # no thread started
    # a person's mail after them is answered, and it is the only mail sent since
    assert (await bot.send(reply_to(answer, BOB, "/service_status web prod")))[0] == 250
    await wait_for(lambda: _async(len(sink.mails) > sent), what="the answer to bob")
    assert len(sink.mails) == sent + 1 and "web in prod" in text_of(sink.mails[-1][2])
    assert approval_id not in (await bot.rt.store.load(approval_thread)).decisions


async def test_outbound_mail_is_rate_limited_per_recipient(email_bot, sink):
    bot = await email_bot(email_rate_limit=2)
    first = new_mail(BOB, "deploy@ops.test", "status", "/service_status api prod")
    assert (await bot.send(first))[0] == 250
    [answer] = await mails_to(sink, BOB, 1)
    thread_id = str(answer["X-Chatops-Thread"])
    assert (await bot.send(reply_to(answer, BOB, "/service_status api2 prod")))[0] == 250
    await mails_to(sink, BOB, 2)
    assert (await bot.send(reply_to(answer, BOB, "/service_status api3 prod")))[0] == 250
    thread = await wait_for(lambda: _failed(bot))
    assert thread.id == thread_id and len(sink.to(BOB)) == 2
    assert sum(e.type == "agent_reply" for e in thread.events) == 3
    [failure] = [e for e in thread.events if e.type == "error"]
    assert failure.kind == "delivery_failed" and "limit" in failure.message


async def test_an_approver_over_the_mail_limit_still_gets_the_approval_mail(email_bot, sink):
    bot = await email_bot(email_rate_limit=5)
    window = int(time.time() // 3600)
    for who in (ALICE, BOB):
        for w in (window, window + 1):  # the test may straddle the hour
            await bot.rt.redis.set(email_keys.rate(bot.rt.store.keys, who, w), 5, ex=7200)
    code, _ = await bot.send(new_mail(BOB, "deploy@ops.test", "ship api", "/deploy api 1.2.3 prod"))
    assert code == 250
    # alice's own approval mail is never dropped by the cap; bob's copy (not an approver) is
    [to_alice] = await mails_to(sink, ALICE, 1)
    thread_id = h(to_alice, "X-Chatops-Thread")
    assert "reply with \"approve\"" in text_of(to_alice)

    async def failed():
        thread = await bot.rt.store.load(thread_id)
        return [e for e in thread.events if e.type == "error"]

    [failure] = await wait_for(failed, what="the delivery failure in the thread")
    assert failure.kind == "delivery_failed" and f"not sent to {BOB}" in failure.message
    assert ALICE not in failure.message and sink.to(BOB) == []


def test_a_relay_password_never_travels_without_tls():
    from channels.email.send import Relay

    assert Relay.from_url("smtp://bot:s3cret@smtp.example.com:587").start_tls is True
    assert Relay.from_url("smtp://bot:s3cret@smtp.example.com:587?starttls=require").start_tls is True
    assert Relay.from_url("smtps://bot:s3cret@smtp.example.com").use_tls is True
    assert Relay.from_url("smtp://smtp.example.com:25").start_tls is None  # no password: when offered
    assert Relay.from_url("smtp://bot:s3cret@127.0.0.1:25").start_tls is None  # loopback
    with pytest.raises(ValueError) as refused:
        Relay.from_url("smtp://bot:s3cret@smtp.example.com:587?starttls=off")
    assert "s3cret" not in str(refused.value)
    assert "s3cret" not in repr(Relay.from_url("smtp://bot:s3cret@smtp.example.com:587"))


async def test_required_starttls_that_the_relay_does_not_offer_sends_nothing(email_bot, sink):
    bot = await email_bot(smtp_url=f"smtp://bot:s3cret@127.0.0.1:{sink.port}?starttls=require")
    assert (await bot.send(new_mail(BOB, "deploy@ops.test", "status", "/service_status api prod")))[0] == 250
    thread = await wait_for(lambda: _failed(bot))
    [failure] = [e for e in thread.events if e.type == "error"]
    assert failure.kind == "delivery_failed" and "STARTTLS" in failure.message and "s3cret" not in failure.message
    assert sink.mails == []


async def test_temporary_relay_failures_are_retried(email_bot, sink):
    bot = await email_bot()
    sink.refuse_next = ["451 4.3.0 try later", "421 4.3.2 busy"]
    assert (await bot.send(new_mail(BOB, "deploy@ops.test", "status", "/service_status api prod")))[0] == 250
    [answer] = await mails_to(sink, BOB, 1)
    assert "healthy" in text_of(answer) and sink.refuse_next == []


async def test_a_permanent_relay_failure_is_recorded_in_the_thread(email_bot, sink):
    bot = await email_bot()
    sink.refuse_next = ["554 5.7.1 relay denied"]
    assert (await bot.send(new_mail(BOB, "deploy@ops.test", "status", "/service_status api prod")))[0] == 250
    thread = await wait_for(lambda: _failed(bot))
    [failure] = [e for e in thread.events if e.type == "error"]
    assert failure.kind == "delivery_failed" and "relay denied" in failure.message
    assert sink.mails == []


async def _failed(bot: Bot):
    [row] = await bot.rt.store.list_threads() or [None]
    if row is None:
        return None
    thread = await bot.rt.store.load(row["id"])
    return thread if any(e.type == "error" for e in thread.events) else None


# ---- delivery guarantees -----------------------------------------------------------------------

async def test_a_duplicate_delivery_has_one_effect(email_bot, sink):
    bot = await email_bot()
    msg = new_mail(BOB, "deploy@ops.test", "status", "/service_status api prod")
    assert (await bot.send(msg))[0] == 250
    code, text = await bot.send(msg)
    assert code == 250 and "already received" in text
    # without a Message-ID: the content decides, whatever the relays added on the way
    raw = (b"From: bob@example.com\r\nTo: deploy@ops.test\r\nSubject: no id\r\n"
           b"Date: Mon, 3 Nov 2025 10:00:00 +0000\r\n\r\n/service_status web prod\r\n")
    assert (await deliver(bot.port, b"Received: from a\r\n" + raw, BOB, ["deploy@ops.test"]))[0] == 250
    code, text = await deliver(bot.port, b"Received: from b\r\n" + raw, BOB, ["deploy@ops.test"])
    assert code == 250 and "already received" in text

    await mails_to(sink, BOB, 2)
    rows = await bot.rt.store.list_threads()
    assert len(rows) == 2
    for row in rows:
        thread = await settled(bot.rt, row["id"])
        assert sum(e.type == "user_message" for e in thread.events) == 1
    assert sorted(runbook_lines(bot.settings)) == ["service_status api prod", "service_status web prod"]


async def test_a_duplicate_approval_reply_has_one_effect(email_bot, sink):
    bot = await email_bot()
    thread_id, approval_id, mail = await request_deploy(bot, sink)
    reply = reply_to(mail, ALICE, "approve")
    assert (await bot.send(reply))[0] == 250
    code, text = await bot.send(reply)
    assert code == 250 and "already received" in text
    refused = reply_to(mail, MALLORY, "approve")
    assert (await bot.send(refused))[0] == 250
    assert "already received" in (await bot.send(refused))[1]
    thread = await settled(bot.rt, thread_id)
    assert [e.type for e in thread.events].count("approval_refused") == 1
    assert [e.type for e in thread.events].count("approval_decided") == 1


async def test_mail_is_remembered_for_days_since_mail_servers_retry_for_days(email_bot, sink):
    bot = await email_bot()
    thread_id, approval_id, mail = await request_deploy(bot, sink)
    request = new_mail(BOB, "deploy@ops.test", "status", "/service_status api prod")
    assert (await bot.send(request))[0] == 250
    refused = reply_to(mail, MALLORY, "approve")
    assert (await bot.send(refused))[0] == 250
    status_thread = next(r["id"] for r in await bot.rt.store.list_threads() if r["id"] != thread_id)
    keys = bot.rt.store.keys
    for thread, msg in ((status_thread, request), (thread_id, refused)):
        ttl = await bot.rt.redis.ttl(keys.claim(thread, f"ext:{h(msg, 'Message-ID')}"))
        assert 6 * 86400 < ttl <= 7 * 86400


async def test_an_oversize_mail_is_refused_with_552(email_bot):
    bot = await email_bot(smtp_max_size=4096)
    big = new_mail(BOB, "deploy@ops.test", "big", "x" * 70 + ("\n" + "y" * 70) * 100)
    code, _ = await bot.send(big)
    assert code == 552
    code, _ = await deliver(bot.port, big, BOB, ["deploy@ops.test"], size=10_000)
    assert code == 552
    assert await bot.rt.store.list_threads() == []


async def test_redis_down_answers_451_then_the_retry_is_accepted(make_settings, policy_file, tmp_path):
    from tests.redis_process import RedisProcess

    redis = RedisProcess(tmp_path / "redis")
    url = redis.start()
    settings = make_settings(redis_url=url, policy_file=policy_file(POLICY))
    email = EmailSettings(_env_file=None, email_domain="ops.test", smtp_port=0)
    rt = await Runtime.start(settings, make_wiring(email=email))
    server = await start_smtp(email, email_channel.inbound(rt, email), port=0)
    port = server.sockets[0].getsockname()[1]
    try:
        msg = new_mail(BOB, "deploy@ops.test", "status", "/service_status api prod")
        redis.stop()
        code, text = await deliver(port, msg, BOB, ["deploy@ops.test"])
        assert code == 451
        redis.start()
        code, _ = await deliver(port, msg, BOB, ["deploy@ops.test"])
        assert code == 250
        [row] = await rt.store.list_threads()
        thread = await rt.store.load(row["id"])
        assert thread.events[0].source.external_id == h(msg, "Message-ID")
    finally:
        server.close()
        await server.wait_closed()
        await rt.close()
        redis.remove()


# ---- bad input ---------------------------------------------------------------------------------

MALFORMED = {
    "broken multipart and base64": (
        b"From: bob@example.com\r\nTo: deploy@ops.test\r\nSubject: broken\r\n"
        b"Message-ID: <broken@example.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n--zz\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n/service_status api prod\r\n--zz\r\n"
        b"Content-Type: application/pdf; name=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"JVBERi0x!!!not base64\r\n", 250, "/service_status api prod"),
    "a charset that lies": (
        b"From: bob@example.com\r\nTo: deploy@ops.test\r\nSubject: caf\xe9\r\n"
        b"Message-ID: <lies@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n/service_status caf\xe9 prod\r\n", 250, "/service_status café prod"),
    "an unknown charset": (
        b"From: bob@example.com\r\nTo: deploy@ops.test\r\nSubject: =?x-klingon?q?qapla?=\r\n"
        b"Message-ID: <klingon@example.com>\r\nContent-Type: text/plain; charset=x-klingon\r\n\r\n"
        b"/service_status api prod\r\n", 250, "/service_status api prod"),
    "binary garbage": (bytes((i * 7919 + 13) % 256 for i in range(4000)).replace(b"\n", b"").replace(b"\r", b""),
                       554, None),
    "no headers, only text": (b"just some words\r\n", 554, None),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_mail_never_crashes_and_has_a_clear_outcome(email_bot, case):
    bot = await email_bot()
    raw, expected, text = MALFORMED[case]
    if b"\r\n" not in raw:  # SMTP lines must stay under 1000 octets
        raw = b"\r\n".join(raw[i:i + 76] for i in range(0, len(raw), 76)) + b"\r\n"
    code, reply = await deliver(bot.port, raw, BOB, ["deploy@ops.test"])
    assert code == expected, reply
    rows = await bot.rt.store.list_threads()
    if text is None:
        assert rows == []
        return
    [row] = rows
    thread = await settled(bot.rt, row["id"])
    assert text in thread.events[0].text
    if case == "broken multipart and base64":
        assert "[attachments, not shown: r.pdf (application/pdf" in thread.events[0].text


# ---- the Procfile's processes ------------------------------------------------------------------

async def test_chatops_smtp_and_chatops_worker_processes_answer_mail(make_settings, policy_file, sink):
    from tests.conftest import spawn_bot

    settings = make_settings(policy_file=policy_file(POLICY))
    env = dict(CHATOPS_EMAIL_DOMAIN="ops.test", CHATOPS_SMTP_PORT="0",
               SMTP_URL=f"smtp://127.0.0.1:{sink.port}")
    smtp, worker = spawn_bot(settings, "smtp", **env), spawn_bot(settings, "worker", **env)
    try:
        port = await smtp.port("SMTP server")

        async def ready():
            try:
                return (await deliver(port, new_mail(BOB, "deploy@ops.test", "status", "/service_status api prod"),
                                      BOB, ["deploy@ops.test"]))[0] == 250
            except OSError:
                return False

        await wait_for(ready, 60, "chatops smtp to accept mail")
        [answer] = await mails_to(sink, BOB, 1)
        assert "api in prod: healthy" in text_of(answer) and h(answer, "Subject") == "Re: status"
    finally:
        for proc in (smtp, worker):
            proc.terminate()
            proc.wait(timeout=10)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_auth_for_relays_is_required_when_configured(email_bot, caplog):
    import base64

    import aiosmtplib

    caplog.set_level(logging.DEBUG)  # even at DEBUG, the relay's password is never logged
    bot = await email_bot(smtp_auth_user="relay", smtp_auth_password="s3cret")
    msg = new_mail(BOB, "deploy@ops.test", "status", "/service_status api prod")
    code, _ = await bot.send(msg)
    assert code == 530  # authentication required
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=bot.port, start_tls=False)
    await client.connect()
    try:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await client.login("relay", "wrong")
        await client.auth_login("relay", "s3cret")  # the password comes as its own line
        errors, reply = await client.send_message(msg)
        assert not errors and "queued in thread" in reply
    finally:
        client.close()
    logged = caplog.text
    assert "s3cret" not in logged and base64.b64encode(b"s3cret").decode() not in logged
    assert base64.b64encode(b"\0relay\0s3cret").decode() not in logged


# ---- reminders and escalation ------------------------------------------------------------------

async def test_reminder_and_escalation_by_mail_and_the_escalated_approver_decides_by_reply(
    email_bot, sink, tmp_path
):
    dave = "dave@example.com"
    policy = tmp_path / "timers.toml"  # not the fixture's file, which email_bot rewrites
    policy.write_text(f'[tools.deploy]\napprovers = ["{ALICE}"]\napproval_ttl = 60\nremind_before = 59\n'
                      f'escalate_after = 1\nescalate_to = ["{dave}"]\n')
    bot = await email_bot(policy_file=policy)
    thread_id, approval_id, _ = await request_deploy(bot, sink)
    async def escalated():
        return [m for m in sink.to(dave) if "Escalated" in text_of(m)]

    [escalation] = await wait_for(escalated, what="the escalation mail to dave")
    assert h(escalation, "X-Chatops-Thread") == thread_id
    async def reminded():
        return [m for m in sink.to(ALICE) if "Reminder" in text_of(m)]

    [reminder] = await wait_for(reminded, what="the reminder mail to alice")
    assert approval_id in text_of(reminder)

    assert (await bot.send(reply_to(escalation, dave, "approve\n\n> quoted")))[0] == 250
    thread = await settled(bot.rt, thread_id)
    [decision] = thread.decisions.values()
    assert (decision.decision, decision.by, decision.via) == ("approved", dave, "email")
    assert (bot.settings.data_dir / "runbook.log").read_text().splitlines() == ["deploy api 1.2.3 prod"]


# ---- approvers by mail, wherever the thread lives -------------------------------------------------

async def test_an_approver_with_an_address_decides_a_console_thread_by_mail(email_bot, sink):
    bot = await email_bot()
    thread_id = await say(bot.rt, "/rollback api prod", user="bob", channel="console")
    [request] = (await settled(bot.rt, thread_id)).pending_approvals()
    [mail] = await mails_to(sink, ALICE, 1)
    token = email_tokens.verify(bot.settings.signing_key.get_secret_value().encode(),
                                h(mail, "Reply-To").split("+")[1].split("@")[0])
    assert request.approval_id in text_of(mail) and token.approval_id == request.approval_id
    assert h(mail, "Subject") == f"deploy agent: thread {thread_id} (console)"
    code, _ = await bot.send(reply_to(mail, ALICE, gmail("approve", mail)))
    assert code == 250
    thread = await settled(bot.rt, thread_id)
    assert thread.decisions[request.approval_id].via == "email" and thread.state == "idle"
    assert runbook_lines(bot.settings) == ["rollback api prod"]


async def test_the_mail_reading_processes_stop_with_the_runtime(make_settings):
    """The reader's process pool belongs to the inbound the service made, not to the module: it
    is gone once the runtime closes, and another runtime gets its own."""
    rt = await Runtime.start(make_settings(), make_wiring())
    inbound = email_channel.inbound(rt, EmailSettings(_env_file=None))
    try:
        await inbound.reader.warm_up()
        assert inbound.reader.pool is not None
        processes = list(inbound.reader.pool._processes.values())
        assert processes and all(p.is_alive() for p in processes)
    finally:
        await rt.close()
    assert inbound.reader.pool is None

    async def stopped() -> bool:
        return not any(p.is_alive() for p in processes)

    await wait_for(stopped, 30, "the mail reading processes to stop")

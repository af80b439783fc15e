"""The email channel over real SMTP on loopback: the bot's aiosmtpd server receives (through
aiosmtplib), a local aiosmtpd sink receives what the bot sends; real Redis, the real worker and
the real runbooks behind the deploy agent."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from bot.runtime import Runtime
from bot.settings import Settings
from channels import email as email_channel
from channels import email_tokens
from channels.email_inbound import Inbound
from channels.email_server import start_smtp
from tests.conftest import settled, wait_for
from tests.mail import (
    header,
    Sink,
    address_of,
    deliver,
    german,
    gmail,
    gmail_html,
    iphone,
    new_mail,
    outlook,
    reply_to,
    text_of,
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
        values = dict(email_domain="ops.test", smtp_url=f"smtp://127.0.0.1:{sink.port}", smtp_port=0,
                      policy_file=policy_file(POLICY), smtp_send_backoff=0.05)
        values.update(overrides)
        settings = make_settings(**values)
        rt = await start_bot(settings)
        server = await start_smtp(rt, Inbound(rt, email_channel.identity(settings)), port=0)
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


def runbook_lines(settings) -> list[str]:
    log = settings.data_dir / "runbook.log"
    return log.read_text().splitlines() if log.exists() else []


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
    assert (await bot.send(msg, rcpts=["bot+0123456789abcdef-ffffffff-00000000000000000000@ops.test"]))[0] == 550
    expired = email_tokens.mint(b"test-signing-key", "0123456789abcdef", None, time.time() - 1)
    code, text = await bot.send(msg, rcpts=[f"bot+{expired}@ops.test"])
    assert code == 550 and "expired" in text


# ---- approvals by reply ------------------------------------------------------------------------

STYLES = {"gmail": gmail, "outlook": outlook, "iphone": iphone, "german": german, "html": gmail_html}


@pytest.mark.parametrize("style,verb,decision", [
    ("gmail", "Approve, go ahead", "approved"),
    ("outlook", "reject: not during the freeze", "rejected"),
    ("iphone", "lgtm", "approved"),
    ("german", "yes", "approved"),
    ("html", "approved", "approved"),
])
async def test_approval_round_trip_by_reply(email_bot, sink, style, verb, decision):
    bot = await email_bot()
    thread_id, approval_id, mail = await request_deploy(bot, sink)
    assert mail["To"] == BOB and ALICE in str(mail["Cc"])
    body = text_of(mail)
    for expected in ("deploy", "service", "api", "version", "1.2.3", "environment", "prod",
                     f"Asked by: {BOB}", "Expires:", "reply with \"approve\"", "\"reject\""):
        assert expected in body
    assert "<table>" in mail.get_body(preferencelist=("html",)).get_content()

    write = STYLES[style]
    reply = reply_to(mail, ALICE, write(verb, mail)) if style != "html" else \
        reply_to(mail, ALICE, "", html=write(verb, mail))
    code, _ = await bot.send(reply)
    assert code == 250

    thread = await settled(bot.rt, thread_id)
    decided = thread.decisions[approval_id]
    assert (decided.decision, decided.by, decided.via) == (decision, ALICE, "email")
    if decision == "approved":
        assert runbook_lines(bot.settings) == ["deploy api 1.2.3 prod"]
    else:
        assert decided.reason == "not during the freeze"
        assert runbook_lines(bot.settings) == []
    # the decision is confirmed in the same email thread, to bob and the approvers
    confirm = await wait_for(lambda: _async([m for m in sink.to(BOB) if "by alice" in text_of(m)]))
    assert h(confirm[0], "Subject") == h(mail, "Subject")
    assert h(mail, "Message-ID") in h(confirm[0], "References").split()


async def _async(value):
    return value


async def test_a_decision_taken_elsewhere_is_confirmed_in_the_email_thread(email_bot, sink):
    bot = await email_bot()
    thread_id, approval_id, mail = await request_deploy(bot, sink)
    outcome = await bot.rt.approvals.decide(approval_id, True, "carol@example.com", "console")
    assert outcome.status == "decided"
    confirm = await wait_for(lambda: _async([m for m in sink.to(BOB) if "via console" in text_of(m)]))
    assert "approved by carol@example.com via console" in text_of(confirm[0])
    assert confirm[0]["In-Reply-To"] is not None
    assert h(mail, "Message-ID") in h(confirm[0], "References").split()
    thread = await settled(bot.rt, thread_id)
    assert runbook_lines(bot.settings) == ["deploy api 1.2.3 prod"] and thread.state == "idle"


async def test_forged_approvals_are_refused_recorded_and_answered(email_bot, sink):
    bot = await email_bot()
    thread_id, approval_id, mail = await request_deploy(bot, sink)
    other_thread, other_id, other_mail = await request_deploy(bot, sink, version="9.9.9")

    # a sender who is not an approver, with the right token
    code, text = await bot.send(reply_to(mail, MALLORY, gmail("approve", mail)))
    assert code == 250 and "not accepted" in text
    # a token of another approval: mallory's mail to approval A's address names approval B
    forged = reply_to(mail, ALICE, f"approve {other_id}")
    code, _ = await bot.send(forged)
    assert code == 250
    # an expired token of the right approval
    expired = email_tokens.mint(b"test-signing-key", thread_id, approval_id, time.time() - 1)
    late = new_mail(ALICE, f"bot+{expired}@ops.test", "Re: ship api", "approve")
    assert (await bot.send(late))[0] == 250
    # no token at all: a new mail that names the approval
    bare = new_mail(ALICE, "deploy@ops.test", "approval", f"approve {approval_id}")
    assert (await bot.send(bare))[0] == 250

    thread = await settled(bot.rt, thread_id)
    assert approval_id not in thread.decisions
    reasons = [e.reason for e in thread.events if e.type == "approval_refused"]
    assert len(reasons) == 3
    assert "mallory@example.com is not an approver" in reasons[0]
    assert "expired" in reasons[1]
    assert "no reply token" in reasons[2]
    other = await settled(bot.rt, other_thread)
    assert other_id not in other.decisions
    [wrong] = [e for e in other.events if e.type == "approval_refused"]
    assert "another approval" in wrong.reason and wrong.by == ALICE
    assert runbook_lines(bot.settings) == []

    # each refused sender got a short explanation, threaded on their own mail
    [to_mallory] = await mails_to(sink, MALLORY, 1)
    assert "not an approver" in text_of(to_mallory) and to_mallory["Auto-Submitted"] == "auto-replied"
    await mails_to(sink, ALICE, 2 + 3)  # two approval mails + three explanations

    # a reused token: alice approves, carol then answers the same mail
    assert (await bot.send(reply_to(mail, ALICE, "approve")))[0] == 250
    code, text = await bot.send(reply_to(mail, CAROL, "reject wait"))
    assert code == 250 and "already answered" in text
    thread = await settled(bot.rt, thread_id)
    assert thread.decisions[approval_id].by == ALICE and thread.decisions[approval_id].decision == "approved"
    assert "already answered" in [e for e in thread.events if e.type == "approval_refused"][-1].reason
    assert runbook_lines(bot.settings) == ["deploy api 1.2.3 prod"]


async def test_dmarc_failure_from_the_trusted_relay_is_refused(email_bot, sink):
    bot = await email_bot(email_authserv_id="mx.ops.test")
    thread_id, approval_id, mail = await request_deploy_authenticated(bot, sink)
    spoofed = reply_to(mail, ALICE, "approve", Authentication_Results="mx.ops.test; dmarc=fail header.from=example.com")
    code, _ = await bot.send(spoofed)
    assert code == 550
    unverified = reply_to(mail, ALICE, "approve")  # did not come through the trusted relay
    assert (await bot.send(unverified))[0] == 250
    thread = await settled(bot.rt, thread_id)
    assert approval_id not in thread.decisions
    refusals = [e for e in thread.events if e.type == "approval_refused"]
    assert [e.via for e in refusals] == ["email-unauthenticated", "email-unauthenticated"]
    good = reply_to(mail, ALICE, "approve", Authentication_Results="mx.ops.test; spf=pass; dkim=pass; dmarc=pass")
    assert (await bot.send(good))[0] == 250
    thread = await settled(bot.rt, thread_id)
    assert thread.decisions[approval_id].decision == "approved"
    await wait_for(lambda: _async([m for m in sink.to(ALICE) if "by alice" in text_of(m)]))
    assert not [m for m in sink.mails if "not accepted" in text_of(m[2])]  # no mail to a spoofed sender


async def request_deploy_authenticated(bot: Bot, sink: Sink):
    before = len(sink.to(ALICE))
    msg = new_mail(BOB, "deploy@ops.test", "ship api", "/deploy api 1.2.3 prod",
                   Authentication_Results="mx.ops.test; dmarc=pass header.from=example.com")
    assert (await bot.send(msg))[0] == 250
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
    settings = make_settings(redis_url=url, email_domain="ops.test", smtp_port=0,
                             policy_file=policy_file(POLICY))
    rt = await Runtime.start(settings)
    server = await start_smtp(rt, Inbound(rt, email_channel.identity(settings)), port=0)
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
        redis.stop()


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

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_chatops_smtp_and_chatops_worker_processes_answer_mail(make_settings, policy_file, sink):
    from tests.conftest import spawn_bot

    settings = make_settings(policy_file=policy_file(POLICY))
    port = _free_port()
    env = dict(CHATOPS_EMAIL_DOMAIN="ops.test", CHATOPS_SMTP_PORT=str(port),
               SMTP_URL=f"smtp://127.0.0.1:{sink.port}")
    smtp, worker = spawn_bot(settings, "smtp", **env), spawn_bot(settings, "worker", **env)
    try:
        async def ready():
            try:
                return (await deliver(port, new_mail(BOB, "deploy@ops.test", "status", "/service_status api prod"),
                                      BOB, ["deploy@ops.test"]))[0] == 250
            except OSError:
                return False

        await wait_for(ready, 20, "chatops smtp to accept mail")
        [answer] = await mails_to(sink, BOB, 1)
        assert "api in prod: healthy" in text_of(answer) and h(answer, "Subject") == "Re: status"
    finally:
        for proc in (smtp, worker):
            proc.terminate()
            proc.wait(timeout=10)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_auth_for_relays_is_required_when_configured(email_bot):
    import aiosmtplib

    bot = await email_bot(smtp_auth_user="relay", smtp_auth_password="s3cret")
    msg = new_mail(BOB, "deploy@ops.test", "status", "/service_status api prod")
    code, _ = await bot.send(msg)
    assert code == 530  # authentication required
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=bot.port, start_tls=False)
    await client.connect()
    try:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await client.login("relay", "wrong")
        await client.login("relay", "s3cret")
        errors, reply = await client.send_message(msg)
        assert not errors and "queued in thread" in reply
    finally:
        client.close()


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

"""Replies as real clients write them: our corpus (tests/email_replies) read line by line, and
over SMTP the decision and its reason stored free of quoted history in every language, whether
written above, below or between the quoted lines; a reply that decides nothing gets one mail."""

from __future__ import annotations

import pytest

from channels.email.parse import decision, new_text
from tests import test_email
from tests.conftest import settled, wait_for
from tests.email_replies.corpus import CASES, LANGUAGES, ORIGINAL, Language, _header_block
from tests.mail import reply_to, text_of
from tests.test_email import ALICE, mails_to, request_deploy

email_bot, sink = test_email.email_bot, test_email.sink  # the fixtures of test_email.py


def _verdict(text: str) -> str | None:
    found = decision(text)
    if found is None:
        return None
    return "ambiguous" if found.ambiguous else "approve" if found.approve else "reject"


def test_the_corpus_covers_the_clients_and_languages():
    assert len(CASES) >= 120
    assert len({c.id for c in CASES}) == len(CASES)
    langs = {c.id.split("-")[0] for c in CASES}
    assert {"en", "fr", "de", "es", "pt", "it", "nl", "pl", "sv", "no", "da", "fi", "ru", "ja", "zh"} <= langs
    clients = " ".join(c.id for c in CASES)
    for client in ("gmail", "outlook-desktop", "outlook-web", "iphone", "thunderbird", "mutt", "k9", "samsung",
                   "yahoo", "zoho"):
        assert client in clients


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_reply_of_the_corpus(case):
    text = new_text(case.body)
    assert text == case.text
    assert _verdict(text) == case.decision


async def _decided(bot, thread_id: str, approval_id: str):
    async def check():
        thread = await bot.rt.store.load(thread_id)
        return thread.decisions.get(approval_id)

    return await wait_for(check, 20, f"a decision on {approval_id}")


def _outlook_desktop(lang: Language) -> str:
    return (f"reject {lang.reason}\r\n\r\n{lang.closing}\r\nAlice\r\n\r\n{lang.separator}\r\n"
            + _header_block(lang).replace("\n", "\r\n") + f"\r\n{ORIGINAL}\r\n")


@pytest.mark.parametrize("lang", LANGUAGES, ids=[lang.code for lang in LANGUAGES])
async def test_each_languages_header_block_stays_out_of_the_reason(email_bot, sink, lang):
    bot = await email_bot()
    thread_id, approval_id, mail = await request_deploy(bot, sink)
    code, _ = await bot.send(reply_to(mail, ALICE, _outlook_desktop(lang)))
    assert code == 250
    decided = await _decided(bot, thread_id, approval_id)
    assert (decided.decision, decided.reason) == ("rejected", lang.reason)


@pytest.mark.parametrize("layout", ["top", "bottom", "interleaved"])
async def test_decisions_above_below_and_between_the_quoted_lines(email_bot, sink, layout):
    bot = await email_bot()
    thread_id, approval_id, mail = await request_deploy(bot, sink)
    quoted = "\n".join("> " + line for line in text_of(mail).splitlines())
    attribution = "On 11/3/25 10:02 AM, chatops wrote:"
    body = {
        "top": f"reject wait for 1.2.4\n\n{attribution}\n{quoted}\n",
        "bottom": f"{attribution}\n{quoted}\n\nreject wait for 1.2.4\n\n-- \nAlice\n",
        "interleaved": f"{attribution}\n{quoted.splitlines()[0]}\n\nreject wait for 1.2.4\n\n"
                       + "\n".join(quoted.splitlines()[1:]) + "\n\nthanks for asking\n",
    }[layout]
    code, _ = await bot.send(reply_to(mail, ALICE, body))
    assert code == 250
    decided = await _decided(bot, thread_id, approval_id)
    expected = "wait for 1.2.4" + (" thanks for asking" if layout == "interleaved" else "")
    assert (decided.decision, decided.reason) == ("rejected", expected)


@pytest.mark.parametrize("body,why", [
    ("yes, but no", "both yes and no"),
    ("On Mon, Nov 3, 2025 at 10:02 AM chatops <bot@ops.test> wrote:\n> approve or reject?\n", "no new text"),
    ("Can we wait until 5pm?", "not a decision"),
])
async def test_a_reply_that_decides_nothing_gets_one_mail_saying_how_to_answer(email_bot, sink, body, why):
    bot = await email_bot()
    thread_id, approval_id, mail = await request_deploy(bot, sink)
    before = len(sink.to(ALICE))
    reply = reply_to(mail, ALICE, body)
    code, text = await bot.send(reply)
    assert code == 250 and "not accepted as a decision" in text
    [answer] = (await mails_to(sink, ALICE, before + 1))[before:]
    assert why in text_of(answer) and "approve or reject" in text_of(answer)
    # the same mail again (a relay's retry) gets no second mail, and nothing was decided
    assert (await bot.send(reply))[0] == 250
    thread = await settled(bot.rt, thread_id)
    assert approval_id not in thread.decisions and [p.approval_id for p in thread.pending_approvals()] == [approval_id]
    assert len([e for e in thread.events if e.type == "approval_refused"]) == 1
    # and a proper answer to the same approval mail still decides
    assert (await bot.send(reply_to(mail, ALICE, "approve")))[0] == 250
    assert (await _decided(bot, thread_id, approval_id)).decision == "approved"
    assert len(sink.to(ALICE)) >= before + 1

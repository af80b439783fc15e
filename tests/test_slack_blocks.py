"""Block Kit rendering within Slack's limits, Markdown to mrkdwn, and signed button values."""

from __future__ import annotations

import json

from pydantic import SecretStr

from channels.slack import blocks
from channels.slack.signing import sign, verify


def test_markdown_becomes_mrkdwn_and_is_escaped():
    out = blocks.mrkdwn("# Status\n**api** is *up*, see [dash](https://d.example) & ~~old~~ <b>")
    assert out.splitlines()[0] == "*Status*"
    # links are shown as plain URLs: a masked link could hide where it leads
    assert "*api* is _up_" in out and "dash (https://d.example)" in out and "<https" not in out
    assert "&amp;" in out and "~old~" in out and "&lt;b&gt;" in out


def test_long_replies_split_into_sections_and_messages_within_limits():
    paragraph = "word " * 150  # 750 characters
    text = "\n\n".join(f"{i}: {paragraph}" for i in range(400))  # ~300k characters
    messages = blocks.reply_messages(text)
    assert len(messages) > 1
    sections = [b for _, bs in messages for b in bs]
    assert all(len(bs) <= blocks.BLOCK_LIMIT for _, bs in messages)
    assert all(sum(len(b["text"]["text"]) for b in bs) <= blocks.MESSAGE_TEXT_LIMIT for _, bs in messages)
    assert all(len(b["text"]["text"]) <= blocks.SECTION_LIMIT for b in sections)
    assert all(len(fallback) <= blocks.FALLBACK_LIMIT for fallback, _ in messages)
    joined = " ".join(b["text"]["text"] for b in sections).split()
    assert joined == blocks.mrkdwn(text).split()  # nothing lost, nothing added


def test_a_code_block_cut_in_two_stays_code_on_both_sides():
    code = "```\n" + "\n".join(f"line {i} " + "x" * 60 for i in range(100)) + "\n```"
    pieces = blocks.split_text(code)
    assert len(pieces) >= 2
    assert all(p.count("```") % 2 == 0 and len(p) <= blocks.SECTION_LIMIT for p in pieces)
    assert all(p.startswith("```") for p in pieces)


def test_an_unbroken_run_is_cut_hard():
    pieces = blocks.split_text("x" * 7000)
    assert [len(p) for p in pieces][:2] == [blocks.SECTION_LIMIT - 8] * 2
    assert "".join(pieces) == "x" * 7000


def test_who_mentions_slack_ids_only():
    assert blocks.who("U024BE7LH") == "<@U024BE7LH>"
    assert blocks.who("u024be7lh") == "<@U024BE7LH>"  # approver lists are lower-cased
    assert blocks.who("walter") == "walter"
    assert blocks.who("a<b>@example.com") == "a&lt;b&gt;@example.com"


def test_signed_values_verify_only_for_their_action_and_key():
    key = SecretStr("k1")
    value = sign(key, "approve", "0123456789abcdef.01234567")
    assert verify(key, "approve", value) == "0123456789abcdef.01234567"
    assert verify(key, "reject", value) is None
    assert verify(SecretStr("k2"), "approve", value) is None
    assert verify(None, "approve", value) is None
    other = value.replace("01234567:", "01234568:")
    assert verify(key, "approve", other) is None
    assert verify(key, "approve", "approve:0123456789abcdef.01234567") is None


def test_an_approval_message_fits_slack_with_its_buttons_whatever_the_arguments():
    import time

    from bot.events import ApprovalRequested

    args = {f"argument_{i}_" + "k" * 300: "v" * 5000 + "\n<!channel>" for i in range(600)}
    request = ApprovalRequested(approval_id="0123456789abcdef.01234567", call_id="c", tool="deploy", args=args,
                                requester="U0ALICE1", approvers=[], approvers_named=["oncall"],
                                expires_at=time.time() + 60, quorum=2)
    out = blocks.approval_blocks(request, "approve:x", "reject:x", votes=["alice"])
    assert len(out) <= blocks.BLOCK_LIMIT and out[-1]["type"] == "actions"
    texts = [b["text"]["text"] for b in out if "text" in b] + \
        [f["text"] for b in out for f in b.get("fields", [])] + \
        [e["text"] for b in out for e in b.get("elements", []) if e.get("type") == "mrkdwn"]
    assert sum(map(len, texts)) <= blocks.MESSAGE_TEXT_LIMIT
    assert all(len(f["text"]) <= 420 for b in out for f in b.get("fields", []))  # values capped
    assert "more argument(s), not shown here" in json.dumps(out)
    assert "1 of 2 approvals: alice" in json.dumps(out) and "<!channel>" not in json.dumps(out)

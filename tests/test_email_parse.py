"""What counts in a mail: only the new, unquoted first words decide; only our relay's
Authentication-Results and exactly one author count for a decision."""

from __future__ import annotations

from email import message_from_bytes
from email import policy as email_policy

import pytest

from channels.email.parse import decision, dmarc_results, html_to_text, new_text, parse

QUOTE = "On Mon, Nov 3, 2025 at 10:02 AM chatops <bot@ops.test> wrote:\n> To approve, reply approve.\n"
OUTLOOK = ("________________________________\nFrom: chatops <bot@ops.test>\n"
           "Sent: Monday, November 3, 2025 10:02 AM\nTo: Alice <alice@example.com>\n"
           "Subject: Re: ship api\n\napprove\nTo reject, reply reject.\n")


@pytest.mark.parametrize("body,new", [
    (f"Let me check with the team first.\n\n{QUOTE}", "Let me check with the team first."),
    (QUOTE, ""),  # nothing typed above the quote
    ("> approve\nhmm, not sure", "hmm, not sure"),  # an inline quote first
    (f"Thanks\n\n{OUTLOOK}", "Thanks"),  # an unmarked Outlook quote whose first word would decide
    (OUTLOOK, ""),
    ("I approve of this in principle, later", "I approve of this in principle, later"),
])
def test_quoted_or_later_words_never_decide(body, new):
    assert new_text(body) == new
    assert decision(new_text(body)) is None


def test_first_words_decide_and_the_rest_is_the_reason():
    assert decision(new_text(f"Reject - not during the freeze.\n\n{QUOTE}")).reason == "not during the freeze."
    assert decision("No").approve is False and decision("LGTM!").approve is True
    assert decision("approve 0123456789abcdef.deadbeef").approval_id == "0123456789abcdef.deadbeef"


def test_html_quotes_become_quoted_lines():
    text = html_to_text("<div>yes</div><blockquote>reject<blockquote>approve</blockquote></blockquote>"
                        "<style>p{}</style><script>x</script>")
    assert text.splitlines() == ["yes", "> reject", "> > approve"]


def _msg(*headers: str):
    raw = "".join(f"{h}\r\n" for h in headers) + "From: alice@example.com\r\n\r\napprove\r\n"
    return message_from_bytes(raw.encode(), policy=email_policy.compat32)


@pytest.mark.parametrize("headers,ours", [
    (["Authentication-Results: mx.ops.test; spf=pass; dkim=pass; dmarc=pass header.from=example.com"], "pass"),
    (["Authentication-Results: mx.ops.test;\r\n dmarc=pass (p=reject dis=none)\r\n header.from=example.com"], "pass"),
    (["Authentication-Results: MX.OPS.TEST 1; dmarc=none header.from=example.com"], "none"),
    (["Authentication-Results: mx.ops.test; spf=pass smtp.mailfrom=example.com"], "absent"),
    (["Authentication-Results: mx.ops.test; none"], "absent"),
    (["Authentication-Results: mx.ops.test; dmarc=temperror"], "temperror"),
    # a quoted string and a comment that hold a `;` and a pass: the dmarc method says fail
    (['Authentication-Results: mx.ops.test; spf=fail smtp.mailfrom="x;dmarc=pass"@evil.test; dmarc=fail'], "fail"),
    (["Authentication-Results: mx.ops.test (filtered; dmarc=pass); dmarc=fail header.from=example.com"], "fail"),
    (["Authentication-Results: mx.ops.test; dmarc=pass; dmarc=fail"], "fail"),
    # the topmost header of our authserv-id is ours; one below it was in the mail already
    (["Authentication-Results: mx.ops.test; dmarc=fail", "Authentication-Results: mx.ops.test; dmarc=pass"], "fail"),
    (["Authentication-Results: mx.evil.test; dmarc=pass", "Authentication-Results: mx.ops.test; dmarc=none"], "none"),
    (["Authentication-Results: mx.ops.test; dmarc=pass ((("], "permerror"),
    (["Authentication-Results: mx.evil.test; dmarc=pass"], None),
    ([], None),
])
def test_only_the_topmost_header_of_an_authserv_id_counts(headers, ours):
    results = dmarc_results(_msg(*headers))
    assert results.get("mx.ops.test") == ours


@pytest.mark.parametrize("from_lines,single", [
    (["From: Alice <alice@example.com>"], True),
    (["From: alice@example.com, mallory@evil.test"], False),
    (['From: "alice@example.com" <mallory@evil.test>, Alice <alice@example.com>'], False),
    (["From: alice@example.com", "From: mallory@evil.test"], False),
])
def test_a_decision_needs_exactly_one_author(from_lines, single):
    raw = "\r\n".join([*from_lines, "To: bot@ops.test", "Message-ID: <m@example.com>", "", "approve", ""])
    mail = parse(raw.encode(), "alice@example.com")
    assert mail is not None and mail.single_from is single

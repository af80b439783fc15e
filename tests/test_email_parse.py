"""What counts in a reply: only the new, unquoted first words decide."""

from __future__ import annotations

import pytest

from channels.email_parse import decision, html_to_text, new_text

QUOTE = "On Mon, Nov 3, 2025 at 10:02 AM chatops <bot@ops.test> wrote:\n> To approve, reply approve.\n"


@pytest.mark.parametrize("body", [
    f"Let me check with the team first.\n\n{QUOTE}",  # words only in the quote
    QUOTE,  # nothing typed above the quote
    "> approve\nhmm, not sure",  # an inline quote first
    "I approve of this in principle, later",
])
def test_quoted_or_later_words_never_decide(body):
    assert decision(new_text(body)) is None


def test_first_words_decide_and_the_rest_is_the_reason():
    assert decision(new_text(f"Reject - not during the freeze.\n\n{QUOTE}")).reason == "not during the freeze."
    assert decision("No").approve is False and decision("LGTM!").approve is True
    assert decision("approve 0123456789abcdef.deadbeef").approval_id == "0123456789abcdef.deadbeef"


def test_html_quotes_become_quoted_lines():
    text = html_to_text("<div>yes</div><blockquote>reject<blockquote>approve</blockquote></blockquote>"
                        "<style>p{}</style><script>x</script>")
    assert text.splitlines() == ["yes", "> reject", "> > approve"]

"""Slack Block Kit: the model's Markdown as mrkdwn sections within Slack's limits, and the
approval message: its request, its buttons, and once decided, its outcome.

Limits (Block Kit reference): 3,000 characters of text per section, 50 blocks per message,
10 fields per section, 2,000 characters per field or button value; and an undocumented limit on
a message's block text as a whole (`msg_blocks_too_long` at about 13,200 characters).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from slackify_markdown import slackify_markdown

from bot.approvals import shown, votes_text
from bot.events import ApprovalDecided, ApprovalRequested
from channels.slack.channel import is_user_id

SECTION_LIMIT = 3000
BLOCK_LIMIT = 50
MESSAGE_TEXT_LIMIT = 12_000  # the block text of one message, under the ~13.2K Slack enforces
FIELDS_PER_SECTION = 10
FIELD_LIMIT = 2000
FALLBACK_LIMIT = 300  # `text` of a message with blocks: shown in notifications only

APPROVE = "approval_approve"
REJECT = "approval_reject"
REJECT_VIEW = "approval_reject_reason"
REASON_BLOCK = "reason"

Block = dict[str, Any]
_FENCE = "```"
# approver lists are lower-cased by the policy; a Slack id is told apart from a name by its digits


def escape(text: str) -> str:
    """Text as literal mrkdwn: Slack reads &, < and > as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn(markdown: str) -> str:
    """A model's (or a person's) Markdown as mrkdwn that can mention no one and hide no link:
    what Slack would read as markup (`<!channel>`, `<@U…>`, `<url|label>`) is escaped, and the
    links Markdown made are shown as plain URLs."""
    return _MARKUP.sub(_defuse, slackify_markdown(markdown)).strip() or " "


_MARKUP = re.compile(r"<([^<>]*)>|[<>]")


def _defuse(match: re.Match[str]) -> str:
    inner = match.group(1)
    if inner is None:  # a lone < or >
        return escape(match.group())
    url, _, label = inner.partition("|")
    if re.match(r"(https?|mailto):", url) and "<" not in label:
        shown = escape(url)  # already URL-encoded by the converter; Slack links a bare URL itself
        return shown if not label or label in (url, url.removeprefix("mailto:")) else f"{escape(label)} ({shown})"
    return f"&lt;{inner}&gt;"


def who(user: str | None) -> str:
    """A Slack user id as a mention, anyone else (email, console name) as plain text."""
    if not user:
        return "someone"
    return f"<@{user.upper()}>" if is_user_id(user) else escape(user)


def when(ts: float) -> str:
    """A time each reader sees in their own time zone (with a UTC fallback)."""
    utc = datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(ts)}^{{date_short_pretty}} at {{time}}|{utc}>"


def split_text(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Pieces of at most `limit` characters, cut at a paragraph, line or word when possible; a
    code block cut in two is closed and reopened so both halves still render as code."""
    budget = limit - 2 * (len(_FENCE) + 1)
    pieces: list[str] = []
    rest, reopen = text, False
    while rest:
        if reopen:
            rest = f"{_FENCE}\n{rest}"
        if len(rest) <= limit:
            pieces.append(rest)
            break
        cut = _cut(rest, budget)
        piece, rest = rest[:cut].rstrip(), rest[cut:].lstrip("\n")
        reopen = piece.count(_FENCE) % 2 == 1
        pieces.append(f"{piece}\n{_FENCE}" if reopen else piece)
    return [p for p in pieces if p.strip()] or [" "]


def _cut(text: str, budget: int) -> int:
    for sep in ("\n\n", "\n", " "):
        at = text.rfind(sep, budget // 2, budget)
        if at > 0:
            return at
    return budget


def section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def reply_messages(markdown: str) -> list[tuple[str, list[Block]]]:
    """The messages (fallback text, blocks) that carry a reply, each within Slack's limits."""
    out: list[tuple[str, list[Block]]] = []
    blocks: list[Block] = []
    size = 0
    for piece in split_text(mrkdwn(markdown)):
        if blocks and (len(blocks) == BLOCK_LIMIT or size + len(piece) > MESSAGE_TEXT_LIMIT):
            out.append((_fallback(blocks[0]["text"]["text"]), blocks))
            blocks, size = [], 0
        blocks.append(section(piece))
        size += len(piece)
    out.append((_fallback(blocks[0]["text"]["text"]), blocks))
    return out


def _fallback(text: str) -> str:
    return text if len(text) <= FALLBACK_LIMIT else text[:FALLBACK_LIMIT - 1] + "…"


# what an approval message keeps for itself besides its arguments: the title, who may decide,
# the votes, the buttons or the outcome, and a note of arguments not shown
RESERVED_BLOCKS = 7
ABOUT_LIMIT = 1500
RESERVED_TEXT = 2000


def _request_blocks(request: ApprovalRequested, votes: list[str] | None = None) -> list[Block]:
    """The request: its validated arguments (each value capped; the event keeps them whole), who
    may decide (groups and people by name, never their addresses), the votes so far. Within
    Slack's limits whatever the arguments, leaving room for the buttons."""
    blocks = [section(f":lock: *Approval needed* to run `{escape(request.tool)}`")]
    fields = [{"type": "mrkdwn", "text": _field(name, value)} for name, value in request.args.items()]
    room = (BLOCK_LIMIT - RESERVED_BLOCKS) * FIELDS_PER_SECTION
    about = escape(request.about)[:ABOUT_LIMIT]  # an MCP tool: its server's claims about it
    budget = MESSAGE_TEXT_LIMIT - RESERVED_TEXT - len(about)
    kept: list[Block] = []
    for field in fields[:room]:
        budget -= len(field["text"])
        if budget < 0:
            break
        kept.append(field)
    for start in range(0, len(kept), FIELDS_PER_SECTION):
        blocks.append({"type": "section", "fields": kept[start:start + FIELDS_PER_SECTION]})
    if len(kept) < len(fields):
        blocks.append(context(f"… and {len(fields) - len(kept)} more argument(s), not shown here: "
                              "see the thread (`chatops threads show`)"))
    if about:
        blocks.append(context(about))
    approvers = ", ".join(who(a) for a in request.approvers_named) or "anyone"
    rule = " · someone other than the requester" if request.two_person else ""
    quorum = f" · {request.quorum} different people must approve" if request.quorum > 1 else ""
    blocks.append(context(
        f"Asked by {who(request.requester)} · approvers: {approvers}{rule}{quorum} · "
        f"expires {when(request.expires_at)}"
    ))
    if votes:
        blocks.append(context(f":ballot_box_with_check: {escape(votes_text(votes, request.quorum))}"))
    return blocks


def _field(name: str, value: Any) -> str:
    text = f"*{escape(shown(name, 100))}*\n{escape(shown(value))}"
    return text if len(text) <= FIELD_LIMIT else text[:FIELD_LIMIT - 1] + "…"


def context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def approval_blocks(request: ApprovalRequested, approve: str | None, reject: str | None,
                    votes: list[str] | None = None) -> list[Block]:
    """The request with Approve / Reject buttons carrying the signed values; without values
    (no signing key configured) the thread commands are offered instead."""
    blocks = _request_blocks(request, votes)
    if approve is None or reject is None:
        blocks.append(context("Reply `approve` or `reject <reason>` in this thread to decide."))
        return blocks
    blocks.append({
        "type": "actions",
        # a new block_id per message iteration (each vote updates the message)
        "block_id": f"approval.{request.approval_id}.{len(votes or [])}",
        "elements": [
            {"type": "button", "action_id": APPROVE, "style": "primary", "value": approve,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": REJECT, "style": "danger", "value": reject,
             "text": {"type": "plain_text", "text": "Reject"}},
        ],
    })
    return blocks


def outcome_text(decision: ApprovalDecided) -> str:
    if decision.decision == "expired":
        return ":hourglass: Expired: nobody decided in time, nothing was run."
    via = "" if decision.via == "slack" else f" via {escape(decision.via)}"
    if decision.decision == "approved":
        return f":white_check_mark: Approved by {who(decision.by)}{via} at {when(decision.ts)}"
    reason = f": {escape(decision.reason)}" if decision.reason else ""
    return f":x: Rejected by {who(decision.by)}{via} at {when(decision.ts)}{reason}"


def decided_blocks(request: ApprovalRequested, decision: ApprovalDecided) -> list[Block]:
    """The approval message once decided: the buttons replaced by the outcome."""
    blocks = _request_blocks(request, decision.approved_by if len(decision.approved_by) > 1 else None)
    blocks[0] = section(f":lock: Approval to run `{escape(request.tool)}`")
    # a new block_id per message iteration, as Slack asks of updated messages
    blocks.append({**section(outcome_text(decision)), "block_id": f"outcome.{request.approval_id}"})
    return blocks


def reject_view(private_metadata: str, tool: str) -> dict[str, Any]:
    """The modal that asks why, opened by the Reject button."""
    return {
        "type": "modal",
        "callback_id": REJECT_VIEW,
        "private_metadata": private_metadata,
        "title": {"type": "plain_text", "text": "Reject"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input",
            "block_id": REASON_BLOCK,
            "label": {"type": "plain_text", "text": f"Why reject {tool[:50]}?"},
            "element": {"type": "plain_text_input", "action_id": REASON_BLOCK, "multiline": True,
                        "max_length": 2000},
        }],
    }

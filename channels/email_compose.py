"""The mail the bot writes: replies in the sender's thread, approval mails, decisions, refusals.

Every mail carries the thread's headers (In-Reply-To, References, `Re: <original subject>`) so
that Gmail and Outlook show one conversation, a Reply-To with a signed token, a Message-ID that
carries the same token (derived from the event, so a re-sent mail has the same id), and
`Auto-Submitted` so that well-behaved auto-responders stay quiet.

A scheduled thread's mails go to the schedule's addresses (`to`): its first mail starts the
conversation under the schedule's name, the others answer it like any thread's.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formataddr, formatdate, parseaddr

from bot.events import (
    AgentReply,
    ApprovalDecided,
    ApprovalRefused,
    ApprovalRequested,
    Event,
    HumanQuestion,
    ApprovalEscalated,
    ApprovalReminder,
    ScheduleMissed,
)
from bot.thread import Thread
from channels import email_tokens

REPLY_LOCAL = "bot"  # replies come back to bot+<token>@domain
MAX_REFERENCES = 20


@dataclass(frozen=True)
class Identity:
    """Who the bot is in mail: its domain, From address and the key that signs its tokens."""

    domain: str
    from_address: str
    key: bytes
    reply_ttl: float

    def reply_address(self, token: str) -> str:
        return f"{REPLY_LOCAL}+{token}@{self.domain}"


@dataclass(frozen=True)
class Outgoing:
    message: EmailMessage
    recipients: list[str]


def clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def is_sent(event: Event) -> bool:
    """Whether the email channel sends a mail for this event."""
    if isinstance(event, ApprovalRefused):
        return event.via == "email" and "@" in (event.by or "")
    return isinstance(event, (AgentReply, ApprovalRequested, ApprovalDecided, HumanQuestion, ScheduleMissed,
                              ApprovalReminder, ApprovalEscalated))


def token_for(me: Identity, thread: Thread, event: Event) -> str:
    if isinstance(event, (ApprovalRequested, ApprovalReminder, ApprovalEscalated)):
        # reminders and escalations carry the approval's own token: a reply to them decides it
        return email_tokens.mint(me.key, thread.id, event.approval_id, event.expires_at)
    return email_tokens.mint(me.key, thread.id, None, event.ts + me.reply_ttl)


def message_id(me: Identity, thread: Thread, event: Event) -> str:
    return f"<{token_for(me, thread, event)}.{event.id.split('_')[-1]}@{me.domain}>"


def chain(me: Identity, thread: Thread, upto: Event) -> list[str]:
    """The ids of the conversation's mails before `upto`, oldest first: theirs and ours."""
    address = thread.meta.origin.address
    ids = [address["message_id"]] if address.get("message_id") else []
    for event in thread.events:
        if event.id == upto.id:
            break
        external = event.source.external_id or ""
        if event.source.channel == "email" and external.startswith("<"):
            ids.append(external)
        elif is_sent(event) and not isinstance(event, ApprovalRefused):
            ids.append(message_id(me, thread, event))
    unique = list(dict.fromkeys(ids))
    if len(unique) > MAX_REFERENCES:
        unique = unique[:1] + unique[-(MAX_REFERENCES - 1):]
    return unique


def subject(thread: Thread, first: bool = False) -> str:
    """`Re: <the subject of the mail that started the thread>`; a scheduled thread's first mail
    (`first`) starts the conversation, under the schedule's name and time."""
    address = thread.meta.origin.address
    if address.get("schedule"):
        title = f"{address['schedule']} ({clock(address['scheduled_for'])}): {thread.agent} agent"
        return title if first else f"Re: {title}"
    original = address.get("subject") or f"{thread.agent} request"
    stripped = original
    while stripped[:3].lower() in ("re:", "aw:", "sv:") or stripped[:4].lower() == "fwd:":
        stripped = stripped.split(":", 1)[1].strip()
    return f"Re: {stripped or original}"


def compose(me: Identity, thread: Thread, event: Event, to: list[str] | None = None) -> Outgoing | None:
    """The mail for `event`, to the thread's sender, or to `to` (a scheduled thread's)."""
    if not is_sent(event):
        return None
    address = thread.meta.origin.address
    if to is None:
        to = [address["to"]] if address.get("to") else []
    cc: list[str] = []
    refs = chain(me, thread, event)
    in_reply_to = refs[-1] if refs else None
    kind = "auto-generated"
    if isinstance(event, AgentReply):
        text, kind = event.text, "auto-replied"
    elif isinstance(event, HumanQuestion):
        text, kind = f"{event.question}\n\nReply to this mail to answer.", "auto-replied"
    elif isinstance(event, ApprovalRequested):
        cc = [a for a in event.approvers if "@" in a and a not in to]
        text = approval_text(thread, event)
    elif isinstance(event, ApprovalDecided):
        cc = [a for a in thread.approvals[event.approval_id].approvers if "@" in a and a not in to] \
            if event.approval_id in thread.approvals else []
        text = decision_text(thread, event)
    elif isinstance(event, (ApprovalReminder, ApprovalEscalated)):
        cc = [a for a in event.approvers if "@" in a and a not in to]
        text = nudge_text(event)
    elif isinstance(event, ScheduleMissed):
        text = (f"The schedule {event.schedule} missed {event.missed} run(s) up to {clock(event.scheduled_for)} "
                f"while the bot was down; they were not run (older than the grace of {event.grace:g} s).")
    else:
        assert isinstance(event, ApprovalRefused)
        to, kind = [event.by or ""], "auto-replied"
        in_reply_to = event.source.external_id if (event.source.external_id or "").startswith("<") else in_reply_to
        text = f"Your answer to the approval {event.approval_id} was not accepted: {event.reason}.\n" \
               "Nothing was decided by it."
    if not to and not cc:
        return None
    msg = EmailMessage()
    msg["From"] = me.from_address
    msg["To"] = ", ".join(to or cc)
    if to and cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject(thread, first=not refs)
    msg["Date"] = formatdate(event.ts, usegmt=True)
    msg["Message-ID"] = message_id(me, thread, event)
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = " ".join(refs if in_reply_to in refs else [*refs, in_reply_to])
    msg["Reply-To"] = formataddr((parseaddr(me.from_address)[0] or "chatops",
                                  me.reply_address(token_for(me, thread, event))))
    msg["Auto-Submitted"] = kind
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Chatops-Thread"] = thread.id
    body = f"{text}\n\n-- \nchatops · {thread.agent} agent · thread {thread.id}\n"
    msg.set_content(body)
    msg.add_alternative(_html(text, event, thread), subtype="html")
    return Outgoing(msg, list(dict.fromkeys([*to, *cc])))


def approval_text(thread: Thread, event: ApprovalRequested) -> str:
    width = max((len(k) for k in event.args), default=0)
    rows = "\n".join(f"  {k.ljust(width)}  {v}" for k, v in event.args.items()) or "  (no arguments)"
    approvers = ", ".join(event.approvers) if event.approvers else "anyone"
    return (
        f"Approval needed: the {thread.agent} agent wants to run {event.tool} with\n\n{rows}\n\n"
        f"Asked by: {event.requester or 'unknown'}\n"
        f"Approvers: {approvers}\n"
        f"Expires: {clock(event.expires_at)}\n\n"
        "To approve, reply with \"approve\" as the first word.\n"
        "To reject, reply with \"reject\" followed by your reason.\n"
        "Only the first words of your reply count; the quoted mail is ignored.\n"
        f"Approval id: {event.approval_id}"
    )


def nudge_text(event: ApprovalReminder | ApprovalEscalated) -> str:
    call = f"{event.tool}(" + ", ".join(f"{k}={v}" for k, v in event.args.items()) + ")"
    if isinstance(event, ApprovalReminder):
        head = f"Reminder: the approval of {call} is still undecided."
    else:
        head = f"Escalated: nobody decided the approval of {call} in time, so you may decide it too."
    return (f"{head}\nIt expires {clock(event.expires_at)}.\n\n"
            "To approve, reply with \"approve\" as the first word.\n"
            "To reject, reply with \"reject\" followed by your reason.\n"
            f"Approval id: {event.approval_id}")


def decision_text(thread: Thread, event: ApprovalDecided) -> str:
    request = thread.approvals.get(event.approval_id)
    what = f"{request.tool}" if request else event.approval_id
    if event.decision == "expired":
        return f"The approval of {what} expired before anyone decided; nothing was run."
    reason = f": {event.reason}" if event.reason else ""
    return f"{event.decision.capitalize()} {what}: {event.decision} by {event.by} via {event.via}{reason}."


def _html(text: str, event: Event, thread: Thread) -> str:
    if isinstance(event, ApprovalRequested):
        rows = "".join(
            f"<tr><th align=\"left\" style=\"padding:2px 12px 2px 0\">{html.escape(str(k))}</th>"
            f"<td style=\"font-family:monospace\">{html.escape(str(v))}</td></tr>"
            for k, v in event.args.items()
        )
        approvers = ", ".join(event.approvers) if event.approvers else "anyone"
        return (
            f"<p><b>Approval needed</b>: the {html.escape(thread.agent)} agent wants to run "
            f"<code>{html.escape(event.tool)}</code> with</p><table>{rows}</table>"
            f"<p>Asked by: {html.escape(event.requester or 'unknown')}<br>"
            f"Approvers: {html.escape(approvers)}<br>Expires: {clock(event.expires_at)}</p>"
            "<p>To approve, reply with <b>approve</b> as the first word.<br>"
            "To reject, reply with <b>reject</b> followed by your reason.<br>"
            "Only the first words of your reply count; the quoted mail is ignored.</p>"
            f"<p style=\"color:#666\">Approval id: {html.escape(event.approval_id)}</p>"
        )
    return "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in text.split("\n\n"))

"""The mail the bot writes: replies in the sender's thread, approval mails, decisions, refusals.

Every mail carries the thread's headers (In-Reply-To, References, `Re: <original subject>`) so
that Gmail and Outlook show one conversation, a Reply-To with a signed token, a Message-ID that
carries the thread's token (derived from the event, so a re-sent mail has the same id), and
`Auto-Submitted` so that well-behaved auto-responders stay quiet.

An approval (its request, reminder, escalation) is mailed to each approver alone, with a reply
address that decides it for that approver only; everyone else (the requester) gets a copy whose
reply address reaches the thread but decides nothing. Approval tokens appear in nothing else: not
in Message-IDs, hence never in the References others see.

A scheduled thread's mails go to the schedule's addresses (`to`): its first mail starts the
conversation under the schedule's name, the others answer it like any thread's.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formataddr, formatdate, parseaddr

from bot.approvals import shown, votes_text
from bot.channel import Address
from bot.events import (
    AgentReply,
    ApprovalDecided,
    ApprovalEscalated,
    ApprovalRefused,
    ApprovalReminder,
    ApprovalRequested,
    ApprovalVote,
    Event,
    HumanQuestion,
    ScheduleMissed,
)
from bot.thread import Thread
from channels.email import tokens as email_tokens
from channels.email.channel import MailThread, approver_addresses

REPLY_LOCAL = "bot"  # replies come back to bot+<token>@domain
MAX_REFERENCES = 20
APPROVAL_MAILS = (ApprovalRequested, ApprovalReminder, ApprovalEscalated)  # the mails that can decide


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
    # approvers mailed about their approval: never dropped by the per-recipient cap (new threads
    # are throttled per requester instead, so nobody can crowd their approval mail out)
    exempt: frozenset[str] = frozenset()


def clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def is_sent(event: Event) -> bool:
    """Whether the email channel sends a mail for this event."""
    if isinstance(event, ApprovalRefused):
        return event.via == "email" and "@" in (event.by or "")
    return isinstance(event, (AgentReply, ApprovalRequested, ApprovalDecided, HumanQuestion, ScheduleMissed,
                              ApprovalReminder, ApprovalEscalated, ApprovalVote))


def thread_token(me: Identity, thread: Thread, event: Event) -> str:
    return email_tokens.thread_token(me.key, thread.id, event.ts + me.reply_ttl)


def deciders(thread: Thread, event: Event, to: list[str]) -> list[str]:
    """Who gets an approval event in a mail of their own, whose reply address decides it: the
    event's approvers (an escalation's: the escalation list) that are email addresses; when the
    approval names no approvers (anyone who may talk to the agent decides), the recipients."""
    if not isinstance(event, APPROVAL_MAILS):
        return []
    request = thread.approvals.get(event.approval_id, event if isinstance(event, ApprovalRequested) else None)
    people = list(event.approvers)
    if not people and request is not None and not request.approvers:
        people = list(to)
    return list(dict.fromkeys(email_tokens.normalize(p) for p in people if "@" in p))


def _personal(address: str) -> str:
    return hashlib.sha256(email_tokens.normalize(address).encode()).hexdigest()[:8]


def message_id(me: Identity, thread: Thread, event: Event, decider: str | None = None) -> str:
    """Our Message-ID for `event`'s mail (a decider's own mail has its own): it carries the
    thread token, never an approval token, since others see it in References."""
    personal = f".{_personal(decider)}" if decider else ""
    return f"<{thread_token(me, thread, event)}.{event.id.split('_')[-1]}{personal}@{me.domain}>"


def chain(me: Identity, thread: Thread, upto: Event, to: list[str]) -> list[tuple[str, str | None]]:
    """The ids of the conversation's mails before `upto`, oldest first, theirs and ours, each with
    the decider it was sent to alone (None: a mail to the thread's recipients)."""
    first = own_thread(thread)
    ids: list[tuple[str, str | None]] = [(first.message_id, None)] if first and first.message_id else []
    for event in thread.events:
        if event.id == upto.id:
            break
        external = event.source.external_id or ""
        if event.source.channel == "email" and external.startswith("<"):
            ids.append((external, None))
        elif is_sent(event) and not isinstance(event, ApprovalRefused):
            ids.append((message_id(me, thread, event), None))
            ids += [(message_id(me, thread, event, d), d) for d in deciders(thread, event, to)]
    unique = list(dict.fromkeys(ids))
    if len(unique) > MAX_REFERENCES:
        unique = unique[:1] + unique[-(MAX_REFERENCES - 1):]
    return unique


def own_thread(thread: Thread) -> MailThread | None:
    """The origin address of a thread started by mail; None for another channel's thread."""
    return MailThread.model_validate(thread.meta.origin.address) if thread.meta.origin.channel == "email" \
        else None


def subject(thread: Thread, first: bool = False, title: str | None = None) -> str:
    """`Re: <the subject of the mail that started the thread>`; another channel's thread (a
    schedule's, a Slack thread mailed to its approvers) goes under `title`, the name its own
    channel gives it (`Address.title`), and its first mail (`first`) starts the conversation."""
    own = own_thread(thread)
    if own is None:
        title = title or Address().title(thread)
        return title if first else f"Re: {title}"
    original = own.subject or f"{thread.agent} request"
    stripped = original
    while stripped[:3].lower() in ("re:", "aw:", "sv:") or stripped[:4].lower() == "fwd:":
        stripped = stripped.split(":", 1)[1].strip()
    return f"Re: {stripped or original}"


def compose(me: Identity, thread: Thread, event: Event, to: list[str] | None = None,
            title: str | None = None) -> list[Outgoing]:
    """The mails for `event`: one to the thread's sender (or to `to`: another channel's thread,
    e.g. a schedule's addresses, named `title` in the subject), and for an approval event one more
    per decider, the only mail whose reply address decides it."""
    if not is_sent(event):
        return []
    if to is None:
        sender = own_thread(thread)
        to = [sender.to] if sender is not None and sender.to else []
    people = deciders(thread, event, to)
    to = [r for r in to if email_tokens.normalize(r) not in people]
    cc: list[str] = []
    kind = "auto-generated"
    in_reply_to: str | None = None
    if isinstance(event, AgentReply):
        text, kind = event.text, "auto-replied"
    elif isinstance(event, HumanQuestion):
        text, kind = f"{event.question}\n\nReply to this mail to answer.", "auto-replied"
    elif isinstance(event, ApprovalRequested):
        text = approval_text(thread, event, decides=False)
    elif isinstance(event, ApprovalDecided):
        cc = [a for a in approver_addresses(thread, event) if a not in to]
        text = decision_text(thread, event)
    elif isinstance(event, ApprovalVote):
        cc = [a for a in approver_addresses(thread, event) if a not in to]
        text = (f"{event.person} approved {event.approval_id} via {event.via}: "
                f"{votes_text(event.people, event.quorum)}. Not run until {event.quorum} different people "
                "have approved.")
    elif isinstance(event, (ApprovalReminder, ApprovalEscalated)):
        text = nudge_text(event, decides=False)
    elif isinstance(event, ScheduleMissed):
        text = (f"The schedule {event.schedule} missed {event.missed} run(s) up to {clock(event.scheduled_for)} "
                f"while the bot was down; they were not run (older than the grace of {event.grace:g} s).")
    else:
        assert isinstance(event, ApprovalRefused)
        to, kind = [event.by or ""], "auto-replied"
        if (event.source.external_id or "").startswith("<"):
            in_reply_to = event.source.external_id
        text = f"Your answer to the approval {event.approval_id} was not accepted: {event.reason}.\n" \
               "Nothing was decided by it."
    refs = chain(me, thread, event, list(dict.fromkeys([*to, *people])))
    out = []
    token = thread_token(me, thread, event)
    if to:  # the requester's copy: it names the approvers' group, never their addresses
        mail = _mail(me, thread, event, to, [], refs, in_reply_to, token, None,
                     text, _html(text, event, thread, decides=False), kind, title)
        # about a Slack or console thread, `to` are the approvers themselves: never dropped
        approvers = set(approver_addresses(thread, event)) if isinstance(event, (ApprovalDecided, ApprovalVote)) \
            else set()
        out.append(Outgoing(mail.message, mail.recipients, frozenset(approvers & set(to))))
    if cc:  # the approvers hear of votes and the outcome in a mail of theirs, never dropped
        mail = _mail(me, thread, event, cc, [], refs, in_reply_to, token, "approvers",  # its own id
                     text, _html(text, event, thread, decides=False), kind, title)
        out.append(Outgoing(mail.message, mail.recipients, frozenset(cc)))
    for decider in people:
        assert isinstance(event, APPROVAL_MAILS)
        token = email_tokens.approval_token(me.key, event.approval_id, decider, event.expires_at)
        own = approval_text(thread, event, decides=True) if isinstance(event, ApprovalRequested) \
            else nudge_text(event, decides=True)
        mail = _mail(me, thread, event, [decider], [], refs, None, token, decider,
                     own, _html(own, event, thread, decides=True), kind, title)
        out.append(Outgoing(mail.message, mail.recipients, frozenset([decider])))
    return out


def _mail(me: Identity, thread: Thread, event: Event, to: list[str], cc: list[str],
          refs: list[tuple[str, str | None]], in_reply_to: str | None, token: str, decider: str | None,
          text: str, html_text: str, kind: str, title: str | None) -> Outgoing:
    # a mail answers the latest mail its recipient has seen: not another decider's own
    seen = [mid for mid, owner in refs if owner is None or owner == decider]
    in_reply_to = in_reply_to or (seen[-1] if seen else None)
    ids = [mid for mid, _ in refs]
    msg = EmailMessage()
    msg["From"] = me.from_address
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject(thread, first=not ids, title=title)
    msg["Date"] = formatdate(event.ts, usegmt=True)
    msg["Message-ID"] = message_id(me, thread, event, decider)
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = " ".join(ids if in_reply_to in ids else [*ids, in_reply_to])
    msg["Reply-To"] = formataddr((parseaddr(me.from_address)[0] or "chatops", me.reply_address(token)))
    msg["Auto-Submitted"] = kind
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Chatops-Thread"] = thread.id
    msg.set_content(f"{text}\n\n-- \nchatops · {thread.agent} agent · thread {thread.id}\n")
    msg.add_alternative(html_text, subtype="html")
    return Outgoing(msg, list(dict.fromkeys([*to, *cc])))


HOW_TO_DECIDE = ("To approve, reply with \"approve\" as the first word.\n"
                 "To reject, reply with \"reject\" followed by your reason.\n"
                 "Only the first words of your reply count; the quoted mail is ignored.")
NOT_YOURS = ("The approvers were asked in mails of their own; only their replies decide.\n"
             "A reply to this mail reaches the thread as a message; it cannot decide the approval.")


def approvers_line(event: ApprovalRequested) -> str:
    """Who may decide, as anyone may read it: groups and people by name, never addresses."""
    named = ", ".join(event.approvers_named) or "anyone"
    rule = "; someone other than the requester" if event.two_person else ""
    quorum = f"; {event.quorum} different people must approve" if event.quorum > 1 else ""
    return f"{named}{rule}{quorum}"


def approval_text(thread: Thread, event: ApprovalRequested, decides: bool) -> str:
    width = max((len(shown(k, 60)) for k in event.args), default=0)
    rows = "\n".join(f"  {shown(k, 60).ljust(width)}  {shown(v)}" for k, v in event.args.items()) \
        or "  (no arguments)"
    return (
        f"Approval needed: the {thread.agent} agent wants to run {event.tool} with\n\n{rows}\n\n"
        + (f"{event.about}\n\n" if event.about else "")  # an MCP tool: what its server says of it
        + f"Asked by: {event.requester or 'unknown'}\n"
        f"Approvers: {approvers_line(event)}\n"
        f"Expires: {clock(event.expires_at)}\n\n"
        f"{HOW_TO_DECIDE if decides else NOT_YOURS}\n"
        f"Approval id: {event.approval_id}"
    )


def nudge_text(event: ApprovalReminder | ApprovalEscalated, decides: bool) -> str:
    call = f"{event.tool}(" + ", ".join(f"{shown(k, 60)}={shown(v)}" for k, v in event.args.items()) + ")"
    if isinstance(event, ApprovalReminder):
        head = f"Reminder: the approval of {call} is still undecided."
    elif decides:
        head = f"Escalated: nobody decided the approval of {call} in time, so you may decide it too."
    else:
        head = f"Escalated: nobody decided the approval of {call} in time, so more approvers may decide it."
    return (f"{head}\nIt expires {clock(event.expires_at)}.\n\n"
            f"{HOW_TO_DECIDE if decides else NOT_YOURS}\n"
            f"Approval id: {event.approval_id}")


def decision_text(thread: Thread, event: ApprovalDecided) -> str:
    request = thread.approvals.get(event.approval_id)
    what = f"{request.tool}" if request else event.approval_id
    if event.decision == "expired":
        return f"The approval of {what} expired before anyone decided; nothing was run."
    reason = f": {event.reason}" if event.reason else ""
    return f"{event.decision.capitalize()} {what}: {event.decision} by {event.by} via {event.via}{reason}."


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in text.split("\n\n"))


def _html(text: str, event: Event, thread: Thread, decides: bool) -> str:
    if not isinstance(event, ApprovalRequested):
        return _paragraphs(text)
    rows = "".join(
        f"<tr><th align=\"left\" style=\"padding:2px 12px 2px 0\">{html.escape(shown(k, 60))}</th>"
        f"<td style=\"font-family:monospace\">{html.escape(shown(v))}</td></tr>"
        for k, v in event.args.items()
    )
    approvers = approvers_line(event)
    return (
        f"<p><b>Approval needed</b>: the {html.escape(thread.agent)} agent wants to run "
        f"<code>{html.escape(event.tool)}</code> with</p><table>{rows}</table>"
        f"<p>Asked by: {html.escape(event.requester or 'unknown')}<br>"
        f"Approvers: {html.escape(approvers)}<br>Expires: {clock(event.expires_at)}</p>"
        f"{_paragraphs(HOW_TO_DECIDE if decides else NOT_YOURS)}"
        f"<p style=\"color:#666\">Approval id: {html.escape(event.approval_id)}</p>"
    )

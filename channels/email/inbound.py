"""What an inbound mail means: a new thread, a message in a thread, or an approval decision.

The SMTP server asks `check_recipient` at RCPT and `receive` at DATA; `receive` returns the SMTP
reply only once the mail's effect is in Redis (and raises when Redis is down, so the server
answers 451). Automatic mail is accepted and ignored: answering it is how mail loops start.

A mail tries to decide an approval when its first words are a decision and it goes to an approval
token's reply address or names the approval; with a thread token only, it is a message. A decision
that no valid token ties to the approval's thread is refused at SMTP level and writes nothing,
since anyone can send mail naming an approval id; the others' refusals are recorded in the thread.
A reply to an approval address that decides nothing (no decision word, both words, nothing
readable) is refused the same way, so its sender gets one short mail saying how to answer.

Parsing runs in a worker process with a time limit (see reader.py), so that no mail holds
the event loop; a mail that cannot be read gets a permanent 554, never a 451 (451 means "Redis
is down, try later", and a retry would read no better).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from bot.events import ApprovalRefused, Source
from bot.intake import thread_id_for
from bot.routing import route
from bot.runtime import Runtime
from bot.store import Claim, ThreadNotFound
from bot.thread import Origin, Thread
from channels.email import tokens as email_tokens
from channels.email.channel import MailThread
from channels.email.compose import REPLY_LOCAL, Identity
from channels.email.parse import UNMISTAKABLE_WORDS, Decision, Mail, decision
from channels.email.reader import Reader, Unreadable
from channels.email.settings import EmailSettings
from channels.email.tokens import Token
from channels.email import keys as email_keys

log = logging.getLogger("chatops.email")
UNAUTHENTICATED = "email-unauthenticated"  # `via` of refusals that get no mail back
DEDUPE_TTL = 7 * 86400.0  # mail servers retry for days (RFC 5321 §4.5.4.1: give up after 4-5)
HOW_TO_ANSWER = ("write approve or reject (and a reason, if you like) as the first word of your reply, "
                 "above or below the quoted mail, and nothing that says the opposite on that line")


@dataclass(frozen=True)
class Received:
    status: str  # the SMTP reply
    outcome: str  # thread | message | decided | refused | duplicate | ignored | rejected


def _ok(outcome: str, text: str) -> Received:
    return Received(f"250 2.0.0 {text}", outcome)


class Inbound:
    def __init__(self, rt: Runtime, identity: Identity, settings: EmailSettings, reader: Reader) -> None:
        self.rt = rt
        self.me = identity
        self.settings = settings
        self.reader = reader  # its mail-reading processes

    # ---- RCPT ------------------------------------------------------------------------------

    def check_recipient(self, address: str, now: float | None = None) -> str | None:
        """None to accept `address`, else the SMTP refusal (550: never accept and bounce later)."""
        local, _, domain = address.rpartition("@")
        local = local.lower()
        if domain.lower() != self.me.domain:
            return f"550 5.1.1 <{address}>: not a local address; this server does not relay"
        base, plus, tag = local.partition("+")
        if plus:
            token = email_tokens.verify(self.me.key, tag) if base == REPLY_LOCAL else None
            if token is None:
                return f"550 5.1.1 <{address}>: unknown reply address"
            if token.approval_id is None and token.expired(now or time.time()):
                return (f"550 5.1.1 <{address}>: this reply address expired; write to "
                        f"{self.rt.settings.default_agent}@{self.me.domain} to start a new conversation")
            return None
        if base == REPLY_LOCAL or base in self.rt.agents:
            return None
        return f"550 5.1.1 <{address}>: no agent of that name here"

    # ---- DATA ------------------------------------------------------------------------------

    async def receive(self, mail_from: str | None, rcpt_tos: list[str], raw: bytes,
                      relayed: bool = False) -> Received:
        """`relayed`: the mail came from a trusted relay (or an authenticated session), the only
        place whose Authentication-Results are believed."""
        try:
            mail = await self.reader.read(raw, mail_from)
        except Unreadable as exc:
            return Received(f"554 5.6.0 {exc}; nothing was recorded", "rejected")
        except Exception as exc:  # whatever parse raised in its process: the mail is the cause
            log.warning("a mail from %s could not be read: %s", mail_from, type(exc).__name__)
            return Received("554 5.6.0 the message could not be read; nothing was recorded", "rejected")
        if mail is None:
            return Received("554 5.6.0 not a readable message: it has no From address", "rejected")
        if not relayed and mail.dmarc:
            mail = replace(mail, dmarc={})  # written by whoever sent it: proves nothing
        if mail.automatic:
            log.info("ignored automatic mail from %s: %s", mail.sender, mail.automatic)
            return _ok("ignored", f"accepted and ignored: automatic mail ({mail.automatic})")
        tokens = self._tokens(rcpt_tos, mail)
        wanted = decision(mail.text)
        approval_id = _decided(wanted, tokens)
        if wanted is not None and approval_id is not None:
            return await self._decide(mail, wanted, approval_id, tokens)
        if undecided := next((t.approval_id for t in tokens if t.approval_id), None):
            # a reply to an approval mail that decides nothing: never silently a message
            return await self._decide(mail, None, undecided, tokens)
        if self._dmarc(mail) == "fail":
            return Received("550 5.7.1 sender authentication (DMARC) failed", "refused")
        if wanted is not None and not tokens and self._looks_like_an_answer(mail):
            return Received("554 5.7.1 this looks like an answer to an approval, but it carries no reply "
                            "token: nothing was decided or recorded; reply to the approval mail itself", "rejected")
        return await self._message(mail, rcpt_tos, tokens)

    def _looks_like_an_answer(self, mail: Mail) -> bool:
        """Whether a mail opening with a decision word but carrying no token is an answer to an
        approval that lost its way (refused, so that its sender learns to reply to the approval
        mail itself) rather than a new request: it answers one of our mails, or it is a "Re:"
        opening with an unmistakable word (approve, reject...; "No deploys today" is a request)."""
        if any(mid.lower().endswith(f"@{self.me.domain}>") for mid in mail.answered_ids):
            return True
        first = (mail.text.split(maxsplit=1) or [""])[0].strip(".,!:;").lower()
        return mail.subject[:3].lower() in ("re:", "aw:", "sv:") and first in UNMISTAKABLE_WORDS

    def _tokens(self, rcpt_tos: list[str], mail: Mail) -> list[Token]:
        """Valid tokens in the recipients, then in the ids the mail answers (In-Reply-To first)."""
        found: list[Token] = []
        places = [r.rpartition("@")[0].partition("+")[2] for r in rcpt_tos]
        places += [mid.strip("<>").rpartition("@")[0].split(".")[0] for mid in mail.answered_ids
                   if mid.lower().endswith(f"@{self.me.domain}>")]
        for place in places:
            token = email_tokens.verify(self.me.key, place) if place else None
            if token is not None and token not in found:
                found.append(token)
        return found

    def _dmarc(self, mail: Mail) -> str | None:
        """The DMARC result our trusted MTA recorded in its (topmost) Authentication-Results:
        "pass", "fail", "none", ..., "absent" without one; None when no trusted authserv-id is
        configured."""
        authserv = self.settings.email_authserv_id
        if not authserv:
            return None
        return mail.dmarc.get(authserv.lower(), "absent")

    # ---- approvals -------------------------------------------------------------------------

    async def _decide(self, mail: Mail, wanted: Decision | None, approval_id: str,
                      tokens: list[Token]) -> Received:
        """Decide `approval_id` as `wanted`; with `wanted` None (or ambiguous) the mail decides
        nothing, and once the sender is checked like a decider, is refused with how to answer."""
        found = await self.rt.approvals.find(approval_id)
        if found is None:
            return Received(f"554 5.7.1 there is no approval {approval_id}; nothing was recorded", "rejected")
        thread, request = found
        if not any(t.thread_id == thread.id for t in tokens):
            # nothing ties this mail to that thread: answer here rather than write a stranger's words
            return Received(f"554 5.7.1 not accepted as a decision on {approval_id}: the mail carries no "
                            "reply token of its thread; reply to the approval mail itself", "rejected")
        if not mail.single_from:
            return await self._refuse(mail, approval_id, "the mail must have exactly one From address",
                                      UNAUTHENTICATED)
        dmarc = self._dmarc(mail)
        if dmarc not in (None, "pass"):
            return await self._refuse(mail, approval_id, f"sender authentication (DMARC) did not pass "
                                      f"(dmarc={dmarc} from {self.settings.email_authserv_id})", UNAUTHENTICATED)
        matching = sorted((t for t in tokens if t.approval_id == approval_id),
                          key=lambda t: not email_tokens.is_for(self.me.key, t, mail.sender))
        if not matching:
            why = ("the reply token belongs to another approval" if any(t.approval_id for t in tokens)
                   else "the mail carries no reply token of this approval; reply to your approval mail itself")
            return await self._refuse(mail, approval_id, why)
        token = matching[0]
        if refusal := self.rt.approvals.authorize(thread, request, mail.sender):
            return await self._refuse(mail, approval_id, refusal)
        if not email_tokens.is_for(self.me.key, token, mail.sender):
            return await self._refuse(mail, approval_id, "this reply address was sent to another approver; "
                                      "reply to the approval mail sent to you")
        if token.expired(time.time()):
            return await self._refuse(mail, approval_id, "the reply address of this approval expired")
        if wanted is None or wanted.ambiguous:
            return await self._refuse(mail, approval_id, _undecided(mail, wanted))
        fresh = await self._use_token(token, mail, request.expires_at)
        if fresh is None:
            earlier = (await self.rt.store.load_approval(thread.id, approval_id)).decisions.get(approval_id)
            # not describe(): its reason is someone's free text, and this goes into an SMTP reply
            done = f" ({earlier.decision} by {earlier.by} via {earlier.via})" if earlier else ""
            return await self._refuse(mail, approval_id, f"this approval mail was already answered{done}; "
                                      "its reply address works once")
        outcome = await self.rt.approvals.decide(approval_id, wanted.approve, mail.sender, "email", wanted.reason)
        if outcome.status == "decided":  # not the reason: it is the sender's text (see smtp_reply)
            return _ok("decided", f"{'approved' if wanted.approve else 'rejected'} {approval_id}")
        if outcome.status == "already_decided":
            if not fresh:
                return _ok("duplicate", "already received")
            return await self._refuse(mail, approval_id, "this approval was already decided")
        # the message is our own text (who voted, why refused), never the sender's reason
        return _ok("refused" if outcome.status == "refused" else outcome.status, f"received; {outcome.message}")

    async def _use_token(self, token: Token, mail: Mail, expires_at: float) -> bool | None:
        """Claim the token for this mail: True if newly claimed, False if this same mail claimed
        it before (a redelivery), None if another mail used it."""
        key = email_keys.token_used(self.rt.store.keys, token.mac)
        ttl = int(max(expires_at - time.time(), 0) + DEDUPE_TTL)
        if await self.rt.redis.set(key, mail.external_id, nx=True, ex=ttl):
            return True
        holder = await self.rt.redis.get(key)
        return False if holder in (mail.external_id, mail.external_id.encode()) else None

    async def _refuse(self, mail: Mail, approval_id: str, why: str, via: str = "email") -> Received:
        """Record the refusal in the approval's thread, which the caller made sure exists and the
        mail carries a token of. Refusals `via` email are answered by the email renderer; an
        unauthenticated sender gets no mail (it would go to whoever the From names), only 550."""
        event = ApprovalRefused(
            approval_id=approval_id, by=mail.sender, via=via, reason=why,
            person=self.rt.approvals.person(mail.sender), source=Source(channel="email", user=mail.sender, external_id=mail.external_id),
        )
        appended = await self.rt.store.append(
            approval_id.split(".")[0], event, claim=Claim(f"ext:{mail.external_id}", DEDUPE_TTL), wake=True)
        if appended.outcome == "missing":
            return Received(f"554 5.7.1 there is no approval {approval_id}; nothing was recorded", "rejected")
        if via == UNAUTHENTICATED:
            return Received(f"550 5.7.1 not accepted as a decision: {why}", "refused")
        if appended.outcome == "duplicate":
            return _ok("duplicate", "already received")
        log.info("refused an email decision on %s by %s: %s", approval_id, mail.sender, why)
        return _ok("refused", f"received; not accepted as a decision: {why}")

    # ---- messages --------------------------------------------------------------------------

    async def _message(self, mail: Mail, rcpt_tos: list[str], tokens: list[Token]) -> Received:
        thread = await self._thread_of(tokens)
        if thread is None and tokens and not any(self._is_new_address(r) for r in rcpt_tos):
            return Received("550 5.1.1 this conversation no longer exists; write to "
                            f"{self.rt.settings.default_agent}@{self.me.domain} to start anew", "rejected")
        text = _text(mail, new=thread is None)
        if not text:
            return _ok("ignored", "received; it has no new text (only quoted mail)")
        if thread is not None:
            thread_id, agent, origin = thread.id, thread.agent, thread.meta.origin
        else:
            thread_id = thread_id_for("email", f"{mail.sender}\0{mail.external_id}")
            agent = self._agent_for(rcpt_tos, text)
            origin = Origin(channel="email", address=MailThread(
                to=mail.sender, name=mail.sender_name, subject=mail.subject,
                message_id=mail.message_id, agent_address=f"{agent}@{self.me.domain}",
            ).model_dump())
        if why := self._not_allowed(agent, mail.sender):
            return Received(f"550 5.7.1 {why}", "rejected")
        if thread is None and not (await self.rt.intake.admit(mail.sender, thread_id)).ok:
            # the SMTP answer is the one short refusal: no mail of ours, so no backscatter
            return Received(f"550 5.7.1 too many new requests from {mail.sender}: at most "
                            f"{self.rt.settings.requests_per_hour} an hour", "rejected")
        appended = await self.rt.intake.message(
            thread_id, agent=agent, origin=origin, text=text, dedupe_ttl=DEDUPE_TTL,
            source=Source(channel="email", user=mail.sender, external_id=mail.external_id),
        )
        if appended.outcome == "duplicate":
            return _ok("duplicate", "already received")
        return _ok("message" if thread else "thread", f"queued in thread {thread_id}")

    async def _thread_of(self, tokens: list[Token]) -> Thread | None:
        for token in tokens:
            try:
                return await self.rt.store.load(token.thread_id)
            except ThreadNotFound:
                continue
        return None

    def _is_new_address(self, rcpt: str) -> bool:
        local = rcpt.rpartition("@")[0].lower()
        return "+" not in local and (local in self.rt.agents or local == REPLY_LOCAL)

    def _agent_for(self, rcpt_tos: list[str], text: str) -> str:
        for rcpt in rcpt_tos:
            local = rcpt.rpartition("@")[0].lower()
            if local in self.rt.agents:
                return local
        agent, _ = route(text, self.rt.agents, self.rt.settings.default_agent)
        return agent

    def _not_allowed(self, agent: str, sender: str) -> str | None:
        policy = self.rt.policy.agent(agent)
        if policy.channels and "email" not in policy.channels:
            return f"the {agent} agent does not take requests by email"
        if policy.users and not self.rt.policy.allows(policy.users, sender):
            return f"{sender} may not talk to the {agent} agent"
        return None


def _decided(wanted: Decision | None, tokens: list[Token]) -> str | None:
    """The approval a mail tries to decide: the one it names, else the one its approval token is
    for. A thread token alone decides nothing: "No, use 1.2.4" is a message to the thread."""
    if wanted is None:
        return None
    if wanted.approval_id:
        return wanted.approval_id
    return next((t.approval_id for t in tokens if t.approval_id), None)


def _undecided(mail: Mail, wanted: Decision | None) -> str:
    if wanted is not None:
        return f"the first line says both yes and no; {HOW_TO_ANSWER}"
    if not mail.text:
        what = "no text could be read in it" if mail.defects and not mail.attachments else \
            "it has no new text, only the quoted mail"
        return f"{what}; {HOW_TO_ANSWER}"
    return f"its first line is not a decision; {HOW_TO_ANSWER}"


def _text(mail: Mail, new: bool) -> str:
    text = mail.text
    if new and mail.subject and not text.startswith("/"):
        text = f"{mail.subject}\n\n{text}".strip() if text else mail.subject
    if mail.attachments:  # below the text: a command is its first line, so this is never part of it
        names = ", ".join(a.describe() for a in mail.attachments[:20])
        text = f"{text}\n\n[attachments, not shown: {names}]".strip()
    if charsets := [d for d in mail.defects if d.startswith(("unknown charset", "not valid"))]:
        text = f"{text}\n\n[decoded with replacement: {'; '.join(charsets[:3])}]".strip()
    return text

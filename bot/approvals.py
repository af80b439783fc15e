"""Approvals: who may decide, and deciding atomically (the first valid decision wins).

Every channel (console, API, Slack, email) decides through `Approvals.decide`, so the rules are
the same everywhere: authorization on the server, expiry is never approval, one decision only.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bot import metrics
from bot.events import (
    ApprovalDecided,
    ApprovalEscalated,
    ApprovalRefused,
    ApprovalReminder,
    ApprovalRequested,
    ApprovalVote,
    Decision,
    Event,
    Source,
    ToolCall,
)
from bot.outage import REDIS_DOWN
from bot.policy import Policy
from bot.store import Claim, Store, ThreadNotFound, members
from bot.thread import Thread

log = logging.getLogger("chatops.approvals")

SWEEP_ATTEMPTS = 3  # sweeps that may fail on one approval before they give it up

_APPROVAL_ID = re.compile(r"^([0-9a-f]{16})\.([0-9a-f]{8})$")

Status = Literal["decided", "voted", "already_decided", "refused", "expired", "not_found"]
VALUE_LIMIT = 300  # characters of one argument value any rendering shows (the event has it all)


def new_approval_id(thread_id: str) -> str:
    return f"{thread_id}.{secrets.token_hex(4)}"


def thread_of(approval_id: str) -> str | None:
    match = _APPROVAL_ID.match(approval_id)
    return match.group(1) if match else None


def decision_claim(approval_id: str) -> Claim:
    return Claim(f"decision:{approval_id}")


def shown(value: object, limit: int = VALUE_LIMIT) -> str:
    """An argument value as every rendering shows it: on one line, capped."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass(frozen=True)
class Outcome:
    status: Status
    message: str
    request: ApprovalRequested | None = None
    decision: ApprovalDecided | None = None
    votes: tuple[str, ...] = ()  # the people who approved so far (a quorum not yet met)


def escalated_to(thread: Thread, approval_id: str) -> list[str]:
    """Who an escalation recorded in the thread added to the approvers of `approval_id`."""
    return [who for e in thread.events if isinstance(e, ApprovalEscalated) and e.approval_id == approval_id
            for who in e.approvers]


def votes_text(people: Sequence[str], quorum: int) -> str:
    """"1 of 2 approvals: alice", as every channel shows a quorum under way."""
    return f"{len(people)} of {quorum} approvals: {', '.join(people) or 'none yet'}"


class Approvals:
    def __init__(self, store: Store, policy: Policy, ttl: float, clock: Callable[[], float] = time.time):
        self.store = store
        self.policy = policy  # replaced by a reload: decisions always use the policy in force
        self.ttl = ttl
        self.clock = clock
        self.failures: Counter[str] = Counter()  # approval id -> sweeps that failed on it

    def request_for(self, thread: Thread, call: ToolCall, args: dict[str, Any]) -> ApprovalRequested:
        """The request for `call`, with `args` the validated arguments (what will run)."""
        policy = self.policy
        tool_policy = policy.tool(call.tool)
        entries = policy.approvers_for(call.tool)
        ttl = tool_policy.approval_ttl or self.ttl
        source = thread.last_input.source if thread.last_input else None
        requester = source.user if source else None
        now = self.clock()
        remind_at = now + ttl - tool_policy.remind_before if tool_policy.remind_before else None
        escalate_at = now + tool_policy.escalate_after if tool_policy.escalate_after else None
        return ApprovalRequested(
            approval_id=new_approval_id(thread.id),
            call_id=call.call_id,
            tool=call.tool,
            args=args,
            requester=requester,
            approvers=policy.who.contacts(entries),
            expires_at=now + ttl,
            two_person=policy.two_person_for(call.tool),
            # a timer due at once or after the deadline would tell nobody anything useful
            remind_at=remind_at if remind_at is not None and now < remind_at else None,
            escalate_at=escalate_at if escalate_at is not None and escalate_at < now + ttl else None,
            escalate_to=policy.who.contacts(tool_policy.escalate_to),
            requester_person=policy.who.person_of_any([requester, *(source.also if source else ())]),
            approvers_named=policy.who.label(entries),
            quorum=policy.quorum_for(call.tool),
        )

    def person(self, user: str | None, also: Sequence[str] = ()) -> str | None:
        """The person behind an identity (`also`: more identities a channel vouches for, such as
        the email of a Slack profile)."""
        return self.policy.who.person_of_any([user, *also])

    def quorum(self, request: ApprovalRequested) -> int:
        """A reload may raise a pending approval's quorum, never lower it."""
        return max(request.quorum, self.policy.quorum_for(request.tool))

    def authorize(self, thread: Thread, request: ApprovalRequested, user: str | None,
                  also: Sequence[str] = ()) -> str | None:
        """Why `user` may not decide `request` in `thread` now, or None if they may."""
        person = self.person(user, also)
        if person is None:
            return "the decision names no one"
        return self._why_not(thread, request, person, user or person)

    def _why_not(self, thread: Thread, request: ApprovalRequested, person: str, user: str) -> str | None:
        """Checked against the policy in force, as a person: the approvers of the tool now, those
        an escalation recorded in the thread added, and the two-person rule (kept if the request
        had it, added if the policy now has it)."""
        policy, who = self.policy, self.policy.who
        escalated = who.expand(escalated_to(thread, request.approval_id)) or set()
        approvers = who.expand(policy.approvers_for(request.tool))
        if approvers is not None:
            if person not in approvers and person not in escalated:
                return f"{user} is not an approver of {request.tool}"
        else:
            talkers = who.expand(policy.agent(thread.agent).users or ["*"])
            if talkers is not None and person not in talkers and person not in escalated:
                return f"{user} may not talk to this agent, so may not decide its approvals"
        if request.two_person or policy.two_person_for(request.tool):
            requester = {who.person(request.requester), request.requester_person} - {None}
            if person in requester:
                return f"{user} asked for this and the two-person rule needs someone else"
        return None

    def approvals_so_far(self, thread: Thread, request: ApprovalRequested) -> list[str]:
        """The distinct people whose approvals count now (each re-checked against the policy in
        force: a vote of someone no longer an approver no longer counts)."""
        people: list[str] = []
        for vote in thread.votes.get(request.approval_id, []):
            person = self.policy.who.person(vote.by) or vote.person
            if person not in people and self._why_not(thread, request, person, vote.by) is None:
                people.append(person)
        return people

    async def find(self, approval_id: str) -> tuple[Thread, ApprovalRequested] | None:
        thread_id = thread_of(approval_id)
        if thread_id is None:
            return None
        try:  # only that approval's events: deciding costs the same in a long thread
            thread = await self.store.load_approval(thread_id, approval_id)
        except ThreadNotFound:
            return None
        request = thread.approvals.get(approval_id)
        return (thread, request) if request else None

    async def decide(
        self, approval_id: str, approve: bool, by: str | None, via: str, reason: str = "",
        also: Sequence[str] = (),
    ) -> Outcome:
        """One person's answer. A rejection decides at once; an approval is a vote, and the vote
        that meets the quorum (distinct people) decides. The first decision wins."""
        found = await self.find(approval_id)
        if (stop := await self._stop(found, approval_id, by, via, also)) is not None:
            return stop
        assert found is not None and by is not None
        thread, request = found
        person = self.person(by, also)
        assert person is not None
        if not approve:
            return await self._record(thread.id, request, "rejected", by, via, reason, person)
        quorum = self.quorum(request)
        before = self.approvals_so_far(thread, request)
        if person in before:
            return await self._refuse(thread, approval_id, by, via, f"{person} has already approved this "
                                      "(one vote per person, whatever the channel)", person)
        if quorum <= 1:
            return await self._record(thread.id, request, "approved", by, via, reason, person, [person])
        return await self._vote(thread, request, by, via, reason, person, quorum, before)

    async def _vote(self, thread: Thread, request: ApprovalRequested, by: str, via: str, reason: str,
                    person: str, quorum: int, before: list[str]) -> Outcome:
        vote = ApprovalVote(
            approval_id=request.approval_id, by=by, person=person, via=via, votes=len(before) + 1,
            quorum=quorum, people=[*before, person], source=Source(channel=via, user=by),
        )
        # one vote per person: two identities of one person racing append one vote
        appended = await self.store.append(
            thread.id, vote, claim=Claim(f"vote:{request.approval_id}:{person}"), wake=True)
        if not appended.ok:
            return await self._refuse(thread, request.approval_id, by, via, f"{person} has already approved "
                                      "this (one vote per person, whatever the channel)", person)
        # whoever appended last sees every vote before theirs: the quorum is never missed, and
        # the decision's claim makes the first vote that meets it the only one that decides
        thread = await self.store.load(thread.id)
        if earlier := thread.decisions.get(request.approval_id):
            return _already(request, earlier)
        people = self.approvals_so_far(thread, request)
        if len(people) >= quorum:
            return await self._record(thread.id, request, "approved", by, via, reason, person, people)
        text = votes_text(people, quorum)
        return Outcome("voted", f"Your approval is recorded: {text}; not run yet.", request, votes=tuple(people))

    async def screen(self, approval_id: str, by: str | None, via: str,
                     also: Sequence[str] = ()) -> ApprovalRequested | Outcome:
        """The request if `by` may decide it now, else what stops them, recorded as `decide`
        would record it (a refusal, an expiry). For a decision that needs more first (a reason)."""
        found = await self.find(approval_id)
        stop = await self._stop(found, approval_id, by, via, also)
        if stop is not None:
            return stop
        assert found is not None  # _stop refuses a missing approval
        return found[1]

    async def _stop(
        self, found: tuple[Thread, ApprovalRequested] | None, approval_id: str, by: str | None, via: str,
        also: Sequence[str] = (),
    ) -> Outcome | None:
        if found is None:
            return Outcome("not_found", f"no approval {approval_id}")
        thread, request = found
        if earlier := thread.decisions.get(approval_id):
            return _already(request, earlier)
        if self.clock() >= request.expires_at:
            return await self.expire(approval_id)
        if why := self.authorize(thread, request, by, also):
            return await self._refuse(thread, approval_id, by, via, why, self.person(by, also))
        return None

    async def _refuse(self, thread: Thread, approval_id: str, by: str | None, via: str, why: str,
                      person: str | None) -> Outcome:
        refusal = ApprovalRefused(
            approval_id=approval_id, by=by, via=via, reason=why, person=person,
            source=Source(channel=via, user=by),
        )
        await self.store.append(thread.id, refusal, wake=True)
        return Outcome("refused", f"Refused: {why}.", thread.approvals.get(approval_id))

    async def expire(self, approval_id: str) -> Outcome:
        found = await self.find(approval_id)
        if found is None:
            await self.store.forget_pending(approval_id)
            return Outcome("not_found", f"no approval {approval_id}")
        thread, request = found
        if earlier := thread.decisions.get(approval_id):
            await self.store.forget_pending(approval_id)
            return _already(request, earlier)
        outcome = await self._record(thread.id, request, "expired", None, "expiry", "")
        return Outcome("expired", "This approval expired; nothing was run.", request, outcome.decision) \
            if outcome.status == "decided" else outcome

    async def expire_due(self) -> int:
        due = await self.store.pending_approval_ids(due_before=self.clock())
        for approval_id in due:
            if await self._one_of_many(self.expire(approval_id), "expiring", approval_id) is False:
                await self.store.forget_pending(approval_id)
        return len(due)

    async def nudge_due(self) -> int:
        """Send the reminders and escalations that are due; each at most once, on any process."""
        keys = self.store.keys
        due = members(await self.store.redis.zrangebyscore(keys.approval_timers, "-inf", repr(self.clock())))
        for member in due:
            kind, _, approval_id = member.partition(":")
            if await self._one_of_many(self._nudge(kind, approval_id), f"the {kind} of", approval_id) \
                    is not None:
                await self.store.redis.zrem(keys.approval_timers, member)
        return len(due)

    async def _one_of_many(self, work: Awaitable[object], doing: str, approval_id: str) -> bool | None:
        """Run one approval's part of a sweep. A broken approval (its thread no longer loads) must
        not hold up the others: it is logged and skipped, and after SWEEP_ATTEMPTS sweeps given up
        (False) rather than retried, with a traceback, every few seconds for good. True once done,
        None while it is still retried. An outage stops the sweep instead."""
        try:
            await work
            self.failures.pop(approval_id, None)
            return True
        except REDIS_DOWN:
            raise
        except Exception:
            self.failures[approval_id] += 1
            if self.failures[approval_id] < SWEEP_ATTEMPTS:
                log.exception("%s approval %s failed; retried at the next sweep", doing, approval_id)
                return None
            log.error("%s approval %s failed %d times; the sweep gives it up (its thread is kept)",
                      doing, approval_id, SWEEP_ATTEMPTS)
            del self.failures[approval_id]
            return False

    async def _nudge(self, kind: str, approval_id: str) -> None:
        found = await self.find(approval_id)
        if found is None:
            return
        thread, request = found
        if approval_id in thread.decisions or self.clock() >= request.expires_at:
            return  # decided or expiring: the expiry sweep has it
        cls = ApprovalReminder if kind == "remind" else ApprovalEscalated
        # a reminder goes to the approvers in force (a removed one is not reminded)
        current = self.policy.who.contacts(self.policy.approvers_for(request.tool))
        approvers = current + escalated_to(thread, approval_id) if kind == "remind" else request.escalate_to
        event = cls(
            approval_id=approval_id, tool=request.tool, args=request.args, approvers=approvers,
            expires_at=request.expires_at, source=Source(channel="approvals"),
        )
        # wake: the worker renders it on the thread's channel
        await self.store.append(thread.id, event, claim=Claim(f"{kind}:{approval_id}"), wake=True)

    async def _record(
        self, thread_id: str, request: ApprovalRequested, decision: Decision, by: str | None, via: str,
        reason: str, person: str | None = None, approved_by: Sequence[str] = (),
    ) -> Outcome:
        event = ApprovalDecided(
            approval_id=request.approval_id, decision=decision, by=by, via=via, reason=reason,
            person=person, approved_by=list(approved_by), source=Source(channel=via, user=by),
        )
        appended = await self.store.append(
            thread_id, event, claim=decision_claim(request.approval_id), state="working", wake=True
        )
        await self.store.confirm(thread_id)  # with replicas required: no decision a failover loses
        if not appended.ok:
            thread = await self.store.load(thread_id)
            return _already(request, thread.decisions[request.approval_id])
        metrics.decided(decision, event.ts - request.ts)
        log.info("approval %s %s by %s via %s", request.approval_id, decision, by or "-", via,
                 extra={"thread_id": thread_id, "approval_id": request.approval_id, "event": event.type})
        return Outcome("decided", describe(event), request, event)


def approval_audience(thread: Thread, event: Event, via: str) -> list[str]:
    """Who hears of an approval event through channel `via`, wherever its thread lives: its
    approvers (an escalation's: the escalation list), or whoever answered through `via` and was
    refused. Each channel picks those it can reach (`Channel.contact`)."""
    if isinstance(event, (ApprovalRequested, ApprovalReminder, ApprovalEscalated)):
        return list(event.approvers)
    if isinstance(event, (ApprovalDecided, ApprovalVote)):
        return deciders(thread, event.approval_id)
    if isinstance(event, ApprovalRefused) and event.via == via:
        return [event.by or ""]
    return []


def deciders(thread: Thread, approval_id: str) -> list[str]:
    """Who could decide an approval: its approvers and those its escalations added."""
    request = thread.approvals.get(approval_id)
    return list(dict.fromkeys([*(request.approvers if request else []), *escalated_to(thread, approval_id)]))


def _already(request: ApprovalRequested, earlier: ApprovalDecided) -> Outcome:
    return Outcome("already_decided", f"Already decided: {describe(earlier)}", request, earlier)


def describe(decision: ApprovalDecided) -> str:
    if decision.decision == "expired":
        return "expired"
    reason = f": {decision.reason}" if decision.reason else ""
    by = decision.by
    if len(decision.approved_by) > 1:
        by = ", ".join(decision.approved_by)
    elif decision.person and decision.by and decision.person != decision.by.lower():
        by = f"{decision.person} ({decision.by})"
    return f"{decision.decision} by {by} via {decision.via}{reason}"

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
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from bot import metrics
from bot.events import (
    ApprovalDecided,
    ApprovalEscalated,
    ApprovalRefused,
    ApprovalReminder,
    ApprovalRequested,
    Decision,
    Event,
    Source,
    ToolCall,
)
from bot.outage import REDIS_DOWN
from bot.policy import Policy
from bot.store import Claim, Store, ThreadNotFound
from bot.thread import Thread

log = logging.getLogger("chatops.approvals")

SWEEP_ATTEMPTS = 3  # sweeps that may fail on one approval before they give it up

_APPROVAL_ID = re.compile(r"^([0-9a-f]{16})\.([0-9a-f]{8})$")

Status = Literal["decided", "already_decided", "refused", "expired", "not_found"]


def new_approval_id(thread_id: str) -> str:
    return f"{thread_id}.{secrets.token_hex(4)}"


def thread_of(approval_id: str) -> str | None:
    match = _APPROVAL_ID.match(approval_id)
    return match.group(1) if match else None


def decision_claim(approval_id: str) -> Claim:
    return Claim(f"decision:{approval_id}")


@dataclass(frozen=True)
class Outcome:
    status: Status
    message: str
    request: ApprovalRequested | None = None
    decision: ApprovalDecided | None = None


def may_decide(
    request: ApprovalRequested, user: str | None, escalated_to: Sequence[str] = (),
    talkers: Collection[str] = (),
) -> str | None:
    """Why `user` may not decide `request`, or None if they may. `escalated_to`: the approvers
    added by an escalation (see `escalated_to(thread, approval_id)`). With no approvers
    configured, anyone who may talk to the agent (`talkers`; empty: anyone) may decide."""
    who = (user or "").lower()
    if not who:
        return "the decision names no one"
    if request.approvers:
        if who not in request.approvers and who not in escalated_to:
            return f"{user} is not an approver of {request.tool}"
    elif talkers and who not in talkers and who not in escalated_to:
        return f"{user} may not talk to this agent, so may not decide its approvals"
    if request.two_person and request.requester and who == request.requester.lower():
        return f"{user} asked for this and the two-person rule needs someone else"
    return None


def escalated_to(thread: Thread, approval_id: str) -> list[str]:
    """Who an escalation recorded in the thread added to the approvers of `approval_id`."""
    return [who for e in thread.events if isinstance(e, ApprovalEscalated) and e.approval_id == approval_id
            for who in e.approvers]


class Approvals:
    def __init__(self, store: Store, policy: Policy, ttl: float, clock: Callable[[], float] = time.time):
        self.store = store
        self.policy = policy
        self.ttl = ttl
        self.clock = clock
        self.failures: Counter[str] = Counter()  # approval id -> sweeps that failed on it

    def request_for(self, thread: Thread, call: ToolCall) -> ApprovalRequested:
        tool_policy = self.policy.tool(call.tool)
        ttl = tool_policy.approval_ttl or self.ttl
        two_person = self.policy.two_person if tool_policy.two_person is None else tool_policy.two_person
        requester = thread.last_input.source.user if thread.last_input else None
        now = self.clock()
        remind_at = now + ttl - tool_policy.remind_before if tool_policy.remind_before else None
        escalate_at = now + tool_policy.escalate_after if tool_policy.escalate_after else None
        return ApprovalRequested(
            approval_id=new_approval_id(thread.id),
            call_id=call.call_id,
            tool=call.tool,
            args=call.args,
            requester=requester,
            approvers=sorted(self.policy.expand(self.policy.approvers_for(call.tool))),
            expires_at=now + ttl,
            two_person=two_person,
            # a timer due at once or after the deadline would tell nobody anything useful
            remind_at=remind_at if remind_at is not None and now < remind_at else None,
            escalate_at=escalate_at if escalate_at is not None and escalate_at < now + ttl else None,
            escalate_to=sorted(self.policy.expand(tool_policy.escalate_to)),
        )

    def authorize(self, thread: Thread, request: ApprovalRequested, user: str | None) -> str | None:
        """Why `user` may not decide `request` in `thread`, or None if they may."""
        talkers = self.policy.expand(self.policy.agent(thread.agent).users)
        return may_decide(request, user, escalated_to(thread, request.approval_id), talkers)

    async def find(self, approval_id: str) -> tuple[Thread, ApprovalRequested] | None:
        thread_id = thread_of(approval_id)
        if thread_id is None:
            return None
        try:
            thread = await self.store.load(thread_id)
        except ThreadNotFound:
            return None
        request = thread.approvals.get(approval_id)
        return (thread, request) if request else None

    async def decide(
        self, approval_id: str, approve: bool, by: str | None, via: str, reason: str = ""
    ) -> Outcome:
        found = await self.find(approval_id)
        if (stop := await self._stop(found, approval_id, by, via)) is not None:
            return stop
        assert found is not None
        decision: Decision = "approved" if approve else "rejected"
        return await self._record(found[0].id, found[1], decision, by, via, reason)

    async def screen(self, approval_id: str, by: str | None, via: str) -> ApprovalRequested | Outcome:
        """The request if `by` may decide it now, else what stops them, recorded as `decide`
        would record it (a refusal, an expiry). For a decision that needs more first (a reason)."""
        found = await self.find(approval_id)
        stop = await self._stop(found, approval_id, by, via)
        return stop if stop is not None or found is None else found[1]

    async def _stop(
        self, found: tuple[Thread, ApprovalRequested] | None, approval_id: str, by: str | None, via: str
    ) -> Outcome | None:
        if found is None:
            return Outcome("not_found", f"no approval {approval_id}")
        thread, request = found
        if earlier := thread.decisions.get(approval_id):
            return _already(request, earlier)
        if self.clock() >= request.expires_at:
            return await self.expire(approval_id)
        if why := self.authorize(thread, request, by):
            refusal = ApprovalRefused(
                approval_id=approval_id, by=by, via=via, reason=why, source=Source(channel=via, user=by)
            )
            await self.store.append(thread.id, refusal, wake=True)
            return Outcome("refused", f"Refused: {why}.", request)
        return None

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
        due = await self.store.redis.zrangebyscore(keys.approval_timers, "-inf", repr(self.clock()))
        for member in due:
            member = member.decode() if isinstance(member, bytes) else member
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
        approvers = request.approvers + escalated_to(thread, approval_id) if kind == "remind" \
            else request.escalate_to
        event = cls(
            approval_id=approval_id, tool=request.tool, args=request.args, approvers=approvers,
            expires_at=request.expires_at, source=Source(channel="approvals"),
        )
        # wake: the worker renders it on the thread's channel
        await self.store.append(thread.id, event, claim=Claim(f"{kind}:{approval_id}"), wake=True)

    async def _record(
        self, thread_id: str, request: ApprovalRequested, decision: Decision, by: str | None, via: str,
        reason: str,
    ) -> Outcome:
        event = ApprovalDecided(
            approval_id=request.approval_id, decision=decision, by=by, via=via, reason=reason,
            source=Source(channel=via, user=by),
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


def approver_addresses(thread: Thread, event: Event) -> list[str]:
    """The email addresses an approval event is for, wherever its thread lives: its approvers (an
    escalation's: the escalation list), or whoever answered by mail and was refused. They hear of
    it by mail, with a reply address that decides, even in a Slack or console thread."""
    if isinstance(event, (ApprovalRequested, ApprovalReminder, ApprovalEscalated)):
        people = list(event.approvers)
    elif isinstance(event, ApprovalDecided):
        people = deciders(thread, event.approval_id)
    elif isinstance(event, ApprovalRefused) and event.via == "email":
        people = [event.by or ""]
    else:
        people = []
    return list(dict.fromkeys(p.lower() for p in people if "@" in p))


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
    return f"{decision.decision} by {decision.by} via {decision.via}{reason}"

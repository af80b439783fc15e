"""The schedule channel: cron triggers from the policy file wake an agent in a new thread.

Every process may run the clock (`chatops run`, `chatops clock`): APScheduler 3.x with an
in-memory job store only says *when* to look. What is due is computed from the cron expression and
the latest fire time handled (kept in Redis), and a fire is one append with a claim on a thread
whose id is derived from the schedule's name and scheduled time: whichever process gets there
first fires it, the others find it taken (and log so). A fire missed while no process ran happens
on start if it is within the grace; older ones are recorded as missed, not run. Several missed
fires coalesce into one run (its `missed` says how many were skipped). If Redis is unreachable for
longer than the grace at a fire time, the clock keeps retrying in the background and, once Redis
is back, records the miss (or runs the fire, if still within the grace) like a start would.

Where results go: the thread's origin is channel "schedule" with the destination in its address,
and the `schedule` renderer forwards each visible event to the channels its `to` names (see
`ScheduleRenderer` for the contract). `ScheduleChannel` is what the composition root lists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from pydantic import model_validator

from bot import cron
from bot.channel import Address, Forwarder
from bot.doctor import DoctorCheck
from bot.events import Event, ScheduleFired, ScheduleMissed, Source
from bot.formatting import clock, format_event
from bot.intake import thread_id_for
from bot.outage import REDIS_ERRORS, stop_if_cancelled
from bot.policy import ConfigError, Schedule
from bot.runtime import Runtime
from bot.store import Appended, Claim
from bot.thread import Origin, State, Thread, ThreadMeta
from bot.verbs import Verb
from channels import schedule_doctor, schedule_keys, schedule_verbs

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("chatops.schedule")

CHANNEL = "schedule"
FIRE_CLAIM = Claim("fired")  # in the fire's own thread: one fire (or missed record) per time
RETRY_DELAY = 2.0
RECOVER_MAX_DELAY = 60.0  # the background retry after a long Redis outage backs off up to this


def fire_thread_id(name: str, scheduled_for: float) -> str:
    return thread_id_for(CHANNEL, f"{name}@{int(scheduled_for * 1000)}")


# keys of origins stored before `to` existed, each naming one channel's targets
_OLDER_KEYS = {"slack_channel": "slack", "emails": "email"}


class ScheduledThread(Address):
    """The origin address of a fire's thread: the schedule, and where its results go (`to`:
    channel -> its targets)."""

    schedule: str
    scheduled_for: float
    to: dict[str, list[str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _older_keys(cls, data: Any) -> Any:
        """An origin stored with `slack_channel` / `emails` (threads fired by older releases)
        reads as the `to` it meant."""
        if not isinstance(data, dict) or not any(k in data for k in _OLDER_KEYS) or data.get("to"):
            return data
        to: dict[str, list[str]] = {}
        for key, channel in _OLDER_KEYS.items():
            value = data.get(key)
            targets = [value] if isinstance(value, str) else list(value or [])
            if targets:
                to[channel] = targets
        return {**{k: v for k, v in data.items() if k not in _OLDER_KEYS}, "to": to}

    def title(self, thread: Thread) -> str:
        return f"{self.schedule} ({clock(self.scheduled_for)}): {thread.agent} agent"


def origin_for(schedule: Schedule, scheduled_for: float) -> Origin:
    address = ScheduledThread(schedule=schedule.name, scheduled_for=scheduled_for, to=schedule.to)
    return Origin(channel=CHANNEL, address=address.model_dump())


def check_agents(rt: Runtime) -> None:
    for i, schedule in enumerate(rt.policy.schedules):
        if schedule.agent not in rt.agents:
            raise ConfigError(
                f"setting 'schedules.{i}.agent' ({schedule.name}): no agent named {schedule.agent!r} "
                f"(agents: {', '.join(sorted(rt.agents))})"
            )


class Clock:
    """Fires the policy's schedules, once each across all processes."""

    def __init__(self, rt: Runtime, clock: Any = time.time) -> None:
        self.rt = rt
        self.clock = clock
        self.stats: Counter[str] = Counter()  # fired / taken / missed / tick
        self.seen: dict[str, float] = {}  # per schedule: the latest fire time this process looked at
        self.locks: dict[str, asyncio.Lock] = {}  # one catch_up at a time per schedule
        self.recovering: dict[str, asyncio.Task[None]] = {}

    def grace(self, schedule: Schedule) -> float:
        return self.rt.settings.schedule_grace if schedule.grace is None else schedule.grace

    async def run(self) -> None:
        check_agents(self.rt)
        # APScheduler logs every run at INFO; our own line says what a fire did
        logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
        scheduler = AsyncIOScheduler(timezone="UTC")
        for schedule in self.rt.policy.schedules:
            # no misfire limit and coalescing: what is due, and the grace, is decided in catch_up
            scheduler.add_job(self.tick, schedule.trigger(), args=[schedule.name], id=schedule.name,
                              misfire_grace_time=None, coalesce=True, max_instances=1)
        scheduler.start()
        log.info("clock started: %s", ", ".join(s.name for s in self.rt.policy.schedules))
        try:
            for schedule in self.rt.policy.schedules:
                await self.tick(schedule.name)  # what was missed while no process ran
            await asyncio.Event().wait()
        finally:
            scheduler.shutdown(wait=False)
            for task in self.recovering.values():
                task.cancel()
            await asyncio.gather(*self.recovering.values(), return_exceptions=True)

    async def tick(self, name: str) -> None:
        """Handle what is due for `name`; retried while Redis is unreachable, within the grace,
        then in the background until it is back."""
        schedule = self.rt.policy.schedule(name)
        assert schedule is not None
        self.stats["tick"] += 1
        started = self.clock()
        while True:
            try:
                await self.catch_up(schedule)
                return
            except REDIS_ERRORS as exc:
                stop_if_cancelled(exc)
                if self.clock() - started > self.grace(schedule):
                    log.error("schedule %s: Redis unreachable for longer than the grace (%s); retrying in "
                              "the background, to record what was due once it is back", name, exc)
                    self.recover_later(schedule)
                    return
                log.warning("schedule %s: Redis error (%s); retrying", name, exc)
                await asyncio.sleep(RETRY_DELAY)

    def recover_later(self, schedule: Schedule) -> None:
        task = self.recovering.get(schedule.name)
        if task is None or task.done():
            self.recovering[schedule.name] = asyncio.create_task(
                self.recover(schedule), name=f"schedule-recover-{schedule.name}")

    async def recover(self, schedule: Schedule) -> None:
        """catch_up with a bounded backoff until Redis answers: the fire given up on is then
        recorded as missed (or run, if within the grace), once, like on start."""
        delay = RETRY_DELAY
        while True:
            await asyncio.sleep(delay)
            try:
                await self.catch_up(schedule)
            except REDIS_ERRORS as exc:
                stop_if_cancelled(exc)
                delay = min(delay * 2, RECOVER_MAX_DELAY)
                log.warning("schedule %s: Redis still unreachable (%s); next try in %gs",
                            schedule.name, exc, delay)
                continue
            log.info("schedule %s: Redis is back; caught up", schedule.name)
            return

    async def catch_up(self, schedule: Schedule) -> Appended | None:
        async with self.locks.setdefault(schedule.name, asyncio.Lock()):
            return await self._catch_up(schedule)

    async def _catch_up(self, schedule: Schedule) -> Appended | None:
        redis, key = self.rt.redis, schedule_keys.last(self.rt.store.keys)
        now = self.clock()
        last = await redis.zscore(key, schedule.name)
        if last is None:  # first start with this schedule: nothing before now was missed
            await redis.zadd(key, {schedule.name: now}, nx=True)
            last = await redis.zscore(key, schedule.name)
        last = now if last is None else float(last)  # None: removed meanwhile (a reset)
        self._note_taken(schedule, last)
        latest, count = cron.due(schedule.trigger(), last, now)
        if latest is None:
            return None
        skipped = await self.uncovered(schedule, last, latest) if count > 1 else 0
        grace = self.grace(schedule)
        if now - latest <= grace:
            appended = await self.fire(schedule, latest, missed=skipped)
        else:
            appended = await self.record_missed(schedule, latest, skipped + 1, grace)
        self.seen[schedule.name] = max(latest, self.seen.get(schedule.name, latest))
        await redis.zadd(key, {schedule.name: latest}, gt=True)
        return appended

    def _note_taken(self, schedule: Schedule, last: float) -> None:
        """Fire times handled by another process since this one last looked: it competed for
        them too, and lost before it could even try."""
        seen = self.seen.get(schedule.name)
        self.seen[schedule.name] = last if seen is None else max(seen, last)
        if seen is None or last <= seen:
            return
        latest, count = cron.due(schedule.trigger(), seen, last)
        if latest is not None:
            self.stats["taken"] += count
            _log_taken(schedule.name, latest, count)

    async def uncovered(self, schedule: Schedule, after: float, before: float) -> int:
        """How many fire times in (after, before) no process handled: those after the latest one
        that has a thread (a fire or a missed record accounts for the times before it, as its
        `missed`). One pipelined round trip; at most cron.MAX_FIRES times are looked at."""
        times = cron.between(schedule.trigger(), after, before)
        found = await self.rt.store.exist([fire_thread_id(schedule.name, t) for t in times])
        handled = [i for i, exists in enumerate(found) if exists]
        return len(times) - (handled[-1] + 1 if handled else 0)

    async def fire(self, schedule: Schedule, scheduled_for: float, *, missed: int = 0,
                   user: str | None = None) -> Appended:
        """Start the schedule's thread for `scheduled_for`, unless some process already did."""
        event = ScheduleFired(
            schedule=schedule.name, scheduled_for=scheduled_for, text=schedule.message, missed=missed,
            source=Source(channel=CHANNEL, user=user or f"schedule:{schedule.name}",
                          external_id=f"{schedule.name}@{scheduled_for!r}"),
        )
        appended = await self._append(schedule, scheduled_for, event)
        self.stats["fired" if appended.ok else "taken"] += 1
        if appended.ok:
            log.info("schedule %s fired for %s (thread %s%s)", schedule.name, _clock(scheduled_for),
                     fire_thread_id(schedule.name, scheduled_for),
                     f", {missed} earlier missed fires coalesced" if missed else "")
        else:
            _log_taken(schedule.name, scheduled_for)
        return appended

    async def record_missed(self, schedule: Schedule, latest: float, count: int, grace: float) -> Appended:
        event = ScheduleMissed(schedule=schedule.name, scheduled_for=latest, missed=count, grace=grace,
                               source=Source(channel=CHANNEL, user=f"schedule:{schedule.name}"))
        appended = await self._append(schedule, latest, event)
        self.stats["missed" if appended.ok else "taken"] += 1
        if appended.ok:
            log.warning("schedule %s: %d fire(s) up to %s missed while no process ran; older than "
                        "the grace (%gs), so not run", schedule.name, count, _clock(latest), grace)
        else:
            _log_taken(schedule.name, latest)
        return appended

    async def _append(self, schedule: Schedule, scheduled_for: float, event: Event) -> Appended:
        thread_id = fire_thread_id(schedule.name, scheduled_for)
        meta = ThreadMeta(id=thread_id, agent=schedule.agent, origin=origin_for(schedule, scheduled_for),
                          created=self.clock())
        state: State = "working" if isinstance(event, ScheduleFired) else "idle"
        return await self.rt.store.append(thread_id, event, create=meta, claim=FIRE_CLAIM, state=state,
                                          wake=True)

    async def run_now(self, name: str, user: str | None = None) -> tuple[str, Appended]:
        """`chatops schedules run NAME`: fire now, through the same path as the clock."""
        schedule = self.rt.policy.schedule(name)
        if schedule is None:
            raise ConfigError(f"no schedule named {name!r} in the policy file")
        check_agents(self.rt)
        now = self.clock()
        return fire_thread_id(name, now), await self.fire(schedule, now, user=user)


class ScheduleRenderer:
    """Shows a scheduled thread's visible events at its destinations.

    The contract with the channels its `to` names: their renderer is a `bot.channel.Forwarder`,
    and each target is parsed by the channel itself (`Channel.target`, e.g. a Slack channel id, a
    mailbox). The forwarder renders `event` as it would for its own threads (approval buttons, an
    approval mail) and keeps what it needs to continue the conversation there (the Slack thread
    ts, the email Message-ID) keyed by `thread.id`. Where none is, the event is logged instead,
    and stays readable with `chatops threads show`. Approvers on channels it does not forward to
    are told by delivery (`relays_to`), as for any thread.
    """

    name = CHANNEL

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def relays_to(self, thread: Thread) -> list[str]:
        return list(ScheduledThread.model_validate(thread.meta.origin.address).to)

    async def render(self, thread: Thread, event: Event) -> None:
        failures: list[str] = []
        delivered = False
        for kind, targets in ScheduledThread.model_validate(thread.meta.origin.address).to.items():
            channel, forwarder = self.rt.channels.get(kind), self.rt.renderers.get(kind)
            if channel is None or not isinstance(forwarder, Forwarder):
                log.warning("schedule thread %s: no %s channel to deliver to %s", thread.id, kind,
                            ", ".join(targets))
                continue
            try:
                await forwarder.deliver_to([channel.target(t) for t in targets], thread, event)
                delivered = True
            except Exception as exc:
                failures.append(f"{kind}: {exc}")
        if not delivered:
            log.info("schedule thread %s: %s", thread.id, format_event(event) or event.type)
        if failures:
            raise RuntimeError("; ".join(failures))

    async def close(self) -> None:
        pass


class ScheduleChannel:
    """Schedules as a `bot.channel.Channel`: its service is the clock, its renderer forwards."""

    name = CHANNEL
    notifies_approvers = False  # the renderer forwards approvals to the destinations' channels

    settings = None  # no settings of its own (CHATOPS_SCHEDULE_GRACE is the core's)

    def configured(self) -> bool:
        return True

    def service(self, rt: Runtime, app: FastAPI) -> Awaitable[None] | None:
        """The clock, when the policy declares schedules."""
        return Clock(rt).run() if rt.policy.schedules else None

    def renderer(self, rt: Runtime) -> ScheduleRenderer:
        """Always installed: a scheduled thread outlives its schedule."""
        return ScheduleRenderer(rt)

    def target(self, name: str) -> Address:
        raise ValueError("a schedule is not a destination")

    def address(self, data: Mapping[str, Any]) -> ScheduledThread:
        return ScheduledThread.model_validate(data)

    def contact(self, person: str) -> Address | None:
        return None

    def checks(self) -> Sequence[DoctorCheck]:
        return [DoctorCheck("schedules", schedule_doctor.check)]

    def verbs(self) -> Sequence[Verb]:
        """`chatops clock`, `chatops schedules list|run`."""
        return schedule_verbs.verbs()


def _log_taken(name: str, scheduled_for: float, count: int = 1) -> None:
    earlier = f" (with {count - 1} earlier fire times)" if count > 1 else ""
    log.info("schedule %s at %s: taken by another process%s", name, _clock(scheduled_for), earlier)


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


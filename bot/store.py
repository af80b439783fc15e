"""Threads in Redis: fenced, deduplicated, O(1) appends; incremental loads; per-thread leases.

One append is one Lua script on the thread's own keys (atomic, cluster-safe) sent in one pipeline
with the updates of the global indexes and the wake-up for the workers: one round trip whatever
the thread's length.

On a Redis Cluster every command stays within one slot: scripts touch only the thread's `{id}`
keys, each index update is a command of its own. The cluster client sends a pipeline's commands
to their nodes concurrently, so the wake-up (an inbox shard, in another slot) goes after the
append instead: a worker woken first would find nothing new and go back to sleep.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError
from redis.typing import EncodableT, FieldT

from bot import metrics
from bot.events import ApprovalDecided, ApprovalRequested, Event, dump_event, parse_event
from bot.keys import Keys
from bot.outage import NotReplicated
from bot.redis_client import is_cluster, on_slot_master
from bot.thread import STATES, State, Thread, ThreadMeta

# KEYS: log, meta, claim
# ARGV: event, fence, claim?, claim ttl ms, meta json, now, state, event id, event if awaiting_human,
#       then any further events appended with it (all or none)
_APPEND = """
local log, meta, claim = KEYS[1], KEYS[2], KEYS[3]
local event = ARGV[1]
if ARGV[9] ~= '' and redis.call('HGET', meta, 'state') == 'awaiting_human' then event = ARGV[9] end
if ARGV[2] ~= '' and redis.call('HGET', meta, 'epoch') ~= ARGV[2] then
  return {-1, redis.call('LLEN', log)}
end
if ARGV[5] ~= '' then redis.call('HSETNX', meta, 'info', ARGV[5]) end
if redis.call('HEXISTS', meta, 'info') == 0 then return {-3, 0} end
if ARGV[3] == '1' then
  local ok
  if ARGV[4] ~= '0' then
    ok = redis.call('SET', claim, ARGV[8], 'NX', 'PX', ARGV[4])
  else
    ok = redis.call('SET', claim, ARGV[8], 'NX')
  end
  if not ok then return {-2, redis.call('LLEN', log)} end
end
local n = redis.call('RPUSH', log, event, unpack(ARGV, 10))
redis.call('HSET', meta, 'updated', ARGV[6])
if ARGV[7] ~= '' then redis.call('HSET', meta, 'state', ARGV[7]) end
return {n, n}
"""

# KEYS: lease, meta   ARGV: owner, ttl ms  -> fencing epoch, or 0 when someone else holds it
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('HINCRBY', KEYS[2], 'epoch', 1)
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('HGET', KEYS[2], 'epoch'))
end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

USAGE_KEPT = 1000  # model calls whose usage a thread keeps

Outcome = Literal["appended", "duplicate", "fenced", "missing"]
Replication = Literal["ok", "waiting", "lost", "fenced"]
_OUTCOMES: dict[int, Outcome] = {-1: "fenced", -2: "duplicate", -3: "missing"}


@dataclass(frozen=True)
class Appended:
    outcome: Outcome
    version: int

    @property
    def ok(self) -> bool:
        return self.outcome == "appended"


@dataclass(frozen=True)
class Claim:
    """Make an append happen at most once: a key in the thread's slot, with an optional expiry."""

    name: str
    ttl_seconds: float | None = None


class ThreadNotFound(LookupError):
    pass


class Store:
    def __init__(self, redis: Redis, keys: Keys, *, min_replicas: int = 0, replica_timeout: float = 1.0) -> None:
        self.redis = redis
        self.keys = keys
        self.min_replicas = min_replicas
        self.replica_timeout = replica_timeout
        self.cluster = is_cluster(redis)
        self._append = redis.register_script(_APPEND)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    # ---- writing ---------------------------------------------------------------------------

    async def append(
        self,
        thread_id: str,
        event: Event,
        *,
        create: ThreadMeta | None = None,
        claim: Claim | None = None,
        fence: int | None = None,
        state: State | None = None,
        wake: bool = False,
        answer: Event | None = None,
        followed_by: Sequence[Event] = (),
        usage: dict | None = None,
    ) -> Appended:
        """Append one event. `create` makes the thread if it does not exist yet; `claim` drops a
        second append with the same claim; `fence` refuses the append unless the caller still
        holds the thread's lease; `wake` asks a worker to advance the thread afterwards; `answer`
        is appended instead of `event` when the thread waits for a human (decided in the script,
        so it costs no extra round trip); `followed_by` are appended with `event`, atomically
        (the parallel calls of one model turn); `usage`, a model call's usage record, rides
        along to the thread's usage record (kept whatever the append's outcome)."""
        k = self.keys
        claim_key = k.claim(thread_id, claim.name) if claim else k.meta(thread_id)
        ttl_ms = int(claim.ttl_seconds * 1000) if claim and claim.ttl_seconds else 0
        now = time.time()
        script = (
            k.log(thread_id), k.meta(thread_id), claim_key,
            dump_event(event),
            "" if fence is None else str(fence),
            "1" if claim else "0",
            str(ttl_ms),
            create.model_dump_json() if create else "",
            repr(now),
            state or "",
            event.id,
            dump_event(answer) if answer is not None else "",
            *(dump_event(e) for e in followed_by),
        )
        try:
            code, version = await self._send_append(thread_id, event, script, now, state, wake, usage)
        except NoScriptError:  # the server lost its scripts (restart, SCRIPT FLUSH): load, resend
            await self.redis.script_load(_APPEND)  # the usage record was kept by the first send
            code, version = await self._send_append(thread_id, event, script, now, state, wake, None)
        appended = Appended(_OUTCOMES.get(code, "appended"), version)
        if appended.ok:
            metrics.appended(event, *followed_by)
        if not appended.ok:
            await self._unindex(thread_id, event, appended, state is not None)
        elif approval_id := getattr(event, "approval_id", None):
            await self._index_approval(thread_id, approval_id, event, version - 1 - len(followed_by))
        return appended

    async def _send_append(
        self, thread_id: str, event: Event, script: tuple, now: float, state: State | None, wake: bool,
        usage: dict | None,
    ) -> tuple[int, int]:
        """The append's pipeline: EVALSHA straight in it, not redis-py's Script, whose pipeline
        sends SCRIPT EXISTS first (a second round trip). The commands after the script only add
        to indexes or wake a worker: running them again after a NOSCRIPT is harmless."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.execute_command("EVALSHA", self._append.sha, 3, *script)  # not .evalsha: the cluster pipeline blocks it
        pipe.zadd(k.threads, {thread_id: now})
        if state:
            self._index_state(pipe, thread_id, state, now)
        if isinstance(event, ApprovalRequested):
            pipe.zadd(k.pending_approvals, {event.approval_id: event.expires_at})
            timers = {f"{kind}:{event.approval_id}": at for kind, at in
                      (("remind", event.remind_at), ("escalate", event.escalate_at)) if at is not None}
            if timers:
                pipe.zadd(k.approval_timers, timers)
        elif isinstance(event, ApprovalDecided):
            pipe.zrem(k.pending_approvals, event.approval_id)
            pipe.zrem(k.approval_timers, f"remind:{event.approval_id}", f"escalate:{event.approval_id}")
        if wake and not self.cluster:
            pipe.xadd(k.inbox_of(thread_id), {"thread": thread_id})
        if usage is not None:
            self._record_usage(pipe, thread_id, usage)
        code, version = (await pipe.execute(raise_on_error=True))[0]
        if wake and self.cluster:
            await self.wake(thread_id)
        return code, version

    async def _index_approval(self, thread_id: str, approval_id: str, event: Event, position: int) -> None:
        """Where the events about an approval are in the log, so that deciding reads them alone.
        Written after the append (its position is known only then): a hint, checked on reading,
        and a missing entry means a full read (see `load_approval`)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(self.keys.approval_events(thread_id, approval_id), position)
        if isinstance(event, ApprovalRequested):
            pipe.sadd(self.keys.open_approvals(thread_id), approval_id)
        elif isinstance(event, ApprovalDecided):
            pipe.srem(self.keys.open_approvals(thread_id), approval_id)
        await pipe.execute()

    def _index_state(self, pipe: Pipeline, thread_id: str, state: str, now: float) -> None:
        pipe.zadd(self.keys.threads_in(state), {thread_id: now})
        for other in STATES:
            if other != state:
                pipe.zrem(self.keys.threads_in(other), thread_id)

    async def _unindex(self, thread_id: str, event: Event, appended: Appended, restate: bool) -> None:
        """Undo the index updates that rode with an append the script refused (they cannot be
        made conditional without a transaction across slots): rare, so more round trips."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        if appended.outcome == "missing":
            pipe.zrem(k.threads, thread_id)
            for state in STATES:
                pipe.zrem(k.threads_in(state), thread_id)
        elif restate:  # the state index moved, the thread's state did not: put it back
            current = await self.redis.hget(k.meta(thread_id), "state")
            self._index_state(pipe, thread_id, _s(current) if current else "working", time.time())
        if isinstance(event, ApprovalRequested):
            pipe.zrem(k.pending_approvals, event.approval_id)
            pipe.zrem(k.approval_timers, f"remind:{event.approval_id}", f"escalate:{event.approval_id}")
        if len(pipe):
            await pipe.execute()

    async def wake(self, thread_id: str) -> None:
        await self.redis.xadd(self.keys.inbox_of(thread_id), {"thread": thread_id})

    async def set_state(self, thread_id: str, state: State) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.keys.meta(thread_id), "state", state)
        self._index_state(pipe, thread_id, state, time.time())
        await pipe.execute()

    async def settle(
        self, thread_id: str, state: State, *, rendered: int | None = None, release: str | None = None,
        ack: tuple[str, str, bytes] | None = None,
    ) -> None:
        """The end of a wake-up in one round trip: the thread's state (and how far it was
        rendered), its lease released if `release` (the owner) still holds it, and the wake-up
        (inbox shard, consumer group, entry id) acknowledged and deleted. Each part is idempotent, so the
        pipeline is simply resent after a NOSCRIPT."""
        try:
            await self._send_settle(thread_id, state, rendered, release, ack)
        except NoScriptError:
            await self.redis.script_load(_RELEASE)
            await self._send_settle(thread_id, state, rendered, release, ack)

    async def _send_settle(
        self, thread_id: str, state: State, rendered: int | None, release: str | None,
        ack: tuple[str, str, bytes] | None,
    ) -> None:
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        fields: dict[FieldT, EncodableT] = {"state": state}
        if rendered is not None:
            fields["rendered"] = rendered
        pipe.hset(k.meta(thread_id), mapping=fields)
        self._index_state(pipe, thread_id, state, time.time())
        if release is not None:
            pipe.execute_command("EVALSHA", self._release.sha, 1, k.lease(thread_id), release)
        if ack is not None:
            inbox, group, entry_id = ack
            pipe.xack(inbox, group, entry_id)
            pipe.xdel(inbox, entry_id)
        await pipe.execute(raise_on_error=True)

    async def set_marker(self, thread_id: str, name: str, value: int) -> None:
        await self.redis.hset(self.keys.meta(thread_id), name, value)

    # ---- replication (at most once across a failover) -------------------------------------

    async def replicated(self, thread_id: str, *, claim: str | None = None, value: str | None = None,
                         fence: int | None = None) -> Replication:
        """Whether everything this thread's master holds so far reached `min_replicas` replicas,
        so that a replica promoted by a failover has it too. WAIT only covers its own
        connection's writes, so it waits for a fresh write in the thread's slot: the replication
        stream is ordered, so that write's acknowledgement covers everything before it. With
        `claim`, first check that the claim still holds `value` (a failover can lose a write
        made before the WAIT) and with `fence` that the lease is still ours."""
        if self.min_replicas == 0:  # a single Redis: no failover to guard against, no round trip
            return "ok"
        k = self.keys
        acked_key = k.acked(thread_id)
        epoch, held, _, acked = await on_slot_master(  # on a cluster, the thread's slot's master
            self.redis, acked_key,
            ("HGET", k.meta(thread_id), "epoch"),
            ("GET", k.claim(thread_id, claim) if claim else acked_key),
            ("SET", acked_key, repr(time.time()), "PX", 60_000),
            ("WAIT", self.min_replicas, int(self.replica_timeout * 1000)),
        )
        if fence is not None and int(epoch or 0) != fence:
            return "fenced"
        if claim is not None and (held is None or _s(held) != value):
            return "lost"
        return "ok" if acked >= self.min_replicas else "waiting"

    async def confirm(self, thread_id: str) -> None:
        """Raise NotReplicated (an outage: refuse, the sender retries) unless what was appended
        for this thread reached the replicas: a human is told nothing that could vanish."""
        if self.min_replicas and await self.replicated(thread_id) != "ok":
            raise NotReplicated(f"{self.min_replicas} Redis replica(s) did not acknowledge in "
                                f"{self.replica_timeout:g}s")

    # ---- reading ---------------------------------------------------------------------------

    async def load(self, thread_id: str, cached: Thread | None = None) -> Thread:
        """The thread, reading only the events `cached` does not have yet (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        self._read(pipe, thread_id, cached)
        info, raw = await pipe.execute()
        if info is None:
            raise ThreadNotFound(thread_id)
        return _loaded(info, raw, cached)

    def _read(self, pipe: Pipeline, thread_id: str, cached: Thread | None) -> None:
        pipe.hget(self.keys.meta(thread_id), "info")
        pipe.lrange(self.keys.log(thread_id), cached.version if cached else 0, -1)

    async def load_approval(self, thread_id: str, approval_id: str) -> Thread:
        """The thread with only the events about `approval_id` (its request, refusals, nudges and
        decision): what deciding needs, in a few reads whatever the thread's length. Falls back to
        the whole thread when the index does not know the request (threads older than it)."""
        return await self.load_approvals(thread_id, [approval_id])

    async def load_open_approvals(self, thread_id: str) -> Thread:
        """The thread with only the events of its undecided approvals (as `load_approval`)."""
        ids = sorted(_s(a) for a in await self.redis.smembers(self.keys.open_approvals(thread_id)))
        return await self.load_approvals(thread_id, ids)

    async def load_approvals(self, thread_id: str, approval_ids: list[str]) -> Thread:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.keys.meta(thread_id), "info")
        for approval_id in approval_ids:
            pipe.lrange(self.keys.approval_events(thread_id, approval_id), 0, -1)
        info, *lists = await pipe.execute()
        if info is None:
            raise ThreadNotFound(thread_id)
        positions = sorted({int(p) for found in lists for p in found})
        pipe = self.redis.pipeline(transaction=False)
        for position in positions:
            pipe.lindex(self.keys.log(thread_id), position)
        wanted = set(approval_ids)
        events = [e for e in (parse_event(r) for r in await pipe.execute() if r is not None)
                  if getattr(e, "approval_id", None) in wanted]
        requested = {e.approval_id for e in events if isinstance(e, ApprovalRequested)}
        if requested != wanted:
            return await self.load(thread_id)  # not (all) indexed: read it all
        thread = Thread(meta=ThreadMeta.model_validate_json(info))
        thread.extend(events)
        return thread

    async def find_event(self, thread_id: str, event_id: str) -> Event | None:
        """One event by its id (a scan of the raw log, no parsing: for the rare `read_event`)."""
        try:
            position = await self._position_after(self.keys.log(thread_id), event_id)
        except LookupError:
            return None
        raw = await self.redis.lindex(self.keys.log(thread_id), position - 1)
        return parse_event(raw) if raw is not None else None

    def _record_usage(self, pipe: Pipeline, thread_id: str, record: dict) -> None:
        """Append a model call's usage to the thread's usage record (the latest USAGE_KEPT)."""
        pipe.rpush(self.keys.usage(thread_id), json.dumps(record, separators=(",", ":")))
        pipe.ltrim(self.keys.usage(thread_id), -USAGE_KEPT, -1)

    async def usage(self, thread_id: str, last: int = USAGE_KEPT) -> list[dict]:
        return [json.loads(r) for r in await self.redis.lrange(self.keys.usage(thread_id), -last, -1)]

    async def length(self, thread_id: str) -> int:
        return int(await self.redis.llen(self.keys.log(thread_id)))

    async def page(self, thread_id: str, after: str | None, limit: int) -> tuple[int, int, list[Event]]:
        """(total, position of the first, events): up to `limit` events after the event whose id
        is `after` (from the start if None). Finding `after` reads the log's raw bytes up to it
        (no parsing); a client that pages on reads it once per page."""
        log = self.keys.log(thread_id)
        start = 0
        if after is not None:
            start = await self._position_after(log, after)
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(log)
        pipe.lrange(log, start, start + limit - 1)
        total, raw = await pipe.execute()
        return int(total), start, [parse_event(r) for r in raw]

    async def _position_after(self, log: str, event_id: str) -> int:
        needle = f'"id":"{event_id}"'.encode()
        chunk = 1000
        start = 0
        while True:
            raw = await self.redis.lrange(log, start, start + chunk - 1)
            for i, item in enumerate(raw):
                if needle in item:
                    return start + i + 1
            if len(raw) < chunk:
                raise LookupError(event_id)
            start += chunk

    async def meta(self, thread_id: str) -> ThreadMeta:
        """The thread's metadata alone (its origin: where to tell its humans)."""
        info = await self.redis.hget(self.keys.meta(thread_id), "info")
        if info is None:
            raise ThreadNotFound(thread_id)
        return ThreadMeta.model_validate_json(info)

    async def exists(self, thread_id: str) -> bool:
        return bool(await self.redis.hexists(self.keys.meta(thread_id), "info"))

    async def exist(self, thread_ids: Sequence[str]) -> list[bool]:
        """Whether each thread exists, in one round trip."""
        if not thread_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for thread_id in thread_ids:
            pipe.hexists(self.keys.meta(thread_id), "info")
        return [bool(found) for found in await pipe.execute()]

    def queue_meta(self, pipe: Pipeline, thread_id: str) -> None:
        """Queue the read of the thread's meta on `pipe`, for a caller that reads more in the same
        round trip: its result is the meta as JSON (`ThreadMeta.model_validate_json`), or None."""
        pipe.hget(self.keys.meta(thread_id), "info")

    async def marker(self, thread_id: str, name: str) -> int:
        value = await self.redis.hget(self.keys.meta(thread_id), name)
        return int(value or 0)

    async def list_threads(self, state: str | None = None, limit: int = 100) -> list[dict]:
        """The most recently active threads (in `state`, if given: from that state's index,
        checked against each thread's own state), newest first."""
        index = self.keys.threads_in(state) if state else self.keys.threads
        rows: list[dict] = []
        start = 0
        while len(rows) < limit:
            ids = await self.redis.zrevrange(index, start, start + limit - 1)
            rows += [r for r in await self._rows(ids) if not state or r["state"] == state]
            if len(ids) < limit:
                break
            start += limit
        return rows[:limit]

    async def row(self, thread_id: str) -> dict | None:
        """A thread's summary from its meta (no log read), as in `list_threads`."""
        rows = await self._rows([thread_id])
        return rows[0] if rows else None

    async def _rows(self, ids: list) -> list[dict]:
        pipe = self.redis.pipeline(transaction=False)
        for tid in ids:
            pipe.hmget(self.keys.meta(_s(tid)), "info", "state", "updated")
        rows = []
        for info, state, updated in await pipe.execute():
            if info is None:
                continue
            meta = json.loads(info)
            rows.append({
                "id": meta["id"],
                "agent": meta["agent"],
                "state": _s(state) if state else "working",
                "origin": meta["origin"],
                "updated": float(updated or meta["created"]),
                "created": meta["created"],
            })
        return rows

    async def pending_approval_ids(self, due_before: float | None = None) -> list[str]:
        top = "+inf" if due_before is None else repr(due_before)
        return members(await self.redis.zrangebyscore(self.keys.pending_approvals, "-inf", top))

    async def forget_pending(self, approval_id: str) -> None:
        await self.redis.zrem(self.keys.pending_approvals, approval_id)

    # ---- leases ----------------------------------------------------------------------------

    async def acquire(self, thread_id: str, owner: str, ttl: float) -> int:
        """The fencing epoch if `owner` now holds the thread's lease, else 0."""
        keys = [self.keys.lease(thread_id), self.keys.meta(thread_id)]
        return int(await self._acquire(keys=keys, args=[owner, int(ttl * 1000)]))

    async def acquire_and_load(self, thread_id: str, owner: str, ttl: float,
                               cached: Thread | None = None) -> tuple[int, Thread | None]:
        """`acquire`, and the thread read right after it in the same round trip (as `load`:
        only what `cached` lacks). The thread is None if the lease was not acquired (then
        `cached` is untouched) or the thread does not exist."""
        try:
            fence, info, raw = await self._send_acquire_and_load(thread_id, owner, ttl, cached)
        except NoScriptError:  # the server lost its scripts: load, resend (acquiring is idempotent)
            await self.redis.script_load(_ACQUIRE)
            fence, info, raw = await self._send_acquire_and_load(thread_id, owner, ttl, cached)
        if not fence or info is None:
            return int(fence), None
        return int(fence), _loaded(info, raw, cached)

    async def _send_acquire_and_load(self, thread_id: str, owner: str, ttl: float,
                                     cached: Thread | None) -> list:
        pipe = self.redis.pipeline(transaction=False)
        pipe.execute_command("EVALSHA", self._acquire.sha, 2, self.keys.lease(thread_id),
                             self.keys.meta(thread_id), owner, int(ttl * 1000))
        self._read(pipe, thread_id, cached)
        return await pipe.execute(raise_on_error=True)

    async def renew(self, thread_id: str, owner: str, ttl: float) -> bool:
        keys = [self.keys.lease(thread_id)]
        return bool(await self._renew(keys=keys, args=[owner, int(ttl * 1000)]))

    async def release(self, thread_id: str, owner: str) -> None:
        await self._release(keys=[self.keys.lease(thread_id)], args=[owner])


def _loaded(info: bytes, raw: list[bytes], cached: Thread | None) -> Thread:
    """`cached` (or a new thread from its meta `info`) with the log's new entries `raw` applied."""
    thread = cached or Thread(meta=ThreadMeta.model_validate_json(info))
    for r in raw:
        thread.apply(parse_event(r), len(r))
    return thread


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def members(rows: list[Any]) -> list[str]:
    """The members of a sorted-set range read without scores (redis-py types the reply as either)."""
    return [_s(m) for m in rows]


def scored(rows: list[Any]) -> dict[str, float]:
    """Member -> score of a sorted-set range read with scores."""
    return {_s(m): float(score) for m, score in rows}

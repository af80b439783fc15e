"""The inbox: consuming the wake-up streams (one per shard) as a consumer group, and claiming.

Each entry names a thread to advance; it is acknowledged once the executor settled the thread.
A worker that dies leaves its entries pending: another one claims them after `claim_idle` and,
since the step is derived from the log, carries on exactly where the dead one stopped. An entry
that keeps failing with a bug (a poison entry) is given up after MAX_DELIVERIES, visibly.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import ResponseError

from bot import metrics
from bot.executor import Executor, LeaseLost, WakeUp
from bot.outage import REDIS_DOWN, Backoff, config_error, stop_if_cancelled
from bot.runtime import Runtime

log = logging.getLogger("chatops.worker.inbox")

GROUP = "workers"  # the consumer group of every inbox shard
MAX_DELIVERIES = 5  # a wake-up that failed this often with a bug is given up, visibly


class Inbox:
    def __init__(self, rt: Runtime, name: str, executor: Executor, outage: Backoff) -> None:
        self.rt = rt
        self.name = name  # this worker's consumer name in the group
        self.executor = executor
        self.outage = outage  # shared with the worker's other loops: one log line per back-off step
        self.slots = asyncio.Semaphore(rt.settings.worker_concurrency)
        self.tasks: set[asyncio.Task] = set()  # the threads being advanced

    async def ensure_group(self) -> bool:
        """Create the consumer group of each inbox shard unless it exists; True if one was created."""
        created = False
        for inbox in self.rt.store.keys.inboxes():
            try:
                await self.rt.redis.xgroup_create(inbox, GROUP, id="0", mkstream=True)
                created = True
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        return created

    def loops(self) -> list:
        """The coroutines to run: one blocking read per shard (the shards may live on different
        cluster nodes), and the claiming of what dead workers left pending."""
        return [*(self.read_loop(inbox) for inbox in self.rt.store.keys.inboxes()), self.claim_loop()]

    async def read_loop(self, inbox: str | None = None) -> None:
        """Read one inbox shard and advance the thread each new entry names."""
        inbox = inbox or self.rt.store.keys.inbox
        while True:
            stop_if_cancelled()
            try:
                reply = await self.rt.redis.xreadgroup(
                    GROUP, self.name, {inbox: ">"}, count=100, block=1000
                )
                self.outage.ok()
            except REDIS_DOWN as exc:
                metrics.REDIS_OUTAGES.labels("inbox").inc()
                await self.outage.failed("reading the inbox", exc)
                continue
            except ResponseError as exc:
                if str(exc).startswith("UNBLOCKED"):  # a failover demoted the master under the read
                    metrics.REDIS_OUTAGES.labels("inbox").inc()
                    await self.outage.failed("reading the inbox", exc)
                    continue
                await self._recreate_lost_group(exc)  # NOGROUP: Redis lost the group (or a failover did)
                continue
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    await self._start_advancing(inbox, entry_id, fields)

    async def claim_loop(self) -> None:
        """Take over entries a dead worker left pending."""
        idle_ms = int(self.rt.settings.claim_idle * 1000)
        while True:
            await asyncio.sleep(self.rt.settings.claim_idle / 2)
            for inbox in self.rt.store.keys.inboxes():
                stop_if_cancelled()
                try:
                    _cursor, entries, *_ = await self.rt.redis.xautoclaim(
                        inbox, GROUP, self.name, idle_ms, "0-0", count=100
                    )
                except REDIS_DOWN as exc:
                    await self.outage.failed("claiming pending entries", exc)
                    continue
                except ResponseError as exc:
                    await self._recreate_lost_group(exc)
                    continue
                for entry_id, fields in entries:
                    if fields:  # None when the entry was deleted meanwhile
                        log.info("claimed %s left pending by another worker", _s(entry_id))
                        await self._start_advancing(inbox, entry_id, fields)

    async def _recreate_lost_group(self, exc: ResponseError) -> None:
        """The inbox or its group vanished: Redis came back empty (restarted without persistence,
        or flushed). Recreate the group and carry on; say once that what it held is lost."""
        if (fatal := config_error(exc)) is not None:
            raise fatal from exc
        if not any(sign in str(exc) for sign in ("NOGROUP", "no longer exists")):
            raise exc
        try:
            created = await self.ensure_group()
        except REDIS_DOWN as down:
            await self.outage.failed("recreating the inbox's group", down)
            return
        if created:
            log.warning("the inbox's consumer group was gone (%s): Redis lost its data, so the "
                        "requests and threads stored before are lost; recreated it", exc)

    async def _start_advancing(self, inbox: str, entry_id: bytes, fields: dict) -> None:
        """Advance the entry's thread in a task of its own, once one of the worker's
        CHATOPS_WORKER_CONCURRENCY slots is free."""
        await self.slots.acquire()
        task = asyncio.create_task(self._advance_and_acknowledge(inbox, entry_id, _s(fields[b"thread"])))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _advance_and_acknowledge(self, inbox: str, entry_id: bytes, thread_id: str) -> None:
        try:
            wake = WakeUp(ack=(inbox, GROUP, entry_id))
            if await self.executor.advance(thread_id, wake) and not wake.done:
                await self._acknowledge(inbox, entry_id)
        except REDIS_DOWN as exc:
            metrics.REDIS_OUTAGES.labels("step").inc()
            log.warning("advancing thread %s failed (%s); the entry stays pending", thread_id, exc)
        except Exception as exc:
            log.exception("advancing thread %s failed; the entry stays pending", thread_id)
            await self._give_up_if_poison(inbox, entry_id, thread_id, exc)
        finally:
            self.slots.release()

    async def _acknowledge(self, inbox: str, entry_id: bytes) -> None:
        pipe = self.rt.redis.pipeline(transaction=False)
        pipe.xack(inbox, GROUP, entry_id)
        pipe.xdel(inbox, entry_id)
        await pipe.execute()

    async def _give_up_if_poison(self, inbox: str, entry_id: bytes, thread_id: str, exc: Exception) -> None:
        """A wake-up that failed MAX_DELIVERIES times with a bug (not an outage) would be claimed
        and retried forever, each time perhaps a paid model call, while the human hears nothing:
        record the error, tell the human, and let the entry go."""
        try:
            [pending] = await self.rt.redis.xpending_range(
                inbox, GROUP, min=entry_id, max=entry_id, count=1
            )
            if pending["times_delivered"] < MAX_DELIVERIES:
                return
            await self.executor.record_failure(thread_id, exc)
            await self._acknowledge(inbox, entry_id)
            log.error("gave up on thread %s after %d failed attempts", thread_id, MAX_DELIVERIES)
        except (LeaseLost, TimeoutError):
            pass  # another worker holds the thread: it is not stuck
        except Exception:
            log.exception("could not record the failure of thread %s", thread_id)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

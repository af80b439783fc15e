"""The worker: takes wake-ups from the inbox streams and advances threads, one step at a time.

It wires three parts, each a job: the inbox (bot/inbox.py) consumes the streams and claims what
dead workers left pending; the executor (bot/executor.py) holds a thread's lease and executes its
steps until it waits; delivery (bot/delivery.py) shows the new visible events on the channels.
Only then is the inbox entry acknowledged. The worker also runs the approval sweep.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket

from bot.delivery import Delivery
from bot.executor import Executor
from bot.inbox import Inbox
from bot.outage import REDIS_DOWN, Backoff, stop_if_cancelled
from bot.runtime import Runtime

log = logging.getLogger("chatops.worker")


class Worker:
    def __init__(self, rt: Runtime, name: str | None = None) -> None:
        self.rt = rt
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.outage = Backoff(log)  # shared by the loops: one log line per back-off step
        self.delivery = Delivery(rt)
        self.executor = Executor(rt, self.name, self.delivery)
        self.inbox = Inbox(rt, self.name, self.executor, self.outage)

    async def run(self) -> None:
        while True:  # a worker started while Redis is down waits for it
            stop_if_cancelled()
            try:
                await self.inbox.ensure_group()
                self.outage.ok()
                break
            except REDIS_DOWN as exc:
                await self.outage.failed("creating the inbox's group at start", exc)
        # ensure_group() may have swallowed a cancel (redis-py retried the command): the loops
        # below are new tasks that would never see it, and gather() would wait forever
        stop_if_cancelled()
        log.info("worker %s started", self.name)
        loops = [asyncio.create_task(loop) for loop in (*self.inbox.loops(), self.sweep_loop())]
        try:
            await asyncio.gather(*loops)
        finally:
            for task in loops:  # stopping: take nothing new
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self._finish_in_flight()

    async def _finish_in_flight(self) -> None:
        """Let the threads being advanced reach a pause within the shutdown grace: a runbook half
        way through then records its result instead of becoming an unknown outcome for a human.
        What is still running after it stays pending in the inbox for the next worker."""
        grace = self.rt.settings.shutdown_grace
        tasks = self.inbox.tasks
        for task in list(self.executor.model_waits):  # a model call is redone by the next worker, for free
            task.cancel()
        if tasks and grace > 0:
            log.info("stopping: waiting up to %gs for %d thread(s) in progress", grace, len(tasks))
            await asyncio.wait(list(tasks), timeout=grace)
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # returns once all have stopped

    async def sweep_loop(self) -> None:
        """Expire approvals whose deadline passed (also while no process ran: the first sweep runs
        at start), and send due reminders and escalations."""
        while True:
            stop_if_cancelled()
            try:
                await self.rt.approvals.expire_due()
                await self.rt.approvals.nudge_due()
            except REDIS_DOWN as exc:
                await self.outage.failed("the approval sweep", exc)
                continue
            except Exception:  # one bad approval must not stop the worker; the next sweep retries
                log.exception("approval sweep failed")
            await asyncio.sleep(self.rt.settings.sweep_interval)

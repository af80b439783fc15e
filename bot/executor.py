"""The executor: advances a thread, one step at a time, while holding its lease.

For each wake-up: hold the thread's lease, then repeat `next_step(thread)` -> execute -> append
until the thread waits or is idle; then deliver what the humans should see and settle the thread
(its state saved, its lease released, its inbox entry acknowledged, in one round trip). Each
kind of step (model turns, tool runs, approvals, commands, replies) is executed here; the cache
of parsed threads and their model contexts lives here too.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable

from bot import compaction, metrics
from bot import step as steps
from bot.agent import Agent
from bot.commands import CommandError, help_text, parse_command
from bot.context import ContextBuilder
from bot.delivery import Delivery
from bot.events import (
    AgentReply,
    ContextCompacted,
    Error,
    Event,
    HumanQuestion,
    Notice,
    ResultStatus,
    Source,
    ToolCall,
    ToolResult,
    ToolStarted,
    new_id,
)
from bot.logs import bind, log_context
from bot.model import ModelTurn, ModelUnavailable
from bot.outage import REDIS_DOWN, NotReplicated, stop_if_cancelled
from bot.prompts import render
from bot.runtime import Runtime
from bot.store import Appended, Claim
from bot.thread import Thread
from bot.tools import ToolContext, ToolError

log = logging.getLogger("chatops.worker.executor")

MAX_STEPS_PER_WAKE = 200  # a guard against a reducer bug, far above the step budget
# The thread cache is bounded by bytes (CHATOPS_WORKER_CACHE_MB), estimated from each thread's JSON
# size and event count: measured (tracemalloc), a parsed event costs about 1,550 bytes beyond its
# text, its text about its length, and the model context up to 0.6 times the JSON more.
BYTES_FACTOR = 2
PER_EVENT = 2000
CACHE_OVERHEAD = 4096  # per cached thread: its meta, lock, index entries
REPLICA_RETRY = 1.0  # seconds between two checks that a tool's start marker reached the replicas


class LeaseLost(Exception):
    pass


@dataclass
class WakeUp:
    """One wake-up being handled: its lease's owner and inbox entry (`ack`: stream, group, entry
    id), released and acknowledged with the thread's settling, in one round trip (`done` once
    they are)."""

    ack: tuple[str, str, bytes] | None = None
    owner: str = ""
    done: bool = False
    loaded: bool = False  # the thread was read with the lease: the first step needs no read


class _LocalLock:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Executor:
    def __init__(self, rt: Runtime, name: str, delivery: Delivery) -> None:
        self.rt = rt
        self.name = name  # the worker's: each lease owner starts with it
        self.delivery = delivery
        self.cache: OrderedDict[str, Thread] = OrderedDict()
        self.cache_limit = int(rt.settings.worker_cache_mb * 1024 * 1024)
        self.cache_bytes = 0  # estimated memory of the cached threads and their contexts
        self.cached_sizes: dict[str, int] = {}
        self.fresh: set[str] = set()  # cached threads known to match the log (no reload needed)
        # each cached thread's context, grown event by event: a model step costs O(new events)
        self.contexts: dict[str, ContextBuilder] = {}
        self.locks: dict[str, _LocalLock] = {}  # serializes this process's tasks per thread
        self.model_waits: set[asyncio.Task] = set()  # thread tasks waiting for the model
        self.limits = steps.Limits(
            model_available=rt.model is not None,
            step_budget=rt.settings.step_budget,
            error_budget=rt.settings.error_budget,
        )
        self.data_dir = rt.settings.data_dir.resolve()  # once, not per tool step
        self.systems: dict[Agent, str] = {}  # each agent's rendered system prompt

    # ---- one thread ----------------------------------------------------------------------------

    async def advance(self, thread_id: str, wake: WakeUp | None = None) -> bool:
        """Advance the thread until it waits or is idle (settling `wake`: its lease released and
        its inbox entry acknowledged with the thread's state); False if another worker holds the
        thread for too long. A lost lease is not an error: the new holder carries on."""
        entry = self.locks.setdefault(thread_id, _LocalLock())
        entry.users += 1
        wake = wake or WakeUp()
        try:
            with log_context(thread_id=thread_id):
                async with entry.lock, self.lease(thread_id, wake, read=True) as fence:
                    await self._steps_until_settled(thread_id, fence, wake)
        except LeaseLost:
            metrics.LEASE_LOSSES.inc()
            log.warning("lost the lease of thread %s; another worker carries on", thread_id)
        except TimeoutError:
            return False
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self.locks[thread_id]
        return True

    async def record_failure(self, thread_id: str, exc: Exception) -> None:
        """Give up on the thread's current request after a bug: record the error, tell the
        human, and leave the thread idle. Raises LeaseLost or TimeoutError if another worker
        holds the thread (then it is not stuck)."""
        async with self.lease(thread_id) as fence:  # no other worker's turn in between
            await self._give_up(thread_id, exc, fence)

    async def _give_up(self, thread_id: str, exc: Exception, fence: int) -> None:
        error = Error(kind="internal_error", message=f"{type(exc).__name__}: {exc}"[:500])
        reply = AgentReply(text="Something went wrong on my side and I stopped working on this "
                                "request; the error is recorded in the thread. Try again, or ask "
                                "whoever runs me to look at the logs.")
        appended = await self.rt.store.append(thread_id, error, followed_by=[reply], fence=fence, state="idle")
        if appended.outcome == "fenced":
            raise LeaseLost(thread_id)
        self.fresh.discard(thread_id)
        try:
            await self._settle(await self.rt.store.load(thread_id))
        except Exception:  # what fails may be reading the log itself: tell the human from the meta
            thread = Thread(meta=await self.rt.store.meta(thread_id))
            thread.extend([error, reply])
            await self.delivery.show_on_origin(thread, reply)

    @asynccontextmanager
    async def lease(self, thread_id: str, wake: WakeUp | None = None, read: bool = False) -> AsyncIterator[int]:
        """Hold the thread's lease; released on leaving unless `wake` was settled (which released
        it in the same round trip). With `read`, the first try to acquire also reads the
        thread into the cache, in the same round trip (else the first step reads it)."""
        store, ttl = self.rt.store, self.rt.settings.lease_ttl
        wake = wake or WakeUp()
        owner = wake.owner = f"{self.name}:{secrets.token_hex(4)}"
        deadline = time.monotonic() + 2 * ttl
        if read:
            fence, thread = await store.acquire_and_load(thread_id, owner, ttl, self.cache.get(thread_id))
            if thread is not None:
                self._cache(thread)
                wake.loaded = True
        else:
            fence = await store.acquire(thread_id, owner, ttl)
        while not fence:  # later tries only acquire: a held lease may be held long
            if time.monotonic() > deadline:
                raise TimeoutError(thread_id)
            await asyncio.sleep(0.05)
            fence = await store.acquire(thread_id, owner, ttl)
        renew = asyncio.create_task(self._renew_lease_until_released(thread_id, wake, ttl))
        try:
            yield fence
        finally:
            renew.cancel()
            if not wake.done:
                await store.release(thread_id, owner)

    async def _renew_lease_until_released(self, thread_id: str, wake: WakeUp, ttl: float) -> None:
        owner = wake.owner
        while True:
            await asyncio.sleep(ttl / 3)
            stop_if_cancelled()
            try:
                renewed = await self.rt.store.renew(thread_id, owner, ttl)
            except REDIS_DOWN as exc:
                stop_if_cancelled(exc)
                log.warning("renewing the lease of %s failed (%s); retrying", thread_id, exc)
                continue
            if not renewed:
                if not wake.done:  # else we released it ourselves
                    log.warning("lease of %s expired while working", thread_id)
                return

    async def load(self, thread_id: str) -> Thread:
        return self._cache(await self.rt.store.load(thread_id, self.cache.get(thread_id)))

    def _cache(self, thread: Thread) -> Thread:
        """Keep a thread just read from the log as the worker's fresh copy."""
        thread_id = thread.id
        self.fresh.add(thread_id)
        self.cache[thread_id] = thread
        self.cache.move_to_end(thread_id)
        self._account_cache_size(thread)
        return thread

    def _account_cache_size(self, thread: Thread) -> None:
        """Count a cached thread's (new) size; evict the least recently used threads beyond the
        cache's bytes (an evicted thread is read from Redis again when it is next woken)."""
        size = thread.size * BYTES_FACTOR + thread.version * PER_EVENT + CACHE_OVERHEAD
        self.cache_bytes += size - self.cached_sizes.get(thread.id, 0)
        self.cached_sizes[thread.id] = size
        while self.cache_bytes > self.cache_limit and len(self.cache) > 1:
            evicted, _ = self.cache.popitem(last=False)
            self.cache_bytes -= self.cached_sizes.pop(evicted, 0)
            self.contexts.pop(evicted, None)
            self.fresh.discard(evicted)

    def _model_context(self, thread: Thread) -> ContextBuilder:
        """The thread's context builder, with every event of the thread folded in."""
        builder = self.contexts.get(thread.id)
        if builder is None or builder.count > thread.version or builder.base is not thread.compacted:
            builder = self.contexts[thread.id] = ContextBuilder(self.rt.settings.tool_output_limit,
                                                                thread.compacted)
        builder.extend(thread.events)
        return builder

    async def _context_within_budget(self, thread: Thread, system: str, tools: list, fence: int) -> tuple[list, int]:
        """The messages of the next model call within the token budget (CHATOPS_CONTEXT_TOKENS),
        compacting older events into a summary when needed (bot/compaction.py); and the
        estimated tokens of the request."""
        budget = self.rt.settings.context_tokens
        schemas = [t.schema() for t in tools]
        context = self._model_context(thread)  # the builder counts the messages' bytes as it goes
        tokens = compaction.request_tokens(system, schemas, context.size)
        if tokens <= budget:
            return context.messages, tokens
        fixed = compaction.request_tokens(system, schemas, [])
        keep = max(int(budget * (compaction.TARGET - compaction.SUMMARY_SHARE)) - fixed, budget // 20)
        for _ in range(3):  # the estimate of a tail is rough: cut deeper if it was not enough
            start = thread.compacted.upto if thread.compacted else 0
            upto = compaction.cut(thread.events, start, keep, self.rt.settings.tool_output_limit)
            if upto is None:
                break
            event = ContextCompacted(upto=upto, summary=compaction.summarize(thread.events, upto, budget),
                                     tokens_before=tokens)
            await self._append(thread, event, fence)
            if thread.compacted is not event:
                break  # another append came first: the next call compacts from the reloaded log
            log.info("thread %s: context compacted (%d tokens, budget %d): events before %d summarized",
                     thread.id, tokens, budget, upto)
            context = self._model_context(thread)
            tokens = compaction.request_tokens(system, schemas, context.size)
            if tokens <= budget:
                break
            keep //= 2
        return context.messages, tokens

    async def _steps_until_settled(self, thread_id: str, fence: int, end: WakeUp) -> None:
        for n in range(MAX_STEPS_PER_WAKE):
            stop_if_cancelled()  # a worker asked to stop starts no further step
            if not await self.step(thread_id, fence, wake=n == 0 and not end.loaded, end=end):
                return
        log.error("thread %s did not settle after %d steps", thread_id, MAX_STEPS_PER_WAKE)

    async def step(self, thread_id: str, fence: int, *, wake: bool = False, end: WakeUp | None = None) -> bool:
        """Run one step of a thread whose lease we hold. False once it waits or is idle (then its
        new visible events are rendered and its state saved, with `end`'s lease released and its
        entry acknowledged). The first step of a wake-up reads the log, since whatever woke us was
        appended by someone else."""
        thread = self.cache.get(thread_id) if thread_id in self.fresh and not wake else None
        thread = thread or await self.load(thread_id)
        bind(agent=thread.agent)
        agent = self.rt.agents.get(thread.agent)
        if agent is None:  # e.g. an agent removed while its threads live on: say so once per input
            if thread.needs_agent:
                await self._append(thread, AgentReply(text=f"There is no agent {thread.agent!r} any more."), fence)
            await self._settle(thread, end)
            return False
        await agent.prepare()  # MCP servers: started lazily, once per process
        step = steps.next_step(thread, agent, time.time(), self.limits, self.rt.policy)
        if isinstance(step, (steps.Wait, steps.Idle)):
            await self._settle(thread, end)
            return False
        started = time.monotonic()
        await self._execute_timed(step, thread, fence)
        outcome = thread.events[-1].type if thread.id in self.fresh and thread.events else "appended"
        log.info("thread %s agent %s: %s -> %s (%.2f s)", thread.id, agent.name, _what_ran(step),
                 outcome, time.monotonic() - started)
        return True

    async def _settle(self, thread: Thread, end: WakeUp | None = None) -> None:
        """Deliver the thread's new visible events, then save its state, how far it is
        delivered, and release `end`'s lease and acknowledge its entry, in one round trip."""
        rendered = await self._show(thread)
        await self.rt.store.settle(thread.id, thread.state, rendered=rendered,
                                   release=end.owner if end else None, ack=end.ack if end else None)
        if end is not None:
            end.done = True

    async def _append(self, thread: Thread, event: Event, fence: int | None, claim: Claim | None = None,
                      usage: dict | None = None) -> Appended:
        appended = await self.rt.store.append(thread.id, event, fence=fence, claim=claim, usage=usage)
        if appended.outcome == "fenced":
            raise LeaseLost(thread.id)
        self._track_own_append(thread, event, appended)
        return appended

    async def _append_all(self, thread: Thread, events: list[Event], fence: int, usage: dict | None = None,
                          claim: Claim | None = None) -> Appended:
        first, *rest = events
        appended = await self.rt.store.append(thread.id, first, fence=fence, claim=claim, followed_by=rest,
                                              usage=usage)
        if appended.outcome == "fenced":
            raise LeaseLost(thread.id)
        self._track_own_append(thread, events, appended)
        return appended

    async def _append_calls(self, thread: Thread, calls: list[ToolCall], fence: int, usage: dict | None = None) -> None:
        """Append new calls; when the first one runs next (no approval, valid arguments), record
        its start in the same append and run it: durable before the handler, as a separate
        tool_started would be, one round trip less. The fence makes the start ours alone: the
        call and its start are born together, so no other worker can have started it. Never
        folded with a result: a result's append is unfenced and retried after the handler ran."""
        agent = self.rt.agents[thread.agent]
        # with replicas to wait for, a start keeps its own claim: the failover check reads it
        fold = not thread.open_calls and not self.rt.store.min_replicas
        run = steps.runs_at_once(agent, calls, self.rt.policy) if fold else None
        events: list[Event] = [*calls, ToolStarted(call_id=run.call.call_id)] if run else list(calls)
        appended = await self._append_all(thread, events, fence, usage)
        if run is not None and appended.ok:
            await self._run_started_tool(thread, run.call, run.args)

    def _track_own_append(self, thread: Thread, events: Event | list[Event], appended: Appended) -> None:
        """Keep the cached thread in step with our own append, saving a reload, when the log's new
        length shows nothing else was appended meanwhile; else reload before the next step. An
        input a channel appends later comes with its own wake-up."""
        events = events if isinstance(events, list) else [events]
        if appended.ok and appended.version == thread.version + len(events):
            thread.extend(events)
            self.fresh.add(thread.id)
            if self.cache.get(thread.id) is thread:
                self._account_cache_size(thread)
        else:
            self.fresh.discard(thread.id)

    async def _show(self, thread: Thread) -> int | None:
        """Deliver the thread's new visible events; how far it is delivered now, for the caller
        to save (None: no channel shows it)."""
        shown = await self.delivery.show_new_events(thread)
        if shown.failed:  # the failure was appended: the cached thread lacks it
            self.fresh.discard(thread.id)
        return shown.upto

    # ---- executing a step ----------------------------------------------------------------------

    async def _execute_timed(self, step: steps.Step, thread: Thread, fence: int) -> None:
        with metrics.STEPS.labels(type(step).__name__).time():
            await self._execute_step(step, thread, fence)

    async def _execute_step(self, step: steps.Step, thread: Thread, fence: int) -> None:
        match step:
            case steps.RunTool(call, args):
                await self._start_and_run_tool(thread, call, args, fence)
            case steps.RequestApproval(call, args):
                request = self.rt.approvals.request_for(thread, call, args)
                tool = self.rt.agents[thread.agent].tool(call.tool)
                if tool is not None and tool.about:  # what the approver reads about an MCP tool
                    request = request.model_copy(update={"about": tool.about})
                if (await self._append(thread, request, fence)).ok:
                    log.info("approval %s requested for %s", request.approval_id, call.tool,
                             extra={"approval_id": request.approval_id, "event": request.type})
            case steps.ExpireApproval(approval_id):
                self.fresh.discard(thread.id)
                await self.rt.approvals.expire(approval_id)
            case steps.Resolve(call, status, output):
                result = ToolResult(call_id=call.call_id, output=output, status=status)
                await self._append(thread, result, fence, Claim(f"result:{call.call_id}"))
            case steps.Recover(call):
                await self._recover_interrupted_run(thread, call, fence)
            case steps.AskHuman(question, call_id):
                await self._append(thread, HumanQuestion(question=question, call_id=call_id), fence)
            case steps.CallModel():
                await self._call_model(thread, fence)
            case steps.RunCommand(text):
                await self._run_command(thread, text, fence)
            case steps.Reply(text, error):
                if error:
                    await self._append(thread, Error(kind=error, message=text), fence)
                await self._append(thread, AgentReply(text=text), fence)

    async def _start_and_run_tool(self, thread: Thread, call: ToolCall, args: dict, fence: int) -> None:
        marker = ToolStarted(call_id=call.call_id)
        started = await self._append(thread, marker, fence, Claim(f"run:{call.call_id}"))
        if not started.ok:
            return  # it was started before: the next step recovers it, never runs it again
        await self._wait_until_start_replicated(thread, call, marker, fence)
        await self._run_started_tool(thread, call, args)

    async def _run_started_tool(self, thread: Thread, call: ToolCall, args: dict) -> None:
        """Run a call whose tool_started is in the log (and on the replicas) with its validated
        arguments (exactly what an approver saw), and record its result."""
        tool = self.rt.agents[thread.agent].tool(call.tool)
        assert tool is not None
        ctx = ToolContext(thread.id, call.call_id, self.data_dir, call.source.user, self.rt.store,
                          self.rt.secret_env)
        status: ResultStatus = "ok"
        output = ""
        began = time.monotonic()
        approval_id = thread.approval_of_call.get(call.call_id)
        log.info("tool %s started", call.tool, extra={"event": "tool_started", "approval_id": approval_id})
        try:
            output = await tool.handler(tool.validate(args), ctx)  # exactly what was approved
        except ToolError as exc:
            status, output = "error", str(exc)
        except Exception as exc:  # a bug in a handler must not stall the thread
            log.exception("tool %s failed in thread %s", call.tool, thread.id)
            status, output = "error", f"internal error in {call.tool}: {type(exc).__name__}: {exc}"
        metrics.TOOL_RUNS.labels(call.tool, status).observe(time.monotonic() - began)
        log.info("tool %s finished: %s", call.tool, status, extra={"event": "tool_result", "approval_id": approval_id})
        result = ToolResult(call_id=call.call_id, output=output, status=status)
        # No fence: the tool ran, so its result must be recorded whoever holds the lease now; and
        # kept trying through a Redis outage (the claim makes a repeated append a no-op), else a
        # finished run would become an unknown outcome.
        # With replicas required, until they have it: a failover must not lose a finished run.
        while True:
            try:
                await self._append(thread, result, None, Claim(f"result:{call.call_id}"))
                if await self.rt.store.replicated(thread.id) == "ok":
                    return
                log.warning("the result of %s is not on the replicas yet; retrying", call.call_id)
            except REDIS_DOWN as exc:
                stop_if_cancelled(exc)
                log.warning("recording the result of %s failed (%s); retrying", call.call_id, exc)
                await asyncio.sleep(0.5)

    async def _wait_until_start_replicated(self, thread: Thread, call: ToolCall, marker: ToolStarted, fence: int) -> None:
        """At most once across a failover: the handler runs only once its start marker is on
        CHATOPS_REDIS_MIN_REPLICAS replicas, so that a promoted replica knows it started. Until
        then it waits, retrying (and says so once in the thread). If a failover lost the marker
        (or the lease moved on), it never runs here: the entry stays pending and the thread
        resumes from what the new master holds."""
        told = False
        while True:
            stop_if_cancelled()
            try:
                state = await self.rt.store.replicated(thread.id, claim=f"run:{call.call_id}",
                                                       value=marker.id, fence=fence)
            except REDIS_DOWN as exc:
                stop_if_cancelled(exc)
                log.warning("confirming the start of %s failed (%s); retrying", call.call_id, exc)
                state = "waiting"
            if state == "ok":
                return
            if state == "fenced":
                raise LeaseLost(thread.id)
            if state == "lost":
                raise NotReplicated(f"the start marker of {call.call_id} was lost in a failover")
            if not told:
                told = await self._say_not_started(thread, call, fence)
            await asyncio.sleep(REPLICA_RETRY)

    async def _say_not_started(self, thread: Thread, call: ToolCall, fence: int) -> bool:
        text = (f"{call.tool} has not started yet: the Redis replicas have not confirmed its start, "
                "and it only runs once they do (so a failover cannot run it twice). I keep retrying.")
        try:
            await self._append(thread, AgentReply(text=text), fence, Claim(f"unconfirmed:{call.call_id}"))
            await self._show(thread)
        except REDIS_DOWN as exc:
            log.warning("could not say that %s waits for replicas: %s", call.call_id, exc)
            return False
        metrics.REPLICA_WAITS.inc()
        log.warning("tool %s of thread %s waits for Redis replicas", call.tool, thread.id)
        return True

    async def _recover_interrupted_run(self, thread: Thread, call: ToolCall, fence: int) -> None:
        args = ", ".join(f"{k}={v}" for k, v in call.args.items())
        note = (
            f"The run of {call.tool}({args}) started but the worker stopped before it finished. "
            "Its outcome is unknown and it was not run again."
        )
        result = ToolResult(call_id=call.call_id, output=note, status="unknown")
        question = f"{note} Please check whether it took effect and tell me how to continue."
        # One append: a worker killed (or a lease lost) between a separate result and question
        # left a resolved call with no question, which the next step answered with a reply and
        # left idle, the unknown outcome handed to nobody.
        await self._append_all(thread, [result, HumanQuestion(question=question)], fence,
                               claim=Claim(f"result:{call.call_id}"))

    async def _run_command(self, thread: Thread, text: str, fence: int) -> None:
        agent = self.rt.agents[thread.agent]
        user = thread.last_input.source if thread.last_input else Source()
        try:
            command = parse_command(text, agent)
        except CommandError as exc:
            await self._append(thread, AgentReply(text=str(exc)), fence)
            return
        call = ToolCall(
            call_id=new_id("cmd"), tool=command.tool, args=command.args, turn=new_id("turn"),
            origin="command", source=user,
        )
        await self._append_calls(thread, [call], fence)

    async def _call_model(self, thread: Thread, fence: int) -> None:
        assert self.rt.model is not None
        agent = self.rt.agents[thread.agent]
        system = self.systems.get(agent)
        if system is None:
            system = self.systems[agent] = render(agent.prompt, agent=agent.name, commands=help_text(agent))
        messages, estimated = await self._context_within_budget(thread, system, agent.model_tools, fence)
        try:
            turn = await self._await_model_noting_slowness(
                thread, fence, self.rt.model.next_turn(system, agent.model_tools, messages))
        except ModelUnavailable as exc:
            log.warning("model unavailable for thread %s: %s", thread.id, exc)
            error = Error(kind="model_unavailable", message=str(exc))
            await self._append_all(thread, [error, AgentReply(text=_unavailable(exc, thread, agent))], fence)
            return
        usage = _usage_record(turn.usage, estimated)  # rides with the append of the answer
        if turn.tool_uses:
            calls = [
                ToolCall(call_id=use.id, tool=use.name, args=use.input, turn=turn.id,
                         text=turn.text if i == 0 else "")
                for i, use in enumerate(turn.tool_uses)
            ]
            await self._append_calls(thread, calls, fence, usage)  # all of the turn or none of it
        elif turn.stop_reason == "refusal":
            await self._append(thread, AgentReply(text="The model declined this request."), fence, usage=usage)
        elif turn.text:
            await self._append(thread, AgentReply(text=turn.text), fence, usage=usage)
        else:
            await self._append_all(thread, [Error(kind="model_empty", message=f"stop_reason={turn.stop_reason}"),
                                            AgentReply(text="The model returned an empty answer.")], fence, usage)

    async def _await_model_noting_slowness(self, thread: Thread, fence: int, call: Awaitable[ModelTurn]) -> ModelTurn:
        """Await the model; if it is slow, tell the human once that the bot is still working. A
        worker that is stopping cancels these waits at once (nothing has happened yet that
        would be lost: the next worker asks the model again)."""
        task = asyncio.ensure_future(call)
        me = asyncio.current_task()
        assert me is not None
        self.model_waits.add(me)
        try:
            done, _ = await asyncio.wait({task}, timeout=self.rt.settings.model_slow_notice)
            if not done:
                notice = Notice(text="Still working on it: the model is slow to answer.")
                await self._append(thread, notice, fence)
                await self._show(thread)
            return await task
        finally:
            self.model_waits.discard(me)
            task.cancel()



def _usage_record(usage: dict[str, int], estimated: int) -> dict:
    """A model call's entry in the thread's usage record: its tokens, with the share of input
    tokens read from the prompt cache."""
    read = usage.get("cache_read_input_tokens", 0)
    total = usage.get("input_tokens", 0) + read + usage.get("cache_creation_input_tokens", 0)
    return {**usage, "ts": time.time(), "estimated_input_tokens": estimated,
            "cached_fraction": round(read / total, 4) if total else 0.0}

def _unavailable(exc: ModelUnavailable, thread: Thread, agent: Agent) -> str:
    """What the human reads when the model cannot be reached: with the data an agent fetched
    for the model (the digest's table), that data, unsummarized."""
    fetched = agent.prefetch and thread.turn_origin == "command" and not thread.open_calls
    if fetched:
        return f"I could not reach the model ({exc}), so here is the data without a summary:\n" \
               + steps.command_summary(thread)
    return f"I could not reach the model ({exc}). Nothing was run. Try again later, or use an exact command (/help)."


def _what_ran(step: steps.Step) -> str:
    """A step in a few words, for the one log line per step."""
    match step:
        case steps.RunTool(call) | steps.RequestApproval(call) | steps.Recover(call):
            return f"{type(step).__name__} {call.tool}"
        case steps.Resolve(call, status, _):
            return f"Resolve {call.tool} {status}"
        case steps.RunCommand(text):
            return f"RunCommand {text.split()[0] if text.split() else ''}"
    return type(step).__name__

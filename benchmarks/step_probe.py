"""One round of our step loop, run as its own process against a source tree given on PYTHONPATH:
this branch, or a baseline checkout (e.g. the main branch) measured the same way in the same run.

    PYTHONPATH=<tree> python benchmarks/step_probe.py REDIS_URL ENDLESS_URL SCRIPTED_URL THREADS STEPS RUNS LENGTHS...

Prints JSON: seconds per step at each length (counted in tool calls; a step is half a tool call:
the model's step and the tool's), the model SDK's own time excluded; and the scripted work (intake, 20 tool steps, approval decision, resume, reply) with
every write of the flow counted. Only the `bot` API both trees share is used.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import bench_agent  # this script's directory

from bot.events import Source, ToolCall, ToolResult, ToolStarted, UserMessage, new_id
from bot.intake import new_thread_id
from bot.runtime import Runtime
from bot.settings import Settings
from bot.thread import Origin, ThreadMeta
from bot.wiring import default_wiring
from bot.worker import Worker

USER = Source(channel="api", user="bench")


class Timer:
    """Around the SDK's `messages.create`: the stub's time is not our step loop's."""

    def __init__(self, resource: Any, parent: Timer | None = None) -> None:
        self.resource, self.total, self.parent = resource, 0.0, parent

    async def create(self, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await self.resource.create(**kwargs)
        finally:
            (self.parent or self).total += time.perf_counter() - t0

    @property
    def with_raw_response(self) -> Timer:  # how bot/model.py calls it (older trees: `create`)
        return Timer(self.resource.with_raw_response, self)


async def start(redis_url: str, model_url: str) -> tuple[Runtime, Worker, Timer]:
    s = Settings(_env_file=None, redis_url=redis_url, key_prefix=f"bench-{uuid.uuid4().hex[:8]}:",
                 data_dir=Path(tempfile.mkdtemp(prefix="chatops-bench-data-")), policy_file=None,
                 anthropic_api_key="bench-key", anthropic_base_url=model_url, api_token=None,
                 step_budget=100_000, model_retries=0, model_timeout=30.0)
    rt = await Runtime.start(s, default_wiring())
    rt.agents["bench"] = bench_agent.build()
    timer = Timer(rt.model.client.messages)
    rt.model.client.messages = timer  # type: ignore[misc]
    worker = Worker(rt)
    await worker.inbox.ensure_group()
    return rt, worker, timer


async def prefill(rt: Runtime, calls: int) -> str:
    """A thread of `calls` tool calls with realistic outputs (call, start, result each), then a
    new message; written in a few large appends (the prefill is not measured)."""
    thread_id = new_thread_id()
    meta = ThreadMeta(id=thread_id, agent="bench", origin=Origin(channel="api"), created=time.time())
    await rt.store.append(thread_id, UserMessage(text="check api", source=USER), create=meta)
    events: list[Any] = []
    for step in range(calls):
        call_id = new_id("toolu")
        events += [ToolCall(call_id=call_id, tool="noop", args={"service": "api", "step": step}, turn=new_id("msg")),
                   ToolStarted(call_id=call_id), ToolResult(call_id=call_id, output=bench_agent.output(step))]
    events.append(UserMessage(text="and again", source=USER))
    for i in range(0, len(events), 300):
        first, *rest = events[i:i + 300]
        await rt.store.append(thread_id, first, followed_by=rest)
    return thread_id


async def drive(worker: Worker, timer: Timer, thread_id: str, fence: int, limit: int = 10**6) -> list[float]:
    samples = []
    for n in range(limit):
        before, t0 = timer.total, time.perf_counter()
        if not await worker.executor.step(thread_id, fence, wake=n == 0):
            break
        samples.append(time.perf_counter() - t0 - (timer.total - before))
    return samples


async def step_overhead(worker: Worker, timer: Timer, calls: int, threads: int, steps: int) -> list[float]:
    """Per thread: our time over `steps` steps divided by two steps per tool call completed (a
    model step and a tool step, as LangGraph's agent and tools nodes). Per tool call, not per
    `Worker.step`, since a branch that runs a tool within the model's step does fewer, larger
    steps."""
    samples: list[float] = []
    for _ in range(threads):
        thread_id = await prefill(worker.rt, calls)
        fence = await worker.rt.store.acquire(thread_id, "bench", 300)
        before = len((await worker.executor.load(thread_id)).results)  # the worker's cache is warm
        spent = sum(await drive(worker, timer, thread_id, fence, steps))
        done = len((await worker.rt.store.load(thread_id)).results) - before
        samples.append(spent / (2 * done))
    return samples


async def scripted(worker: Worker, timer: Timer) -> float:
    """Intake -> 20 tool steps -> approval requested; decision recorded -> resume -> reply:
    every write of the flow, as LangGraph's figure counts its input and resume writes."""
    rt = worker.rt
    t0 = time.perf_counter()
    thread_id = new_thread_id()
    await rt.intake.message(thread_id, agent="bench", origin=Origin(channel="api"),
                            text="check api twenty times, then roll it back", source=USER)
    intake = time.perf_counter() - t0
    fence = await rt.store.acquire(thread_id, "bench", 300)
    before = await drive(worker, timer, thread_id, fence)
    [request] = (await rt.store.load(thread_id)).pending_approvals()
    t1 = time.perf_counter()
    assert (await rt.approvals.decide(request.approval_id, True, "alice", "bench")).status == "decided"
    decide = time.perf_counter() - t1
    after = await drive(worker, timer, thread_id, fence)
    assert (await rt.store.load(thread_id)).state == "idle"
    await rt.store.release(thread_id, "bench")
    return intake + sum(before) + decide + sum(after)


async def main(redis_url: str, endless: str, gated: str, threads: int, steps: int, runs: int,
               lengths: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rt, worker, timer = await start(redis_url, endless)
    try:
        for calls in lengths:
            out[f"step_{calls}"] = await step_overhead(worker, timer, calls, threads, steps)
    finally:
        await rt.close()
    rt, worker, timer = await start(redis_url, gated)
    try:
        out["scripted"] = [await scripted(worker, timer) for _ in range(runs)]
        out["append_round_trips"] = await append_round_trips(rt)
    finally:
        await rt.close()
    return out


async def append_round_trips(rt: Runtime, appends: int = 200) -> float:
    """Requests per append, counted with INFO commandstats: one pipeline per EVALSHA, plus each
    SCRIPT EXISTS / LOAD or EVAL sent on its own (this server serves no one else meanwhile)."""
    thread_id = new_thread_id()
    meta = ThreadMeta(id=thread_id, agent="bench", origin=Origin(channel="api"), created=time.time())
    await rt.store.append(thread_id, UserMessage(text="hi", source=USER), create=meta)
    await rt.redis.config_resetstat()
    for i in range(appends):
        await rt.store.append(thread_id, ToolResult(call_id=f"toolu_{i}", output="ok"))
    stats = await rt.redis.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    sent = sum(calls.get(c, 0) for c in ("evalsha", "eval", "script|exists", "script|load"))
    return sent / appends


if __name__ == "__main__":
    redis_url, endless, gated, threads, steps, runs, *lengths = sys.argv[1:]
    try:
        from bot.loop import run  # this branch: uvloop; a baseline without it runs asyncio's loop
    except ImportError:
        run = asyncio.run
    figures = run(main(redis_url, endless, gated, int(threads), int(steps), int(runs), [int(n) for n in lengths]))
    print(json.dumps(figures))

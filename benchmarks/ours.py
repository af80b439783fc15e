"""Our side of the benchmark: the step loop, resume, Redis bytes, concurrency, context size."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks import bench_agent
from benchmarks.env import SDKTimer
from bot.context import build_messages, serialized
from bot.events import Source, ToolCall, ToolResult, ToolStarted, UserMessage, new_id
from bot.intake import new_thread_id
from bot.runtime import Runtime
from bot.thread import Origin, Thread, ThreadMeta
from bot.worker import Worker

USER = Source(channel="api", user="bench")


async def new_thread(rt: Runtime, text: str, agent: str = "bench") -> str:
    thread_id = new_thread_id()
    await rt.intake.message(thread_id, agent=agent, origin=Origin(channel="api"), text=text, source=USER)
    return thread_id


async def prefill(rt: Runtime, length: int) -> str:
    """A thread of about `length` events: tool calls with realistic outputs, then a new message."""
    thread_id = new_thread_id()
    meta = ThreadMeta(id=thread_id, agent="bench", origin=Origin(channel="api"), created=time.time())
    await rt.store.append(thread_id, UserMessage(text="check api", source=USER), create=meta)
    n, step = 1, 0
    while n < length - 3:
        call_id, turn = new_id("toolu"), new_id("msg")
        for event in (
            ToolCall(call_id=call_id, tool="noop", args={"service": "api", "step": step}, turn=turn),
            ToolStarted(call_id=call_id),
            ToolResult(call_id=call_id, output=bench_agent.output(step)),
        ):
            await rt.store.append(thread_id, event)
            n += 1
        step += 1
    await rt.store.append(thread_id, UserMessage(text="and again", source=USER))
    return thread_id


async def drive(worker: Worker, timer: SDKTimer | None, thread_id: str, fence: int, limit: int = 10**6) -> list[float]:
    """Worker.step as one wake-up runs it, timed per step, minus the time inside the model SDK
    call. The first step includes reading the log, as it does in production."""
    samples = []
    for n in range(limit):
        before = timer.total if timer else 0.0
        t0 = time.perf_counter()
        if not await worker.executor.step(thread_id, fence, wake=n == 0):
            break
        samples.append(time.perf_counter() - t0 - ((timer.total if timer else 0.0) - before))
    return samples


async def step_overhead(worker: Worker, timer: SDKTimer, length: int, threads: int, per_thread: int) -> list[float]:
    samples: list[float] = []
    for _ in range(threads):
        thread_id = await prefill(worker.rt, length)
        fence = await worker.rt.store.acquire(thread_id, "bench", 300)
        await worker.executor.load(thread_id)  # the worker's cache is warm, as in steady state
        samples += await drive(worker, timer, thread_id, fence, per_thread)
    return samples


async def cold_load(rt: Runtime, length: int, repeat: int = 20) -> list[float]:
    thread_id = await prefill(rt, length)
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await rt.store.load(thread_id)
        out.append(time.perf_counter() - t0)
    return out


async def append_cost(rt: Runtime, length: int, repeat: int = 300) -> list[float]:
    thread_id = await prefill(rt, length)
    out = []
    for i in range(repeat):
        event = ToolResult(call_id=f"toolu_{i}", output=bench_agent.output(0, (200,)))
        t0 = time.perf_counter()
        await rt.store.append(thread_id, event)
        out.append(time.perf_counter() - t0)
    return out


@dataclass
class Scripted:
    """The scripted work, as LangGraph does it too: 20 stub tool steps, an approval, a resume."""

    thread_id: str
    overhead_to_pause: float
    overhead_after_resume: float
    paused_bytes: int = 0
    log_bytes: int = 0
    events_at_pause: int = 0
    thread: Thread | None = None
    step_samples: list[float] = field(default_factory=list)


async def memory_usage(rt: Runtime, thread_id: str) -> tuple[int, int]:
    """Bytes of the thread's own keys (MEMORY USAGE, exact) plus its entries in the global
    indexes; and the bytes of its log alone."""
    r, k = rt.redis, rt.store.keys
    total = 0
    async for key in r.scan_iter(match=f"{k.prefix}thread:{{{thread_id}}}:*", count=1000):
        total += await r.memory_usage(key, samples=0) or 0
    for index in (k.threads, k.pending_approvals):
        size, card = await r.memory_usage(index, samples=0) or 0, await r.zcard(index)
        total += size // card if card else 0
    return total, await r.memory_usage(k.log(thread_id), samples=0) or 0


async def scripted(worker: Worker, timer: SDKTimer, agent: str = "bench") -> Scripted:
    rt = worker.rt
    thread_id = await new_thread(rt, "check api twenty times, then roll it back", agent)
    fence = await rt.store.acquire(thread_id, "bench", 300)
    before = await drive(worker, timer, thread_id, fence)
    paused = await worker.executor.load(thread_id)
    assert paused.state == "awaiting_approval", paused.state
    result = Scripted(thread_id, sum(before), 0.0, step_samples=before, events_at_pause=paused.version)
    result.paused_bytes, result.log_bytes = await memory_usage(rt, thread_id)
    [request] = paused.pending_approvals()
    outcome = await rt.approvals.decide(request.approval_id, True, "alice", "bench")
    assert outcome.status == "decided"
    after = await drive(worker, timer, thread_id, fence)
    result.overhead_after_resume = sum(after)
    result.thread = await worker.executor.load(thread_id)
    assert result.thread.state == "idle"
    await rt.store.release(thread_id, "bench")
    return result


async def resume_latency(worker: Worker, threads: int = 40) -> list[float]:
    """Decision recorded (Approvals.decide returned) -> the gated tool's handler starts, with the
    worker running as it does in production (reading wake-ups from the inbox stream)."""
    rt = worker.rt
    task = asyncio.create_task(worker.run())
    out = []
    try:
        for _ in range(threads):
            thread_id = await new_thread(rt, "/gated api")
            while await rt.redis.hget(rt.store.keys.meta(thread_id), "state") != b"awaiting_approval":
                await asyncio.sleep(0.002)
            thread = await rt.store.load(thread_id)
            [request] = thread.pending_approvals()
            await rt.approvals.decide(request.approval_id, True, "alice", "bench")
            recorded = time.perf_counter()
            while request.call_id not in bench_agent.handler_started:
                await asyncio.sleep(0)
            out.append(bench_agent.handler_started[request.call_id] - recorded)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return out


def context_sizes(thread: Thread) -> dict[str, Any]:
    """Context at each model call of the thread: ours (compact) vs plain full history, and
    whether each call's context starts with the previous call's bytes."""
    events = thread.events
    calls = [i for i, e in enumerate(events) if isinstance(e, ToolCall) and e.origin == "model"]
    calls.append(len(events) - 1)  # the last call, answered with text
    ours = [build_messages(events[:i]) for i in calls]
    plain = build_messages(events[:calls[-1]], output_limit=10**9)
    stable = sum(_flat(a) == _flat(b)[: len(_flat(a))] for a, b in zip(ours, ours[1:]))
    return {
        "steps": len(calls),
        "ours": len(serialized(ours[-1])),
        "plain": len(serialized(plain)),
        "stable": stable,
        "pairs": len(ours) - 1,
    }


def _flat(messages: list[dict]) -> bytes:
    """The context as the byte stream the cache sees: role markers and blocks, in order (the
    closing brackets of the last message are not part of any later prefix)."""
    out = []
    for m in messages:
        out.append(f"<{m['role']}>".encode())
        out += [serialized([b]) for b in m["content"]]
    return b"".join(out)


async def concurrency(rt: Runtime, model_url: str, threads: int = 1000) -> dict[str, float]:
    """`threads` conversations, each waiting `latency` on the model, served by ONE separate worker
    process (`chatops worker`): wall time from the first message to the last reply."""
    from tests.conftest import ROOT, bot_env

    s = rt.settings.model_copy(update={"anthropic_base_url": model_url})
    log = open(s.data_dir / "worker.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "bot", "worker"], cwd=ROOT, stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, env=bot_env(s, CHATOPS_LOG_LEVEL="WARNING"))
    try:
        inbox = rt.store.keys.inbox
        for _ in range(500):
            try:
                if await rt.redis.xinfo_consumers(inbox, "workers"):
                    break
            except Exception:
                pass
            await asyncio.sleep(0.02)
        t0 = time.time()
        ids = [new_thread_id() for _ in range(threads)]

        async def send(thread_id: str) -> None:
            await rt.intake.message(thread_id, agent="deploy", origin=Origin(channel="api"),
                                    text="hello", source=USER)

        for i in range(0, threads, 50):  # the client's pool has 100 connections
            await asyncio.gather(*(send(t) for t in ids[i:i + 50]))
        submitted = time.time() - t0
        await _until_idle(rt, ids, t0)
        last = max([(await rt.store.load(t)).events[-1].ts for t in ids])
        return {"wall": last - t0, "submitted": submitted}
    finally:
        proc.kill()
        proc.wait()
        log.close()
        print(f"worker log: {s.data_dir / 'worker.log'}", file=sys.stderr)


async def _until_idle(rt: Runtime, ids: list[str], since: float) -> None:
    """Wait until every thread of `ids` is idle. Polled with one cheap command (the idle index
    counts the threads settled since `since`), then checked thread by thread once: a poll of
    1,000 states every 50 ms cost this process about a third of a core, taken from the worker
    on a 2-core machine."""
    idle = rt.store.keys.threads_in("idle")
    while True:
        if await rt.redis.zcount(idle, since, "+inf") >= len(ids):
            pipe = rt.redis.pipeline(transaction=False)
            for thread_id in ids:
                pipe.hget(rt.store.keys.meta(thread_id), "state")
            if all(state == b"idle" for state in await pipe.execute()):
                return
        await asyncio.sleep(0.05)


async def sdk_alone(model_url: str, threads: int = 1000) -> float:
    """The floor under `concurrency`: the same model calls from the anthropic SDK alone, no bot,
    on the same transport as the bot (aiohttp, one connection per call in flight)."""
    import anthropic

    from bot.model import _http_client

    client = anthropic.AsyncAnthropic(api_key="bench-key", base_url=model_url, max_retries=0,
                                      http_client=_http_client(threads))
    t0 = time.perf_counter()
    await asyncio.gather(*(
        client.messages.create(model="m", max_tokens=16, messages=[{"role": "user", "content": "hello"}])
        for _ in range(threads)
    ))
    elapsed = time.perf_counter() - t0
    await client.close()
    return elapsed


async def raw_http(model_url: str, threads: int = 1000) -> float:
    """The same calls with raw aiohttp: no SDK (no request building, no response models)."""
    import aiohttp

    body = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}
    headers = {"x-api-key": "bench-key", "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=threads)) as session:
        async def call() -> None:
            async with session.post(f"{model_url}/v1/messages", json=body, headers=headers) as resp:
                resp.raise_for_status()
                await resp.json()

        t0 = time.perf_counter()
        await asyncio.gather(*(call() for _ in range(threads)))
        return time.perf_counter() - t0

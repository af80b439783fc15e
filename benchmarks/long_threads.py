"""Long threads (issue 12): what a thread's length costs a request, the model's context, and a
worker's memory.

- API message latency: POST /v1/threads/{id}/messages on threads of 40 / 4,000 / 20,000 events,
  over HTTP to the real app on the real server settings (bot.serve.http_config), own redis-server.
- Model request: bytes and estimated tokens of the request the worker builds (compacting when over
  CHATOPS_CONTEXT_TOKENS) at 20 / 1,000 / 20,000 events, next to the full history's size.
- Worker memory: RSS of a fresh process whose worker has loaded 10,000 threads (20 events each)
  into its cache, bounded by CHATOPS_WORKER_CACHE_MB.

    python -m benchmarks.long_threads        # prints the rows
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from benchmarks import env
from benchmarks.table import Row, row
from bot.api import create_app
from bot.commands import help_text
from bot.context import ContextBuilder, with_cache_breakpoints
from bot.events import AgentReply, Event, Source, ToolCall, ToolResult, UserMessage, new_id
from bot.prompts import render
from bot.runtime import Runtime
from bot.serve import http_config
from bot.thread import Origin, ThreadMeta
from bot.wiring import default_wiring
from bot.worker import Worker

MESSAGE_LENGTHS = (40, 4000, 20_000)
CONTEXT_LENGTHS = (20, 1000, 20_000)
CACHED_THREADS = 10_000
MS = 1000.0
TOKEN = "bench-token"


def exchange(i: int, output: int = 1200) -> list[Event]:
    """Four events of an ordinary exchange (a question, a tool call, its output, a reply)."""
    call_id = new_id("toolu")
    return [
        UserMessage(text=f"question {i}: is the api healthy in prod? please check.",
                    source=Source(channel="api", user="bob")),
        ToolCall(call_id=call_id, tool="service_status", args={"service": "api", "environment": "prod"},
                 turn=new_id("msg")),
        ToolResult(call_id=call_id, output=(f"output {i}: pod api-7f9c healthy, p99 81 ms; " * 40)[:output]),
        AgentReply(text=f"answer {i}: the api is healthy, 12 pods, p99 81 ms."),
    ]


async def grow(rt: Runtime, thread_id: str, n: int, output: int = 1200) -> None:
    events = [e for i in range(n // 4 + 1) for e in exchange(i, output)][:n]
    meta = ThreadMeta(id=thread_id, agent="deploy", origin=Origin(channel="api"), created=time.time())
    for start in range(0, len(events), 200):
        first, *rest = events[start:start + 200]
        await rt.store.append(thread_id, first, create=meta, followed_by=rest, state="idle")


async def message_latency(samples: int) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    async with env.redis_server() as url:
        rt = await Runtime.start(env.settings(url, api_token=TOKEN), default_wiring())
        app = create_app(rt)
        # proto given: asyncio sets TCP_NODELAY only on sockets that say IPPROTO_TCP (without it,
        # Nagle and delayed ACKs add 40 ms to every response, as they would not in production)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(http_config(rt, app, log_level="error"))
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            base = f"http://127.0.0.1:{sock.getsockname()[1]}"
            async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                for n in MESSAGE_LENGTHS:
                    thread_id = f"{n:016x}"
                    await grow(rt, thread_id, n)
                    times = []
                    for i in range(samples + 5):
                        t0 = time.perf_counter()
                        said = await http.post(f"/v1/threads/{thread_id}/messages",
                                               json={"text": f"and web? {i}", "user": "bob"})
                        elapsed = time.perf_counter() - t0
                        assert said.status_code == 202, said.text
                        if i >= 5:  # warm-up
                            times.append(elapsed)
                    out[n] = times
        finally:
            server.should_exit = True
            await serving
            await rt.close()
    return out


async def request_sizes() -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    async with env.redis_server() as url:
        rt = await Runtime.start(env.settings(url), default_wiring())
        worker = Worker(rt)
        agent = rt.agents["deploy"]
        system = render(agent.prompt, agent=agent.name, commands=help_text(agent))
        tools = agent.model_tools
        try:
            for n in CONTEXT_LENGTHS:
                thread_id = f"c{n:015x}"
                await grow(rt, thread_id, n)
                thread = await rt.store.load(thread_id)
                plain = ContextBuilder(rt.settings.tool_output_limit)
                full = _request_bytes(system, tools, plain.extend(thread.events))
                fence = await rt.store.acquire(thread_id, "bench", 60)
                messages, tokens = await worker.executor._context_within_budget(thread, system, tools, fence)
                out[n] = {"bytes": _request_bytes(system, tools, messages), "tokens": tokens, "full": full,
                          "compacted": int(thread.compacted is not None)}
        finally:
            await rt.close()
    return out


def _request_bytes(system: str, tools: list, messages: list) -> int:
    body = {"system": [{"type": "text", "text": system}], "tools": [t.schema() for t in tools],
            "messages": with_cache_breakpoints(messages)}
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _cache_process(url: str, results: Any) -> None:
    async def run() -> None:
        rt = await Runtime.start(env.settings(url), default_wiring())
        worker = Worker(rt)
        try:
            ids = [f"a{i:015x}" for i in range(CACHED_THREADS)]
            for thread_id in ids:
                await grow(rt, thread_id, 20, output=200)
            before = _rss()
            for thread_id in ids:
                await worker.executor.load(thread_id)
            results.put({"rss": _rss() - before, "cached": len(worker.executor.cache), "estimate": worker.executor.cache_bytes,
                         "limit": worker.executor.cache_limit})
        finally:
            await rt.close()

    asyncio.run(run())


async def cache_memory() -> dict[str, int]:
    async with env.redis_server() as url:
        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        process = ctx.Process(target=_cache_process, args=(url, results))
        process.start()
        figures = await asyncio.to_thread(results.get, True, 600)
        await asyncio.to_thread(process.join, 60)
    return figures


def main(quick: bool = False) -> list[Row]:
    latency = asyncio.run(message_latency(20 if quick else 100))
    sizes = asyncio.run(request_sizes())
    memory = asyncio.run(cache_memory())
    rows: list[Row] = []
    for n in MESSAGE_LENGTHS:
        med = statistics.median(latency[n])
        rows.append(row(f"API message latency, median, {n:,}-event thread", med * MS, "ms",
                        "<= 20 ms" if n == MESSAGE_LENGTHS[-1] else "",
                        note="HTTP + token + meta read + one append; no read of the log"))
    flat = statistics.median(latency[MESSAGE_LENGTHS[-1]]) / statistics.median(latency[MESSAGE_LENGTHS[0]])
    rows.append(row(f"API message latency, {MESSAGE_LENGTHS[-1]:,} / {MESSAGE_LENGTHS[0]} events (flat)", flat,
                    "x", "<= 1.5 x"))
    for n in CONTEXT_LENGTHS:
        s = sizes[n]
        rows.append(row(f"model request, {n:,} events: bytes", s["bytes"], "B", "<= 400000 B",
                        peer="full history", peer_value=s["full"],
                        note="compacted into a summary" if s["compacted"] else "within budget as is"))
        rows.append(row(f"model request, {n:,} events: estimated tokens", s["tokens"], "tok", "<= 60000 tok"))
    rows.append(row(f"worker RSS growth, {CACHED_THREADS:,} threads loaded (20 events each)",
                    round(memory["rss"] / 2**20, 1), "MB", f"<= {memory['limit'] / 2**20:.0f} MB",
                    note=f"{memory['cached']:,} stayed cached; cache estimate "
                         f"{memory['estimate'] / 2**20:.0f} MB of CHATOPS_WORKER_CACHE_MB"))
    return rows


if __name__ == "__main__":
    from benchmarks.table import render as render_table

    print(render_table(main()))

"""The agent the benchmarks drive: stub tools, so that we time our runtime and not a runbook.

`noop` answers at once with a realistic output (sizes cycle through `OUTPUT_SIZES`); `gated`
always needs approval and records when its handler starts (for the resume latency)."""

from __future__ import annotations

import time

from pydantic import BaseModel

from bot.agent import Agent
from bot.tools import Tool, ToolContext

# bytes of the stub outputs, cycling: a status line, a short report, a deploy log, a pod listing
OUTPUT_SIZES = (200, 1_000, 8_000, 4_000)
TYPICAL_SIZES = (200,)  # a typical event: a one-line status

handler_started: dict[str, float] = {}  # call id -> perf_counter() when gated's handler began


class Args(BaseModel):
    service: str
    step: int = 0


def output(step: int, sizes: tuple[int, ...] = OUTPUT_SIZES) -> str:
    size = sizes[step % len(sizes)]
    line = f"{step:04d} api-7d9f8c6b5-x2k4q  1/1  Running  0  3h12m  10.0.3.17  node-a  rev=1.2.3\n"
    return (line * (size // len(line) + 1))[:size]


def build(sizes: tuple[int, ...] = OUTPUT_SIZES) -> Agent:
    async def noop(args: Args, _ctx: ToolContext) -> str:
        return output(args.step, sizes)

    async def gated(args: Args, ctx: ToolContext) -> str:
        handler_started[ctx.call_id] = time.perf_counter()
        return f"rolled back {args.service}"

    return Agent(
        name="bench" if sizes == OUTPUT_SIZES else "bench_small", description="Benchmark stub tools.", prompt="deploy",
        tools=(
            Tool("noop", "A stub tool.", Args, noop),
            Tool("gated", "A stub tool that always needs approval.", Args, gated,
                 needs_approval=lambda _args: True),
        ),
    )

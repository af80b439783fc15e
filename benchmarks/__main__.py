"""`make bench`: one table, our runtime and LangGraph side by side, same machine, same run.

    python -m benchmarks [--latency S] [--quick]

Sections: (1) step loop overhead at 10/100/1,000 events, (2) resume latency, (3) Redis bytes,
(4) 1,000 concurrent threads waiting on the model, (5) Slack ack and SMTP intake (modules
benchmarks/slack_ack.py and benchmarks/smtp_intake.py), (6) context size, (7) long threads
(benchmarks/long_threads.py: API message latency, model request size, worker cache memory).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
from typing import Any

from benchmarks import env, long_threads, ours, slack_ack, smtp_intake
from benchmarks.model_stub import model_stub
from benchmarks.table import Row, note, percentiles, ratio, render, row

LENGTHS = (10, 100, 1000)
MS = 1000.0


async def measure_ours(latency: float, quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with env.redis_server() as url:
        with model_stub(latency=latency, steps=10**9) as endless, model_stub(latency=latency, steps=20, gate=True) as scripted:
            rt, worker, timer = await env.runtime(env.settings(url, endless))
            try:
                per = (4, 25) if quick else (8, 40)
                for length in LENGTHS:
                    out[f"step_{length}"] = await ours.step_overhead(worker, timer, length, *per)
                out["sdk_call"] = timer.total / max(1, timer.calls) - latency
                out["append_10"] = await ours.append_cost(rt, 10)
                out["append_1000"] = await ours.append_cost(rt, 1000)
                out["cold_1000"] = await ours.cold_load(rt, 1000)
                # the scripted work, against the stub that plays 20 steps, then the gated tool
                rt.model.client.messages.resource = _client(scripted)
                runs = [await ours.scripted(worker, timer) for _ in range(5 if quick else 20)]
                out["scripted"] = [r.overhead_to_pause + r.overhead_after_resume for r in runs]
                out["paused_bytes"] = [r.paused_bytes for r in runs]
                out["event_bytes"] = runs[0].log_bytes / runs[0].events_at_pause
                small = await ours.scripted(worker, timer, "bench_small")
                out["typical_event_bytes"] = small.log_bytes / small.events_at_pause
                out["small_paused_bytes"] = small.paused_bytes
                assert runs[0].thread is not None
                out["context"] = ours.context_sizes(runs[0].thread)
                out["resume"] = await ours.resume_latency(worker, 20 if quick else 50)
            finally:
                await rt.close()
        with model_stub(latency=1.0) as slow:
            rt, worker, _ = await env.runtime(env.settings(url, slow))
            try:
                out["concurrency"] = await ours.concurrency(rt, slow, 1000)
                out["sdk_alone"] = await ours.sdk_alone(slow, 1000)
            finally:
                await rt.close()
    return out


def _client(url: str) -> Any:
    import anthropic

    return anthropic.AsyncAnthropic(api_key="bench-key", base_url=url, max_retries=0).messages


def peer_figures(quick: bool) -> dict[str, Any] | None:
    try:
        from benchmarks import langgraph_peer
    except ImportError:
        return None
    figures: dict[str, Any] = langgraph_peer.run(per_length=40 if quick else 100)
    figures["concurrency"] = asyncio.run(langgraph_peer.concurrency(1000, 1.0))
    return figures


def rows_for(o: dict[str, Any], p: dict[str, Any] | None) -> list[Row]:
    rows: list[Row] = []
    sq, mem = (p["sqlite"], p["memory"]) if p else ({}, {})
    lg_sq, lg_mem = "LangGraph SQLite", "LangGraph in-memory"
    if p is None:
        rows.append(note("LangGraph", "not installed: pip install -e '.[bench]' (peer columns empty)"))
    # (1) the step loop
    worst = None
    for n in LENGTHS:
        med, p99 = percentiles(o[f"step_{n}"])
        kw = {}
        if sq:
            smed, sp99 = percentiles(sq[f"node_{n}"])
            mmed, _ = percentiles(mem[f"node_{n}"])
            worst = min(worst or 1e9, smed / med)
            rows.append(row(f"step overhead median, {n:,} events", med * MS, "ms", "<= 0.25 ms",
                            peer=lg_sq, peer_value=smed * MS, ratio=ratio(smed, med)))
            rows.append(row(f"step overhead median, {n:,} events", med * MS, "ms", "",
                            peer=lg_mem, peer_value=mmed * MS, ratio=ratio(mmed, med)))
            rows.append(row(f"step overhead p99, {n:,} events", p99 * MS, "ms", "",
                            peer=lg_sq, peer_value=sp99 * MS, ratio=ratio(sp99, p99)))
        else:
            rows.append(row(f"step overhead median, {n:,} events", med * MS, "ms", "<= 0.25 ms", **kw))
            rows.append(row(f"step overhead p99, {n:,} events", p99 * MS, "ms", ""))
    flat = statistics.median(o["step_1000"]) / statistics.median(o["step_10"])
    rows.append(row("step overhead, median 1,000 / 10 events (flat)", flat, "x", "<= 1.25 x"))
    if worst is not None:
        rows.append(row("less step overhead than LangGraph SQLite (worst length)", worst, "x", ">= 5 x"))
    rows.append(row("append, median, 10 events", percentiles(o["append_10"])[0] * MS, "ms"))
    rows.append(row("append, median, 1,000 events", percentiles(o["append_1000"])[0] * MS, "ms"))
    rows.append(row("cold load of a 1,000-event thread (median)", percentiles(o["cold_1000"])[0] * MS, "ms",
                    note="once per thread per worker: afterwards the worker reads only new events"))
    rows.append(row("model SDK call, client side (excluded above)", o["sdk_call"] * MS, "ms",
                    note="anthropic client + loopback HTTP per call, stub latency subtracted"))
    smed = percentiles(o["scripted"])[0]
    for name, fig in ((lg_sq, sq), (lg_mem, mem)):
        if fig:
            theirs = percentiles(fig["scripted"])[0]
            rows.append(row("scripted work: 20 steps + approval + resume", smed * MS, "ms", "",
                            peer=name, peer_value=theirs * MS, ratio=ratio(theirs, smed)))
    # (2) resume
    rmed, rp99 = percentiles(o["resume"])
    for name, fig in ((lg_sq, sq), (lg_mem, mem)):
        if fig:
            rows.append(row("resume: decision recorded -> handler starts, median", rmed * MS, "ms",
                            "<= 1 ms", peer=name, peer_value=percentiles(fig["resume"])[0] * MS,
                            ratio=ratio(percentiles(fig["resume"])[0], rmed)))
    if not sq:
        rows.append(row("resume: decision recorded -> handler starts, median", rmed * MS, "ms", "<= 1 ms"))
    rows.append(row("resume: decision recorded -> handler starts, p99", rp99 * MS, "ms"))
    # (3) Redis bytes
    rows.append(row("Redis bytes per typical event (200-byte tool outputs)", round(o["typical_event_bytes"]),
                    "B", "<= 1024 B"))
    rows.append(row("Redis bytes per event (tool outputs of 0.2-8 KB)", round(o["event_bytes"]), "B"))
    paused = round(statistics.median(o["paused_bytes"]))
    if sq:
        theirs = round(statistics.median(sq["paused_bytes"]))
        rows.append(row("bytes per paused thread (20 steps, outputs 0.2-8 KB)", paused, "B", "",
                        peer=lg_sq, peer_value=theirs, ratio=ratio(theirs, paused)))
    else:
        rows.append(row("bytes per paused thread (20 steps, outputs 0.2-8 KB)", paused, "B"))
    rows.append(row("bytes per paused thread (20 steps, 200-byte outputs)", o["small_paused_bytes"], "B"))
    # (4) concurrency
    c = o["concurrency"]
    kw = dict(peer="LangGraph in-memory, asyncio", peer_value=p["concurrency"], ratio=ratio(p["concurrency"], c["wall"])) if p else {}
    rows.append(row("1,000 threads waiting 1 s on the model, 1 worker: wall", c["wall"], "s", "<= 1.3 s", **kw,
                    note=f"includes submitting the 1,000 messages ({c['submitted']:.2f} s) through intake"))
    rows.append(row("the same 1,000 model calls from the anthropic SDK alone (no bot)", o["sdk_alone"], "s",
                    note="the floor under the row above: SDK + stub server on the same 2 cores"))
    # (5) channels, built with their own modules
    rows += channel_rows()
    # (6) context
    ctx = o["context"]
    saved = 100.0 * (1 - ctx["ours"] / ctx["plain"])
    rows.append(row(f"context at {ctx['steps']} model calls: ours vs plain full history", ctx["ours"], "B", "",
                    peer="plain history", peer_value=ctx["plain"], ratio=ratio(ctx["plain"], ctx["ours"])))
    rows.append(row("context: smaller than plain history", round(saved, 1), "%", ">= 50 %"))
    rows.append(row("context: prefix byte-identical between consecutive calls",
                    f"{ctx['stable']}/{ctx['pairs']}", "", f"{ctx['pairs']}/{ctx['pairs']}",
                    met=ctx["stable"] == ctx["pairs"]))
    return rows


def channel_rows() -> list[Row]:
    """Slack ack latency and SMTP intake, each measured by its own module (own processes)."""
    rows: list[Row] = []
    for module in (slack_ack, smtp_intake):
        rows += [{"unit": "", **r} for r in module.main()]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--latency", type=float, default=0.0, help="model stub latency in seconds")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print("measuring LangGraph ...", file=sys.stderr)
    peer = peer_figures(args.quick)
    print("measuring chatops-bot ...", file=sys.stderr)
    figures = asyncio.run(measure_ours(args.latency, args.quick))
    print("measuring long threads ...", file=sys.stderr)
    print(render(rows_for(figures, peer) + long_threads.main(args.quick)))


if __name__ == "__main__":
    main()

"""The peer: LangGraph doing the same scripted work with its SQLite and in-memory checkpointers.

The graph is what a LangGraph user writes for this: a messages state, an `agent` node (here a stub
model that answers at once, following the same script as our stub: `steps` calls of `noop`, one
of `gated`, then text), a `tools` node that runs the calls and `interrupt()`s for the approval of
`gated`, and a resume with `Command(resume=...)`. Every step is made durable before the next
(`durability="sync"`), as our appends are. The tools node is a plain function (no ToolNode and
its callbacks): the cheapest LangGraph can do this.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt

from benchmarks import bench_agent


class State(TypedDict):
    messages: Annotated[list, add_messages]
    done: int  # tool results so far (the stub model's script position)
    steps: int  # noop calls before the gated one


handler_started: dict[str, float] = {}


def _call(name: str, step: int) -> dict[str, Any]:
    return {"name": name, "args": {"service": "api", "step": step}, "id": f"toolu_{uuid.uuid4().hex[:16]}"}


def agent(state: State) -> dict[str, Any]:
    done, n = state["done"], state["steps"]
    if done < n:
        return {"messages": [AIMessage(content="", tool_calls=[_call("noop", done)])]}
    if done == n:
        return {"messages": [AIMessage(content="", tool_calls=[_call("gated", done)])]}
    return {"messages": [AIMessage(content="done")]}


def tools(state: State) -> dict[str, Any]:
    out = []
    for call in state["messages"][-1].tool_calls:
        if call["name"] == "gated":
            decision = interrupt({"approval": call["id"], "tool": "gated", "args": call["args"]})
            handler_started[call["id"]] = time.perf_counter()
            text = "rolled back api" if decision.get("approved") else "rejected"
        else:
            text = bench_agent.output(call["args"]["step"])
        out.append(ToolMessage(content=text, tool_call_id=call["id"]))
    return {"messages": out, "done": state["done"] + len(out)}


def route(state: State) -> str:
    return "tools" if state["messages"][-1].tool_calls else END


def build(checkpointer: Any):
    g = StateGraph(State)
    g.add_node("agent", agent)
    g.add_node("tools", tools)
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", route, ["tools", END])
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=checkpointer)


def prefill(calls: int) -> list[Any]:
    """A conversation of `calls` tool calls (a call and its result each), then a new message:
    the same length, counted in tool calls, as our side's prefilled threads."""
    msgs: list[Any] = [HumanMessage(content="check api")]
    for step in range(calls):
        call = _call("noop", step)
        msgs.append(AIMessage(content="", tool_calls=[call]))
        msgs.append(ToolMessage(content=bench_agent.output(step), tool_call_id=call["id"]))
    msgs.append(HumanMessage(content="and again"))
    return msgs


def node_times(graph: Any, inputs: Any, config: dict) -> list[float]:
    """Seconds per node (its run plus its checkpoint), from the gaps between streamed updates."""
    out, t = [], time.perf_counter()
    for _ in graph.stream(inputs, config, stream_mode="updates", durability="sync"):
        now = time.perf_counter()
        out.append(now - t)
        t = now
    return out


def config() -> dict:
    return {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": 10_000}


def measure(kind: str, workdir: Path, lengths: tuple[int, ...], per_length: int,
            synchronous: str = "FULL", scripted_runs: int = 20) -> dict[str, Any]:
    """`synchronous`: SQLite's fsync level, FULL (every commit, as AOF `always`) or NORMAL (WAL
    synced at checkpoints, about as AOF `everysec`)."""
    conn = None
    if kind == "sqlite":
        conn = sqlite3.connect(workdir / f"lg-{uuid.uuid4().hex[:6]}.sqlite", check_same_thread=False)
        saver: Any = SqliteSaver(conn)
        saver.setup()
        conn.execute(f"PRAGMA synchronous={synchronous}")
    else:
        saver = InMemorySaver()
    graph = build(saver)
    out: dict[str, Any] = {}
    # per-node overhead at given thread lengths (messages already in the state)
    for length in lengths:
        samples: list[float] = []
        per_run: list[float] = []
        while len(samples) < per_length:
            cfg = config()
            times = node_times(graph, {"messages": prefill(length), "done": 0, "steps": 10}, cfg)
            nodes = times[1:-1]  # the first gap includes writing the prefilled input; last is the interrupt
            samples += nodes
            per_run.append(sum(nodes) / len(nodes))  # two nodes per tool call: agent, tools
        out[f"node_{length}"] = samples
        out[f"cycle_{length}"] = per_run
    # the scripted work: 20 steps, interrupt, resume
    totals, resumes, sizes = [], [], []
    for _ in range(scripted_runs):
        cfg = config()
        t0 = time.perf_counter()
        node_times(graph, {"messages": [HumanMessage(content="check api twenty times, then roll it back")],
                           "done": 0, "steps": 20}, cfg)
        paused = time.perf_counter()
        state = graph.get_state(cfg)
        [intr] = [i for task in state.tasks for i in task.interrupts]
        call_id = intr.value["approval"]
        if conn is not None:
            sizes.append(_sqlite_bytes(conn, cfg["configurable"]["thread_id"]))
        t1 = time.perf_counter()
        for _ in graph.stream(Command(resume={"approved": True}), cfg, stream_mode="updates", durability="sync"):
            pass
        done = time.perf_counter()
        resumes.append(handler_started[call_id] - t1)
        totals.append((paused - t0) + (done - t1))
    out["scripted"] = totals
    out["resume"] = resumes
    if sizes:
        out["paused_bytes"] = sizes
    if conn is not None:
        conn.close()
    return out


def _sqlite_bytes(conn: sqlite3.Connection, thread_id: str) -> int:
    """Bytes the thread occupies in the SQLite checkpointer's tables (blobs and keys)."""
    q1 = ("SELECT COALESCE(SUM(LENGTH(checkpoint) + LENGTH(metadata) + LENGTH(checkpoint_id) "
          "+ LENGTH(thread_id) + IFNULL(LENGTH(parent_checkpoint_id), 0)), 0) FROM checkpoints WHERE thread_id=?")
    q2 = ("SELECT COALESCE(SUM(LENGTH(value) + LENGTH(channel) + LENGTH(task_id) + LENGTH(checkpoint_id) "
          "+ LENGTH(thread_id)), 0) FROM writes WHERE thread_id=?")
    return int(conn.execute(q1, (thread_id,)).fetchone()[0]) + int(conn.execute(q2, (thread_id,)).fetchone()[0])


async def concurrency(threads: int, latency: float) -> float:
    """`threads` graphs, each waiting `latency` in its model node, on one event loop (in memory)."""

    async def slow_agent(state: State) -> dict[str, Any]:
        await asyncio.sleep(latency)
        return {"messages": [AIMessage(content="done")]}

    g = StateGraph(State)
    g.add_node("agent", slow_agent)
    g.add_edge(START, "agent")
    g.add_edge("agent", END)
    graph = g.compile(checkpointer=InMemorySaver())
    t0 = time.perf_counter()
    await asyncio.gather(*(
        graph.ainvoke({"messages": [HumanMessage(content="hello")], "done": 0, "steps": 0}, config(),
                      durability="sync")
        for _ in range(threads)
    ))
    return time.perf_counter() - t0


def run(lengths: tuple[int, ...] = (10, 100, 1000), per_length: int = 100) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="chatops-bench-lg-") as tmp:
        return {kind: measure(kind, Path(tmp), lengths, per_length) for kind in ("sqlite", "memory")}


if __name__ == "__main__":
    # one round as its own process: kind, SQLite synchronous level, per-length samples, lengths
    import gc
    import json
    import sys

    kind, sync_level, per, runs, *lens = sys.argv[1:]
    from bot.loop import GC_THRESHOLDS

    gc.set_threshold(*GC_THRESHOLDS)  # the collector's thresholds our processes run with: same footing
    with tempfile.TemporaryDirectory(prefix="chatops-bench-lg-") as tmp:
        figures = measure(kind, Path(tmp), tuple(int(n) for n in lens), int(per), sync_level, int(runs))
    print(json.dumps(figures))

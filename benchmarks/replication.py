"""What at-most-once across a failover costs: a tool's start marker acknowledged by replicas.

    python -m benchmarks.replication [--repeat N]

Against a master and one replica (our own `redis-server` processes on loopback), the time of
a tool start as the worker does it: the `tool_started` append, then the confirmation
(`Store.replicated`: lease and claim still ours, a write in the thread's slot, `WAIT`), with
CHATOPS_REDIS_MIN_REPLICAS at 0 (the check alone) and 1. The same WAIT is what a decision and
an acknowledged intake pay when the setting is on.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from benchmarks.table import percentiles
from bot.events import Source, ToolStarted, UserMessage, new_id
from bot.keys import Keys
from bot.redis_client import connect
from bot.store import Claim, Store
from bot.thread import Origin, ThreadMeta
from tests.redis_ha import ReplicatedRedis

MS = 1000.0


async def tool_start(store: Store, repeat: int) -> tuple[list[float], list[float]]:
    """(append alone, append + confirmation) per tool start, in seconds."""
    thread_id = new_id("bench")
    meta = ThreadMeta(id=thread_id, agent="bench", origin=Origin(channel="api"), created=time.time())
    await store.append(thread_id, UserMessage(text="go", source=Source(user="bench")), create=meta)
    fence = await store.acquire(thread_id, "bench", 60)
    appends, confirmed = [], []
    for _ in range(repeat):
        marker = ToolStarted(call_id=new_id("toolu"))
        claim = f"run:{marker.call_id}"
        t0 = time.perf_counter()
        await store.append(thread_id, marker, fence=fence, claim=Claim(claim))
        t1 = time.perf_counter()
        assert await store.replicated(thread_id, claim=claim, value=marker.id, fence=fence) == "ok"
        t2 = time.perf_counter()
        appends.append(t1 - t0)
        confirmed.append(t2 - t0)
    return appends, confirmed


async def main(repeat: int) -> None:
    servers = ReplicatedRedis(Path(tempfile.mkdtemp(prefix="chatops-bench-ha-")), sentinel=False)
    redis = connect(servers.plain_url)
    try:
        rows = []
        for replicas in (0, 1):
            store = Store(redis, Keys(f"bench-{new_id('r')}:"), min_replicas=replicas, replica_timeout=5)
            appends, confirmed = await tool_start(store, repeat)
            rows.append((replicas, percentiles(appends), percentiles(confirmed)))
        print("| CHATOPS_REDIS_MIN_REPLICAS | tool_started append, median / p99 | append + confirmation, "
              "median / p99 | added per tool start |")
        print("|---|---|---|---|")
        for replicas, (a50, a99), (c50, c99) in rows:
            print(f"| {replicas} | {a50 * MS:.3f} / {a99 * MS:.3f} ms | {c50 * MS:.3f} / {c99 * MS:.3f} ms "
                  f"| {(c50 - a50) * MS:.3f} ms |")
    finally:
        await redis.aclose()
        servers.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=2000)
    asyncio.run(main(parser.parse_args().repeat))

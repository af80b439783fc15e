"""The lean connection sends without a Task per command but keeps redis-py's socket timeout: a
server that stops reading makes a send fail with redis' TimeoutError, a reply that never comes
makes the read fail with it; neither hangs."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import ConnectionPool
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.redis_connection import LeanConnection


@pytest.fixture
def mute_server() -> Iterator[int]:
    """Answers the connection's handshake, then never reads or answers again."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        while True:  # HELLO 3, then CLIENT SETINFO / MAINT_NOTIFICATIONS: answered until a SET or GET
            data = conn.recv(4096)
            if not data or b"\r\nSET\r\n" in data or b"\r\nGET\r\n" in data:
                break
            conn.sendall(b"%1\r\n+proto\r\n:3\r\n" * data.count(b"HELLO") + b"+OK\r\n" * data.count(b"CLIENT"))
        stop.wait(120)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(10)
    for conn in accepted:
        conn.close()
    listener.close()


def client(port: int) -> Redis:
    pool = ConnectionPool.from_url(f"redis://127.0.0.1:{port}/0", connection_class=LeanConnection,
                                   socket_timeout=0.5, socket_connect_timeout=5)
    return Redis.from_pool(pool)


async def test_a_send_to_a_server_that_does_not_read_times_out(mute_server):
    redis = client(mute_server)
    try:
        t0 = time.monotonic()
        with pytest.raises(RedisTimeoutError, match="writing"):
            # far more than the socket buffers hold: the write blocks until the timeout
            await asyncio.wait_for(redis.set("k", b"x" * (64 << 20)), 60)
        assert time.monotonic() - t0 < 30
    finally:
        await redis.aclose()


async def test_a_reply_that_never_comes_times_out(mute_server):
    redis = client(mute_server)
    try:
        with pytest.raises(RedisTimeoutError, match="reading"):
            await asyncio.wait_for(redis.get("k"), 60)
    finally:
        await redis.aclose()

"""A redis-py connection that sends without a Task per command, keeping its timeouts.

redis-py's asyncio Connection wraps every send in `asyncio.wait_for`, which on Python 3.11
creates a Task per command (about a quarter of an append's CPU, profiled). Here the send runs
under `asyncio.timeout` instead: same bound, no Task. Reads already use `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class LeanConnection(Connection):
    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        timeout = self.socket_timeout
        if not timeout:
            return await super().send_packed_command(command, check_health)
        self.socket_timeout = None  # the parent then writes directly, not through wait_for
        try:
            async with asyncio.timeout(timeout):
                await super().send_packed_command(command, check_health)
        except TimeoutError:  # the parent closed the connection on the cancellation
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout



class _ClosedStreamIsLost(Connection):
    """For a cluster node's connections. When a node fails, redis-py's cluster client closes all
    of that node's connections, also one that another command is still opening or writing on:
    that command then fails with AttributeError on the closed stream, which would escape every
    outage handler. It is a lost connection, and is raised as one."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except AttributeError as exc:
            if self._writer is not None:  # not a closed stream: a bug, not an outage
                raise
            raise RedisConnectionError(f"connection to {self.host}:{self.port} closed under the command") from exc


class ClusterConnection(_ClosedStreamIsLost, LeanConnection):
    pass


class ClusterSSLConnection(_ClosedStreamIsLost, SSLConnection):
    pass

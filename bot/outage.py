"""How long-running loops ride out a Redis outage without losing a request to stop.

redis-py can lose a cancellation: one that lands mid-command is turned into a connection error,
which its retry policy then retries, and the retried command succeeds. The CancelledError is gone
but the task's cancel request is still counted (`Task.cancelling()`), so every loop calls
`stop_if_cancelled()` once per round; otherwise a worker could never be stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import (
    AuthenticationError,
    AskError,
    AuthorizationError,
    ClusterError,
    NoPermissionError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.policy import ConfigError


class NotReplicated(RedisConnectionError):
    """A write did not reach CHATOPS_REDIS_MIN_REPLICAS replicas in time: a failover now could
    lose it, so it is not acknowledged (an outage like any other: refuse, retry later)."""


# What a Redis Cluster raises while a node is down, failing over or resharding, once redis-py's
# own retries are spent: CLUSTERDOWN and MASTERDOWN (ClusterError, also "TTL exhausted" after a
# storm of redirections), MOVED/ASK (AskError) where nothing follows them, TRYAGAIN, and
# RedisClusterException (no start-up node reachable, a slot not covered).
CLUSTER_DOWN = (ClusterError, AskError, TryAgainError, RedisClusterException)

# redis-py raises its own ConnectionError (not the builtin one) once its retries are spent. A
# failover shows as a ReadOnlyError (the old master, demoted, still connected) or MASTERDOWN (a
# replica whose master is gone), and on a cluster as any of CLUSTER_DOWN.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError, ReadOnlyError,
              *CLUSTER_DOWN)


# Whatever talking to Redis can raise, for a caller that refuses or retries on any of it (the
# SMTP server's 451, a schedule's retry): RedisClusterException is not a RedisError.
REDIS_ERRORS = (RedisError, OSError, RedisClusterException)


def stop_if_cancelled(cause: BaseException | None = None) -> None:
    """Raise CancelledError if the current task was asked to stop, whatever swallowed the first
    one (redis-py's retries, or a timeout error it was turned into)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause


# what Redis answers when it refuses the credentials or the permissions
REFUSALS = ("NOAUTH", "WRONGPASS", "NOPERM", "invalid username-password pair",
            "Authentication required", "must be called with the client already authenticated")


def config_error(exc: BaseException) -> ConfigError | None:
    """Redis answered, and refused us: retrying cannot help (a wrong password looks like an
    outage to redis-py, whose AuthenticationError is a ConnectionError)."""
    refused = isinstance(exc, (AuthenticationError, AuthorizationError, NoPermissionError)) or (
        isinstance(exc, (ResponseError, RedisConnectionError))
        and any(sign in str(exc) for sign in REFUSALS))  # redis-py 8 raises a plain ConnectionError
    if not refused:
        return None
    return ConfigError(f"REDIS_URL: Redis refused the connection: {exc} "
                       "(check the password and the user's permissions in REDIS_URL)")


class Backoff:
    """How a process's loops wait for Redis to come back: growing delays (0.5 s doubling to
    30 s) and one log line per step, whichever loop fails, instead of one per failed command.
    A refusal (wrong password, missing permission) is fatal instead."""

    FIRST, CAP = 0.5, 30.0

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.since: float | None = None
        self.next_log = 0.0

    async def failed(self, what: str, exc: BaseException) -> None:
        stop_if_cancelled(exc)
        if (fatal := config_error(exc)) is not None:
            raise fatal from exc
        now = time.monotonic()
        if self.since is None:
            self.since = self.next_log = now
        delay = min(self.CAP, max(self.FIRST, now - self.since))
        if now >= self.next_log:
            self.log.warning("Redis unreachable (%s: %s); retrying in %.1fs", what, exc, delay)
            self.next_log = now + delay
        await asyncio.sleep(delay)

    def ok(self) -> None:
        if self.since is not None:
            self.log.warning("Redis reachable again after %.0fs", time.monotonic() - self.since)
            self.since = None

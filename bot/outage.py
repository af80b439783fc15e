"""How long-running loops ride out a Redis outage without losing a request to stop.

redis-py can lose a cancellation: one that lands mid-command is turned into a connection error,
which its retry policy then retries, and the retried command succeeds. The CancelledError is gone
but the task's cancel request is still counted (`Task.cancelling()`), so every loop calls
`stop_if_cancelled()` once per round; otherwise a worker could never be stopped.
"""

from __future__ import annotations

import asyncio

from redis.exceptions import ClusterDownError, ReadOnlyError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class NotReplicated(RedisConnectionError):
    """A write did not reach CHATOPS_REDIS_MIN_REPLICAS replicas in time: a failover now could
    lose it, so it is not acknowledged (an outage like any other: refuse, retry later)."""


# redis-py raises its own ConnectionError (not the builtin one) once its retries are spent. A
# failover shows as a ReadOnlyError (the old master, demoted, still connected) or MASTERDOWN (a
# replica whose master is gone; a ClusterDownError), a cluster resharding as TRYAGAIN.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError, ReadOnlyError,
              ClusterDownError, TryAgainError)


def stop_if_cancelled(cause: BaseException | None = None) -> None:
    """Raise CancelledError if the current task was asked to stop, whatever swallowed the first
    one (redis-py's retries, or a timeout error it was turned into)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause

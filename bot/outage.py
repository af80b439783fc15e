"""How long-running loops ride out a Redis outage without swallowing a cancellation."""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# redis-py raises its own ConnectionError (not the builtin one) once its retries are spent
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def stop_if_cancelled(exc: BaseException) -> None:
    """Raise CancelledError if the current task was asked to stop. On Python 3.11 a cancellation
    that races a timeout inside the Redis client can surface as a timeout error; a retry loop
    that caught it must not carry on, or its task can never be stopped."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc

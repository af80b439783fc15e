"""The event loop every process runs on: uvloop when installed (a dependency on Linux), else
asyncio's own. uvloop's loop costs less per callback and per socket read than asyncio's. And the
cyclic garbage collector's thresholds, set for a process with many requests in flight."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# Python's defaults (700, 10, 10) suit small heaps. A worker with 1,000 threads in flight holds
# hundreds of thousands of live objects, and each full collection walks them all: in the
# 1,000-thread benchmark the collector took about 2 of the worker's 6 CPU seconds, most of it in
# 7 full collections. With these, 0.6 s and no full collection (README, Performance). Garbage
# without cycles is freed at once either way; cyclic garbage lives a little longer.
GC_THRESHOLDS = (10_000, 20, 20)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, on uvloop when it is installed, with the collector's GC_THRESHOLDS."""
    gc.set_threshold(*GC_THRESHOLDS)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)

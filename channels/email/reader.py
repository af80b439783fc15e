"""Reading a mail off the event loop: `parse` runs in a worker process, within a time limit.

A thread would not do: parsing megabytes is Python code that holds the GIL, and a thread that
holds it delays every turn of the loop (measured: 20-30 ms a turn while an 8 MB mail is read),
so `/healthz`, Slack acks and the other SMTP sessions would wait. A process also gives a real
limit: one that overruns PARSE_TIMEOUT is killed with its pool, and the next mail gets a new one.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from channels.email.parse import Mail, parse

log = logging.getLogger("chatops.email")
PARSE_TIMEOUT = 30.0
WORKERS = 2
BY_FILE = 256 * 1024  # bigger mails reach the worker through a file: pickling 8 MB holds the GIL


class Unreadable(Exception):
    """The mail could not be read (the parser died, or took over PARSE_TIMEOUT)."""


def _write(raw: bytes) -> str:
    fd, path = tempfile.mkstemp(prefix="chatops-mail-")
    with os.fdopen(fd, "wb") as f:
        f.write(raw)  # one write call: the GIL is released while the kernel copies
    return path


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def parse_file(path: str, mail_from: str | None) -> Mail | None:
    with open(path, "rb") as f:
        return parse(f.read(), mail_from)


def _kill(pool: ProcessPoolExecutor) -> None:
    for process in list(getattr(pool, "_processes", {}).values()):  # a stuck parse never returns
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


class Reader:
    """The worker processes that read mails, of one SMTP service: started at its first mail (or
    `warm_up`), replaced after a parse that overran or died, stopped by `close`."""

    def __init__(self) -> None:
        self.pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self.pool is None:
            # spawn: forking a process that runs an event loop and threads is unsafe
            self.pool = ProcessPoolExecutor(max_workers=WORKERS, mp_context=multiprocessing.get_context("spawn"))
        return self.pool

    def _discard(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            _kill(pool)

    async def close(self) -> None:
        """Stop the workers and wait for the pool to be joined (off the loop): a pool left
        shutting down can make the interpreter's exit hook write to its closed wake-up pipe
        ("Exception ignored in: <module 'threading'>" as the process exits)."""
        pool, self.pool = self.pool, None
        if pool is None:
            return
        joined = asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        try:
            await asyncio.wait_for(joined, PARSE_TIMEOUT)
        except TimeoutError:  # a parse that never returns: kill it, and the join then ends
            _kill(pool)

    async def warm_up(self) -> None:
        """Start every worker now (starting a process holds the loop) rather than on the first mails."""
        try:
            await asyncio.gather(*[self.read(b"From: warm-up@localhost\r\n\r\n", None) for _ in range(WORKERS)])
        except Unreadable:
            log.warning("the mail reading processes did not start; the next mail tries again")

    async def read(self, raw: bytes, mail_from: str | None, timeout: float = PARSE_TIMEOUT) -> Mail | None:
        loop = asyncio.get_running_loop()
        path = await asyncio.to_thread(_write, raw) if len(raw) > BY_FILE else None
        try:
            job = loop.run_in_executor(self._executor(), parse_file, path, mail_from) if path else \
                loop.run_in_executor(self._executor(), parse, raw, mail_from)
            return await asyncio.wait_for(job, timeout)
        except asyncio.TimeoutError:
            log.warning("reading a mail took over %.0f s: its parser was stopped", timeout)
            self._discard()
            raise Unreadable("the message could not be read in time") from None
        except BrokenProcessPool:
            self._discard()
            raise Unreadable("the message could not be read") from None
        finally:
            if path:
                _unlink(path)

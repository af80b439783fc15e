"""The long-running processes: `chatops run` (everything in one) and `chatops worker`."""

from __future__ import annotations

import asyncio
import getpass
import logging
import sys
from collections.abc import Awaitable, Callable

import uvicorn

from bot.api import create_app
from bot.http_limits import server_config
from bot.runtime import Runtime
from bot.worker import Worker

log = logging.getLogger("chatops")

# Channels add themselves here: each gets the runtime and the HTTP app, and returns the coroutine
# of its service (or None when it is not configured). See channels/.
Service = Callable[[Runtime, object], Awaitable[None] | None]
SERVICES: list[Service] = []


async def serve_api(rt: Runtime, app: object) -> None:
    server = uvicorn.Server(http_config(rt, app))
    log.info("HTTP API on http://%s:%d", rt.settings.host, rt.settings.port)
    await server.serve()


def http_config(rt: Runtime, app: object, **extra: object) -> uvicorn.Config:
    """The HTTP server's settings, limits included (see bot/http_limits.py)."""
    s = rt.settings
    return server_config(app, host=s.host, port=s.port, max_connections=s.http_max_connections,  # type: ignore[arg-type]
                         keep_alive=s.http_keep_alive, header_timeout=s.http_header_timeout, **extra)


async def run_worker(rt: Runtime) -> None:
    await Worker(rt).run()


async def run_all(rt: Runtime, *, console: bool) -> None:
    app = create_app(rt)
    jobs = [run_worker(rt), serve_api(rt, app)]
    for service in SERVICES:
        job = service(rt, app)
        if job is not None:
            jobs.append(job)
    if console:
        jobs.append(_console(rt))
    tasks = [asyncio.ensure_future(j) for j in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a service that crashed stops the bot, loudly
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _console(rt: Runtime) -> None:
    from channels.console import Console, stdin_lines

    print("chatops console: talk to the bot; `approve <id>`, `reject <id> <reason>`; Ctrl-D quits.",
          file=sys.stderr)
    await Console(rt, user=getpass.getuser()).run(stdin_lines(prompt="you> "))

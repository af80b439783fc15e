"""The long-running processes: `chatops run` (everything in one) and `chatops worker`."""

from __future__ import annotations

import asyncio
import getpass
import logging
import sys
from collections.abc import Awaitable, Callable

import uvicorn

from bot.api import create_app
from bot.runtime import Runtime
from bot.worker import Worker

log = logging.getLogger("chatops")

# Channels add themselves here: each gets the runtime and the HTTP app, and returns the coroutine
# of its service (or None when it is not configured). See channels/.
Service = Callable[[Runtime, object], Awaitable[None] | None]
SERVICES: list[Service] = []


async def serve_api(rt: Runtime, app: object) -> None:
    config = uvicorn.Config(
        app, host=rt.settings.host, port=rt.settings.port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    log.info("HTTP API on http://%s:%d", rt.settings.host, rt.settings.port)
    await server.serve()


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
    from channels.console import Console, Screen, log_through, stdin_lines

    screen = Screen(sys.stdout, prompt="you> ")
    log_through(screen)  # log lines go above the prompt, never into the line being typed
    screen.write("chatops console: talk to the bot; `approve [id]`, `reject [id] <reason>`; "
                 "Ctrl-D quits.", sys.stderr)
    await Console(rt, user=getpass.getuser(), screen=screen).run(stdin_lines(screen))

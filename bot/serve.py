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
    if rt.settings.metrics_port is None:
        await Worker(rt).run()
        return
    jobs = [asyncio.ensure_future(j) for j in (Worker(rt).run(), serve_metrics(rt))]
    try:
        done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in jobs:
            task.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


async def serve_metrics(rt: Runtime) -> None:
    """GET /metrics on CHATOPS_METRICS_PORT (no token: bind it where only the scraper reaches)."""
    from bot.metrics import metrics_app

    config = uvicorn.Config(metrics_app(rt), host=rt.settings.host, port=rt.settings.metrics_port or 0,
                            log_level="warning", lifespan="off")
    log.info("metrics on http://%s:%s/metrics", rt.settings.host, rt.settings.metrics_port)
    await uvicorn.Server(config).serve()


async def run_all(rt: Runtime, *, console: bool) -> None:
    app = create_app(rt)
    jobs = [Worker(rt).run(), serve_api(rt, app)]
    if rt.settings.metrics_port is not None:
        jobs.append(serve_metrics(rt))
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

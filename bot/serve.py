"""The long-running processes: `chatops run` (everything in one: the worker, the HTTP API and
each channel's service) and `chatops worker`."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable

import uvicorn

from bot.api import create_app
from bot.http_limits import server_config
from bot.policy import ConfigError
from bot.runtime import Runtime
from bot.worker import Worker

log = logging.getLogger("chatops")


async def serve_api(rt: Runtime, app: object) -> None:
    sock = listen(rt.settings.host, rt.settings.port)
    server = uvicorn.Server(http_config(rt, app))
    host, port = sock.getsockname()[:2]
    log.info("HTTP API on http://%s:%d", host, port)  # the port bound, also when PORT=0
    await server.serve(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """Bind the HTTP port ourselves: uvicorn would log a failure and call sys.exit() inside its
    task, leaving the rest of the bot running half-started."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"PORT: cannot listen on {host}:{port}: {reason} "
                          "(another process uses it? set PORT or CHATOPS_HOST)") from None


def http_config(rt: Runtime, app: object, **extra: object) -> uvicorn.Config:
    """The HTTP server's settings, limits included (see bot/http_limits.py)."""
    s = rt.settings
    return server_config(app, host=s.host, port=s.port, max_connections=s.http_max_connections,  # type: ignore[arg-type]
                         keep_alive=s.http_keep_alive, header_timeout=s.http_header_timeout, **extra)


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


async def run_all(rt: Runtime) -> None:
    app = create_app(rt)
    jobs: list[Awaitable[None]] = [Worker(rt).run(), serve_api(rt, app)]
    if rt.settings.metrics_port is not None:
        jobs.append(serve_metrics(rt))
    for channel in rt.channels.values():  # each gets the HTTP app to add its routes to
        job = channel.service(rt, app)
        if job is not None:
            jobs.append(job)
    tasks = [asyncio.ensure_future(j) for j in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            _raise_loudly(task)  # a service that crashed or could not start stops the whole bot
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _raise_loudly(task: asyncio.Future) -> None:
    """A ConfigError names its setting; anything else becomes one line naming the service."""
    exc = None if task.cancelled() else task.exception()
    if exc is None or isinstance(exc, ConfigError):
        task.result()
        return
    coro = getattr(task, "get_coro", lambda: None)()
    service = getattr(coro, "__qualname__", "a service")
    raise ConfigError(f"{service} stopped: {type(exc).__name__}: {exc}") from exc


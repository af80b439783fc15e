"""The bot's HTTP server alone, in its own process (tests measure its memory): the real app, the
Slack route if configured, and the real server settings (bot.serve.http_config), on a loopback
port it binds itself and prints as its first line."""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from bot.api import create_app
from bot.runtime import Runtime
from bot.serve import http_config
from bot.settings import Settings
from bot.wiring import default_wiring


async def main() -> None:
    rt = await Runtime.start(Settings(), default_wiring())
    app = create_app(rt)
    rt.channels["slack"].service(rt, app)  # mounts /slack/events when configured (HTTP only in tests)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    try:
        await uvicorn.Server(http_config(rt, app)).serve(sockets=[sock])
    finally:
        await rt.close()


if __name__ == "__main__":
    asyncio.run(main())

"""The HTTP server's limits: what one client may cost us before it is refused.

- Bodies: `BodyLimit`, an ASGI middleware in front of every route. A declared Content-Length over
  `CHATOPS_MAX_BODY` gets 413 before a byte of the body is read (uvicorn itself stops reading the
  socket at 64 KB that nobody consumes); a chunked body is counted as it arrives and refused as
  soon as it passes the limit; a body that trickles in slower than `CHATOPS_HTTP_BODY_TIMEOUT`
  gets 408. A `gate` (the API's bearer token) is checked before any of the body is read.
- Headers and connections: uvicorn's h11 protocol bounds the size of a request head (16 KB),
  `limit_concurrency` bounds connections (503 beyond), `timeout_keep_alive` closes idle ones, and
  the protocol below adds what uvicorn lacks, a deadline for the request head: a client that has
  not finished sending its headers `CHATOPS_HTTP_HEADER_TIMEOUT` seconds after connecting (or
  after its previous response) is disconnected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("chatops.http")

MAX_HEAD = 16 * 1024  # request line and headers; Slack's and our clients' are far smaller
LINGER_SECONDS = 2.0  # after a refusal, how long (and how much) of the rest is read and dropped
LINGER_BYTES = 256 * 1024 * 1024  # read and dropped, never kept: time, not memory, bounds it

Gate = Callable[[Scope], Awaitable[JSONResponse | None]]


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body: int, body_timeout: float, gate: Gate | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._declared(scope)
        if refusal is None and self.gate is not None:
            refusal = await self.gate(scope)
        if refusal is None:
            try:
                body = await asyncio.wait_for(self._read(receive), self.body_timeout)
            except _TooLarge:
                refusal = _too_large(self.max_body)
            except TimeoutError:
                refusal = _refuse(408, "the request body arrived too slowly")
            except _Disconnected:
                return
        if refusal is not None:
            await _refuse_and_linger(refusal, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    def _declared(self, scope: Scope) -> JSONResponse | None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    return _refuse(400, "invalid Content-Length")
                if int(value) > self.max_body:
                    return _too_large(self.max_body)
        return None

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # a disconnect, for whoever waits for one
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _refuse_and_linger(refusal: JSONResponse, receive: Receive, send: Send) -> None:
    """Send the whole refusal, then read and drop what the client is still sending (bounded)
    before closing: closing a socket with unread data resets the connection, and a reset can
    destroy the refusal before the client has read it (the "lingering close" of HTTP servers)."""
    await send({"type": "http.response.start", "status": refusal.status_code,
                "headers": refusal.raw_headers})
    await send({"type": "http.response.body", "body": refusal.body, "more_body": True})
    drained = 0
    try:
        async with asyncio.timeout(LINGER_SECONDS):
            while drained < LINGER_BYTES:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
                drained += len(message.get("body", b""))
    except TimeoutError:
        pass
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _refuse(status: int, detail: str) -> JSONResponse:
    # the connection is closed after it: the rest of an unread body is not worth reading
    return JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})


def _too_large(limit: int) -> JSONResponse:
    return _refuse(413, f"request body over {limit} bytes")


def header_deadline_protocol(timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline on each request head."""

    class HeadDeadline(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def _arm(self) -> None:
            waiting_after = self.cycle  # a new request replaces it once its head is complete
            self.loop.call_later(timeout, self._expire, waiting_after)

        def _expire(self, waiting_after: Any) -> None:
            if self.cycle is waiting_after and not self.transport.is_closing():
                log.info("closing a connection that did not send a request head within %gs", timeout)
                self.transport.close()

    return HeadDeadline


def server_config(app: ASGIApp, *, host: str, port: int, max_connections: int, keep_alive: float,
                  header_timeout: float, **extra: Any) -> uvicorn.Config:
    options: dict[str, Any] = dict(
        log_level="warning", lifespan="off",
        http=header_deadline_protocol(header_timeout),
        h11_max_incomplete_event_size=MAX_HEAD,
        limit_concurrency=max_connections,
        timeout_keep_alive=int(max(1, keep_alive)),
    )
    return uvicorn.Config(app, host=host, port=port, **{**options, **extra})

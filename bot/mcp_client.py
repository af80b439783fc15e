"""One MCP server, as this worker process sees it: a session started lazily, kept, restarted with
back-off when it dies, and its tool list (read at start and on `notifications/tools/list_changed`).

The session's context managers (anyio task groups) live in one owner task per connection; calls
are made from the worker's tasks. A call never retries: at most once, a failure mid-call is an
error whose outcome is unknown, and the next call starts a fresh session.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import mcp.types as types
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.session import ClientRequestContext
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from bot.policy import McpServer, expand_env

log = logging.getLogger("chatops.mcp")

LIST_TIMEOUT = 30.0  # seconds to re-read a tool list after list_changed
MAX_BACKOFF = 60.0
STOP_GRACE = 10.0  # seconds a session has to close before its task is cancelled
PING_TIMEOUT = 10.0  # seconds a live session has to answer the ping before a call


class McpDown(Exception):
    """The server cannot be reached now; the message says why and until when we wait."""


class McpRefused(Exception):
    """The server answered the call with a protocol error (it did not run the tool, or says so)."""


class McpCallFailed(Exception):
    """The call was sent and failed without an answer: whether it took effect is unknown."""


class _Session(ClientSession):
    """A client that does not offer sampling or elicitation: a server that asks anyway is refused
    (by the callbacks below) and logged."""

    def _build_capabilities(self, version: str) -> types.ClientCapabilities:
        caps = super()._build_capabilities(version)
        return caps.model_copy(update={"sampling": None, "elicitation": None})


class McpConnection:
    def __init__(self, name: str, config: McpServer) -> None:
        self.name = name
        self.config = config
        self.tools: dict[str, types.Tool] = {}  # the last listing (kept while the server is down)
        self.listed = False
        self.error: str | None = None  # why it is down
        self.session: ClientSession | None = None
        self.failures = 0
        self.retry_at = 0.0
        self._lock = asyncio.Lock()
        self._stop: asyncio.Event | None = None
        self._owner: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    @property
    def state(self) -> str:
        if self.session is not None:
            return "up"
        return f"down: {self.error}" if self.error else "not started"

    # ---- lifecycle -------------------------------------------------------------------------------

    async def ensure(self) -> ClientSession:
        """The live session, starting the server if needed; McpDown while it cannot be reached."""
        async with self._lock:
            if self.session is not None:
                return self.session
            wait = self.retry_at - time.monotonic()
            if wait > 0:
                raise McpDown(f"MCP server {self.name} is down ({self.error}); next attempt in {wait:.0f}s")
            try:
                return await self._start()
            except Exception as exc:
                self._failed(exc)
                raise McpDown(f"MCP server {self.name} is down: {self.error}") from None

    def _failed(self, exc: BaseException | str) -> None:
        self.failures += 1
        self.error = exc if isinstance(exc, str) else _describe(exc)
        backoff = min(MAX_BACKOFF, 2.0 ** (self.failures - 1))  # 1s, 2s, 4s ... while it fails
        self.retry_at = time.monotonic() + backoff
        log.warning("MCP server %s: %s (next start in %gs at the earliest)", self.name, self.error, backoff)

    async def _start(self) -> ClientSession:
        ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
        ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, if we gave up
        self._stop = asyncio.Event()
        self._owner = asyncio.create_task(self._own(ready, self._stop), name=f"mcp-{self.name}")
        try:
            async with asyncio.timeout(self.config.timeout):  # to start, initialize and list tools
                session = await asyncio.shield(ready)
        except BaseException:
            await self._halt(grace=0)  # it may hang in initialize: cancel it
            raise
        self.session, self.failures, self.error = session, 0, None
        log.info("MCP server %s: connected, %d tools", self.name, len(self.tools))
        return session

    async def _own(self, ready: asyncio.Future, stop: asyncio.Event) -> None:
        try:
            async with AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport())
                session = await stack.enter_async_context(_Session(
                    read, write, message_handler=self._on_message,
                    sampling_callback=self._refuse_sampling, elicitation_callback=self._refuse_elicitation,
                ))
                await session.initialize()
                await self._list(session)
                ready.set_result(session)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else McpDown("stopped"))
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("MCP server %s: session ended: %s", self.name, _describe(exc))
        finally:
            if self._stop is stop:
                self.session = None

    def _transport(self) -> AbstractAsyncContextManager[tuple[Any, Any]]:  # (read, write) streams
        if self.config.command is not None:
            return stdio_client(StdioServerParameters(
                command=self.config.command[0], args=self.config.command[1:], env=self.server_env(),
            ), errlog=sys.stderr)  # its logs reach the operator
        headers = {k: expand_env(v, f"mcp.{self.name}.headers.{k}") for k, v in self.config.headers.items()}
        assert self.config.url is not None
        return streamable_http_client(self.config.url, http_client=create_mcp_http_client(headers=headers))

    def server_env(self) -> dict[str, str]:
        """A minimal environment (PATH, HOME, ...: the SDK's list) plus the server's own `env`:
        never the bot's secrets."""
        env = get_default_environment()
        env.update({k: expand_env(v, f"mcp.{self.name}.env.{k}") for k, v in self.config.env.items()})
        return env

    async def reset(self, why: str) -> None:
        """Drop the session (it failed); the next call starts a new one after the back-off."""
        self.session = None
        self._failed(why)
        if self.failures == 1:  # a session that was up and broke is replaced on the next call
            self.retry_at = 0.0
        await self._halt()

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._halt()
        self.session = None

    async def _halt(self, grace: float = STOP_GRACE) -> None:
        """Stop the owner task: let it close the session (the SDK stops a stdio server, ends an
        HTTP session) within `grace` seconds, else cancel it."""
        if self._stop is not None:
            self._stop.set()
        owner = self._owner
        if owner is None or owner.done():
            return
        done, _ = await asyncio.wait([owner], timeout=grace) if grace else (set(), None)
        if not done:
            owner.cancel()
            await asyncio.gather(owner, return_exceptions=True)

    # ---- tools -----------------------------------------------------------------------------------

    async def _list(self, session: ClientSession) -> None:
        tools: dict[str, types.Tool] = {}
        cursor = None
        for _page in range(100):  # a server that pages forever cannot hang us
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            listing = await session.list_tools(params=params)
            tools.update({t.name: t for t in listing.tools})
            cursor = listing.next_cursor
            if not cursor:
                break
        gone = set(self.tools) - set(tools)
        self.tools, self.listed = tools, True
        if gone:
            log.warning("MCP server %s no longer offers: %s", self.name, ", ".join(sorted(gone)))

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            log.warning("MCP server %s: %s", self.name, _describe(message))
            return
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            task = asyncio.create_task(self._relist())  # not here: this runs in the session's reader
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _relist(self) -> None:
        session = self.session
        if session is None:
            return
        try:
            async with asyncio.timeout(LIST_TIMEOUT):
                await self._list(session)
            log.info("MCP server %s: tool list changed, %d tools", self.name, len(self.tools))
        except Exception as exc:
            log.warning("MCP server %s: re-reading its tools failed: %s", self.name, _describe(exc))

    async def _refuse_sampling(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams,
    ) -> types.ErrorData:
        log.warning("MCP server %s asked for sampling (a model call); refused", self.name)
        return types.ErrorData(code=types.INVALID_REQUEST, message="sampling is not offered by this client")

    async def _refuse_elicitation(
        self, context: ClientRequestContext, params: types.ElicitRequestParams,
    ) -> types.ErrorData:
        log.warning("MCP server %s asked for elicitation (input from a human); refused", self.name)
        return types.ErrorData(code=types.INVALID_REQUEST, message="elicitation is not offered by this client")

    # ---- calls -----------------------------------------------------------------------------------

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float) -> types.CallToolResult:
        """Call once. McpDown: not sent. McpCallFailed: sent, no answer (outcome unknown)."""
        session = await self._checked(await self.ensure())
        try:
            async with asyncio.timeout(timeout):
                result = await session.call_tool(tool, arguments)
        except TimeoutError:
            raise McpCallFailed(f"no answer within {timeout:g}s") from None
        except MCPError as exc:
            if exc.code not in (CONNECTION_CLOSED, REQUEST_TIMEOUT):  # the server answered: an error
                raise McpRefused(f"the server answered with an error: {exc.message[:300]}") from None
            await self.reset(_describe(exc))
            raise McpCallFailed(f"the call failed: {_describe(exc)}") from None
        except Exception as exc:
            await self.reset(_describe(exc))
            raise McpCallFailed(f"the call failed: {_describe(exc)}") from None
        if not isinstance(result, types.CallToolResult):
            raise McpCallFailed(f"unexpected answer {type(result).__name__}")
        return result

    async def _checked(self, session: ClientSession) -> ClientSession:
        """A session may have died since its last use (a stdio server that exited, an HTTP
        session the server expired or forgot in a restart): ping before each call and on failure
        start a new session. Nothing of the call was sent yet, so this never repeats a call; the
        price is one round trip per call."""
        try:
            async with asyncio.timeout(min(self.config.timeout, PING_TIMEOUT)):
                await session.send_ping()
            return session
        except Exception as exc:
            log.info("MCP server %s: session check failed (%s); re-initializing", self.name, _describe(exc))
            await self.reset(_describe(exc))
            self.retry_at = 0.0  # re-initialize now, once
            return await self.ensure()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions[:3])
    text = str(exc).strip() or type(exc).__name__
    return text[:300]

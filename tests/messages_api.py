"""A small local server that speaks the Anthropic Messages API, for the real `anthropic` client.

Tests script its answers: a message (text and/or tool_use blocks), or an HTTP error status.
Every request body is recorded so tests can check what the bot sent.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Reply = dict[str, Any] | tuple[int, dict[str, Any]]


def text(message: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": message}], "stop_reason": "end_turn"}


def tool_use(name: str, input: dict[str, Any], *more: tuple[str, dict[str, Any]], say: str = "") -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": say}] if say else []
    for n, i in ((name, input), *more):
        blocks.append({"type": "tool_use", "id": f"toolu_{secrets.token_hex(8)}", "name": n, "input": i})
    return {"content": blocks, "stop_reason": "tool_use"}


def error(status: int, kind: str = "api_error") -> tuple[int, dict[str, Any]]:
    return status, {"type": "error", "error": {"type": kind, "message": f"scripted {status}"}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a burst of concurrent requests (benchmarks) must not hit SYN retries


class MessagesAPI:
    def __init__(self, latency: float = 0.0) -> None:
        self.script: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.latency = latency
        self.received = 0  # requests that arrived, counted before the latency is waited out
        self.bytes_per_token = 4  # what count_tokens answers with
        self.usage: dict[str, int] | None = None  # the usage answers report (default: no cache use)
        self.responder: Callable[[dict[str, Any]], Reply] | None = None
        self.api_key: str | None = None  # set: requests with another key (x-api-key or Bearer) get a 401
        self.counted: list[dict[str, Any]] = []  # bodies of count_tokens requests
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if server.api_key is not None and server.api_key not in (
                        self.headers.get("x-api-key"),
                        (self.headers.get("authorization") or "").removeprefix("Bearer ")):
                    status, payload = error(401, "authentication_error")
                elif self.path.split("?")[0].endswith("/messages/count_tokens"):
                    status, payload = server._count(body)
                else:
                    status, payload = server._answer(body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if status >= 400:
                    self.send_header("retry-after-ms", "10")
                self.end_headers()
                self.wfile.write(data)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> MessagesAPI:
        self.thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add(self, *replies: Reply) -> None:
        with self._lock:
            self.script.extend(replies)

    def _count(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST /v1/messages/count_tokens: a stand-in count (`bytes_per_token` bytes of the whole
        request a token), as the API shapes it."""
        with self._lock:
            self.counted.append(body)
        return 200, {"input_tokens": max(1, len(json.dumps(body)) // self.bytes_per_token)}

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.received += 1
        if self.latency:
            time.sleep(self.latency)
        with self._lock:
            self.requests.append(body)
            if self.responder is not None:
                reply = self.responder(body)
            elif self.script:
                reply = self.script.popleft()
            else:
                reply = text("(script exhausted)")
        if isinstance(reply, tuple):
            return reply
        return 200, {
            "id": f"msg_{secrets.token_hex(8)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "test"),
            "content": reply["content"],
            "stop_reason": reply["stop_reason"],
            "stop_sequence": None,
            "usage": self.usage or {"input_tokens": 10, "output_tokens": 5,
                                    "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }

"""The local Messages API server (tests/messages_api.py) in its own process, scripted for the
benchmarks, so that its threads never compete with the measured code for the GIL.

The answer depends only on the request: while the context has fewer than `steps` tool results the
model calls `noop`; then, with `gate`, it calls `gated` once (the approval-gated tool); then it
answers with text.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.messages_api import MessagesAPI, text, tool_use


def _results(body: dict[str, Any]) -> int:
    return sum(
        1 for m in body["messages"] if m["role"] == "user"
        for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_result"
    )


def responder(steps: int, gate: bool):
    def answer(body: dict[str, Any]):
        done = _results(body)
        if done < steps:
            return tool_use("noop", {"service": "api", "step": done})
        if gate and done == steps:
            return tool_use("gated", {"service": "api", "step": done})
        return text("done")

    return answer


def serve(latency: float, steps: int, gate: bool) -> None:
    with MessagesAPI(latency=latency) as api:
        api.responder = responder(steps, gate)
        api.requests = _Discard()
        print(api.url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


class _Discard(list):
    def append(self, _item: Any) -> None:  # keep no request bodies: long runs stay small
        pass


@contextmanager
def model_stub(latency: float = 0.0, steps: int = 0, gate: bool = False) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.model_stub", str(latency), str(steps), "1" if gate else "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("latency", type=float)
    parser.add_argument("steps", type=int)
    parser.add_argument("gate", type=int)
    a = parser.parse_args()
    serve(a.latency, a.steps, bool(a.gate))

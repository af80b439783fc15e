"""Logging: text on a terminal by default, or with CHATOPS_LOG_FORMAT=json one JSON object per
line (for a log stack), with `thread_id`, `approval_id`, `agent` and `event` fields where they
apply.

Standard-library logging with python-json-logger's formatter rather than structlog: every module
here and every library under us (uvicorn, slack-bolt, aiosmtpd, redis-py, anthropic) already logs
through the standard library, so one formatter on the root handler turns all of their lines into
JSON, with no second logging API to learn or wrap.

The fields come from a context variable set while a worker advances a thread (so every line
logged meanwhile, also by a library, carries the thread id) or from a call's `extra=`. Nothing
secret is put in either: settings' secrets are never logged, and reply tokens are redacted where
addresses are logged (channels/email/tokens.py).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

FIELDS = ("thread_id", "approval_id", "agent", "event")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: ContextVar[dict[str, str]] = ContextVar("chatops_log_context", default={})


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add fields to every line logged inside (in this task and the tasks it starts)."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: str | None) -> None:
    """Add fields to the current context until its `log_context` ends (e.g. the agent, once a
    thread is loaded)."""
    _context.set({**_context.get(), **{k: v for k, v in fields.items() if v}})


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def setup(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(_json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def _json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    formatter: Any = JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )
    return formatter

"""The one place we call the model: the real AsyncAnthropic client, tools as JSON schemas.

Transient API failures (429, 529, 5xx, timeouts, connection errors) are retried by the SDK with
exponential backoff (honouring retry-after); what still fails becomes `ModelUnavailable`, which
the step loop shows to the human.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import anthropic
import httpx2
from anthropic.types import MessageParam, ToolParam

from bot import metrics
from bot.context import Message, with_cache_breakpoints
from bot.settings import Settings
from bot.tools import Tool


class ModelUnavailable(Exception):
    pass


@dataclass(frozen=True)
class ToolUse:
    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class ModelTurn:
    id: str
    text: str
    tool_uses: list[ToolUse]
    stop_reason: str | None
    usage: dict[str, int] = field(default_factory=dict)


class Model:
    def __init__(self, settings: Settings) -> None:
        assert settings.anthropic_api_key is not None
        self.model = settings.model
        self.max_tokens = settings.model_max_tokens
        # the SDK's timeout is per attempt and it retries timeouts too: the deadline bounds them all
        self.deadline = settings.model_deadline
        self.client = anthropic.AsyncAnthropic(
            api_key=settings.anthropic_api_key.get_secret_value(),
            base_url=settings.anthropic_base_url,
            max_retries=settings.model_retries,
            timeout=min(settings.model_timeout, settings.model_deadline),
            http_client=_http_client(settings.worker_concurrency),
            open_telemetry=_spans(),
        )

    async def next_turn(self, system: str, tools: list[Tool], messages: list[Message]) -> ModelTurn:
        with metrics.MODEL_CALLS.time():
            try:
                turn = await self._next_turn(system, tools, messages)
            except ModelUnavailable as exc:
                metrics.MODEL_ERRORS.labels(_kind(exc.__cause__)).inc()
                raise
        metrics.model_usage(turn.usage)
        return turn

    async def _next_turn(self, system: str, tools: list[Tool], messages: list[Message]) -> ModelTurn:
        schemas = [t.schema() for t in tools]
        if schemas:
            schemas[-1] = {**schemas[-1], "cache_control": {"type": "ephemeral"}}
        try:
            async with asyncio.timeout(self.deadline):
                # the raw answer: the SDK's response models cost about a third of its client CPU
                # per call, and we read four fields
                raw = await self.client.messages.with_raw_response.create(
                    model=self.model,
                    max_tokens=self.max_tokens,
                    system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                    # ours are plain JSON dicts of the API's shapes, not the SDK's TypedDicts
                    tools=cast("list[ToolParam]", schemas),
                    messages=cast("list[MessageParam]", with_cache_breakpoints(messages)),
                )
        except TimeoutError:
            raise ModelUnavailable(f"the model API did not answer within {self.deadline:g} s "
                                   "(CHATOPS_MODEL_DEADLINE)") from None
        except anthropic.APIStatusError as exc:
            raise ModelUnavailable(f"the model API answered {exc.status_code}: {_short(exc)}") from exc
        except anthropic.APIConnectionError as exc:  # includes timeouts
            raise ModelUnavailable(f"could not reach the model API: {exc}") from exc
        except anthropic.APIError as exc:  # e.g. a response that is not the Messages API's
            raise ModelUnavailable(f"the model API failed: {type(exc).__name__}: {exc}") from exc
        try:
            return _turn(await raw.json())  # the body was read by the call (not streamed)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ModelUnavailable(f"the model API sent a malformed answer ({exc!r})") from exc

    async def close(self) -> None:
        await self.client.close()


def _http_client(concurrency: int) -> Any:
    """The SDK on its aiohttp transport: about half the client CPU per call of its default
    httpx stack (see the README's Performance section). One per process, one connection per
    thread a worker may advance at once, kept alive between calls."""
    n = max(1, concurrency)
    return anthropic.DefaultAioHttpClient(
        limits=httpx2.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=30),
    )


def _spans() -> Literal[False] | None:
    """The SDK's OpenTelemetry spans only where a tracer provider is set up (at start, e.g. by
    `opentelemetry-instrument` or OTEL_PYTHON_TRACER_PROVIDER): without one they record nothing,
    yet building each call's span attributes costs about a sixth of the SDK's client CPU per call.
    None leaves it to the SDK (and its ANTHROPIC_OPEN_TELEMETRY)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    try:
        provider = trace.get_tracer_provider()
    except Exception:  # a provider named in the environment that cannot load: the SDK says so
        return None
    return False if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)) else None


def _turn(reply: Any) -> ModelTurn:
    """The Messages API's answer (JSON), as far as we use it."""
    content = reply["content"]
    if not isinstance(content, list):
        raise TypeError(f"content is a {type(content).__name__}, not a list of blocks")
    text = "".join(b["text"] for b in content if b["type"] == "text").strip()
    uses = [ToolUse(b["id"], b["name"], dict(b["input"])) for b in content if b["type"] == "tool_use"]
    usage = {k: v for k, v in (reply.get("usage") or {}).items() if type(v) is int}
    return ModelTurn(reply["id"], text, uses, reply.get("stop_reason"), usage)


def _kind(exc: BaseException | None) -> str:
    """A bounded label for a model error: the HTTP status, or what failed."""
    if isinstance(exc, anthropic.APIStatusError):
        return f"http_{exc.status_code}"
    if isinstance(exc, anthropic.APITimeoutError):
        return "timeout"
    if isinstance(exc, anthropic.APIConnectionError):
        return "connection"
    return "api_error" if isinstance(exc, anthropic.APIError) else "malformed"


def _short(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:200]
    return str(exc.message)[:200]

"""Prometheus metrics (prometheus-client), one set per process: counters and histograms moved where
things happen, gauges read from Redis when scraped. Served at GET /metrics on the HTTP API (with
the API token) and, with CHATOPS_METRICS_PORT, on a port of their own without a token (bind it
where only the scraper reaches it): `chatops worker` has no API, so that is how a worker is
scraped. Labels are bounded: event types, step kinds, tool names, channels, outcomes; never a
thread or a person.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger("chatops.metrics")

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
DECISION_SECONDS = (10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400)

EVENTS = Counter("chatops_events_appended", "Events appended to thread logs, by type", ["type"])
STEPS = Histogram("chatops_step_seconds", "Agent steps executed, by kind, and how long each took",
                  ["kind"], buckets=SECONDS)
MODEL_CALLS = Histogram("chatops_model_call_seconds", "Model API calls and their latency (retries "
                        "included)", buckets=SECONDS)
MODEL_TOKENS = Counter("chatops_model_tokens", "Model tokens by kind: input, output, cache_read, "
                       "cache_creation", ["kind"])
MODEL_ERRORS = Counter("chatops_model_errors", "Model calls that failed, by kind", ["kind"])
TOOL_RUNS = Histogram("chatops_tool_run_seconds", "Tool runs, by tool and status, and their "
                      "duration", ["tool", "status"], buckets=SECONDS)
APPROVALS_PENDING = Gauge("chatops_approvals_pending", "Approvals waiting for a decision now")
APPROVALS_DECIDED = Counter("chatops_approvals_decided", "Approvals decided, by outcome", ["outcome"])
DECISION_TIME = Histogram("chatops_approval_decision_seconds", "From an approval's request to its "
                          "decision", buckets=DECISION_SECONDS)
DELIVERIES_FAILED = Counter("chatops_deliveries_failed", "Messages to humans that failed, by "
                            "channel", ["channel"])
INBOX_PENDING = Gauge("chatops_inbox_pending", "Inbox entries delivered to a worker, not yet done")
INBOX_LAG = Gauge("chatops_inbox_lag", "Inbox entries not yet delivered to any worker")
LEASE_LOSSES = Counter("chatops_lease_losses", "Threads whose lease a worker lost while working")
REDIS_OUTAGES = Counter("chatops_redis_errors", "Redis outages met (connection errors, failovers, "
                        "replicas not acknowledging), by where", ["where"])
REPLICA_WAITS = Counter("chatops_replica_waits", "Tool starts held back because replicas did not "
                        "acknowledge the start marker in time")

_USAGE = {"input_tokens": "input", "output_tokens": "output",
          "cache_read_input_tokens": "cache_read", "cache_creation_input_tokens": "cache_creation"}


def appended(*events: Any) -> None:
    """(A message that answered an open question counts as user_message: the append script
    decides which type it is stored as.)"""
    for event in events:
        EVENTS.labels(event.type).inc()


def decided(outcome: str, waited: float) -> None:
    APPROVALS_DECIDED.labels(outcome).inc()
    DECISION_TIME.observe(max(waited, 0.0))


def model_usage(usage: dict[str, Any]) -> None:
    for field, kind in _USAGE.items():
        if isinstance(usage.get(field), int):
            MODEL_TOKENS.labels(kind).inc(usage[field])


async def refresh(rt: Runtime) -> None:
    """Set the gauges read from Redis (what all processes share); on an outage they keep their
    last value and the outage is counted."""
    from bot.inbox import GROUP

    keys = rt.store.keys
    try:
        APPROVALS_PENDING.set(await rt.redis.zcard(keys.pending_approvals))
        pending = lag = 0
        for inbox in keys.inboxes():
            for group in await rt.redis.xinfo_groups(inbox) if await rt.redis.exists(inbox) else []:
                if _s(group["name"]) == GROUP:
                    pending += int(group.get("pending") or 0)
                    lag += int(group.get("lag") or 0)
        INBOX_PENDING.set(pending)
        INBOX_LAG.set(lag)
    except Exception as exc:  # a scrape must still answer, with the process's own counters
        REDIS_OUTAGES.labels("metrics").inc()
        log.warning("metrics: reading Redis failed: %s", exc)


async def exposition(rt: Runtime) -> tuple[bytes, str]:
    await refresh(rt)
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def metrics_app(rt: Runtime) -> Any:
    """The app for CHATOPS_METRICS_PORT: GET /metrics only."""
    from fastapi import FastAPI, Response

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/metrics")
    async def metrics() -> Response:
        body, kind = await exposition(rt)
        return Response(body, media_type=kind)

    return app


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

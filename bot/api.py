"""The HTTP API (factor 6: launch, read, answer, decide), JSON, bearer token on everything but
health, its OpenAPI description included (at /openapi.json). Other channels (Slack's
/slack/events) mount their routes on the same app."""

from __future__ import annotations

import hmac
import time
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from redis.exceptions import ClusterDownError, ReadOnlyError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot import metrics
from bot.approvals import Outcome
from bot.events import Source
from bot.intake import new_thread_id
from bot.runtime import Runtime
from bot.store import ThreadNotFound
from bot.thread import Origin

State = Literal["working", "awaiting_approval", "awaiting_human", "idle"]


class NewThread(BaseModel):
    agent: str | None = Field(None, description="Agent name; the default agent if omitted")
    text: str = Field(min_length=1, max_length=40_000)
    user: str = Field(min_length=1, max_length=200)


class NewMessage(BaseModel):
    text: str = Field(min_length=1, max_length=40_000)
    user: str = Field(min_length=1, max_length=200)


class DecisionIn(BaseModel):
    decision: Literal["approve", "reject"]
    user: str = Field(min_length=1, max_length=200)
    reason: str = Field("", max_length=2000)


_STATUS_CODES = {"decided": 200, "already_decided": 409, "refused": 403, "expired": 410, "not_found": 404}


def create_app(rt: Runtime) -> FastAPI:
    # no open /docs or /openapi.json: the description is served below, behind the token
    app = FastAPI(title="chatops-bot", version="1", summary="Durable agent threads with approvals",
                  openapi_url=None, docs_url=None, redoc_url=None)
    bearer = HTTPBearer(auto_error=False)

    def authorized(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        token = rt.settings.api_token
        if token is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "the API is off: set CHATOPS_API_TOKEN")
        given = creds.credentials if creds else ""
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    @app.exception_handler(ReadOnlyError)  # a failover: the old master was demoted
    @app.exception_handler(ClusterDownError)
    @app.exception_handler(TryAgainError)
    async def redis_down(_request: Request, _exc: Exception) -> JSONResponse:
        metrics.REDIS_OUTAGES.labels("api").inc()
        return JSONResponse({"detail": "storage unavailable, retry later"}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        try:
            await rt.redis.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            raise HTTPException(503, "redis unreachable") from None
        return {"ok": True}

    auth = [Depends(authorized)]

    @app.get("/metrics", dependencies=auth, include_in_schema=False)
    async def prometheus() -> Response:
        body, kind = await metrics.exposition(rt)
        return Response(body, media_type=kind)

    @app.get("/openapi.json", dependencies=auth, include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.post("/v1/threads", dependencies=auth, status_code=201, tags=["threads"])
    async def start_thread(body: NewThread) -> dict[str, Any]:
        agent = body.agent or rt.settings.default_agent
        if agent not in rt.agents:
            raise HTTPException(422, f"no agent {agent!r}; agents: {', '.join(sorted(rt.agents))}")
        thread_id = new_thread_id()
        await rt.intake.message(
            thread_id, agent=agent, origin=Origin(channel="api"), text=body.text,
            source=Source(channel="api", user=body.user),
        )
        return {"id": thread_id, "agent": agent, "state": "working"}

    @app.get("/v1/threads", dependencies=auth, tags=["threads"])
    async def list_threads(state: State | None = None, limit: int = 100) -> dict[str, Any]:
        return {"threads": await rt.store.list_threads(state, max(1, min(limit, 1000)))}

    @app.get("/v1/threads/{thread_id}", dependencies=auth, tags=["threads"])
    async def get_thread(thread_id: str) -> dict[str, Any]:
        try:
            thread = await rt.store.load(thread_id)
        except ThreadNotFound:
            raise HTTPException(404, f"no thread {thread_id}") from None
        events = [e.model_dump(mode="json") for e in thread.events]
        return {**thread.summary(), "events": events}

    @app.post("/v1/threads/{thread_id}/messages", dependencies=auth, status_code=202, tags=["threads"])
    async def post_message(thread_id: str, body: NewMessage) -> dict[str, Any]:
        try:
            thread = await rt.store.load(thread_id)
        except ThreadNotFound:
            raise HTTPException(404, f"no thread {thread_id}") from None
        await rt.intake.message(
            thread_id, agent=thread.agent, origin=thread.meta.origin, text=body.text,
            source=Source(channel="api", user=body.user),
        )
        return {"id": thread_id, "accepted": True}

    @app.get("/v1/approvals", dependencies=auth, tags=["approvals"])
    async def list_approvals(state: Literal["pending"] = "pending") -> dict[str, Any]:
        out = []
        now = time.time()
        for approval_id in await rt.store.pending_approval_ids():
            found = await rt.approvals.find(approval_id)
            if found is None or approval_id in found[0].decisions:
                continue
            request = found[1]
            out.append({**request.model_dump(mode="json"), "thread": found[0].id,
                        "expired": now >= request.expires_at})
        return {"approvals": out}

    @app.post("/v1/approvals/{approval_id}", dependencies=auth, tags=["approvals"])
    async def decide(approval_id: str, body: DecisionIn) -> JSONResponse:
        outcome: Outcome = await rt.approvals.decide(
            approval_id, body.decision == "approve", body.user, "api", body.reason
        )
        payload: dict[str, Any] = {"approval_id": approval_id, "status": outcome.status,
                                   "message": outcome.message}
        if outcome.decision is not None:
            payload["decision"] = outcome.decision.decision
            payload["by"] = outcome.decision.by
        return JSONResponse(payload, status_code=_STATUS_CODES[outcome.status])

    return app

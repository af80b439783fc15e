"""The HTTP API (factor 6: launch, read, answer, decide), JSON, bearer token on everything but
health, its OpenAPI description included (at /openapi.json). Other channels (Slack's
/slack/events) mount their routes on the same app."""

from __future__ import annotations

import hmac
import json
import time
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, Field
from redis.exceptions import ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.types import Scope

from bot import metrics
from bot.approvals import Outcome
from bot.events import Source
from bot.http_limits import BodyLimit
from bot.intake import new_thread_id, poison
from bot.outage import CLUSTER_DOWN
from bot.runtime import Runtime
from bot.store import ThreadNotFound
from bot.thread import Origin

State = Literal["working", "awaiting_approval", "awaiting_human", "idle"]


def _no_poison(text: str) -> str:
    if why := poison(text):
        raise ValueError(why)
    return text


# text that can be stored and encoded: no lone surrogates, no NUL or other control characters
Text = Annotated[str, AfterValidator(_no_poison)]


class NewThread(BaseModel):
    agent: Text | None = Field(None, description="Agent name; the default agent if omitted", max_length=100)
    text: Text = Field(min_length=1, max_length=40_000)
    user: Text = Field(min_length=1, max_length=200)


class NewMessage(BaseModel):
    text: Text = Field(min_length=1, max_length=40_000)
    user: Text = Field(min_length=1, max_length=200)


class DecisionIn(BaseModel):
    decision: Literal["approve", "reject"]
    user: Text = Field(min_length=1, max_length=200)
    reason: Text = Field("", max_length=2000)


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: non-ASCII as \\u escapes, so even a lone surrogate in some
    string cannot turn a response into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def token_refusal(rt: Runtime, authorization: str | None) -> HTTPException | None:
    """Why a request with this Authorization header may not use the API, or None."""
    token = rt.settings.api_token
    if token is None:
        return HTTPException(status.HTTP_401_UNAUTHORIZED, "the API is off: set CHATOPS_API_TOKEN")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.get_secret_value().encode()):
        return HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token",
                             headers={"WWW-Authenticate": "Bearer"})
    return None


def _guarded(path: str) -> bool:
    return path.startswith("/v1/") or path == "/openapi.json"


PAGE = 200  # events per page of GET /v1/threads/{id}
MAX_PAGE = 1000
USAGE_SHOWN = 20  # the latest model calls' usage records shown with a thread

_STATUS_CODES = {"decided": 200, "voted": 202, "already_decided": 409, "refused": 403, "expired": 410,
                 "not_found": 404}


def approval_resource(rt: Runtime, thread: Any, request: Any) -> dict[str, Any]:
    """An approval as the API shows it: the request, its votes and refusals (who, as which
    person, through which channel) and its decision."""
    votes = [v.model_dump(mode="json") for v in thread.votes.get(request.approval_id, [])]
    refusals = [e.model_dump(mode="json") for e in thread.events
                if e.type == "approval_refused" and e.approval_id == request.approval_id]
    decision = thread.decisions.get(request.approval_id)
    return {**request.model_dump(mode="json"), "thread": thread.id, "expired": time.time() >= request.expires_at,
            "approvals_so_far": rt.approvals.approvals_so_far(thread, request),
            "quorum": rt.approvals.quorum(request), "votes": votes, "refusals": refusals,
            "decision": decision.model_dump(mode="json") if decision else None}


def create_app(rt: Runtime) -> FastAPI:
    # no open /docs or /openapi.json: the description is served below, behind the token
    app = FastAPI(title="chatops-bot", version="1", summary="Durable agent threads with approvals",
                  openapi_url=None, docs_url=None, redoc_url=None, default_response_class=SafeJSONResponse)
    bearer = HTTPBearer(auto_error=False)

    def authorized(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        given = f"Bearer {creds.credentials}" if creds else None
        if (refusal := token_refusal(rt, given)) is not None:
            raise refusal

    async def gate(scope: Scope) -> JSONResponse | None:
        """The token, checked before a byte of the body is read (the body limit's gate)."""
        if not _guarded(scope["path"]):
            return None
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        refusal = token_refusal(rt, header.decode("latin-1") if header is not None else None)
        if refusal is None:
            return None
        return SafeJSONResponse({"detail": refusal.detail}, status_code=refusal.status_code,
                                headers={**(refusal.headers or {}), "Connection": "close"})

    settings = rt.settings
    app.add_middleware(BodyLimit, max_body=settings.max_body, body_timeout=settings.http_body_timeout,
                       gate=gate)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # without the input: it may be what cannot be encoded (or huge)
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
                  for e in exc.errors()]
        return SafeJSONResponse({"detail": errors}, status_code=422)

    async def redis_down(_request: Request, _exc: Exception) -> JSONResponse:
        metrics.REDIS_OUTAGES.labels("api").inc()
        return JSONResponse({"detail": "storage unavailable, retry later"}, status_code=503,
                            headers={"Retry-After": "5"})

    # a failover demotes the old master (ReadOnlyError); a cluster has its own (CLUSTER_DOWN)
    for down in (RedisConnectionError, RedisTimeoutError, ReadOnlyError, *CLUSTER_DOWN):
        app.add_exception_handler(down, redis_down)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        try:
            await rt.redis.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError, *CLUSTER_DOWN):
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
        admission = await rt.intake.admit(body.user, thread_id)
        if not admission.ok:
            raise HTTPException(429, admission.refusal(rt.settings.requests_per_hour), headers={"Retry-After": "3600"})
        await rt.intake.message(
            thread_id, agent=agent, origin=Origin(channel="api"), text=body.text,
            source=Source(channel="api", user=body.user),
        )
        return {"id": thread_id, "agent": agent, "state": "working"}

    @app.get("/v1/threads", dependencies=auth, tags=["threads"])
    async def list_threads(state: State | None = None, limit: int = 100) -> dict[str, Any]:
        return {"threads": await rt.store.list_threads(state, max(1, min(limit, 1000)))}

    @app.get("/v1/threads/{thread_id}", dependencies=auth, tags=["threads"])
    async def get_thread(
        thread_id: str,
        after: str | None = Query(None, max_length=64, description="Events after this event id"),
        limit: int = Query(PAGE, ge=1, le=MAX_PAGE),
    ) -> dict[str, Any]:
        """The thread's summary and a page of its events (`next_after`: the cursor of the next
        page, null on the last); `total_events`: how many there are; `usage`: the latest model
        calls' tokens, with the share read from the prompt cache (`cached_fraction`)."""
        row = await rt.store.row(thread_id)
        if row is None:
            raise HTTPException(404, f"no thread {thread_id}")
        try:
            total, _first, events = await rt.store.page(thread_id, after, limit)
        except LookupError:
            raise HTTPException(404, f"no event {after} in thread {thread_id}") from None
        more = bool(events) and _first + len(events) < total
        return {**row, "total_events": total, "events": [e.model_dump(mode="json") for e in events],
                "next_after": events[-1].id if more else None,
                "usage": await rt.store.usage(thread_id, USAGE_SHOWN)}

    @app.post("/v1/threads/{thread_id}/messages", dependencies=auth, status_code=202, tags=["threads"])
    async def post_message(thread_id: str, body: NewMessage) -> dict[str, Any]:
        try:
            meta = await rt.store.meta(thread_id)  # not the log: a long thread costs a short one's
        except ThreadNotFound:
            raise HTTPException(404, f"no thread {thread_id}") from None
        await rt.intake.message(
            thread_id, agent=meta.agent, origin=meta.origin, text=body.text,
            source=Source(channel="api", user=body.user),
        )
        return {"id": thread_id, "accepted": True}

    @app.get("/v1/approvals", dependencies=auth, tags=["approvals"])
    async def list_approvals(state: Literal["pending"] = "pending") -> dict[str, Any]:
        out = []
        for approval_id in await rt.store.pending_approval_ids():
            found = await rt.approvals.find(approval_id)  # reads that approval's events only
            if found is None or approval_id in found[0].decisions:
                continue
            out.append(approval_resource(rt, *found))
        return {"approvals": out}

    @app.get("/v1/approvals/{approval_id}", dependencies=auth, tags=["approvals"])
    async def get_approval(approval_id: str) -> dict[str, Any]:
        found = await rt.approvals.find(approval_id)
        if found is None:
            raise HTTPException(404, f"no approval {approval_id}")
        return approval_resource(rt, *found)

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
            payload["person"] = outcome.decision.person
            payload["approved_by"] = outcome.decision.approved_by
        if outcome.status == "voted":  # recorded, not decided yet: 202 with the votes so far
            payload["votes"] = list(outcome.votes)
            payload["quorum"] = rt.approvals.quorum(outcome.request) if outcome.request else None
        return JSONResponse(payload, status_code=_STATUS_CODES[outcome.status])

    return app

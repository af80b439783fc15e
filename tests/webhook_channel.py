"""A channel defined only in tests: a generic webhook, the proof that a channel is one module plus
one entry in the composition root's list (`Wiring.channels`), with no change to the core.

Inbound: POST /webhook/messages on the bot's HTTP app starts or continues the thread of a
conversation, and POST /webhook/decisions decides an approval; both carry the shared secret.
Outbound: each visible event of its threads is POSTed as JSON to the conversation's callback URL.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Sequence
from typing import Any

import aiohttp
from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from bot.channel import Address, Renderer
from bot.doctor import DoctorCheck, Finding, ok
from bot.events import ApprovalRequested, Event, Source
from bot.intake import thread_id_for
from bot.runtime import Runtime
from bot.thread import Origin, Thread

NAME = "webhook"


class Conversation(Address):
    """Its origin address: the sender's conversation, and where its events are POSTed."""

    conversation: str
    callback: str


class Inbound(BaseModel):
    conversation: str = Field(min_length=1, max_length=200)
    callback: str = Field(pattern=r"^https?://")
    user: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=4000)
    id: str | None = Field(None, max_length=200)  # the sender's delivery id: a retry counts once


class Decision(BaseModel):
    approval_id: str = Field(max_length=100)
    approve: bool
    user: str = Field(min_length=1, max_length=200)
    reason: str = Field("", max_length=1000)


STATUS = {"decided": 200, "voted": 202, "already_decided": 409, "refused": 403, "expired": 410,
          "not_found": 404}


class WebhookRenderer:
    name = NAME

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    async def render(self, thread: Thread, event: Event) -> None:
        to = Conversation.model_validate(thread.meta.origin.address)
        if self.session is None:  # made in the worker's event loop, at its first use
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        body = {"thread": thread.id, "conversation": to.conversation, "event": payload(event)}
        async with self.session.post(to.callback, json=body) as response:
            response.raise_for_status()  # delivery records a failure in the thread

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def payload(event: Event) -> dict[str, Any]:
    """What the receiver gets: the event as the log keeps it, an approval with what to answer."""
    data = event.model_dump(mode="json", exclude={"source"})
    if isinstance(event, ApprovalRequested):
        data["answer"] = {"path": "/webhook/decisions", "approval_id": event.approval_id}
    return data


class WebhookChannel:
    name = NAME
    notifies_approvers = False

    def __init__(self, secret: str) -> None:
        self.secret = secret

    settings = None  # its one setting, the shared secret, is given to it

    def configured(self) -> bool:
        return bool(self.secret)

    def service(self, rt: Runtime, app: FastAPI) -> Awaitable[None] | None:
        self.mount(rt, app)
        return None  # its routes live on the bot's HTTP server: nothing of its own to run

    def renderer(self, rt: Runtime) -> Renderer | None:
        return WebhookRenderer()

    def target(self, name: str) -> Address:
        raise ValueError("a webhook conversation starts from the sender")

    def contact(self, person: str) -> Address | None:
        return None

    def checks(self) -> Sequence[DoctorCheck]:
        async def check(_ctx: object) -> list[Finding]:
            return [ok("webhook: on")]

        return [DoctorCheck("webhook", check)]

    def mount(self, rt: Runtime, app: FastAPI) -> None:
        def verify(token: str | None) -> None:
            if token is None or not hmac.compare_digest(token.encode(), self.secret.encode()):
                raise HTTPException(401, "a valid X-Webhook-Token is required")

        @app.post("/webhook/messages", status_code=202, include_in_schema=False)
        async def message(body: Inbound, x_webhook_token: str | None = Header(None)) -> dict[str, Any]:
            verify(x_webhook_token)
            thread_id = thread_id_for(NAME, body.conversation)
            origin = Origin(channel=NAME, address=Conversation(conversation=body.conversation,
                                                                callback=body.callback).model_dump())
            appended = await rt.intake.message(
                thread_id, agent=rt.settings.default_agent, origin=origin, text=body.text,
                source=Source(channel=NAME, user=body.user, external_id=body.id and f"{NAME}:{body.id}"),
            )
            return {"thread": thread_id, "outcome": appended.outcome}

        @app.post("/webhook/decisions", include_in_schema=False)
        async def decide(body: Decision, x_webhook_token: str | None = Header(None)) -> JSONResponse:
            verify(x_webhook_token)
            outcome = await rt.approvals.decide(body.approval_id, body.approve, body.user, NAME, body.reason)
            return JSONResponse({"status": outcome.status, "message": outcome.message},
                                status_code=STATUS[outcome.status])

"""The Slack channel: a slack-bolt AsyncApp over the HTTP Events API and/or Socket Mode.

- `SLACK_BOT_TOKEN` (xoxb-) is required for either; without it the channel is off.
- `SLACK_SIGNING_SECRET`: events and interactivity at POST /slack/events on the bot's HTTP server.
- `SLACK_APP_TOKEN` (xapp-): Socket Mode, no public URL needed. Both may run at once.
- `SLACK_API_URL`: another Web API base URL (tests, proxies).

`SlackChannel` (channels/slack/channel.py) builds its service and renderer here; its doctor check
is channels/slack/doctor.py.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.policy import ConfigError
from bot.runtime import Runtime
from channels.slack import guard
from channels.slack.actions import Actions
from channels.slack.doctor import PATH
from channels.slack.inbound import Inbound, Later
from channels.slack.render import SlackRenderer
from channels.slack.settings import SlackSettings

log = logging.getLogger("chatops.slack")

RATE_LIMIT_RETRIES = 3


def web_client(settings: SlackSettings) -> AsyncWebClient:
    """The Web API client of this process; called in its event loop, it keeps one HTTP session
    (the renderer closes it)."""
    assert settings.bot_token is not None
    base_url = settings.api_url or AsyncWebClient.BASE_URL
    return AsyncWebClient(
        token=settings.bot_token.get_secret_value(),
        session=aiohttp.ClientSession(),
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),  # sleeps Retry-After
        ],
    )


def build_app(rt: Runtime, settings: SlackSettings, later: Later) -> AsyncApp:
    renderer = rt.renderers.get("slack")
    client = renderer.client if isinstance(renderer, SlackRenderer) else web_client(settings)
    secret = settings.signing_secret
    app = AsyncApp(
        client=client,
        signing_secret=secret.get_secret_value() if secret else "",
        # acknowledge only after the listener returned, i.e. after the event is stored
        process_before_response=True,
        name="chatops",
    )
    Inbound(rt, client, settings, later).register(app)
    Actions(rt, client, settings, later).register(app)
    return app


def mount(settings: SlackSettings, api: FastAPI, app: AsyncApp) -> None:
    """Serve the Events API and interactivity on the bot's HTTP server."""
    handler = AsyncSlackRequestHandler(app)
    secret = settings.signing_secret
    verifier = SignatureVerifier(secret.get_secret_value() if secret else "")

    async def slack_events(request: Request) -> Response:
        body = await request.body()  # bounded by the server's body limit
        if (refused := guard.refusal(verifier, request.headers, body)) is not None:
            status, why = refused
            log.warning("refused a request to %s: %s", PATH, why)
            return JSONResponse({"error": why}, status_code=status)
        return await handler.handle(request)

    api.add_api_route(PATH, slack_events, methods=["POST"], include_in_schema=False)


def serve(rt: Runtime, settings: SlackSettings, api: FastAPI, later: Later) -> Awaitable[None] | None:
    if not settings.configured:
        return None
    rt.on_close(later.close)
    app = build_app(rt, settings, later)
    if settings.signing_secret is not None:
        mount(settings, api, app)
        log.info("Slack events and interactivity at %s", PATH)
    if settings.app_token is not None:
        log.info("Slack Socket Mode")
        return _socket_mode(app, settings.app_token.get_secret_value())
    if settings.signing_secret is None:
        log.error("SLACK_BOT_TOKEN is set but neither SLACK_SIGNING_SECRET nor SLACK_APP_TOKEN: "
                  "Slack cannot reach the bot")
    return None


async def _socket_mode(app: AsyncApp, app_token: str) -> None:
    try:  # the handler would retry a refused token forever: ask once, and stop the bot loudly
        await app.client.apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        raise ConfigError(f"SLACK_APP_TOKEN: Socket Mode could not connect: "
                          f"{exc.response.get('error')}") from None
    handler = AsyncSocketModeHandler(app, app_token)
    try:
        await handler.start_async()  # connects, then waits forever; reconnects on its own
    finally:
        await handler.close_async()


def renderer(rt: Runtime, settings: SlackSettings) -> SlackRenderer | None:
    return SlackRenderer(rt, web_client(settings), settings) if settings.configured else None


"""The Slack channel's doctor check: the settings, then the bot token (`auth.test`), its scopes
against the manifest's, and the app token (`apps.connections.open`, what Socket Mode does first).

Kept apart from channels/slack/app.py so that `chatops doctor` does not import Bolt and FastAPI.
"""

from __future__ import annotations

from bot.doctor import Context, Finding, error, ok, warning
from channels.slack.settings import SlackSettings

PATH = "/slack/events"  # where channels/slack/app.py mounts the HTTP events
# The bot scopes of manifest.yml (a test keeps them equal): what the bot calls needs all of them.
MANIFEST_SCOPES = ("app_mentions:read", "channels:history", "groups:history", "im:history",
                   "chat:write", "reactions:write", "users:read", "users:read.email")
EMAIL_MATCH_SCOPES = ("users:read", "users:read.email")  # needed only with SLACK_MATCH_EMAIL
REINSTALL = "add the scopes of manifest.yml to the app (OAuth & Permissions) and reinstall it"


def needs(settings: SlackSettings) -> list[str]:
    return ["slack_sdk.web.async_client"] if settings.configured else []


async def check(ctx: Context, settings: SlackSettings) -> list[Finding]:
    out = settings_findings(ctx, settings)
    if not settings.configured or any(f.level == "error" for f in out):
        return out
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    base_url = settings.api_url or AsyncWebClient.BASE_URL
    assert settings.bot_token is not None
    bot = AsyncWebClient(token=settings.bot_token.get_secret_value(), base_url=base_url, timeout=30)
    try:
        auth = await bot.auth_test()
    except SlackApiError as exc:
        return [*out, error(f"Slack: auth.test refused SLACK_BOT_TOKEN ({exc.response.get('error')})",
                            "copy the Bot User OAuth Token (xoxb-…) from OAuth & Permissions")]
    out.append(ok(f"Slack: signed in as {auth.get('user')} in {auth.get('team')}"))
    granted = _scopes(auth.headers)
    if granted is None:
        out.append(warning("Slack: auth.test did not say the token's scopes, so they were not checked"))
    elif missing := [s for s in MANIFEST_SCOPES if s not in granted
                     and (settings.match_email or s not in EMAIL_MATCH_SCOPES)]:
        out.append(error(f"Slack: the bot token lacks the scopes {', '.join(missing)}", REINSTALL))
    else:
        out.append(ok("Slack: the bot token has every scope of the manifest"))
    if settings.app_token is not None:
        app = AsyncWebClient(base_url=base_url, timeout=30)
        try:
            await app.apps_connections_open(app_token=settings.app_token.get_secret_value())
            out.append(ok("Slack: the app token opens a Socket Mode connection"))
        except SlackApiError as exc:
            out.append(error(f"Slack: apps.connections.open refused SLACK_APP_TOKEN "
                             f"({exc.response.get('error')})",
                             "Basic Information → App-Level Tokens: create one with connections:write, "
                             "and turn Socket Mode on"))
    return out


def unsent_schedules(ctx: Context) -> list[Finding]:
    """The schedules whose results go to Slack, which is off."""
    return [error(f"schedule {s.name}: results go to Slack {', '.join(s.to['slack'])}, but Slack is not "
                  "configured", "set SLACK_BOT_TOKEN (see Connecting Slack in the README)")
            for s in ctx.policy.schedules if s.to.get("slack")]


def _scopes(headers: dict) -> set[str] | None:
    for name, value in headers.items():
        if name.lower() == "x-oauth-scopes":
            text = value[0] if isinstance(value, list) else value
            return {s.strip() for s in text.split(",") if s.strip()}
    return None


def settings_findings(ctx: Context, settings: SlackSettings) -> list[Finding]:
    policy = ctx.policy
    if not settings.configured:
        if settings.signing_secret or settings.app_token:
            return [error("Slack: SLACK_BOT_TOKEN is required with SLACK_SIGNING_SECRET or SLACK_APP_TOKEN",
                          "set SLACK_BOT_TOKEN (xoxb-…, OAuth & Permissions)")]
        return [ok("Slack: off (no SLACK_BOT_TOKEN)"), *unsent_schedules(ctx)]
    out: list[Finding] = []
    ways = [name for name, on in (("HTTP events at " + PATH, settings.signing_secret),
                                  ("Socket Mode", settings.app_token)) if on]
    if ways:
        out.append(ok("Slack: " + " and ".join(ways)))
    else:
        out.append(error("Slack: neither SLACK_SIGNING_SECRET nor SLACK_APP_TOKEN is set, so Slack "
                         "cannot reach the bot",
                         "Socket Mode (no public URL): set SLACK_APP_TOKEN (xapp-…); HTTP: set "
                         "SLACK_SIGNING_SECRET"))
    token = settings.bot_token.get_secret_value() if settings.bot_token else ""
    if not token.startswith("xoxb-"):
        out.append(warning("Slack: SLACK_BOT_TOKEN does not look like a bot token (xoxb-…)",
                           "use the Bot User OAuth Token, not a user token"))
    app_token = settings.app_token.get_secret_value() if settings.app_token else None
    if app_token is not None and not app_token.startswith("xapp-"):
        out.append(error("Slack: SLACK_APP_TOKEN must be an app-level token (xapp-…)",
                         "Basic Information → App-Level Tokens"))
    if ctx.settings.signing_key is None:
        out.append(warning("Slack: CHATOPS_SIGNING_KEY is not set, so approvals get no buttons "
                           "(approvers type `approve` / `reject <reason>` in the thread)",
                           "set CHATOPS_SIGNING_KEY to a long random string"))
    for channel, agent in policy.routes.items():
        if agent not in ctx.agents:
            out.append(error(f"routes.{channel}: no agent named {agent!r}",
                             f"agents: {', '.join(sorted(ctx.agents))}"))
    return out

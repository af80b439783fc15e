"""A Slack user as a person: by their profile's email (`users.info`, scope users:read.email).

Off unless SLACK_MATCH_EMAIL is set: a Slack user id that `[people]` lists is that person
already. With it on, a Slack user the policy does not list is matched to the person whose
identities include the email of their Slack profile, so that `alice = ["alice@example.com"]`
covers her Slack account too. Answers are cached in Redis for SLACK_EMAIL_TTL seconds (a changed
profile email takes effect after that), also "no email", so a click costs no Web API call.
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.runtime import Runtime
from channels.slack import keys as slack_keys
from channels.slack.settings import SlackSettings

log = logging.getLogger("chatops.slack")

UNVERIFIED = ("I could not look up your Slack profile to tell which person you are, so nothing was "
              "done; please try again in a minute.")


class ProfileUnavailable(Exception):
    """users.info failed: deciding as the bare user id could let one person pass for two."""


async def profile_emails(rt: Runtime, client: AsyncWebClient, settings: SlackSettings,
                         user: str | None) -> tuple[str, ...]:
    """The identities Slack vouches for besides the user id: its profile email, if matching is on
    and the id is no person's already. Raises ProfileUnavailable when Slack does not answer."""
    if not user or not settings.match_email or rt.policy.who.is_known(user):
        return ()
    key = slack_keys.email(rt.store.keys, user)
    cached = await rt.redis.get(key)
    if cached is None:
        try:
            response = await client.users_info(user=user)
            email = ((response.get("user") or {}).get("profile") or {}).get("email") or ""
        except (SlackApiError, OSError, TimeoutError) as exc:  # e.g. missing_scope: refuse, never guess
            log.warning("users.info for %s failed: %s", user, exc)
            raise ProfileUnavailable(user) from None
        await rt.redis.set(key, email.lower(), ex=int(settings.email_ttl))
    else:
        email = cached.decode() if isinstance(cached, bytes) else cached
    return (email,) if email else ()

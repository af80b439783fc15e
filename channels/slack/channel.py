"""The Slack channel as the core sees it (`bot.channel.Channel`): its addresses, whether it is
configured, its service and renderer (channels/slack/app.py, imported only when they are built:
`chatops doctor` and the CLI verbs that only read Redis skip Bolt), its doctor check.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING

from bot.channel import Address, Renderer
from bot.doctor import DoctorCheck
from bot.runtime import Runtime
from channels.slack import doctor
from channels.slack.settings import SlackSettings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from channels.slack.inbound import Later

_USER_ID = re.compile(r"^[UW](?=[A-Z0-9]*[0-9])[A-Z0-9]{6,}$", re.IGNORECASE)


def is_user_id(identity: str) -> bool:
    """A Slack user id (U…, or W… on Enterprise Grid), in any case (the policy lower-cases)."""
    return bool(_USER_ID.match(identity))


class SlackPlace(Address):
    """A Slack conversation: a channel (a schedule's target), or a thread in it (an origin)."""

    channel: str
    thread_ts: str | None = None
    team: str | None = None


class SlackUser(Address):
    user: str


class SlackChannel:
    name = "slack"
    notifies_approvers = False  # its approvers decide with the buttons in the thread itself

    def __init__(self, settings: SlackSettings | None = None) -> None:
        self.settings = settings if settings is not None else SlackSettings()  # SLACK_… and .env
        self.later: Later | None = None  # its service's calls after an ack (closed with the runtime)

    def configured(self) -> bool:
        return self.settings.configured

    def service(self, rt: Runtime, app: FastAPI) -> Awaitable[None] | None:
        from channels.slack.app import serve
        from channels.slack.inbound import Later

        self.later = Later()
        return serve(rt, self.settings, app, self.later)

    def renderer(self, rt: Runtime) -> Renderer | None:
        from channels.slack.app import renderer

        return renderer(rt, self.settings)

    def target(self, name: str) -> SlackPlace:
        if not name or name != name.strip() or " " in name:
            raise ValueError(f"not a Slack channel id: {name!r}")
        return SlackPlace(channel=name)

    def contact(self, person: str) -> SlackUser | None:
        return SlackUser(user=person.upper()) if is_user_id(person) else None

    def checks(self) -> Sequence[DoctorCheck]:
        settings = self.settings
        return [DoctorCheck("Slack", lambda ctx: doctor.check(ctx, settings),
                            lambda ctx: doctor.needs(settings))]

"""The email channel as the core sees it (`bot.channel.Channel`): mailboxes are its addresses
(a schedule's `to.email`, and every approver with an address: it mails them approvals wherever
the thread lives, with a reply address that decides). Its service and renderer are built in
channels/email/app.py, imported only then.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Sequence
from email.utils import parseaddr
from typing import TYPE_CHECKING

from pydantic import field_validator

from bot.approvals import approval_audience
from bot.channel import Address, Renderer
from bot.doctor import DoctorCheck
from bot.events import Event
from bot.runtime import Runtime
from bot.thread import Thread
from bot.verbs import Verb
from channels.email import doctor
from channels.email.settings import EmailSettings
from channels.email.tokens import normalize

if TYPE_CHECKING:
    from fastapi import FastAPI


class Mailbox(Address):
    address: str

    @field_validator("address")
    @classmethod
    def _an_address(cls, value: str) -> str:
        found = parseaddr(value)[1]
        if "@" not in found or found != value.strip():
            raise ValueError(f"not an email address: {value!r}")
        return normalize(found)


class MailThread(Address):
    """The origin address of a thread started by mail: whom to answer, and in which conversation."""

    to: str
    name: str = ""
    subject: str = ""
    message_id: str | None = None
    agent_address: str


def mailbox(person: str) -> Mailbox | None:
    """A person's identity as a mailbox, if it is an address."""
    try:
        return Mailbox(address=person) if "@" in person else None
    except ValueError:
        return None


def approver_addresses(thread: Thread, event: Event) -> list[str]:
    """The addresses an approval event is for, wherever its thread lives (they hear of it by mail,
    with a reply address that decides, even in a Slack or console thread)."""
    found = (mailbox(p) for p in approval_audience(thread, event, "email"))
    return list(dict.fromkeys(m.address for m in found if m is not None))


class EmailChannel:
    name = "email"
    notifies_approvers = True

    def __init__(self, settings: EmailSettings | None = None) -> None:
        # CHATOPS_EMAIL_…, CHATOPS_SMTP_…, SMTP_URL and .env
        self.settings = settings if settings is not None else EmailSettings()

    def configured(self) -> bool:
        return self.settings.smtp_url is not None

    def service(self, rt: Runtime, app: FastAPI) -> Awaitable[None] | None:
        from channels.email.app import service

        return service(rt, self.settings, app)

    def renderer(self, rt: Runtime) -> Renderer | None:
        from channels.email.app import renderer

        return renderer(rt, self.settings)

    def target(self, name: str) -> Mailbox:
        found = mailbox(name)
        if found is None:
            raise ValueError(f"not an email address: {name!r}")
        return found

    def contact(self, person: str) -> Mailbox | None:
        return mailbox(person)

    def checks(self) -> Sequence[DoctorCheck]:
        settings = self.settings
        return [DoctorCheck("email", lambda ctx: doctor.check(ctx, settings), lambda ctx: doctor.needs(settings))]

    def verbs(self) -> Sequence[Verb]:
        return [Verb("smtp", "run the email channel's SMTP server alone", self.serve_smtp, serving=True)]

    async def serve_smtp(self, rt: Runtime, _args: argparse.Namespace) -> int:
        """`chatops smtp`: its SMTP server, with no worker or HTTP API in the process."""
        from channels.email.app import inbound
        from channels.email.server import serve_smtp

        await serve_smtp(self.settings, inbound(rt, self.settings))
        return 0

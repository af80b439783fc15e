"""The email channel's SMTP service and renderer, built by `EmailChannel` (channels/email/channel.py;
its doctor check is channels/email/doctor.py).

With no configuration
the SMTP server listens on loopback for `<agent>@localhost` and only receives: threads start by
mail, nothing is sent, no reply token verifies. CHATOPS_EMAIL_DOMAIN, CHATOPS_SIGNING_KEY and
SMTP_URL connect it for real; CHATOPS_SMTP_ENABLED=false turns the server off.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from bot.channel import origin_address
from bot.policy import ConfigError
from bot.runtime import Runtime
from bot.settings import Settings
from channels.email.compose import REPLY_LOCAL, Identity
from channels.email.inbound import Inbound
from channels.email.reader import Reader
from channels.email.render import EmailRenderer
from channels.email.send import Sender
from channels.email.server import serve_smtp
from channels.email.settings import EmailSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("chatops.email")


def identity(core: Settings, settings: EmailSettings) -> Identity:
    domain = settings.email_domain.lower()
    return Identity(
        domain=domain,
        from_address=settings.email_from or f"chatops <{REPLY_LOCAL}@{domain}>",
        key=_signing_key(core, settings),
        reply_ttl=settings.email_reply_ttl,
    )


def _signing_key(core: Settings, settings: EmailSettings) -> bytes:
    if core.signing_key is not None and core.signing_key.get_secret_value():
        return core.signing_key.get_secret_value().encode()
    if settings.smtp_url is None and settings.email_local:
        # receive only: nothing is sent, so no token exists; a key nobody knows verifies none
        return secrets.token_bytes(32)
    raise ConfigError("CHATOPS_SIGNING_KEY: the email channel signs its reply addresses and needs a key")


def renderer(rt: Runtime, settings: EmailSettings) -> EmailRenderer | None:
    """The email renderer, so threads started by mail are answered by mail."""
    if settings.smtp_url is None:
        if not settings.email_local:
            log.warning("SMTP_URL is not set: threads started by email get no answer by mail")
        return None
    try:
        sender = Sender(settings, rt.redis, rt.store.keys)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return EmailRenderer(identity(rt.settings, settings), sender,
                         lambda thread: origin_address(rt.channels, thread).title(thread))


def inbound(rt: Runtime, settings: EmailSettings) -> Inbound:
    """What the SMTP server hands each mail to, with its mail-reading processes (stopped when the
    runtime closes)."""
    reader = Reader()
    rt.on_close(reader.close)
    return Inbound(rt, identity(rt.settings, settings), settings, reader)


def service(rt: Runtime, settings: EmailSettings, _app: FastAPI) -> Awaitable[None] | None:
    if not settings.smtp_enabled:
        return None
    return serve_smtp(settings, inbound(rt, settings))


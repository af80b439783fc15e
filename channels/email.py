"""The email channel, wired into the bot: its SMTP service, its renderer and its doctor checks.

Importing this module registers them (see bot/channel.py CHANNEL_MODULES). With no configuration
the SMTP server listens on loopback for `<agent>@localhost` and only receives: threads start by
mail, nothing is sent, no reply token verifies. CHATOPS_EMAIL_DOMAIN, CHATOPS_SIGNING_KEY and
SMTP_URL connect it for real; CHATOPS_SMTP_ENABLED=false turns the server off.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable
from email.utils import parseaddr

from bot import doctor, serve
from bot.channel import RENDERERS
from bot.policy import ConfigError, Policy
from bot.runtime import Runtime
from bot.settings import Settings
from channels.email_compose import REPLY_LOCAL, Identity
from channels.email_inbound import Inbound
from channels.email_render import EmailRenderer
from channels.email_send import Relay, Sender
from channels.email_server import serve_smtp

log = logging.getLogger("chatops.email")


def identity(settings: Settings) -> Identity:
    domain = settings.email_domain.lower()
    return Identity(
        domain=domain,
        from_address=settings.email_from or f"chatops <{REPLY_LOCAL}@{domain}>",
        key=_signing_key(settings),
        reply_ttl=settings.email_reply_ttl,
    )


def _signing_key(settings: Settings) -> bytes:
    if settings.signing_key is not None and settings.signing_key.get_secret_value():
        return settings.signing_key.get_secret_value().encode()
    if settings.smtp_url is None and settings.email_local:
        # receive only: nothing is sent, so no token exists; a key nobody knows verifies none
        return secrets.token_bytes(32)
    raise ConfigError("CHATOPS_SIGNING_KEY: the email channel signs its reply addresses and needs a key")


def renderer(rt: Runtime) -> EmailRenderer | None:
    """The email renderer, so threads started by mail are answered by mail."""
    if rt.settings.smtp_url is None:
        if not rt.settings.email_local:
            log.warning("SMTP_URL is not set: threads started by email get no answer by mail")
        return None
    try:
        sender = Sender(rt.settings, rt.redis, rt.store.keys)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return EmailRenderer(identity(rt.settings), sender)


def service(rt: Runtime, _app: object) -> Awaitable[None] | None:
    if not rt.settings.smtp_enabled:
        return None
    return serve_smtp(rt, Inbound(rt, identity(rt.settings)))


def checks(settings: Settings, policy: Policy) -> list[tuple[str, str]]:
    if not settings.smtp_enabled:
        return [("ok", "email: off (CHATOPS_SMTP_ENABLED=false)")]
    if settings.email_local and settings.smtp_url is None:
        return [("ok", f"email: local only, receiving on {settings.smtp_host}:{settings.smtp_port} for "
                       "<agent>@localhost; set CHATOPS_EMAIL_DOMAIN, CHATOPS_SIGNING_KEY and SMTP_URL "
                       "to connect it")]
    out = [("ok", f"email: SMTP server on {settings.smtp_host}:{settings.smtp_port} "
                  f"for @{settings.email_domain}, up to {settings.smtp_max_size // 1024} KB per mail")]
    try:
        identity(settings)
    except ConfigError as exc:
        out.append(("error", str(exc)))
    if settings.smtp_url is None:
        out.append(("warn", "SMTP_URL is not set: the bot receives mail but cannot answer it"))
    else:
        try:
            relay = Relay.from_url(settings.smtp_url.get_secret_value())
            tls = "TLS" if relay.use_tls else "STARTTLS required" if relay.start_tls else \
                "no TLS" if relay.start_tls is False else "STARTTLS if offered"
            out.append(("ok", f"email: sending through {relay.hostname}:{relay.port} ({tls})"))
        except ValueError as exc:
            out.append(("error", f"SMTP_URL: {exc}"))
    if settings.email_from and "@" not in parseaddr(settings.email_from)[1]:
        out.append(("error", "CHATOPS_EMAIL_FROM is not an email address"))
    if bool(settings.smtp_tls_cert) != bool(settings.smtp_tls_key):
        out.append(("error", "CHATOPS_SMTP_TLS_CERT and CHATOPS_SMTP_TLS_KEY go together"))
    for path in (settings.smtp_tls_cert, settings.smtp_tls_key):
        if path and not path.is_file():
            out.append(("error", f"no such file: {path}"))
    if settings.smtp_auth_user and not settings.smtp_tls_cert and settings.smtp_host not in ("127.0.0.1", "::1", "localhost"):
        out.append(("warn", "SMTP AUTH is on without STARTTLS: the relay's password crosses the network in clear"))
    if not settings.email_authserv_id:
        out.append(("warn", "CHATOPS_EMAIL_AUTHSERV_ID is not set: approvals by email trust the From "
                            "address without checking DMARC; put a verifying MTA in front and set it"))
    else:
        out.append(("ok", f"email: decisions by mail need dmarc=pass from {settings.email_authserv_id}, "
                          f"believed on mail from {settings.smtp_trusted_relays or 'no address'} "
                          "or an authenticated session (CHATOPS_SMTP_TRUSTED_RELAYS)"))
    approvers = {a for entries in [policy.approvers, *[t.approvers or [] for t in policy.tools.values()]]
                 for a in policy.expand(entries)}
    if approvers and not any("@" in a for a in approvers):
        out.append(("warn", "no approver is an email address: nobody can approve by replying to a mail"))
    return out


serve.SERVICES.append(service)
RENDERERS.append(renderer)
doctor.CHECKS.append(checks)

"""The email channel's doctor check: the settings, then the outbound relay of SMTP_URL as the bot
uses it (connect, EHLO, STARTTLS and AUTH as configured; no mail is sent).

Kept apart from channels/email/app.py so that `chatops doctor` does not import the servers.
"""

from __future__ import annotations

from email.utils import parseaddr

from bot.doctor import Context, Finding, error, ok, port_finding, warning
from channels.email.settings import EmailSettings

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def needs(settings: EmailSettings) -> list[str]:
    return ["aiosmtplib", "channels.email.send"] if settings.smtp_url is not None else []


async def check(ctx: Context, settings: EmailSettings) -> list[Finding]:
    out = settings_findings(ctx, settings)
    if settings.smtp_url is not None and not any(f.level == "error" for f in out):
        out += await relay_findings(settings)
    return out + port_findings(settings)


async def relay_findings(settings: EmailSettings) -> list[Finding]:
    import aiosmtplib

    from channels.email.send import Relay

    assert settings.smtp_url is not None
    relay = Relay.from_url(settings.smtp_url.get_secret_value())
    where = f"the relay {relay.hostname}:{relay.port}"
    smtp = aiosmtplib.SMTP(hostname=relay.hostname, port=relay.port, use_tls=relay.use_tls,
                           start_tls=False, timeout=30)
    steps = ["connected" + (" over TLS" if relay.use_tls else "")]
    try:
        await smtp.connect()
        await smtp.ehlo()
        steps.append("EHLO")
        offered = smtp.supports_extension("starttls")
        if relay.start_tls or (relay.start_tls is None and offered):
            if not offered:
                return [error(f"email: {where} does not offer STARTTLS, which SMTP_URL requires",
                              "use the relay's submission port (587) or smtps:// on 465")]
            await smtp.starttls()
            steps.append("STARTTLS")
        if relay.username:
            await smtp.login(relay.username, relay.password or "")
            steps.append(f"AUTH as {relay.username}")
    except aiosmtplib.SMTPAuthenticationError as exc:
        return [error(f"email: {where} refused the user and password of SMTP_URL ({exc.code})",
                      "correct them in SMTP_URL (smtp://user:password@host:587)")]
    except (aiosmtplib.SMTPException, OSError) as exc:
        return [error(f"email: {where}: {type(exc).__name__}: {exc} (after: {', '.join(steps)})",
                      "check SMTP_URL's host and port, and that the relay takes connections from here")]
    finally:
        if smtp.is_connected:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()
    return [ok(f"email: {where} answers: {', '.join(steps)}")]


def settings_findings(ctx: Context, settings: EmailSettings) -> list[Finding]:
    return [*_receiving(ctx, settings), *unsent_schedules(ctx, settings)]


def port_findings(settings: EmailSettings) -> list[Finding]:
    """The SMTP server's port is free (`chatops run` listens on it), as the core checks its own."""
    if not settings.smtp_enabled:
        return []
    found = port_finding("CHATOPS_SMTP_PORT", settings.smtp_host, settings.smtp_port)
    return [found] if found is not None else []


def unsent_schedules(ctx: Context, settings: EmailSettings) -> list[Finding]:
    """The schedules whose results go to addresses, with no relay to send them."""
    if settings.smtp_url is not None:
        return []
    return [error(f"schedule {s.name}: results go to {', '.join(s.to['email'])}, but SMTP_URL is not set, "
                  "so no mail is sent", "set SMTP_URL (see Connecting email)")
            for s in ctx.policy.schedules if s.to.get("email")]


def _receiving(ctx: Context, settings: EmailSettings) -> list[Finding]:
    policy = ctx.policy
    if not settings.smtp_enabled:
        return [ok("email: off (CHATOPS_SMTP_ENABLED=false)")]
    if settings.email_local and settings.smtp_url is None:
        return [ok(f"email: local only, receiving on {settings.smtp_host}:{settings.smtp_port} for "
                   "<agent>@localhost; set CHATOPS_EMAIL_DOMAIN, CHATOPS_SIGNING_KEY and SMTP_URL "
                   "to connect it")]
    out = [ok(f"email: SMTP server on {settings.smtp_host}:{settings.smtp_port} "
              f"for @{settings.email_domain}, up to {settings.smtp_max_size // 1024} KB per mail")]
    if ctx.settings.signing_key is None or not ctx.settings.signing_key.get_secret_value():
        out.append(error("CHATOPS_SIGNING_KEY: the email channel signs its reply addresses and needs a key",
                         "set CHATOPS_SIGNING_KEY to a long random string (e.g. openssl rand -hex 32)"))
    if settings.smtp_url is None:
        out.append(warning("SMTP_URL is not set: the bot receives mail but cannot answer it",
                           "set SMTP_URL to your relay (smtp://user:password@host:587)"))
    else:
        from channels.email.send import Relay

        try:
            relay = Relay.from_url(settings.smtp_url.get_secret_value())
            tls = "TLS" if relay.use_tls else "STARTTLS required" if relay.start_tls else \
                "no TLS" if relay.start_tls is False else "STARTTLS if offered"
            out.append(ok(f"email: sending through {relay.hostname}:{relay.port} ({tls})"))
        except ValueError as exc:
            out.append(error(f"SMTP_URL: {exc}", "smtp://user:password@host:587 or smtps://…:465"))
    if settings.email_from and "@" not in parseaddr(settings.email_from)[1]:
        out.append(error("CHATOPS_EMAIL_FROM is not an email address", 'e.g. "chatops <bot@ops.example.com>"'))
    if bool(settings.smtp_tls_cert) != bool(settings.smtp_tls_key):
        out.append(error("CHATOPS_SMTP_TLS_CERT and CHATOPS_SMTP_TLS_KEY go together", "set both or neither"))
    for path in (settings.smtp_tls_cert, settings.smtp_tls_key):
        if path and not path.is_file():
            out.append(error(f"no such file: {path}", "point the setting at the PEM file"))
    if settings.smtp_auth_user and not settings.smtp_tls_cert and settings.smtp_host not in LOOPBACK:
        out.append(warning("SMTP AUTH is on without STARTTLS: the relay's password crosses the network "
                           "in clear", "set CHATOPS_SMTP_TLS_CERT and CHATOPS_SMTP_TLS_KEY"))
    if not settings.email_authserv_id:
        out.append(warning("CHATOPS_EMAIL_AUTHSERV_ID is not set: approvals by email trust the From "
                           "address without checking DMARC",
                           "put a verifying MTA in front and set CHATOPS_EMAIL_AUTHSERV_ID to its name"))
    else:
        out.append(ok(f"email: decisions by mail need dmarc=pass from {settings.email_authserv_id}, "
                      f"believed on mail from {settings.smtp_trusted_relays or 'no address'} "
                      "or an authenticated session (CHATOPS_SMTP_TRUSTED_RELAYS)"))
    approvers = {a for entries in [policy.approvers or [], *[t.approvers or [] for t in policy.tools.values()]]
                 for a in policy.expand(entries)}
    if approvers and not any("@" in a for a in approvers):
        out.append(warning("no approver is an email address: nobody can approve by replying to a mail",
                           "list approvers' addresses in the policy to let them answer by mail"))
    return out

"""The inbound SMTP server (aiosmtpd) on CHATOPS_SMTP_HOST:PORT, in the bot's own event loop.

Recipients are checked at RCPT (550 for anything that is not ours), the size limit is enforced by
aiosmtpd (552), and DATA is answered 250 only after the mail's effect is in Redis; when Redis
does not answer, 451, so that the sending server retries later.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from redis.exceptions import RedisError

from bot.policy import ConfigError
from bot.runtime import Runtime
from bot.settings import Settings
from channels.email_inbound import Inbound

log = logging.getLogger("chatops.email")
# aiosmtpd logs every command and, at DEBUG, every line of every mail: reply addresses carry
# tokens, which are credentials. We log each mail's outcome ourselves (addresses redacted).
logging.getLogger("mail.log").setLevel(logging.WARNING)
MAX_RECIPIENTS = 20


class Handler:
    def __init__(self, inbound: Inbound) -> None:
        self.inbound = inbound

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        if refusal := self.inbound.check_recipient(address):
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        try:
            received = await self.inbound.receive(
                envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or b"")
        except (RedisError, OSError) as exc:
            log.warning("refused a mail with 451, Redis is unavailable: %s", exc)
            return "451 4.3.0 temporarily unable to store the message, try again later"
        except Exception:  # a bug must not lose mail: the sender retries and we can fix it
            log.exception("handling a mail from %s failed", envelope.mail_from)
            return "451 4.3.0 temporary error while handling the message, try again later"
        log.info("mail from %s to %s: %s", envelope.mail_from, ",".join(map(redacted, envelope.rcpt_tos)),
                 received.status)
        return received.status


def redacted(address: str) -> str:
    """An address fit for the log: a reply address's token is a credential."""
    local, at, domain = address.partition("@")
    base, plus, _token = local.partition("+")
    return f"{base}{'+…' if plus else ''}{at}{domain}"


class Authenticator:
    """AUTH for a relay that hands us mail (CHATOPS_SMTP_AUTH_USER / _PASSWORD)."""

    def __init__(self, user: str, password: str) -> None:
        self.user = user.encode()
        self.password = password.encode()

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                 auth_data: object) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = hmac.compare_digest(auth_data.login, self.user) & hmac.compare_digest(auth_data.password, self.password)
        return AuthResult(success=bool(ok), handled=False)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.smtp_tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.smtp_tls_cert, settings.smtp_tls_key)
    return context


def server_factory(settings: Settings, inbound: Inbound, loop: asyncio.AbstractEventLoop):
    handler = Handler(inbound)
    tls = tls_context(settings)
    auth = None
    if settings.smtp_auth_user and settings.smtp_auth_password:
        auth = Authenticator(settings.smtp_auth_user, settings.smtp_auth_password.get_secret_value())

    def factory() -> SMTP:
        return SMTP(
            handler,
            data_size_limit=settings.smtp_max_size,
            hostname=settings.email_domain,
            ident="chatops",
            tls_context=tls,
            require_starttls=settings.smtp_require_tls and tls is not None,
            authenticator=auth,
            auth_required=auth is not None,
            auth_require_tls=tls is not None,
            command_call_limit=1000,  # per command and connection: relays send many mails per connection
            timeout=60,
            loop=loop,
        )

    return factory


async def start_smtp(rt: Runtime, inbound: Inbound, host: str | None = None,
                     port: int | None = None) -> asyncio.Server:
    settings = rt.settings
    loop = asyncio.get_running_loop()
    host, port = host or settings.smtp_host, settings.smtp_port if port is None else port
    try:
        server = await loop.create_server(server_factory(settings, inbound, loop), host, port)
    except OSError as exc:
        raise ConfigError(f"CHATOPS_SMTP_PORT: cannot listen on {host}:{port}: {exc.strerror or exc} "
                          "(CHATOPS_SMTP_ENABLED=false turns the SMTP server off)") from None
    where = server.sockets[0].getsockname()
    log.info("SMTP server on %s:%d for @%s", where[0], where[1], settings.email_domain)
    return server


async def serve_smtp(rt: Runtime, inbound: Inbound) -> None:
    server = await start_smtp(rt, inbound)
    async with server:
        await server.serve_forever()

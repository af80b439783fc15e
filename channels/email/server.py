"""The inbound SMTP server (aiosmtpd) on CHATOPS_SMTP_HOST:PORT, in the bot's own event loop.

Recipients are checked at RCPT (550 for anything that is not ours), the size limit is enforced by
aiosmtpd (552), and DATA is answered 250 only after the mail's effect is in Redis; when Redis
does not answer, 451, so that the sending server retries later.

Hostile senders meet a cap on sessions (CHATOPS_SMTP_MAX_CONNECTIONS, and per peer address
CHATOPS_SMTP_MAX_PER_IP, trusted relays exempt), answered `421 4.7.0 too busy`; a timeout on
every command (CHATOPS_SMTP_TIMEOUT, RFC 5321's five minutes); and answers that are ASCII and
within RFC 5321's 512 octets whatever the mail held. Authentication-Results are believed only on
mail from a trusted relay (CHATOPS_SMTP_TRUSTED_RELAYS) or an authenticated session.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import hmac
import ipaddress
import logging
import ssl
import time
import unicodedata
from collections.abc import Callable

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from bot.outage import REDIS_ERRORS
from bot.policy import ConfigError
from channels.email.inbound import Inbound
from channels.email.settings import EmailSettings

log = logging.getLogger("chatops.email")
MAX_RECIPIENTS = 20


READ_SIZE = 32 * 1024  # bytes read from a session per turn of the loop (asyncio's default: 256 KiB)
MAX_REPLY = 510  # octets of a reply line before its CRLF (RFC 5321 4.5.3.1.5: 512 with it)
TOO_BUSY = "421 4.7.0 too busy, try again later"


def smtp_reply(status: str) -> str:
    """`status` as a reply line aiosmtpd can send: ASCII (accents folded, the rest as `?`), one
    line, at most 512 octets with its CRLF. Never raises."""
    try:
        text = unicodedata.normalize("NFKD", " ".join(str(status).split()))
        text = "".join(c for c in text if not unicodedata.combining(c))
        text = text.encode("ascii", "replace").decode("ascii")
    except Exception:  # a lone surrogate, say: the code alone is still true
        text = str(status)[:3].encode("ascii", "replace").decode("ascii") + " see the log"
    return text if len(text) <= MAX_REPLY else text[:MAX_REPLY - 3] + "..."


class Relays:
    """The addresses whose sessions may vouch for a mail's Authentication-Results."""

    def __init__(self, spec: str) -> None:
        self.networks = [ipaddress.ip_network(part.strip(), strict=False)
                         for part in spec.split(",") if part.strip()]

    def trusts(self, peer: object) -> bool:
        try:
            address = ipaddress.ip_address(str(peer[0]).split("%")[0])  # type: ignore[index]
        except (TypeError, ValueError, IndexError):
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in net for net in self.networks)


class Handler:
    def __init__(self, inbound: Inbound, relays: Relays, advertise_auth: bool) -> None:
        self.inbound = inbound
        self.relays = relays
        self.advertise_auth = advertise_auth

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.advertise_auth:
            return responses
        return [r for r in responses if not r[4:].upper().startswith("AUTH")]

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        if refusal := self.inbound.check_recipient(address):
            return smtp_reply(refusal)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        relayed = bool(session.authenticated) or self.relays.trusts(session.peer)
        try:
            received = await self.inbound.receive(
                envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or b"", relayed=relayed)
        except REDIS_ERRORS as exc:
            log.warning("refused a mail with 451, Redis is unavailable: %s", type(exc).__name__)
            return "451 4.3.0 temporarily unable to store the message, try again later"
        except Exception:  # a bug must not lose mail: the sender retries (deduplicated) and we can fix it
            _log_safely(logging.ERROR, "handling a mail from %s failed", redacted(envelope.mail_from or ""),
                        exc_info=True)
            return "451 4.3.0 temporary error while handling the message, try again later"
        status = smtp_reply(received.status)
        # whatever happens to the log, the answer stays the truth about what was stored
        _log_safely(logging.INFO, "mail from %s to %s: %s", redacted(envelope.mail_from or ""),
                    ",".join(map(redacted, envelope.rcpt_tos)), status)
        return status


def _log_safely(level: int, msg: str, *args: object, exc_info: bool = False) -> None:
    try:
        log.log(level, msg, *args, exc_info=exc_info)
    except Exception:
        pass


def redacted(address: str) -> str:
    """An address fit for the log: a reply address's token is a credential."""
    local, at, domain = address.partition("@")
    base, plus, _token = local.partition("+")
    return f"{base}{'+…' if plus else ''}{at}{domain}"


class Gate:
    """Live sessions, in all and per peer address (trusted relays have no per-address cap)."""

    def __init__(self, total: int, per_ip: int, relays: Relays) -> None:
        self.total, self.per_ip, self.relays = total, per_ip, relays
        self.live = 0
        self.by_ip: dict[str, int] = {}

    def enter(self, peer: object) -> bool:
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if self.live >= self.total:
            return False
        if self.by_ip.get(ip, 0) >= self.per_ip and not self.relays.trusts(peer):
            return False
        self.live += 1
        self.by_ip[ip] = self.by_ip.get(ip, 0) + 1
        return True

    def leave(self, peer: object) -> None:
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self.live -= 1
        left = self.by_ip.get(ip, 1) - 1
        if left > 0:
            self.by_ip[ip] = left
        else:
            self.by_ip.pop(ip, None)


class Server(SMTP):
    """aiosmtpd's session behind our gate, with DATA read in chunks: aiosmtpd keeps each line as
    an object and joins them at the end (80 ms of loop for an 8 MB mail on a busy machine), and
    refuses lines over 1,000 octets, which real clients send; ours takes lines of any length up
    to the size limit."""

    def __init__(self, handler: Handler, gate: Gate, **kwargs: object) -> None:
        super().__init__(handler, **kwargs)  # type: ignore[arg-type]
        self._gate = gate
        self._peer: object = None
        self._turned_away = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None and not self._turned_away and self._peer is None:  # not STARTTLS
            peer = transport.get_extra_info("peername")
            if not self._gate.enter(peer):
                self._turned_away = True
                transport.write(f"{TOO_BUSY}\r\n".encode())  # type: ignore[attr-defined]
                transport.close()
                return
            self._peer = peer or ("?",)
            # smaller reads keep each turn of the loop short while a fast sender sends megabytes
            if isinstance(getattr(transport, "max_size", None), int):
                transport.max_size = READ_SIZE  # type: ignore[attr-defined]
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._turned_away:
            return
        if self._peer is not None:
            self._gate.leave(self._peer)
            self._peer = None
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        if not self._turned_away:
            super().data_received(data)

    def eof_received(self) -> bool | None:
        return False if self._turned_away else super().eof_received()

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content = await self._read_data()
        if content is None:
            await self.push("552 5.3.4 message exceeds the size limit")
        else:
            self.envelope.content = self.envelope.original_content = content
            await self.push(await self._call_handler_hook("DATA"))
        self._set_post_data_state()

    async def _read_data(self) -> bytes | None:
        """The message up to the lone dot, dot-stuffing undone; None if it outgrew the limit."""
        limit = self.data_size_limit or 0
        buf = bytearray(b"\r\n")  # so that a first line of "." ends an empty message too
        too_big = False
        while True:
            chunk = await self._reader.read(READ_SIZE)
            if not chunk:  # the connection is gone; aiosmtpd cancels us as well
                raise ConnectionResetError("connection lost during DATA")
            start = max(len(buf) - 4, 0)
            buf += chunk
            end = buf.find(b"\r\n.\r\n", start)
            if end >= 0:
                break
            if limit and len(buf) > limit + 2:
                too_big = True
                del buf[:-4]  # keep only what may begin the terminator
        rest = buf[end + 5:]
        if rest:  # a client that did not wait for our answer: its next commands stay unread
            self._reader._buffer[:0] = rest  # type: ignore[attr-defined]  # StreamReader has no unread()
        if too_big or (limit and end > limit):
            return None
        # in place, no copy of megabytes: cut the terminator, undo the dot-stuffing if any
        del buf[end + 2:]
        if buf.find(b"\r\n.") >= 0:
            buf = bytearray(buf.replace(b"\r\n.", b"\r\n"))
        del buf[:2]
        return buf  # type: ignore[return-value]  # bytes-like, as the parser needs


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


def tls_context(settings: EmailSettings) -> ssl.SSLContext | None:
    if not settings.smtp_tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.smtp_tls_cert, settings.smtp_tls_key)
    return context


def server_factory(
    settings: EmailSettings, inbound: Inbound, loop: asyncio.AbstractEventLoop,
) -> Callable[[], SMTP]:
    tls = tls_context(settings)
    auth = None
    if settings.smtp_auth_user and settings.smtp_auth_password:
        auth = Authenticator(settings.smtp_auth_user, settings.smtp_auth_password.get_secret_value())
    try:
        relays = Relays(settings.smtp_trusted_relays)
    except ValueError as exc:
        raise ConfigError(f"CHATOPS_SMTP_TRUSTED_RELAYS: {exc}") from None
    handler = Handler(inbound, relays, advertise_auth=auth is not None)
    gate = Gate(settings.smtp_max_connections, settings.smtp_max_per_ip, relays)

    def factory() -> SMTP:
        return Server(
            handler,
            gate,
            data_size_limit=settings.smtp_max_size,
            hostname=settings.email_domain,
            ident="chatops",
            tls_context=tls,
            require_starttls=settings.smtp_require_tls and tls is not None,
            authenticator=auth,
            auth_required=auth is not None,
            auth_require_tls=tls is not None,
            auth_exclude_mechanism=[] if auth else ["LOGIN", "PLAIN"],
            command_call_limit=1000,  # per command and connection: relays send many mails per connection
            timeout=settings.smtp_timeout,  # from one command to the next, DATA included
            loop=loop,
        )

    return factory


def quiet_fd_exhaustion(loop: asyncio.AbstractEventLoop) -> None:
    """Running out of file descriptors is logged once a minute, not once per failed accept."""
    if getattr(loop, "_chatops_fd_quiet", False):
        return
    previous = loop.get_exception_handler()
    last = [-3600.0]

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            if time.monotonic() - last[0] >= 60:
                last[0] = time.monotonic()
                log.error("out of file descriptors (%s): connections are refused until some close; raise "
                          "`ulimit -n` or lower CHATOPS_SMTP_MAX_CONNECTIONS (logged once a minute)",
                          errno.errorcode.get(exc.errno, exc.errno))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    loop._chatops_fd_quiet = True  # type: ignore[attr-defined]


async def start_smtp(settings: EmailSettings, inbound: Inbound, host: str | None = None,
                     port: int | None = None) -> asyncio.Server:
    # aiosmtpd logs every command and, at DEBUG, every line of every mail: reply addresses carry
    # tokens, which are credentials. We log each mail's outcome ourselves (addresses redacted).
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    quiet_fd_exhaustion(loop)
    # A full collection walks every object the process holds (imports included): measured at
    # 0.24-0.47 s, and reading a big mail allocates enough to start one. Objects alive now are
    # long-lived; freezing them makes the collector skip them.
    gc.freeze()
    host, port = host or settings.smtp_host, settings.smtp_port if port is None else port
    try:
        server = await loop.create_server(server_factory(settings, inbound, loop), host, port)
    except OSError as exc:
        raise ConfigError(f"CHATOPS_SMTP_PORT: cannot listen on {host}:{port}: {exc.strerror or exc} "
                          "(CHATOPS_SMTP_ENABLED=false turns the SMTP server off)") from None
    await inbound.reader.warm_up()
    where = server.sockets[0].getsockname()
    log.info("SMTP server on %s:%d for @%s", where[0], where[1], settings.email_domain)
    return server


async def serve_smtp(settings: EmailSettings, inbound: Inbound) -> None:
    server = await start_smtp(settings, inbound)
    async with server:
        await server.serve_forever()

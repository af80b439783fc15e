"""Sending mail through the relay in SMTP_URL (aiosmtplib), with retries and a per-recipient limit.

A temporary failure (4xx, a dropped or refused connection, a timeout) is retried with exponential
backoff and jitter; a permanent one (5xx) or the last retry raises `SendFailed`, which the worker
records in the thread as `delivery_failed`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import aiosmtplib
from redis.asyncio import Redis

from bot.keys import Keys
from channels.email import keys as email_keys
from channels.email.settings import EmailSettings

log = logging.getLogger("chatops.email")


class SendFailed(Exception):
    pass


@dataclass(frozen=True)
class Relay:
    hostname: str
    port: int
    username: str | None
    password: str | None = field(repr=False)  # never in logs
    use_tls: bool = False  # smtps://: TLS from the first byte
    start_tls: bool | None = None  # smtp://: STARTTLS required (True), when offered (None), never (False)

    @classmethod
    def from_url(cls, url: str) -> Relay:
        """The relay of SMTP_URL. A password never crosses the network in clear: with credentials
        and a host that is not loopback, STARTTLS is required (or smtps://)."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL must look like smtp://user:password@host:587")
        implicit = parts.scheme == "smtps"
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        start_tls = {"require": True, "off": False}.get(query.get("starttls", ""), None)
        credentials = bool(parts.username or parts.password)
        if credentials and not implicit and not _loopback(parts.hostname):
            if start_tls is False:
                raise ValueError("starttls=off would send the password in clear; "
                                 "use STARTTLS or smtps://")
            start_tls = True
        return cls(
            hostname=parts.hostname,
            port=parts.port or (465 if implicit else 587),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=implicit,
            start_tls=False if implicit else start_tls,
        )


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _temporary(exc: Exception) -> bool:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(400 <= e.code < 500 for e in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return 400 <= exc.code < 500
    return isinstance(exc, (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError,
                            aiosmtplib.SMTPTimeoutError, OSError, asyncio.TimeoutError))


class Sender:
    def __init__(self, settings: EmailSettings, redis: Redis, keys: Keys) -> None:
        assert settings.smtp_url is not None
        self.relay = Relay.from_url(settings.smtp_url.get_secret_value())
        self.retries = settings.smtp_send_retries
        self.backoff = settings.smtp_send_backoff
        self.timeout = settings.smtp_send_timeout
        self.limit = settings.email_rate_limit
        self.redis = redis
        self.keys = keys

    async def allow(self, address: str) -> bool:
        """Count one mail to `address` in this hour; False once it is over the limit, so that a
        loop we failed to detect stays small."""
        window = int(time.time() // 3600)
        key = email_keys.rate(self.keys, address.lower(), window)
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 7200)
        count, _ = await pipe.execute()
        return int(count) <= self.limit

    async def send(self, message: EmailMessage, recipients: list[str]) -> None:
        relay = self.relay
        for attempt in range(self.retries + 1):
            try:
                await aiosmtplib.send(
                    message, recipients=recipients, hostname=relay.hostname, port=relay.port,
                    username=relay.username, password=relay.password, use_tls=relay.use_tls,
                    start_tls=relay.start_tls, timeout=self.timeout,
                )
                return
            except Exception as exc:
                if not _temporary(exc):
                    raise SendFailed(f"the relay refused the mail: {exc}") from None
                if attempt == self.retries:
                    raise SendFailed(f"gave up after {attempt + 1} attempts: {exc}") from None
                delay = self.backoff * 2 ** attempt * (0.5 + random.random())
                log.warning("sending mail failed (%s); retry in %.1fs", exc, delay)
                await asyncio.sleep(delay)
